"""Crash tier: after a settings change, `theiaosctl setup`, `dpkg --configure` and
`token rotate` are killed with SIGKILL (their whole process group, as a power cut
would) at deterministic points between steps and after timed delays. After each, one
normal rerun converges: the running container is the one the unit on disk describes,
the gateway uses the token in .env, theiaos.json is valid, one subuid and one subgid
line, no temporary file left, nothing pending, and the gateway answers (trust.converged).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..lab import Lab
from . import trust
from .conftest import DEB_IN_LAB, Installed, lab_only

pytestmark = lab_only

DRIVER = Path(__file__).resolve().parent / "crash_driver.py"
DRIVER_IN_LAB = "/usr/local/lib/theiaos-test-crash-driver.py"
ADMIN = "/etc/theiaos/podman.env"
PORTS = (18789, 18791)

# Lines setup prints (with --debug: also every command it runs) between its steps.
SETUP_POINTS = [r"^\+ podman --version", r"^account: ", r"^subids: ", r"^gateway-config: ",
                r"^quadlet: ", r"^launch-script: ", r"^linger: ",
                r"^\+ \[theiaos\] podman image inspect", r"^image: ", r"^service: "]
DELAYS = [0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]
DPKG_POINTS = [r"quadlet: ", r"image: ", r"service: "]
ROTATE_POINTS = [r"^new token written"]


class Crasher:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.round = 0
        self.token = trust.token(lab)
        self.kills = 0

    def next_port(self) -> int:
        """Change a setting the gateway must pick up: its published port, back and forth."""
        self.round += 1
        port = PORTS[self.round % 2]
        self.lab.host_path(ADMIN).write_text(f"THEIAOS_PODMAN_GATEWAY_HOST_PORT={port}\n")
        return port

    def kill(self, argv: list[str], at: str | None = None, after: float | None = None) -> str:
        how = ["--at", at] if at else ["--after", str(after)]
        proc = self.lab.run("python3", "-I", DRIVER_IN_LAB, *how, "--", *argv, timeout=600)
        got = json.loads(proc.stdout)
        self.kills += got["killed"]
        return str(got["output"])

    def rerun(self, argv: list[str], killed: str) -> str:
        proc = self.lab.run(*argv, check=False, timeout=600)
        context = f"--- killed run ---\n{killed}\n--- rerun ---\n{proc.stdout}{proc.stderr}"
        assert proc.returncode == 0, context
        return context


@pytest.fixture(scope="module")
def crasher(installed: Installed) -> Iterator[Crasher]:
    lab = installed.lab
    lab.run("mkdir", "-p", "/usr/local/lib")
    lab.put(DRIVER, DRIVER_IN_LAB, mode=0o755)
    c = Crasher(lab)
    yield c
    lab.host_path(ADMIN).write_text("")
    lab.run("theiaosctl", "setup", timeout=600)


@pytest.mark.parametrize("point", SETUP_POINTS)
def test_setup_killed_between_steps(crasher: Crasher, point: str) -> None:
    port = crasher.next_port()
    out = crasher.kill(["theiaosctl", "--debug", "setup"], at=point)
    context = crasher.rerun(["theiaosctl", "setup"], out)
    trust.converged(crasher.lab, port, context)
    assert trust.token(crasher.lab) == crasher.token, context


@pytest.mark.parametrize("delay", DELAYS)
def test_setup_killed_after_a_delay(crasher: Crasher, delay: float) -> None:
    port = crasher.next_port()
    out = crasher.kill(["theiaosctl", "--debug", "setup"], after=delay)
    context = crasher.rerun(["theiaosctl", "setup"], out)
    trust.converged(crasher.lab, port, context)
    assert trust.token(crasher.lab) == crasher.token


@pytest.mark.parametrize("how", [*DPKG_POINTS, 0.3, 1.0, 2.5])
def test_dpkg_configure_killed(crasher: Crasher, how: str | float) -> None:
    port = crasher.next_port()
    crasher.lab.run("dpkg", "--unpack", DEB_IN_LAB, timeout=300)
    argv = ["dpkg", "--configure", "theiaos-podman"]
    out = crasher.kill(argv, at=how) if isinstance(how, str) else crasher.kill(argv, after=how)
    context = crasher.rerun(["dpkg", "--configure", "-a"], out)
    trust.converged(crasher.lab, port, context)
    assert trust.token(crasher.lab) == crasher.token


@pytest.mark.parametrize("how", [*ROTATE_POINTS, 0.1, 0.4, 0.8, 1.5])
def test_token_rotate_killed(crasher: Crasher, how: str | float) -> None:
    argv = ["theiaosctl", "--debug", "token", "rotate"]
    out = crasher.kill(argv, at=how) if isinstance(how, str) else crasher.kill(argv, after=how)
    context = crasher.rerun(["theiaosctl", "setup"], out)
    port = PORTS[crasher.round % 2]
    trust.converged(crasher.lab, port, context)  # the gateway uses whatever token .env holds
    crasher.token = trust.token(crasher.lab)


def test_the_kills_happened(crasher: Crasher) -> None:
    """Most runs were really killed (a few timed ones may finish first)."""
    assert crasher.kills >= len(SETUP_POINTS) + len(DELAYS) // 2
