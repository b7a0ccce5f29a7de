"""Debian 12 (Podman 4.3.1, no Quadlet; python3 3.11, python3-pystemd 0.11): the same
.deb installs, runs the gateway as a plain systemd user unit (podman run in the
foreground), and every verb works; a power cycle brings it back; remove, purge and
install again. Last, Podman is brought past 4.4 the way a release upgrade does (Debian
13's podman, from the archive) and setup replaces the plain unit with the Quadlet,
nothing lost.
One lab for the module (tests run in order)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..lab import DEBIAN12, Lab, build_test_image
from .conftest import DEB_IN_LAB, HOME, http_get, lab_only, port_free, stop_user_manager
from .test_lifecycle_deb import Box

pytestmark = lab_only

PLAIN = f"{HOME}/.config/systemd/user/theiaos.service"
WANTS = f"{HOME}/.config/systemd/user/default.target.wants/theiaos.service"
QUADLET = f"{HOME}/.config/containers/systemd/theiaos.container"
SYSTEMCTL = ("systemctl", "--machine", "theiaos@", "--user")


class Deb12(Box):
    def ctl(self, *args: str) -> tuple[int, str]:
        proc = self.lab.run("theiaosctl", *args, check=False, timeout=400)
        return proc.returncode, proc.stdout + proc.stderr

    def token_now(self) -> str:
        return self.lab.run("theiaosctl", "token", "show").stdout.strip()


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deb12]:
    deb = os.environ.get("THEIAOS_DEB")
    if not deb:
        pytest.fail("THEIAOS_DEB must name the built .deb: run `make check`")
    assert port_free(18789), "127.0.0.1:18789 is busy on the host (the lab shares it)"
    with Lab(tmp_path_factory.mktemp("debian12"), release=DEBIAN12) as lab:
        lab.put(Path(deb), DEB_IN_LAB)
        yield Deb12(lab)


def test_install_on_debian12_runs_a_plain_user_unit(box: Deb12) -> None:
    assert box.lab.run("podman", "--version").stdout.startswith("podman version 4.3.")
    out = box.apt("install", DEB_IN_LAB)
    assert "theiaos-podman: unit: changed" in out and "image: missing" in out, out
    box.lab.emulate_pure_cgroup_v2("theiaos")  # as a Debian 12 host boots (tests/lab.py)
    build_test_image(box.lab, "theiaos")
    code, out = box.ctl("start")
    assert code == 0 and "answers at http://127.0.0.1:18789/" in out, out
    box.token = box.token_now()
    assert http_get("/", box.token) == 200 and http_get("/", "wrong") == 401
    assert box.exists(PLAIN) and not box.exists(QUADLET)
    assert box.lab.host_path(PLAIN).stat().st_uid == box.lab.account("theiaos").uid
    assert box.lab.run(*SYSTEMCTL, "is-enabled", "theiaos.service").stdout.strip() == "enabled"
    assert box.lab.run(*SYSTEMCTL, "is-active", "theiaos.service").stdout.strip() == "active"
    assert box.linger() and len(box.subid_lines()) == 2
    # systemd 252's systemd-sysusers made the account ("!*"; useradd writes "!")
    assert box.lab.run("getent", "shadow", "theiaos").stdout.split(":")[1] == "!*"
    st = box.lab.host_path(f"{HOME}/.theiaos/.env").stat()
    assert st.st_mode & 0o777 == 0o600
    cfg = json.loads(box.read(f"{HOME}/.theiaos/theiaos.json"))
    assert cfg["gateway"]["mode"] == "local"


def test_the_plain_unit_passes_systemd_analyze_verify(box: Deb12) -> None:
    uid = box.lab.account("theiaos").uid
    proc = box.lab.run_as("theiaos", "systemd-analyze", "--user", "--man=no", "verify", PLAIN,
                          env={"XDG_RUNTIME_DIR": f"/run/user/{uid}"}, check=False)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stdout + proc.stderr


def test_every_verb_once(box: Deb12) -> None:
    code, out = box.ctl("status")
    assert code == 0 and f"unit:      plain user unit {PLAIN}" in out, out
    assert "theiaos.service: active (running)" in out and "gateway:   answers" in out
    assert box.ctl("url") == (0, "http://127.0.0.1:18789/\n")
    code, out = box.ctl("doctor")
    assert code == 0 and "0 failed" in out and "plain user unit" in out, out
    code, out = box.ctl("setup")
    assert code == 0 and "unit: unchanged" in out and "service: unchanged" in out, out
    code, out = box.ctl("logs", "-n", "200")
    assert code == 0 and "[gateway] listening on http://0.0.0.0:18789" in out, out
    assert box.ctl("stop")[0] == 0 and box.ctl("status")[0] == 3 and not box.up()
    assert box.ctl("start")[0] == 0 and box.up()
    before = box.container_id()
    code, out = box.ctl("restart")
    assert code == 0 and box.container_id() != before and box.up(), out
    code, out = box.ctl("token", "rotate")
    assert code == 0 and "restarted" in out, out
    new = box.token_now()
    assert new != box.token and http_get("/", new) == 200 and http_get("/", box.token) == 401
    box.token = new
    code, out = box.ctl("image", "list")
    assert code == 0 and "localhost/theiaos" in out, out
    box.lab.run_as("theiaos", "podman", "save", "-o", "/var/tmp/gw.tar", "localhost/theiaos:local")
    code, out = box.ctl("image", "load", "/var/tmp/gw.tar")
    assert code == 0 and "(unchanged)" in out, out
    code, out = box.ctl("launch")
    assert code == 1 and "fight systemd" in out, out
    code, out = box.ctl("setup", "--container")
    assert code == 0 and not box.exists(PLAIN) and not box.exists(WANTS), out
    code, out = box.ctl("start")
    assert code == 0 and "(manual mode)" in out and box.up(), out
    assert box.ctl("stop")[0] == 0 and not box.up()
    code, out = box.ctl("setup", "--quadlet")  # back to the service: the plain unit here
    assert code == 0 and "Setup complete" in out and box.exists(PLAIN), out
    assert box.lab.run(*SYSTEMCTL, "is-enabled", "theiaos.service").stdout.strip() == "enabled"


def test_its_user_manager_stops_promptly(box: Deb12) -> None:
    """Issue 18: without the package's user@UID.service drop-in, this stop took 120 s on
    Podman 4.3 (the container's scope, the pause scope and dbus.service stopped alongside
    theiaos.service; its ExecStop and ExecStopPost hung until SIGKILL)."""
    stop_user_manager(box.lab)


def test_power_cycle(box: Deb12) -> None:
    box.survives_power_cycle()


def test_remove_purge_and_install_again(box: Deb12) -> None:
    out = box.apt("remove", "theiaos-podman")
    assert f"remove: removed {PLAIN}" in out, out
    assert not box.exists(PLAIN) and not box.exists(WANTS) and not box.up()
    box.apt("purge", "theiaos-podman")
    assert not box.exists("/var/lib/theiaos-podman") and box.exists(f"{HOME}/.theiaos/.env")
    out = box.apt("install", DEB_IN_LAB)
    assert "account: unchanged" in out and "Setup complete" in out, out
    assert box.token_now() == box.token and box.up()


def test_podman_past_4_4_replaces_the_plain_unit_with_the_quadlet(box: Deb12) -> None:
    """A Debian 12 -> 13 upgrade brings Podman 5: the next setup stops, disables and
    removes the plain unit, writes the Quadlet and starts it; token, config, workspace
    and images are kept."""
    box.lab.run_as("theiaos", "sh", "-c", f"echo kept > {HOME}/.theiaos/workspace/notes.md")
    # Most of it is in the tree's apt cache already; what apt wants beyond that (it
    # depends on what is installed by now) comes from the archive.
    box.lab.run("apt-get", "update", "-q", timeout=300)
    box.apt("install", "-t", "trixie", "podman", "passt", "crun", "conmon")
    version = box.lab.run("podman", "--version").stdout
    assert re.match(r"podman version [5-9]\.", version), version
    code, out = box.ctl("setup")
    assert code == 0, out
    assert f"quadlet: changed (removed {PLAIN}; {QUADLET})" in out and "Setup complete" in out
    assert box.exists(QUADLET) and not box.exists(PLAIN) and not box.exists(WANTS)
    state = box.lab.run(*SYSTEMCTL, "show", "-p", "UnitFileState", "-p", "SourcePath",
                        "theiaos.service").stdout
    assert "UnitFileState=generated" in state and f"SourcePath={QUADLET}" in state, state
    assert box.token_now() == box.token and http_get("/", box.token) == 200
    assert box.read(f"{HOME}/.theiaos/workspace/notes.md") == "kept\n"
    assert len(box.subid_lines()) == 2
