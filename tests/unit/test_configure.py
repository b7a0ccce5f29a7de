"""Every file step twice: the second run changes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from theiaos_pkg import configure, quadlet, runtime, settings
from theiaos_pkg.podman import Features

from ..conftest import needs_root, needs_useradd

pytestmark = [needs_root, needs_useradd]
PODMAN = Features((5, 4, 2))
PODMAN_43 = Features((4, 3, 1))  # Debian 12: no Quadlet


def _prepare(s: settings.Settings, etc: Path, podman: Features = PODMAN) -> runtime.Outcome:
    out = runtime.Outcome()
    plan = configure.preflight(s, str(etc), podman, will_start=False)  # ports: own test
    configure.apply(plan, str(etc), out, lambda _line: None)
    return out


def _tree(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    state = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_dir():  # shadow's lock files come and go in /etc: dir mtimes move
            state[str(p)] = (st.st_uid, st.st_mode, 0, b"")
        else:
            state[str(p)] = (st.st_uid, st.st_mode, st.st_mtime_ns, p.read_bytes())
    return state


def test_prepare_twice_changes_nothing(etc: Path, conf: settings.Settings) -> None:
    first = _prepare(conf, etc)
    assert [(s.name, s.state) for s in first.steps] == [
        ("settings-file", "created"), ("account", "created"), ("subids", "changed"), ("gateway-config", "changed"),
        ("quadlet", "changed"), ("shutdown-order", "changed"), ("launch-script", "changed")]
    before = _tree(etc.parent)
    second = _prepare(conf, etc)
    assert {s.state for s in second.steps} == {"unchanged"}
    assert _tree(etc.parent) == before


def test_quadlet_owned_by_the_account(etc: Path, conf: settings.Settings) -> None:
    _prepare(conf, etc)
    uid = int([ln for ln in (etc / "passwd").read_text().splitlines()
               if ln.startswith("theiaos:")][0].split(":")[2])
    for p in (conf.quadlet_path, conf.quadlet_dir, os.path.dirname(conf.quadlet_dir)):
        assert os.stat(p).st_uid == uid, p
    assert Path(conf.quadlet_path).read_text() == quadlet.render(conf, PODMAN)


def test_changed_setting_rewrites_quadlet(etc: Path, conf: settings.Settings) -> None:
    _prepare(conf, etc)
    moved = settings.load(environ={"THEIAOS_PODMAN_HOME": conf.home,
                                   "THEIAOS_PODMAN_GATEWAY_HOST_PORT": "28795"}, admin={}, chosen={})
    out = _prepare(moved, etc)
    assert out.changed("quadlet") and out.changed("gateway-config")
    assert "PublishPort=127.0.0.1:28795:18789" in Path(conf.quadlet_path).read_text()


def test_admin_edited_quadlet_is_kept(etc: Path, conf: settings.Settings) -> None:
    _prepare(conf, etc)
    path = Path(conf.quadlet_path)
    edited = path.read_text().replace("RestartSec=5", "RestartSec=9")
    path.write_text(edited)
    out = _prepare(conf, etc)
    assert [s.state for s in out.steps if s.name == "quadlet"] == ["kept"]
    assert path.read_text() == edited


def test_podman_without_quadlet_gets_a_plain_unit_and_its_install_link(
        etc: Path, conf: settings.Settings) -> None:
    out = _prepare(conf, etc, PODMAN_43)
    assert dict((st.name, st.state) for st in out.steps)["unit"] == "changed"
    plain = Path(conf.plain_unit_path)
    assert plain.read_text() == quadlet.render_unit(conf, PODMAN_43)
    assert not Path(conf.quadlet_path).exists()
    # no user manager to ask here (no systemd): the [Install] link is made as enable would
    link = plain.parent / "default.target.wants" / "theiaos.service"
    assert os.readlink(link) == "../theiaos.service"
    assert link.lstat().st_uid == plain.stat().st_uid
    assert {st.state for st in _prepare(conf, etc, PODMAN_43).steps} == {"unchanged"}


def test_podman_past_4_4_replaces_the_plain_unit_with_the_quadlet_and_back(
        etc: Path, conf: settings.Settings) -> None:
    _prepare(conf, etc, PODMAN_43)
    env = Path(conf.env_file).read_text()
    plain = Path(conf.plain_unit_path)
    out = _prepare(conf, etc, PODMAN)  # a release upgrade brought Podman 5
    step = next(st for st in out.steps if st.name == "quadlet")
    assert step.state == "changed" and f"removed {plain}" in step.detail, step
    assert not plain.exists() and not (plain.parent / "default.target.wants/theiaos.service").exists()
    assert Path(conf.quadlet_path).read_text() == quadlet.render(conf, PODMAN)
    assert Path(conf.env_file).read_text() == env  # nothing lost
    out = _prepare(conf, etc, PODMAN_43)  # and a downgrade goes back
    assert plain.exists() and not Path(conf.quadlet_path).exists()


def test_an_edited_plain_unit_is_kept_and_runs_the_gateway(etc: Path,
                                                          conf: settings.Settings) -> None:
    _prepare(conf, etc, PODMAN_43)
    plain = Path(conf.plain_unit_path)
    edited = plain.read_text().replace("RestartSec=5", "RestartSec=9")
    plain.write_text(edited)
    out = _prepare(conf, etc, PODMAN)
    step = next(st for st in out.steps if st.name == "quadlet")
    assert step.state == "kept" and "edited by hand" in step.detail
    assert plain.read_text() == edited and not Path(conf.quadlet_path).exists()


def test_a_port_held_by_another_program_is_refused_before_anything_is_written(
        etc: Path, conf: settings.Settings) -> None:
    import socket

    from theiaos_pkg.errors import SettingError

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        s = conf._replace(gateway_port=port, bridge_port=free)
        with pytest.raises(SettingError, match=f"port {port} on 127.0.0.1 is taken"):
            configure.preflight(s, str(etc), PODMAN)
        # held by the account's own uid (the gateway's port forwarder): ours
        configure.preflight(s, str(etc), PODMAN, also_ours=frozenset({os.getuid()}))
    assert "theiaos" not in (etc / "passwd").read_text()


# --- the admin's settings file (issue 17): the package never overwrites it -----------------

RELEASES = Path(__file__).resolve().parents[2] / "tests" / "unit" / "fixtures" / "shipped-podman.env"


def _admin(etc: Path) -> Path:
    return etc / "theiaos" / "podman.env"


def test_setup_creates_the_settings_file_only_when_absent(etc: Path, conf: settings.Settings) -> None:
    _prepare(conf, etc)
    f = _admin(etc)
    assert f.read_text() == settings.ADMIN_STUB and settings.DEFAULTS_FILE in f.read_text()
    assert (f.stat().st_uid, f.stat().st_mode & 0o7777) == (0, 0o644)
    assert settings.parse_admin(f.read_text()) == {}
    f.write_text(settings.ADMIN_STUB + "THEIAOS_PODMAN_MEMORY=1g\n")  # the admin's edit
    out = _prepare(conf, etc)
    assert ("settings-file", "unchanged") in [(s.name, s.state) for s in out.steps]
    assert f.read_text().endswith("THEIAOS_PODMAN_MEMORY=1g\n")


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_a_released_file_is_replaced_only_unmodified(etc: Path, conf: settings.Settings,
                                                     version: str) -> None:
    shipped = (RELEASES / version).read_bytes()  # as that release's package shipped it
    f = _admin(etc)
    f.parent.mkdir()
    f.write_bytes(shipped)
    out = _prepare(conf, etc)
    assert ("settings-file", f"replaced the unmodified file {version} shipped") in \
        [(s.name, s.state) for s in out.steps]
    assert f.read_text() == settings.ADMIN_STUB
    edited = shipped + b"THEIAOS_PODMAN_GATEWAY_HOST_PORT=18801\n"
    f.write_bytes(edited)
    _prepare(conf, etc)
    assert f.read_bytes() == edited, "an edited file is the admin's: kept byte for byte"


def test_a_settings_file_that_is_no_regular_file_is_refused_before_any_write(
        etc: Path, conf: settings.Settings) -> None:
    from theiaos_pkg.errors import UnsafePathError

    f = _admin(etc)
    f.parent.mkdir()
    os.symlink("/etc/passwd", f)
    before = _tree(etc.parent)
    with pytest.raises(UnsafePathError, match="not a regular file"):
        _prepare(conf, etc)
    assert _tree(etc.parent) == before


# --- the user manager stops the gateway first (issue 18) ---------------------------------


def _uid(etc: Path) -> int:
    return int([ln for ln in (etc / "passwd").read_text().splitlines()
                if ln.startswith("theiaos:")][0].split(":")[2])


def test_the_user_manager_gets_a_drop_in_that_stops_the_gateway_first(
        etc: Path, conf: settings.Settings) -> None:
    _prepare(conf, etc)
    uid = _uid(etc)
    path = etc / "systemd" / "system" / f"user@{uid}.service.d" / "50-theiaos-podman.conf"
    text = path.read_text()
    assert (path.stat().st_uid, path.stat().st_mode & 0o7777) == (0, 0o644)
    gid = int([ln for ln in (etc / "passwd").read_text().splitlines()
               if ln.startswith("theiaos:")][0].split(":")[3])
    # as long as theiaos.service's own stop may take (the gateway's 330 s drain + 30 s),
    # and user@UID.service's 120 s stop timeout raised above that
    assert (f"ExecStop=-+/usr/bin/timeout 360 /usr/bin/setpriv --reuid=%i --regid={gid} "
            "--clear-groups /usr/bin/env XDG_RUNTIME_DIR=/run/user/%i "
            "/usr/bin/systemctl --user stop theiaos.service\n") in text
    assert "\nTimeoutStopSec=390\n" in text
    # a lower stop timeout (THEIAOS_PODMAN_STOP_TIMEOUT) shortens both
    _prepare(conf._replace(stop_timeout=20), etc)
    text = path.read_text()
    assert "/usr/bin/timeout 50 " in text and "\nTimeoutStopSec=80\n" in text


def test_manual_mode_and_another_account_leave_no_drop_in(etc: Path, conf: settings.Settings) -> None:
    _prepare(conf, etc)
    uid = _uid(etc)
    dropins = etc / "systemd" / "system"
    assert [p.name for p in dropins.iterdir()] == [f"user@{uid}.service.d"]
    manual = conf._replace(quadlet=False)
    out = _prepare(manual, etc)
    assert ("shutdown-order", "changed") in [(s.name, s.state) for s in out.steps]
    assert list(dropins.iterdir()) == [], "manual mode: the drop-in and its directory go"
    # one of another account (setup --user moved away from it) goes too
    other = dropins / "user@4242.service.d"
    other.mkdir()
    (other / "50-theiaos-podman.conf").write_text("old\n")
    (other / "10-admin.conf").write_text("[Service]\n")  # the admin's: stays
    _prepare(conf, etc)
    assert sorted(p.name for p in dropins.iterdir()) == ["user@4242.service.d", f"user@{uid}.service.d"]
    assert [p.name for p in other.iterdir()] == ["10-admin.conf"]


@pytest.mark.skipif(not os.path.exists("/usr/bin/systemd-analyze"), reason="no systemd-analyze")
def test_the_drop_in_is_what_systemd_reads(tmp_path: Path) -> None:
    """systemd's own parser: the drop-in on a copy of user@.service verifies clean and
    gives the unit our ExecStop (with %i expanded)."""
    import subprocess

    from theiaos_pkg import quadlet

    d = tmp_path / "user@997.service.d"
    d.mkdir()
    (tmp_path / "user@.service").write_text(
        "[Unit]\nDescription=User Manager for UID %i\n[Service]\nUser=%i\nType=notify\n"
        "ExecStart=/usr/bin/true\nKillMode=mixed\nTimeoutStopSec=120s\n")
    (d / quadlet.MANAGER_DROPIN).write_text(quadlet.manager_dropin(997, 330))
    proc = subprocess.run(["systemd-analyze", "--man=no", "verify", str(tmp_path / "user@997.service")],
                          capture_output=True, text=True, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    noise = [ln for ln in proc.stderr.splitlines() if "user@997.service" in ln or "drop-in" in ln]
    assert noise == [], proc.stderr
