"""doctor's checks that read only the gateway's files and the package's state, on real
files under tmp_path: each verdict, and the fix it names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from theiaos_pkg import doctor, settings, state
from theiaos_pkg.account import Account

TOKEN = "a" * 64


@pytest.fixture
def home(tmp_path: Path) -> tuple[settings.Settings, Account]:
    s = settings.load(environ={"THEIAOS_PODMAN_HOME": str(tmp_path)}, admin={}, chosen={})
    acct = Account("theiaos", os.getuid(), os.getgid(), str(tmp_path), "/usr/sbin/nologin")
    Path(s.config_dir).mkdir()
    Path(s.workspace_dir).mkdir(parents=True, exist_ok=True)
    Path(s.env_file).write_text(f"THEIAOS_GATEWAY_TOKEN={TOKEN}\n")
    Path(s.config_file).write_text(json.dumps({"gateway": {"mode": "local"}}))
    return s, acct


def test_config_mode(home: tuple[settings.Settings, Account]) -> None:
    s, acct = home
    assert doctor._config_mode(s, acct).ok
    Path(s.config_file).write_text(json.dumps({"gateway": {"mode": "remote"}}))
    got = doctor._config_mode(s, acct)
    assert not got.ok and "gateway.mode is 'remote'" in got.detail and s.config_file in got.fix
    Path(s.config_file).write_text("{not json")
    assert not doctor._config_mode(s, acct).ok
    Path(s.config_file).unlink()
    got = doctor._config_mode(s, acct)
    assert not got.ok and "missing" in got.detail and got.fix == "sudo theiaosctl setup"


def test_token_missing_or_differing_from_the_wizards(home: tuple[settings.Settings, Account]) -> None:
    s, acct = home
    Path(s.config_file).write_text(json.dumps({"gateway": {"mode": "local",
                                                           "auth": {"token": "b" * 64}}}))
    got = doctor._token(s, acct)
    assert not got.ok and "differs from" in got.detail and "remove gateway.auth.token" in got.fix
    assert TOKEN not in got.detail + got.fix and "b" * 64 not in got.detail + got.fix
    Path(s.env_file).write_text("# no token\n")
    got = doctor._token(s, acct)
    assert not got.ok and "THEIAOS_GATEWAY_TOKEN is missing" in got.detail


def test_config_owner(home: tuple[settings.Settings, Account]) -> None:
    s, acct = home
    assert doctor._config_owner(s, acct).ok
    other = acct._replace(uid=acct.uid + 4242, name="someone")
    got = doctor._config_owner(s, other)
    assert not got.ok and f"{s.env_file} is not owned by someone" in got.detail
    assert got.fix == f"sudo chown -R someone: {s.config_dir} {s.workspace_dir}"
    Path(s.env_file).unlink()
    assert f"{s.env_file} missing" in doctor._config_owner(s, acct).detail


def test_pending_and_launch_script(home: tuple[settings.Settings, Account]) -> None:
    s, acct = home
    assert doctor._pending(s, acct).ok
    state.mark_pending("token rotated")
    got = doctor._pending(s, acct)
    assert not got.ok and "token rotated" in got.detail and got.fix == "sudo theiaosctl restart"
    script = Path(acct.home) / "run-theiaos-podman.sh"
    assert not doctor._launch_script(s, acct).ok
    script.write_text("#!/bin/sh\n")
    assert not doctor._launch_script(s, acct).ok  # not executable
    script.chmod(0o755)
    assert doctor._launch_script(s, acct).ok
