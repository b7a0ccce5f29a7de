"""tokens.rotate's decision, on real files under tmp_path: the new token is written
(0600, every other line kept) before anything restarts; a running gateway is restarted
with the rotation still pending (so a restart that dies is finished by the next start),
a stopped one is left stopped and nothing stays pending."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from theiaos_pkg import envfile, settings, state, tokens
from theiaos_pkg.account import Account

OLD = "a" * 64


class Recorder:
    """A run mode that records what rotate asks of it (the runtime's doors are tested
    against systemd in the lab; here only the decision is under test)."""

    def __init__(self, running: bool, env_file: str) -> None:
        self._running = running
        self.env_file = env_file
        self.restarts: list[tuple[str | None, str]] = []

    def running(self) -> bool:
        return self._running

    def restart(self, report, timeout: float = 0) -> None:  # noqa: ANN001
        # what the restart would find: the pending mark and the new file
        self.restarts.append((state.pending(), Path(self.env_file).read_text()))
        state.clear_pending()  # what a restart that answers does


@pytest.fixture
def home(tmp_path: Path) -> tuple[settings.Settings, Account]:
    s = settings.load(environ={"THEIAOS_PODMAN_HOME": str(tmp_path)}, admin={}, chosen={})
    acct = Account("theiaos", os.getuid(), os.getgid(), str(tmp_path), "/usr/sbin/nologin")
    Path(s.config_dir).mkdir()
    Path(s.env_file).write_text(f"# mine\nTHEIAOS_GATEWAY_TOKEN={OLD}\nOTHER=kept\n")
    os.chmod(s.env_file, 0o600)
    return s, acct


def _token_in(path: str) -> str | None:
    return envfile.value(Path(path).read_text())


def test_a_running_gateway_restarts_onto_the_new_token(
        home: tuple[settings.Settings, Account]) -> None:
    s, acct = home
    rt = Recorder(True, s.env_file)
    said: list[str] = []
    token = tokens.rotate(s, acct, said.append, rt)
    assert token != OLD and _token_in(s.env_file) == token
    [(pending, seen)] = rt.restarts
    assert pending == "token rotated", "the restart must start with the rotation pending"
    assert token in seen and "OTHER=kept" in seen and seen.startswith("# mine\n")
    assert state.pending() is None
    assert stat.S_IMODE(os.stat(s.env_file).st_mode) == 0o600
    assert said[-1] == "the gateway answers, started with the new token"
    assert all(token not in line for line in said), "the token is printed only when asked"


def test_a_stopped_gateway_is_left_stopped_and_nothing_stays_pending(
        home: tuple[settings.Settings, Account]) -> None:
    s, acct = home
    rt = Recorder(False, s.env_file)
    said: list[str] = []
    token = tokens.rotate(s, acct, said.append, rt)
    assert rt.restarts == [] and state.pending() is None
    assert _token_in(s.env_file) == token
    assert "uses the new token when it starts" in said[-1]


def test_a_restart_that_fails_leaves_the_rotation_pending(
        home: tuple[settings.Settings, Account]) -> None:
    s, acct = home

    class Fails(Recorder):
        def restart(self, report, timeout: float = 0) -> None:  # noqa: ANN001
            raise RuntimeError("theiaos.service failed")

    with pytest.raises(RuntimeError):
        tokens.rotate(s, acct, lambda _: None, Fails(True, s.env_file))
    assert state.pending() == "token rotated", "the next start must finish the rotation"
    assert _token_in(s.env_file) != OLD
