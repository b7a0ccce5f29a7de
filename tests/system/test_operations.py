"""The gateway's life after install, in one lab (tests in order): a hardened container,
a unit that is active only when the gateway answers (Quadlet Notify=healthy), image
updates that roll back by themselves, Podman's auto-update, and backup and restore onto
a host where the package was just installed again."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import time
from collections.abc import Iterator

import pytest

from ..lab import Lab
from . import trust
from .conftest import DEB_IN_LAB, HOME, Installed, http_get, lab_only

pytestmark = lab_only

ADMIN = "/etc/theiaos/podman.env"
SYSTEMCTL = ("systemctl", "--machine", "theiaos@", "--user")


@pytest.fixture(scope="module")
def lab(installed: Installed) -> Iterator[Lab]:
    trust.install_snapshot(installed.lab)
    yield installed.lab


def ctl(lab: Lab, *args: str, timeout: float = 400) -> tuple[int, str]:
    proc = lab.run("theiaosctl", *args, check=False, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def image_id(lab: Lab, ref: str = "localhost/theiaos:local") -> str:
    return lab.run_as("theiaos", "podman", "image", "inspect", "--format", "{{.Id}}", ref,
                      check=False).stdout.strip()


def running_image(lab: Lab) -> str:
    return lab.run_as("theiaos", "podman", "inspect", "--format", "{{.Image}}", "theiaos",
                      check=False).stdout.strip()


def build(lab: Lab, name: str, lines: str, tag: str = "") -> str:
    """An image FROM the stand-in, as theiaos; saved to /var/tmp/NAME.tar unless tagged."""
    ctx = f"/var/tmp/ctx-{name}"
    lab.run("sh", "-ec", f"mkdir -p {ctx} && printf 'FROM localhost/theiaos:local\\n{lines}' "
            f"> {ctx}/Dockerfile && chmod -R a+rX {ctx}")
    ref = tag or f"localhost/test:{name}"
    lab.run_as("theiaos", "podman", "build", "-q", "--format", "docker", "-t", ref, ctx,
               timeout=300)
    if not tag:
        lab.run_as("theiaos", "podman", "save", "-o", f"/var/tmp/{name}.tar", ref)
    return image_id(lab, ref)


def set_admin(lab: Lab, text: str) -> None:
    lab.host_path(ADMIN).write_text(text)
    code, out = ctl(lab, "setup")
    assert code == 0, out


def test_the_container_is_hardened(lab: Lab) -> None:
    info = json.loads(lab.run_as("theiaos", "podman", "inspect", "theiaos").stdout)[0]
    host = info["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert "no-new-privileges" in " ".join(host.get("SecurityOpt") or [])
    # every capability of Podman's default set is dropped
    assert {"CAP_CHOWN", "CAP_KILL", "CAP_SETUID", "CAP_NET_BIND_SERVICE"} <= set(host["CapDrop"])
    assert (info.get("EffectiveCaps") or []) == []
    writes = lab.run_as("theiaos", "podman", "exec", "theiaos", "python3", "-c",
                        "import os\nfor p in ('/app/x', '/tmp/x', '/home/node/.theiaos/x'):\n"
                        "    try: open(p, 'w').write('x'); os.remove(p); print(p, 'ok')\n"
                        "    except OSError as e: print(p, e.strerror)").stdout
    assert "/app/x Read-only file system" in writes, writes
    assert "/tmp/x ok" in writes and "/home/node/.theiaos/x ok" in writes, writes
    code, out = ctl(lab, "status")
    assert code == 0 and "  state:     running" in out, out
    code, out = ctl(lab, "doctor")
    assert code == 0 and "hardening: limits:" in out and "read-only root: yes" in out, out


def test_a_gateway_that_never_answers_is_a_failed_start_not_an_active_unit(lab: Lab) -> None:
    """The unit is active only once the health check passes (its ExecStartPost)."""
    good = image_id(lab)
    set_admin(lab, "THEIAOS_PODMAN_START_TIMEOUT=15\n")
    build(lab, "unhealthy", "ENV THEIAOS_STUB_BROKEN=unhealthy\\n", tag="localhost/theiaos:local")
    try:
        began = time.monotonic()
        code, out = ctl(lab, "restart")
        took = time.monotonic() - began
        assert code == 1 and "does not answer" in out, out
        assert "did not answer its health check within 15 s: stopping it" in out, out
        # The start bound (15 s), not the 300 s default: the start-post check stops the
        # container itself (`podman stop -t 10`), never systemd's timeout by signals.
        assert took < 15 + 20, f"{took:.0f} s:\n{out}"
        active = lab.run(*SYSTEMCTL, "is-active", "theiaos.service", check=False).stdout
        assert active.strip() != "active", active
        code, out = ctl(lab, "status")
        assert code == 3 and re.search(r"state:     (starting|failed|stopped)", out), out
    finally:
        lab.run_as("theiaos", "podman", "tag", good, "localhost/theiaos:local")
        set_admin(lab, "")
    assert http_get("/healthz") == 200


def test_a_broken_image_rolls_back_by_itself(lab: Lab) -> None:
    before = image_id(lab)
    broken = build(lab, "broken", "ENV THEIAOS_STUB_BROKEN=exit\\n")
    code, out = ctl(lab, "image", "load", "/var/tmp/broken.tar")
    assert code == 1 and "rolled back" in out, out
    assert "broken on purpose" in out  # why: the new container's own last lines
    assert "--no-rollback" in out
    assert image_id(lab) == before and running_image(lab) == before != broken
    assert http_get("/healthz") == 200
    code, out = ctl(lab, "image", "list")
    assert code == 0 and re.search(r"localhost/theiaos:local\s+" + before[:12] + r".*current", out), out


#: What a rollback may add to the start bound: the load, the old container's stop, the
#: broken one's stop (`podman stop -t 10`, then SIGKILL: `hang` ignores SIGTERM) and the
#: previous image's start (images.py).
ROLLBACK_MARGIN = 30
SHORT_START = 15


# tests/image/gateway_stub.py: `unhealthy` answers 500, `slow` never answers (its probe
# times out), `hang` never listens, ignores SIGTERM and its probe hangs.
@pytest.mark.parametrize("broken", ["unhealthy", "slow", "hang"])
def test_an_image_that_never_answers_rolls_back_before_the_verb_returns(lab: Lab, broken: str) -> None:
    """The previous image answers when `image load` returns 1, within a stated bound."""
    before = image_id(lab)
    set_admin(lab, f"THEIAOS_PODMAN_START_TIMEOUT={SHORT_START}\n")
    try:
        new = build(lab, broken, f"ENV THEIAOS_STUB_BROKEN={broken}\n")
        began = time.monotonic()
        code, out = ctl(lab, "image", "load", f"/var/tmp/{broken}.tar")
        took = time.monotonic() - began
        answers = http_get("/healthz") == 200  # at once: before anything else runs
        assert code == 1 and "rolled back" in out, out
        assert f"did not answer within {SHORT_START} s" in out, out  # and why
        assert answers, out
        assert took < SHORT_START + ROLLBACK_MARGIN, f"{took:.0f} s:\n{out}"
        assert image_id(lab) == before == running_image(lab) != new
        print(f"{broken}: rolled back in {took:.1f} s")
    finally:
        set_admin(lab, "")


def test_a_good_image_switches_and_rollback_goes_back(lab: Lab) -> None:
    before = image_id(lab)
    new = build(lab, "good", "LABEL rev=good\\n")
    code, out = ctl(lab, "image", "load", "/var/tmp/good.tar")
    assert code == 0 and "restarted" in out, out
    assert image_id(lab) == new == running_image(lab) and http_get("/healthz") == 200
    assert image_id(lab, "localhost/theiaos:previous") == before
    code, out = ctl(lab, "image", "list")
    assert re.search(before[:12] + r".*previous", out) and re.search(new[:12] + r".*current", out), out
    code, out = ctl(lab, "image", "rollback")
    assert code == 0 and "restarted" in out, out
    assert image_id(lab) == before == running_image(lab) and http_get("/healthz") == 200
    assert image_id(lab, "localhost/theiaos:previous") == new  # a second rollback returns


def test_podmans_auto_update_restarts_onto_a_new_image_and_rolls_back_a_broken_one(lab: Lab) -> None:
    set_admin(lab, f"THEIAOS_PODMAN_AUTO_UPDATE=local\nTHEIAOS_PODMAN_START_TIMEOUT={SHORT_START}\n")
    try:
        quadlet = lab.host_path(f"{HOME}/.config/containers/systemd/theiaos.container").read_text()
        assert "AutoUpdate=local" in quadlet
        enabled = lab.run(*SYSTEMCTL, "is-enabled", "podman-auto-update.timer").stdout.strip()
        assert enabled == "enabled"
        good = build(lab, "auto", "LABEL rev=auto\\n", tag="localhost/theiaos:local")
        out = lab.run_as("theiaos", "podman", "auto-update", timeout=300).stdout
        assert "true" in out and running_image(lab) == good, out  # updated
        assert http_get("/healthz") == 200
        # Each broken kind fails its start by itself; Podman then rolls back.
        for broken in ("exit", "unhealthy", "slow", "hang"):
            build(lab, f"auto-{broken}", f"ENV THEIAOS_STUB_BROKEN={broken}\\n",
                  tag="localhost/theiaos:local")
            began = time.monotonic()
            proc = lab.run_as("theiaos", "podman", "auto-update", check=False, timeout=300)
            took = time.monotonic() - began
            answers = http_get("/healthz") == 200
            assert "rolled back" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
            assert answers and running_image(lab) == good, broken
            assert took < SHORT_START + ROLLBACK_MARGIN, f"{broken}: {took:.0f} s"
            print(f"auto-update {broken}: rolled back in {took:.1f} s")
    finally:
        set_admin(lab, "")
    disabled = lab.run(*SYSTEMCTL, "is-enabled", "podman-auto-update.timer", check=False).stdout
    assert disabled.strip() == "disabled"


def _state_files(lab: Lab) -> dict[str, tuple[str, int]]:
    out = {}
    for path in sorted(lab.host_path(f"{HOME}/.theiaos").rglob("*")):
        rel = str(path.relative_to(lab.host_path(HOME)))
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
        out[rel] = (digest, stat.S_IMODE(st.st_mode))
    return out


def test_a_hostile_archive_changes_nothing(lab: Lab) -> None:
    lab.run("python3", "-c", "import io, tarfile\n"
            "with tarfile.open('/var/tmp/evil.tgz', 'w:gz') as t:\n"
            "    i = tarfile.TarInfo('/etc/cron.d/evil'); i.size = 1\n"
            "    t.addfile(i, io.BytesIO(b'x'))\n")
    before, running = trust.host(lab), trust.gateway(lab)
    code, out = ctl(lab, "restore", "/var/tmp/evil.tgz")
    assert code == 1 and "refusing the archive" in out and "Traceback" not in out, out
    assert trust.diff(before, trust.host(lab)) == [] and trust.gateway(lab) == running


def test_backup_purge_userdel_install_restore(lab: Lab) -> None:
    """The main case: the state onto a host where the package was just installed."""
    lab.run_as("theiaos", "sh", "-c", f"mkdir -p {HOME}/.theiaos/agents/a && echo s > "
               f"{HOME}/.theiaos/agents/a/session && chmod 640 {HOME}/.theiaos/agents/a/session")
    token = trust.token(lab)
    files_before = _state_files(lab)
    code, out = ctl(lab, "backup", "/root/gateway.tgz", "--with-image")
    assert code == 0 and "backup written to /root/gateway.tgz (mode 0600)" in out, out
    assert stat.S_IMODE(lab.host_path("/root/gateway.tgz").stat().st_mode) == 0o600
    assert http_get("/healthz") == 200  # brought back after the copy
    old_uid = lab.account("theiaos").uid
    lab.run("apt-get", "-y", "purge", "theiaos-podman", timeout=600,
            env={"DEBIAN_FRONTEND": "noninteractive"})
    lab.run("sh", "-c", f"for i in $(seq 60); do pgrep -u {old_uid} >/dev/null || exit 0; "
            "sleep 1; done; exit 1", timeout=90)
    lab.run("userdel", "--remove", "theiaos", timeout=60)
    assert not lab.host_path(HOME).exists()
    lab.run("useradd", "--system", "--no-create-home", "placeholder")  # shift the next uid
    lab.run("apt-get", "-y", "install", DEB_IN_LAB, timeout=600,
            env={"DEBIAN_FRONTEND": "noninteractive"})
    code, out = ctl(lab, "restore", "/root/gateway.tgz", timeout=600)
    assert code == 0 and "archive checked" in out and "Setup complete" in out, out
    assert trust.token(lab) == token and http_get("/", token) == 200
    assert _state_files(lab) == files_before
    uid = lab.account("theiaos").uid
    assert all(p.lstat().st_uid == uid for p in lab.host_path(f"{HOME}/.theiaos").rglob("*"))
