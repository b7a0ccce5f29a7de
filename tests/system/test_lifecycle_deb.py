"""The package lifecycle with apt in one booted lab, step by step (the tests run in
order and share the lab): install, reinstall, upgrade, remove, purge, install again
(under a policy-rc.d that forbids starting), then a power cycle."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..lab import Lab, build_test_image
from .conftest import HOME, POWER_CYCLES, http_get, lab_only, port_free, power_cycles, stop_user_manager

pytestmark = lab_only

DEB1, DEB2 = "/var/tmp/theiaos-podman-1.deb", "/var/tmp/theiaos-podman-2.deb"
RELEASED = "/var/tmp/theiaos-podman-released.deb"
ADMIN = "/etc/theiaos/podman.env"
# An admin's (or a provisioning tool's) edit: the releases up to 0.2.0 shipped ADMIN as a
# conffile, so that their upgrade prompted ("Configuration file ... Modified") and failed
# without a terminal.
EDIT = "THEIAOS_PODMAN_START_TIMEOUT=100\n"
QUADLET = f"{HOME}/.config/containers/systemd/theiaos.container"


class Box:
    """The lab and what the steps remember about it."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.token = ""
        self.cid = ""
        self.shipped: list[str] = []  # the files dpkg -L listed (not directories)

    def apt(self, *args: str) -> str:
        proc = self.lab.run("apt-get", "-y", *args, check=False, timeout=600,
                            env={"DEBIAN_FRONTEND": "noninteractive"})
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        return out

    def exists(self, path: str) -> bool:
        return self.lab.run("test", "-e", path, check=False).returncode == 0

    def read(self, path: str) -> str:
        return self.lab.run("cat", path).stdout

    def container_id(self) -> str:
        proc = self.lab.run_as("theiaos", "podman", "inspect", "--format", "{{.Id}}", "theiaos",
                               check=False)
        return proc.stdout.strip()

    def subid_lines(self) -> list[str]:
        return [ln for f in ("/etc/subuid", "/etc/subgid")
                for ln in self.read(f).splitlines() if ln.startswith("theiaos:")]

    def linger(self) -> bool:
        return self.exists("/var/lib/systemd/linger/theiaos")

    def survives_power_cycle(self, count: int = POWER_CYCLES) -> None:
        """Power the lab off and on ``count`` times: the gateway answers again with
        nobody touching it, and the unit turns active within LATE_BOUND s of its first
        answer (readiness a lost notify message cannot wedge)."""
        power_cycles(self.lab, count)
        proc = self.lab.run("theiaosctl", "status", check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert re.search(r"theiaos.service: active \(running\)", proc.stdout), proc.stdout

    def up(self) -> bool:
        try:
            return http_get("/healthz") == 200
        except OSError:
            return False


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    debs = [os.environ.get(v) for v in ("THEIAOS_DEB", "THEIAOS_DEB_NEXT", "THEIAOS_RELEASE_DEB")]
    if not all(debs):
        pytest.fail("THEIAOS_DEB, THEIAOS_DEB_NEXT and THEIAOS_RELEASE_DEB must name two builds "
                    "and the last release: run `make check`")
    assert port_free(18789), "127.0.0.1:18789 is busy on the host (the lab shares it)"
    with Lab(tmp_path_factory.mktemp("lifecycle-deb")) as lab:
        for src, dest in zip(debs, (DEB1, DEB2, RELEASED)):
            lab.put(Path(str(src)), dest)
        yield Box(lab)


def _version(box: Box) -> str:
    return box.lab.run("dpkg-query", "-W", "-f=${Version}", "theiaos-podman").stdout


def test_install_the_last_release(box: Box) -> None:
    """The lifecycle starts from real old code: the last released .deb, as built then."""
    out = box.apt("install", RELEASED)
    assert _version(box) == f"{os.environ['THEIAOS_RELEASE']}-1"
    assert "theiaos-podman: image: missing" in out
    build_test_image(box.lab, "theiaos")
    box.lab.run("theiaosctl", "start", timeout=400)
    assert box.up() and box.linger()
    assert box.exists("/var/lib/theiaos-podman/linger-enabled-by-package")
    assert box.exists("/etc/theiaos/podman.env")
    box.token = box.lab.run("theiaosctl", "token", "show").stdout.strip()
    box.cid = box.container_id()
    assert len(box.subid_lines()) == 2


def test_reinstall_restarts_nothing(box: Box) -> None:
    out = box.apt("install", "--reinstall", RELEASED)
    assert "theiaos-podman: service: unchanged" in out
    assert box.container_id() == box.cid and box.up()


def test_upgrade_from_the_release_keeps_everything(box: Box) -> None:
    """The new unit (the token as a Podman secret) restarts the gateway once; token,
    config, workspace, subids and the account are kept, and it answers with the token."""
    workspace_file = f"{HOME}/.theiaos/workspace/notes.md"
    box.lab.run_as("theiaos", "sh", "-c", f"echo kept > {workspace_file}")
    config = box.read(f"{HOME}/.theiaos/theiaos.json")
    box.lab.run("sh", "-c", f"printf '{EDIT}' >> {ADMIN}")
    edited = box.read(ADMIN)
    out = box.apt("install", DEB1)  # stdin is /dev/null: a prompt would fail it
    assert _version(box) == f"{os.environ['THEIAOS_DEB'].rsplit('_', 2)[1]}"
    assert "Configuration file" not in out and "settings-file: unchanged" in out, out
    assert box.read(ADMIN) == edited, "the admin's file is kept byte for byte"
    assert box.lab.run("sh", "-c", "ls /etc/theiaos").stdout.split() == ["podman.env"]
    assert box.exists("/usr/share/theiaos-podman/podman.env")
    assert "HealthStartPeriod=100s" in box.read(QUADLET)
    assert "theiaos-podman: quadlet: changed" in out and "service: restarted" in out, out
    assert box.up() and http_get("/", box.token) == 200
    assert box.lab.run("theiaosctl", "token", "show").stdout.strip() == box.token
    assert box.read(workspace_file) == "kept\n"
    assert box.read(f"{HOME}/.theiaos/theiaos.json") == config
    assert len(box.subid_lines()) == 2 and box.linger()
    box.cid = box.container_id()


def test_upgrade_that_changes_nothing_restarts_nothing(box: Box) -> None:
    out = box.apt("install", DEB2)
    assert "theiaos-podman: service: unchanged" in out, out
    assert _version(box).endswith("-2")
    assert box.container_id() == box.cid and box.up()
    assert box.lab.run("theiaosctl", "token", "show").stdout.strip() == box.token
    assert len(box.subid_lines()) == 2


def test_upgrade_onto_a_new_image_restarts(box: Box) -> None:
    box.lab.run("sh", "-c", "mkdir -p /var/tmp/ctx && printf 'FROM localhost/theiaos:local\\n"
                "LABEL rev=2\\n' > /var/tmp/ctx/Dockerfile && chmod -R a+rX /var/tmp/ctx")
    box.lab.run_as("theiaos", "podman", "build", "-t", "localhost/theiaos:local", "/var/tmp/ctx",
                   timeout=300)
    out = box.apt("install", "--reinstall", DEB2)
    assert "theiaos-podman: image: changed" in out and "service: restarted" in out, out
    assert box.container_id() != box.cid and box.up()
    box.cid = box.container_id()


def _failing_upgrade(deb: Path, out: Path) -> Path:
    """DEB repacked as the next revision whose preinst fails: dpkg then calls the old
    postinst with abort-upgrade."""
    tree = out / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    version = re.search(r"^Version: (.*)-\d+$", control.read_text(), re.M)
    assert version
    control.write_text(re.sub(r"^Version: .*$", f"Version: {version[1]}-99", control.read_text(),
                              flags=re.M))
    preinst = tree / "DEBIAN" / "preinst"
    preinst.write_text("#!/bin/sh\necho 'preinst: failing on purpose' >&2\nexit 1\n")
    preinst.chmod(0o755)
    subprocess.run(["dpkg-deb", "-b", "-Zgzip", str(tree), str(out / "broken.deb")],
                   check=True, capture_output=True)
    return out / "broken.deb"


def test_failed_upgrade_leaves_a_working_install(box: Box, tmp_path: Path) -> None:
    box.lab.put(_failing_upgrade(Path(os.environ["THEIAOS_DEB_NEXT"]), tmp_path),
                "/var/tmp/broken.deb")
    proc = box.lab.run("apt-get", "-y", "install", "/var/tmp/broken.deb", check=False,
                       timeout=600, env={"DEBIAN_FRONTEND": "noninteractive"})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "preinst: failing on purpose" in out, out
    assert "theiaos-podman: service: unchanged" in out, out  # old postinst abort-upgrade
    version = box.lab.run("dpkg-query", "-W", "-f=${Version} ${Status}", "theiaos-podman").stdout
    assert version.endswith("-2 install ok installed"), version
    assert box.up() and box.container_id() == box.cid


def test_remove_stops_and_cleans_up(box: Box) -> None:
    listed = box.lab.run("dpkg", "-L", "theiaos-podman").stdout.split()
    box.shipped = [p for p in listed if box.lab.run("test", "-d", p, check=False).returncode]
    # A broken /etc/theiaos/podman.env does not keep the package from going.
    box.lab.run("sh", "-c", "echo 'THEIAOS_NO_SUCH_SETTING=1' >> /etc/theiaos/podman.env")
    out = box.apt("remove", "theiaos-podman")
    assert "unknown setting THEIAOS_NO_SUCH_SETTING; removing with the default" in out, out
    assert "remove: removed " + QUADLET in out, out
    assert "lingering turned off for theiaos" in out
    assert not box.up() and not box.exists(QUADLET) and not box.linger()
    assert "remove: removed /etc/systemd/system/user@" in out, out
    assert box.lab.run("sh", "-c", "ls /etc/systemd/system/ | grep '^user@'",
                       check=False).stdout == ""
    # the admin's settings and the user's data stay on remove
    assert EDIT in box.read(ADMIN) and box.exists(f"{HOME}/.theiaos/.env")
    assert not box.exists("/usr/bin/theiaosctl")


def test_purge_removes_what_it_owns_and_says_what_it_keeps(box: Box) -> None:
    out = box.apt("purge", "theiaos-podman")
    assert "kept, as user data: the theiaos account" in out
    for gone in ("/etc/theiaos", "/var/lib/theiaos-podman", "/usr/share/theiaos-podman",
                 "/usr/lib/python3/dist-packages/theiaos_pkg", QUADLET,
                 f"{HOME}/run-theiaos-podman.sh", "/var/lib/systemd/linger/theiaos",
                 *box.shipped):
        assert not box.exists(gone), gone
    for kept in (f"{HOME}/.theiaos/.env", f"{HOME}/.theiaos/theiaos.json",
                 f"{HOME}/.theiaos/workspace"):
        assert box.exists(kept), kept
    assert box.lab.run("getent", "passwd", "theiaos").returncode == 0
    assert len(box.subid_lines()) == 2


def test_install_after_purge_under_policy_rc_d(box: Box) -> None:
    """... over a settings file written before the install (preseeded), which is kept."""
    box.lab.run("sh", "-c", "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && "
                "chmod 755 /usr/sbin/policy-rc.d")
    box.lab.run("sh", "-c", f"mkdir -p /etc/theiaos && printf '# preseeded\\n{EDIT}' > {ADMIN}")
    try:
        out = box.apt("install", DEB2)
    finally:
        box.lab.run("rm", "/usr/sbin/policy-rc.d")
    assert "Configuration file" not in out and "settings-file: unchanged" in out, out
    assert box.read(ADMIN) == f"# preseeded\n{EDIT}"
    assert "HealthStartPeriod=100s" in box.read(QUADLET)
    assert "service: skipped (policy-rc.d forbids starting services now; lingering takes " \
        "effect at the next boot)" in out, out
    assert not box.up() and box.linger()
    assert "account: unchanged" in out and "subids: unchanged" in out
    box.lab.run("theiaosctl", "start", timeout=400)
    assert box.up()
    assert box.lab.run("theiaosctl", "token", "show").stdout.strip() == box.token
    assert len(box.subid_lines()) == 2 and box.linger()


def test_gateway_survives_a_power_cycle(box: Box) -> None:
    box.survives_power_cycle()


def test_its_user_manager_stops_the_gateway_first(box: Box) -> None:
    uid = box.lab.account("theiaos").uid
    show = box.lab.run("systemctl", "show", f"user@{uid}.service", "-p", "DropInPaths").stdout
    assert f"/etc/systemd/system/user@{uid}.service.d/50-theiaos-podman.conf" in show, show
    stop_user_manager(box.lab)
