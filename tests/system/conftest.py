"""The installed package in a booted lab, shared by the system test modules: each
module gets its own lab (module scope), stopped by PID when the module ends."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

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


#: Power cycles per lab in the readiness tests (make check; `make soak` runs more).
POWER_CYCLES = int(os.environ.get("THEIAOS_POWER_CYCLES", "3"))
#: How long the unit may stay "activating" after the gateway first answers.
LATE_BOUND = 5.0
#: How long a power-off, and a stop of theiaos's user manager, may take (issue 18).
SHUTDOWN_BOUND = 15.0


class Readiness(NamedTuple):
    """One boot, timed inside the lab from the moment it is up (seconds)."""

    answer: float  # the first 200 from /healthz
    active: float  # systemd reports theiaos.service active
    poweroff: float = 0.0  # the power-off before this boot

    @property
    def late(self) -> float:
        return max(0.0, self.active - self.answer)


# Inside the lab, every 0.2 s: the gateway's first answer and the unit's first "active".
_READY_LOOP = """
t0=$(date +%s.%N); a=; u=; unit="--machine theiaos@ --user is-active theiaos.service"
while [ -z "$a" ] || [ -z "$u" ]; do
  if [ "$(($(date +%s) - ${t0%.*}))" -gt BOUND ]; then echo "$t0 ${a:-none} ${u:-none}"; exit 1; fi
  [ -z "$a" ] && curl -fsS -o /dev/null -m 1 http://127.0.0.1:PORT/healthz 2>/dev/null && a=$(date +%s.%N)
  [ -z "$u" ] && [ "$(systemctl $unit 2>/dev/null)" = active ] && u=$(date +%s.%N)
  sleep 0.2
done
echo "$t0 $a $u"
"""


def power_cycles(lab: Lab, count: int = POWER_CYCLES, port: int = 18789,
                 bound: int = 200) -> list[Readiness]:
    """Power the lab off and on ``count`` times; each time the gateway must answer and
    the unit turn active within ``bound`` s, and the unit may turn active at most
    LATE_BOUND s after the first answer. Reports every boot and the worst."""
    seen: list[Readiness] = []
    for n in range(count):
        off = lab.power_cycle()
        if off > SHUTDOWN_BOUND:
            pytest.fail(f"boot {n + 1}/{count}: the power-off took {off:.1f} s (bound "
                        f"{SHUTDOWN_BOUND:.0f} s):\n{_shutdown_journal(lab)}")
        script = _READY_LOOP.replace("PORT", str(port)).replace("BOUND", str(bound))
        proc = lab.run("sh", "-c", script, check=False, timeout=bound + 60)
        fields = proc.stdout.split()
        if proc.returncode != 0 or len(fields) != 3:
            pytest.fail(f"boot {n + 1}/{count}: not up within {bound} s ({proc.stdout.strip()}):\n"
                        f"{_boot_journal(lab)}")
        t0, a, u = map(float, fields)
        seen.append(Readiness(a - t0, u - t0, off))
        if seen[-1].late > LATE_BOUND:
            pytest.fail(f"boot {n + 1}/{count}: the gateway answered {seen[-1].answer:.1f} s after "
                        f"boot but theiaos.service turned active only {seen[-1].late:.1f} s "
                        f"later:\n{_boot_journal(lab)}")
    worst = max(seen, key=lambda r: r.late)
    report = (f"{count} power cycles: power-off took " + ", ".join(f"{r.poweroff:.1f}" for r in seen)
              + " s; answers after " + ", ".join(f"{r.answer:.1f}" for r in seen)
              + f" s; worst: active {worst.late:.2f} s after the first answer")
    print(report)
    warnings.warn(report, stacklevel=2)  # in the summary of every run (-ra)
    return seen


def _shutdown_journal(lab: Lab) -> str:
    """The previous boot's last lines (the lab's journal is persistent)."""
    return lab.run("sh", "-c", "journalctl -b -1 -o short-precise --no-pager | grep -v 'GET /healthz' "
                   "| tail -n 60", check=False).stdout


#: What an unclean stop leaves in the journal: systemd's and Podman's SIGKILLs, timeouts.
_UNCLEAN = ("SIGKILL", "timed out", "resorting to")


#: What the stand-in gateway logs when its SIGTERM reaches it (tests/image/gateway_stub.py).
STUB_SIGTERM = "[gateway] received signal 15, shutting down"


def stop_user_manager(lab: Lab, user: str = "theiaos", port: int = 18789,
                      says: str | None = STUB_SIGTERM) -> float:
    """Stop ``user``'s user manager with the gateway running, as every shutdown does;
    it must end within SHUTDOWN_BOUND with nothing killed and nothing left in the
    account's cgroup. Then start it again (lingering) and wait for the gateway to answer.
    ``says``: the gateway's line for a SIGTERM it handled (None: the real gateway's
    is not known; Podman's "resorting to SIGKILL" shows one it did not handle).
    Returns the stop's duration."""
    import time

    uid = lab.account(user).uid
    since = lab.run("date", "+%Y-%m-%d %H:%M:%S.%N").stdout.strip()[:26]
    t0 = time.monotonic()
    lab.run("systemctl", "stop", f"user@{uid}.service", timeout=200)
    took = time.monotonic() - t0
    journal = lab.run("journalctl", "--since", since, "-o", "short-precise", "--no-pager",
                      check=False).stdout
    lines = [ln for ln in journal.splitlines() if "GET /healthz" not in ln]
    # What the manager ran (the account's login sessions are scopes beside it, not in it).
    mine = f"/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service"
    left = lab.run("sh", "-c", f"[ ! -d {mine} ] || find {mine} -name cgroup.procs -exec cat {{}} +",
                   check=False).stdout.split()
    unclean = [ln for ln in lines if any(w in ln for w in _UNCLEAN)]
    assert took < SHUTDOWN_BOUND and not unclean and not left, (
        f"stopping user@{uid}.service took {took:.1f} s (bound {SHUTDOWN_BOUND:.0f} s); "
        f"left in its cgroup: {left}; unclean:\n" + "\n".join(unclean or lines[-60:]))
    assert says is None or any(says in ln for ln in lines), "\n".join(lines[-60:])
    lab.run("systemctl", "start", f"user@{uid}.service", timeout=120)
    deadline = time.monotonic() + 120
    while lab.run("curl", "-fsS", "-o", "/dev/null", "-m", "2", f"http://127.0.0.1:{port}/healthz",
                  check=False).returncode != 0:
        assert time.monotonic() < deadline, "the gateway did not come back with its user manager"
        time.sleep(0.5)
    print(f"stopping user@{uid}.service with the gateway running: {took:.1f} s")
    return took


def _boot_journal(lab: Lab) -> str:
    return lab.run("sh", "-c", "journalctl -b -o short-precise --no-pager | grep -v 'GET /healthz' "
                   "| grep -i -e theiaos -e notify -e podman | tail -n 120", check=False).stdout


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


@contextmanager
def lab_with_package(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Lab, str]]:
    """A booted lab with the built .deb installed by apt (module scope: stopped by PID
    when the module ends); the lab and apt's output."""
    deb = os.environ.get("THEIAOS_DEB")
    if not deb or not Path(deb).is_file():
        pytest.fail("THEIAOS_DEB must name the built .deb: run `make check`")
    for port in (18789, 18790):
        assert port_free(port), f"127.0.0.1:{port} is busy on the host (the lab shares it)"
    with Lab(tmp_path_factory.mktemp(name)) as lab:
        lab.put(Path(deb), DEB_IN_LAB)
        proc = lab.run("apt-get", "install", "-y", DEB_IN_LAB, check=False,
                       timeout=600, env={"DEBIAN_FRONTEND": "noninteractive"})
        install = proc.stdout + proc.stderr
        assert proc.returncode == 0, install
        yield lab, install


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    with lab_with_package(tmp_path_factory, "lab") as (lab, install):
        build_test_image(lab, "theiaos")
        start = lab.run("theiaosctl", "start", check=False, timeout=400)
        assert start.returncode == 0, start.stdout + start.stderr
        yield Installed(lab, install, start.stdout + start.stderr)


