"""Attack tier: what the service account, or the gateway container (which mounts
~/.theiaos read-write), can plant for root to trip over. Each attack is refused with
one line, root never blocks (every command runs under a timeout), nothing outside the
home changes owner, mode or content, and nothing is lost. Also: no child of
theiaosctl holds root's terminal, the token is in no inspect, ps, journal or unit
property, and two setups at once end in one consistent state."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from ..lab import Lab
from . import trust
from .conftest import DEB_IN_LAB, HOME, Installed, http_get, lab_only

pytestmark = lab_only

ENV = f"{HOME}/.theiaos/.env"
CONFIG = f"{HOME}/.theiaos/theiaos.json"
QUICK = 30  # seconds: a verb that takes longer is taken to block


@pytest.fixture(scope="module")
def lab(installed: Installed) -> Iterator[Lab]:
    trust.install_snapshot(installed.lab)
    yield installed.lab


def _outside_home(snap: dict[str, object]) -> dict[str, object]:
    return {p: v for p, v in snap.items() if not p.startswith(HOME)}


def _as_account(lab: Lab, script: str) -> None:
    lab.run_as("theiaos", "sh", "-ec", script)


def _refused(lab: Lab, argv: tuple[str, ...], expect: str) -> None:
    try:
        proc = lab.run(*argv, check=False, timeout=QUICK)
    except Exception as exc:  # the lab's timeout: root blocked
        raise AssertionError(f"{' '.join(argv)} blocked: {exc}") from None
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and expect in out and "Traceback" not in out, out


def _attack(lab: Lab, plant: str, restore: str, expect: str,
            verbs: tuple[tuple[str, ...], ...]) -> None:
    before = trust.host(lab)
    running = trust.gateway(lab)
    _as_account(lab, plant)
    try:
        planted = trust.host(lab)
        for argv in verbs:
            _refused(lab, argv, expect)
        after = trust.host(lab)
        assert trust.diff(planted, after) == []  # root changed nothing, home included
    finally:
        _as_account(lab, restore)
    assert trust.diff(_outside_home(before), _outside_home(trust.host(lab))) == []
    assert trust.gateway(lab) == running and http_get("/healthz") == 200


ROOT_VERBS = (("theiaosctl", "setup"), ("theiaosctl", "token", "show"),
              ("theiaosctl", "doctor"), ("theiaosctl", "token", "rotate"))


def test_a_fifo_in_place_of_env_blocks_nothing(lab: Lab) -> None:
    _attack(lab, f"mv {ENV} {ENV}.keep && mkfifo -m 600 {ENV}",
            f"rm {ENV} && mv {ENV}.keep {ENV}", f"{ENV} is a FIFO (named pipe)", ROOT_VERBS)


def test_a_fifo_planted_from_inside_the_container_blocks_nothing(lab: Lab) -> None:
    inside = "/home/node/.theiaos/theiaos.json"
    before = trust.host(lab)
    lab.run_as("theiaos", "podman", "exec", "theiaos", "python3", "-c",
               f"import os; os.rename({inside!r}, {inside + '.keep'!r}); os.mkfifo({inside!r})")
    try:
        for argv in (("theiaosctl", "setup"), ("theiaosctl", "doctor")):
            _refused(lab, argv, f"{CONFIG} is a FIFO (named pipe)")
        # apt is not wedged either: the postinst refuses at once, nothing written
        proc = lab.run("apt-get", "install", "-y", "--reinstall", DEB_IN_LAB,
                       check=False, timeout=120, env={"DEBIAN_FRONTEND": "noninteractive"})
        assert proc.returncode != 0 and "is a FIFO" in proc.stdout + proc.stderr
    finally:
        lab.run_as("theiaos", "podman", "exec", "theiaos", "python3", "-c",
                   f"import os; os.remove({inside!r}); os.rename({inside + '.keep'!r}, {inside!r})")
    lab.run("dpkg", "--configure", "-a", timeout=300)
    assert trust.diff(_outside_home(before), _outside_home(trust.host(lab))) == []
    assert http_get("/healthz") == 200


def test_a_symlink_to_shadow_is_not_followed(lab: Lab) -> None:
    _attack(lab, f"mv {ENV} {ENV}.keep && ln -s /etc/shadow {ENV}",
            f"rm {ENV} && mv {ENV}.keep {ENV}", f"{ENV} is a symlink", ROOT_VERBS)


def test_a_symlinked_unit_directory_is_not_followed(lab: Lab) -> None:
    unit_dir = f"{HOME}/.config/containers/systemd"
    _attack(lab, f"mv {unit_dir} {unit_dir}.keep && ln -s /etc/systemd/system {unit_dir}",
            f"rm {unit_dir} && mv {unit_dir}.keep {unit_dir}",
            "is a symlink not owned by root; refusing to follow it", (("theiaosctl", "setup"),))


def test_a_hardlink_to_shadow_is_not_read_or_written(lab: Lab) -> None:
    # With fs.protected_hardlinks=0 the account can link a file it does not own; root
    # makes the same link here (the host's sysctl is not the lab's to change).
    before = trust.host(lab)
    lab.run("sh", "-ec", f"mv {ENV} {ENV}.keep && ln /etc/shadow {ENV}")
    try:
        for argv in ROOT_VERBS:
            _refused(lab, argv, f"{ENV} has 2 hard links")
    finally:
        lab.run("sh", "-ec", f"rm {ENV} && mv {ENV}.keep {ENV}")
    assert trust.diff(before, trust.host(lab)) == []


def test_a_huge_sparse_config_is_not_read(lab: Lab) -> None:
    _attack(lab, f"mv {CONFIG} {CONFIG}.keep && truncate -s 100G {CONFIG}",
            f"rm {CONFIG} && mv {CONFIG}.keep {CONFIG}",
            f"{CONFIG} is 107374182400 bytes, over the limit", (("theiaosctl", "setup"),
                                                               ("theiaosctl", "doctor")))


def test_a_directory_in_place_of_a_file(lab: Lab) -> None:
    _attack(lab, f"mv {ENV} {ENV}.keep && mkdir {ENV}", f"rmdir {ENV} && mv {ENV}.keep {ENV}",
            f"{ENV} is a directory, not a regular file", ROOT_VERBS)


def test_no_child_of_theiaosctl_holds_roots_terminal(lab: Lab) -> None:
    """theiaosctl runs under a terminal (script(1)); while its `podman build` runs as the
    account, no process of the account has a terminal or one of root's descriptors."""
    lab.run("sh", "-ec", "mkdir -p /var/tmp/slow && printf 'FROM localhost/theiaos:local\\n"
            "RUN [\"python3\", \"-c\", \"import time; time.sleep(12)\"]\\n' "
            "> /var/tmp/slow/Dockerfile && chmod -R a+rX /var/tmp/slow")
    lab.run("sh", "-c", "setsid python3 -c 'import pty; pty.spawn([\"theiaosctl\", \"image\", "
            "\"build\", \"/var/tmp/slow\"])' </dev/null >/var/tmp/slow/log 2>&1 &")
    scan = ("import os, json\n"
            "me = os.getuid(); out = []\n"
            "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try:\n"
            "        if os.stat(f'/proc/{pid}').st_uid != me: continue\n"
            "        tty = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[4])\n"
            "        fds = [os.readlink(f'/proc/{pid}/fd/{n}') for n in (0, 1, 2)]\n"
            "        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ')\n"
            "    except OSError: continue\n"
            "    out.append([cmd.decode(errors='replace'), tty, fds])\n"
            "print(json.dumps(out))\n")
    seen_build = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not seen_build:
        procs = json.loads(lab.run_as("theiaos", "python3", "-c", scan).stdout)
        seen_build = any(cmd.startswith("podman build") for cmd, _tty, _fds in procs)
        for cmd, tty, fds in procs:
            assert tty == 0, (cmd, tty, fds)
            assert not any(re.match(r"/dev/(pts/|tty)", fd) for fd in fds), (cmd, fds)
        time.sleep(0.3)
    assert seen_build, "the build's podman was never seen"
    lab.run("sh", "-c", "for i in $(seq 120); do grep -q 'restarted\\|unchanged\\|failed' "
            "/var/tmp/slow/log && exit 0; sleep 1; done; exit 1", timeout=150)
    assert http_get("/healthz") == 200


def test_the_token_is_in_no_inspect_ps_journal_unit_or_database(lab: Lab) -> None:
    tok = trust.token(lab)
    uid = lab.account("theiaos").uid
    inspect = lab.run_as("theiaos", "podman", "inspect", "theiaos").stdout
    assert "theiaos-gateway-token" in inspect and tok not in inspect
    cmdlines = lab.run("python3", "-c", "import glob\nfor p in glob.glob('/proc/[0-9]*/cmdline'):\n"
                       "    try: print(open(p, 'rb').read().replace(b'\\0', b' ').decode())\n"
                       "    except OSError: pass\n").stdout
    assert "dist/index.js gateway" in cmdlines and tok not in cmdlines
    assert tok not in lab.run("journalctl", "-o", "cat", "--no-pager").stdout
    show = lab.run("systemctl", "--machine", "theiaos@", "--user", "show", "theiaos.service").stdout
    assert "ExecStart" in show and tok not in show
    # Where Podman keeps it: its secret store, and the OCI runtime spec it hands to the
    # runtime (type=env secrets are process environment; Podman writes them into the
    # bundle's config.json, in the account's 0700 storage). Not its database.
    hits = lab.run("grep", "-rlF", "--", tok, f"{HOME}/.local/share/containers",
                   f"/run/user/{uid}", check=False).stdout.split()
    assert hits, "the token reached the container somehow: expected the secret store"
    # A health check running at that moment is an exec session: Podman keeps its process
    # spec (the container's environment) in the container's userdata while it runs.
    for path in hits:
        assert path.endswith(("/secrets/filedriver/secretsdata.json", "/userdata/config.json",
                              "/config.json")) or re.search(r"/userdata/[0-9a-f]{64}/exec-process-\d+$",
                                                             path), hits
    assert not any(p.endswith(("db.sql", "bolt_state.db")) for p in hits), hits


# Waits (bounded) until somebody holds the package's operation lock.
HOLDS_LOCK = """
import fcntl, os, sys, time
for _ in range(3000):
    try:
        fd = os.open("/run/theiaos-podman.lock", os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        time.sleep(0.01)
        continue
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    time.sleep(0.01)
sys.exit("nobody took the operation lock within 30 s")
"""


def test_two_setups_at_once_end_in_one_consistent_state(lab: Lab) -> None:
    env = {"THEIAOS_PODMAN_GATEWAY_HOST_PORT": "18791"}
    first = subprocess.Popen([*lab._nsenter(), "env", *(f"{k}={v}" for k, v in env.items()),
                              "theiaosctl", "setup"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    # The second starts once the first holds the lock (a setup that changes nothing
    # takes less than a tenth of a second: started side by side, one may be done before
    # the other begins).
    lab.run("python3", "-c", HOLDS_LOCK, timeout=60)
    second = lab.run("theiaosctl", "setup", check=False, timeout=400)
    out1, _ = first.communicate(timeout=400)
    out2 = second.stdout + second.stderr
    assert first.returncode == 0 and second.returncode == 0, out1 + out2
    assert "waiting for PID" in out1 + out2  # one waited for the other's lock
    port = int(re.findall(r"PublishPort=127\.0\.0\.1:(\d+):18789",
                          lab.host_path(trust.QUADLET).read_text())[0])
    trust.converged(lab, port)
    lab.run("theiaosctl", "setup", timeout=400)  # back to the defaults
    trust.converged(lab)
