"""bus.py against python-dbusmock on private buses: logind's lingering and the
user manager's load/start/stop/restart/reload sequence, through real pystemd."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dbus
import pytest

from theiaos_pkg import bus
from theiaos_pkg.errors import BusError

from .conftest import UID, Buses, dbusmock


@pytest.fixture
def mgr(manager: dbus.Interface) -> Iterator[tuple[dbus.Interface, bus.UserManager]]:
    address = os.environ["DBUS_SESSION_BUS_ADDRESS"]
    with bus.UserManager(UID, address=address, peer_to_peer=False) as m:
        yield manager, m


def test_linger_is_enabled_once(logind: dbus.Interface, manager: dbus.Interface,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus, "USER_BUS", os.environ["DBUS_SESSION_BUS_ADDRESS"])
    assert bus.manager_running(UID)  # the mock user manager answers: "running"
    assert bus.linger_enabled(UID) is False
    assert bus.enable_linger(UID) is True
    assert bus.linger_enabled(UID) is True
    assert bus.enable_linger(UID) is False  # already on: no second SetUserLinger
    calls = logind.GetCalls()
    assert [c[1] for c in calls].count("SetUserLinger") == 1
    set_call = next(c for c in calls if c[1] == "SetUserLinger")
    assert list(set_call[2]) == [UID, True, False]


def test_linger_on_but_manager_down_asks_logind_again(logind: dbus.Interface) -> None:
    """The linger file was written without logind (chroot, policy-rc.d): SetUserLinger
    is what starts the user manager, so it is called although Linger reads yes."""
    assert bus.enable_linger(UID) is True
    assert bus.enable_linger(UID) is False
    assert [c[1] for c in logind.GetCalls()].count("SetUserLinger") == 2


def test_logind_refusal_is_reported(logind: dbus.Interface) -> None:
    logind.AddMethod("org.freedesktop.login1.Manager", "SetUserLinger", "ubb", "",
                     "raise dbus.exceptions.DBusException('Access denied', "
                     "name='org.freedesktop.DBus.Error.AccessDenied')")
    with pytest.raises(BusError, match=r"logind SetUserLinger\(990\)"):
        bus.enable_linger(UID)


def test_user_manager_sequence(mgr: tuple[dbus.Interface, bus.UserManager]) -> None:
    mock, mgr = mgr
    st = mgr.state("theiaos.service")
    assert (st.load, st.active, st.sub, st.since_usec) == ("loaded", "inactive", "dead", 7)
    assert not st.running
    mgr.reload()
    mgr.start("theiaos.service")
    assert mgr.wait("theiaos.service", ("active",), 5).running
    mgr.restart("theiaos.service")
    mgr.stop("theiaos.service")
    assert mgr.wait("theiaos.service", ("inactive",), 5).active == "inactive"
    names = [c[1] for c in mock.GetCalls() if c[1] != "AddMockUnit"]
    # LoadUnit once per connection: the unit's path stays the same across a reload
    assert names == ["LoadUnit", "Reload", "StartUnit", "RestartUnit", "StopUnit"]
    start = next(c for c in mock.GetCalls() if c[1] == "StartUnit")
    assert list(start[2]) == ["theiaos.service", "replace"]


def test_unknown_unit_is_a_bus_error(mgr: tuple[dbus.Interface, bus.UserManager]) -> None:
    _mock, mgr = mgr
    with pytest.raises(BusError, match="state of nope.service"):
        mgr.state("nope.service")


def test_missing_user_manager_is_a_bus_error(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(BusError, match="connect to the user manager of uid 990"), \
            bus.UserManager(UID, address=f"unix:path={tmp_path}/none"):
        pass


def test_a_stopping_manager_is_waited_for_until_one_answers(
        manager: dbus.Interface, monkeypatch: pytest.MonkeyPatch) -> None:
    """The private socket of a manager that is going away still exists: waiting for the
    file is not enough; wait until a manager answers and takes jobs."""
    address = os.environ["DBUS_SESSION_BUS_ADDRESS"]
    manager.UpdateProperties("org.freedesktop.systemd1.Manager", {"SystemState": "stopping"})
    assert bus.manager_state(UID, address) == "stopping" and not bus.manager_running(UID, address)
    with pytest.raises(BusError, match="does not answer after 0 s \\(state stopping\\)"):
        bus.wait_for_user_manager(UID, timeout=0.3, address=address)
    manager.UpdateProperties("org.freedesktop.systemd1.Manager", {"SystemState": "running"})
    bus.wait_for_user_manager(UID, timeout=5, address=address)


def test_no_socket_no_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    assert bus.manager_state(4242424) is None and not bus.manager_running(4242424)


# --- PID 1: a daemon-reload only when a loaded unit needs one (issue 18's drop-in) ----------

GET_UNIT = """
path = {'user@997.service': '/org/freedesktop/systemd1/unit/user_40997_2eservice'}.get(args[0])
if path not in objects:
    raise dbus.exceptions.DBusException('Unit %s not loaded.' % args[0],
                                        name='org.freedesktop.systemd1.NoSuchUnit')
ret = dbus.ObjectPath(path)
"""
USER_UNIT = "/org/freedesktop/systemd1/unit/user_40997_2eservice"


@pytest.fixture
def pid1(buses: type[Buses]) -> Iterator[dbus.Interface]:
    import subprocess

    proc = buses.spawn_server("org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                              "org.freedesktop.systemd1.Manager", system_bus=True,
                              stdout=subprocess.DEVNULL)
    obj = buses.get_dbus(system_bus=True).get_object("org.freedesktop.systemd1",
                                                     "/org/freedesktop/systemd1")
    mock = dbus.Interface(obj, dbusmock.MOCK_IFACE)
    mock.AddMethod("", "GetUnit", "s", "o", GET_UNIT)
    mock.AddMethod("", "Reload", "", "", "self.reloads = getattr(self, 'reloads', 0) + 1")
    yield mock
    proc.terminate()
    proc.wait(10)


def test_pid1_is_reloaded_only_for_a_loaded_unit_that_needs_it(pid1: dbus.Interface) -> None:
    dropin = "/etc/systemd/system/user@997.service.d/50-theiaos-podman.conf"

    def reloads() -> int:
        return sum(1 for _t, name, _a in pid1.GetCalls() if name == "Reload")

    def unit_has(paths: list[str], need: bool = False) -> None:
        obj = Buses.get_dbus(system_bus=True).get_object("org.freedesktop.systemd1", USER_UNIT)
        dbus.Interface(obj, dbusmock.MOCK_IFACE).UpdateProperties(
            "org.freedesktop.systemd1.Unit",
            {"DropInPaths": dbus.Array(paths, signature="s"), "NeedDaemonReload": need})

    # not loaded: PID 1 reads the file when it first needs the unit
    assert bus.reload_system_manager_for("user@997.service", dropin, True) is False
    pid1.AddObject(USER_UNIT, "org.freedesktop.systemd1.Unit",
                   {"NeedDaemonReload": False, "DropInPaths": dbus.Array([], signature="s")}, [])
    # loaded before the drop-in existed (systemd 252 says NeedDaemonReload=no then)
    assert bus.reload_system_manager_for("user@997.service", dropin, True) is True
    assert reloads() == 1
    unit_has([dropin])
    assert bus.reload_system_manager_for("user@997.service", dropin, True) is False
    unit_has([dropin], need=True)  # its content changed
    assert bus.reload_system_manager_for("user@997.service", dropin, True) is True
    unit_has([dropin])
    assert bus.reload_system_manager_for("user@997.service", dropin, False) is True  # removed
    unit_has([])
    assert bus.reload_system_manager_for("user@997.service", dropin, False) is False
    assert reloads() == 3


def test_a_refused_pid1_reload_is_a_reported_step_not_a_failed_install(
        pid1: dbus.Interface, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PID 1 refuses the reload after a drop-in was written or removed: a warning with the
    fix, not an exception (a postinst must not fail on it; the file is on disk)."""
    from theiaos_pkg import configure

    dropin = "/etc/systemd/system/user@997.service.d/50-theiaos-podman.conf"
    pid1.AddObject(USER_UNIT, "org.freedesktop.systemd1.Unit",
                   {"NeedDaemonReload": False, "DropInPaths": dbus.Array([], signature="s")}, [])
    pid1.AddMethod("", "Reload", "", "",
                   "raise dbus.exceptions.DBusException('Access denied', "
                   "name='org.freedesktop.DBus.Error.AccessDenied')")
    monkeypatch.setattr(configure, "_loaded_by_pid1", lambda etc: True)
    warning = configure._reload_system_manager("/etc", dropin, True)
    assert warning.startswith("warning: PID 1 not reloaded for user@997.service (")
    assert "Access denied" in warning and warning.endswith("; run: sudo systemctl daemon-reload")
    # the same through the step: written, reported, not raised
    etc = os.fspath(tmp_path)
    path = f"{etc}/systemd/system/user@997.service.d/50-theiaos-podman.conf"
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as fh:
        fh.write("old\n")
    obj = Buses.get_dbus(system_bus=True).get_object("org.freedesktop.systemd1", USER_UNIT)
    dbus.Interface(obj, dbusmock.MOCK_IFACE).UpdateProperties(  # PID 1 has it loaded
        "org.freedesktop.systemd1.Unit", {"DropInPaths": dbus.Array([path], signature="s")})
    gone, warnings = configure._remove_manager_dropins(etc, keep=None)
    assert gone == [path] and not os.path.exists(path)
    assert len(warnings) == 1 and "run: sudo systemctl daemon-reload" in warnings[0]
