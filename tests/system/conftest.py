"""The installed package in a booted lab, shared by the system test modules: each
module gets its own lab (module scope), stopped by PID when the module ends."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from theiaos_pkg.envfile import value as token_of

from ..lab import Lab, build_test_image

lab_only = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (systemd-nspawn, nsenter)"),
    pytest.mark.skipif(shutil.which("systemd-nspawn", path="/usr/sbin:/usr/bin") is None,
                       reason="systemd-nspawn not found (make deps)"),
]

DEB_IN_LAB = "/var/tmp/theiaos-podman.deb"
HOME = "/home/theiaos"


def http_get(path: str, token: str | None = None, port: int = 18789) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        return conn.getresponse().status
    finally:
        conn.close()


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # SO_REUSEADDR as servers set it: a TIME_WAIT left by an earlier probe is no user
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Installed:
    def __init__(self, lab: Lab, install_output: str, start_output: str) -> None:
        self.lab = lab
        self.install_output = install_output
        self.start_output = start_output
        self.acct = lab.account("theiaos")

    def path(self, path: str) -> Path:
        return self.lab.host_path(path)

    def token(self) -> str:
        tok = token_of(self.path(f"{HOME}/.theiaos/.env").read_text())
        assert tok
        return tok

    def ctl(self, *args: str, check: bool = False) -> tuple[int, str]:
        proc = self.lab.run("theiaosctl", *args, check=check, timeout=400)
        return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    deb = os.environ.get("THEIAOS_DEB")
    if not deb or not Path(deb).is_file():
        pytest.fail("THEIAOS_DEB must name the built .deb: run `make check`")
    for port in (18789, 18790):
        assert port_free(port), f"127.0.0.1:{port} is busy on the host (the lab shares it)"
    with Lab(tmp_path_factory.mktemp("lab")) as lab:
        lab.put(Path(deb), DEB_IN_LAB)
        proc = lab.run("apt-get", "install", "-y", DEB_IN_LAB, check=False,
                       timeout=600, env={"DEBIAN_FRONTEND": "noninteractive"})
        install = proc.stdout + proc.stderr
        assert proc.returncode == 0, install
        build_test_image(lab, "theiaos")
        start = lab.run("theiaosctl", "start", check=False, timeout=400)
        assert start.returncode == 0, start.stdout + start.stderr
        yield Installed(lab, install, start.stdout + start.stderr)


