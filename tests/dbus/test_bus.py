"""bus.py against python-dbusmock on private buses: logind's lingering and the
user manager's load/start/stop/restart/reload sequence, through real pystemd."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

dbusmock = pytest.importorskip("dbusmock")
import dbus  # noqa: E402  (python3-dbus comes with python3-dbusmock)

from theiaos_pkg import bus  # noqa: E402
from theiaos_pkg.errors import BusError  # noqa: E402

UID = 990
USER_PATH = f"/org/freedesktop/login1/user/_{UID}"

SET_LINGER = """
path = '/org/freedesktop/login1/user/_%d' % args[0]
if path not in objects:
    self.AddObject(path, 'org.freedesktop.login1.User',
                   {'UID': dbus.UInt32(args[0]), 'Linger': dbus.Boolean(args[1])}, [])
else:
    objects[path].UpdateProperties('org.freedesktop.login1.User',
                                   {'Linger': dbus.Boolean(args[1])})
self.calls = getattr(self, 'calls', 0) + 1
"""
GET_USER = """
path = '/org/freedesktop/login1/user/_%d' % args[0]
if path not in objects:
    raise dbus.exceptions.DBusException('No user %d known' % args[0],
                                        name='org.freedesktop.login1.NoSuchUser')
ret = dbus.ObjectPath(path)
"""
LOAD_UNIT = """
if args[0] not in self.units:
    raise dbus.exceptions.DBusException('Unit %s not found.' % args[0],
                                        name='org.freedesktop.systemd1.NoSuchUnit')
ret = dbus.ObjectPath(self.units[args[0]])
"""
RESTART_UNIT = """
objects[self.units[args[0]]].UpdateProperties('org.freedesktop.systemd1.Unit',
                                              {'ActiveState': 'active', 'SubState': 'running'})
ret = dbus.ObjectPath('/org/freedesktop/systemd1/job/99')
"""


class Buses(dbusmock.DBusTestCase):  # type: ignore[misc]
    """DBusTestCase's class methods manage the private dbus-daemons."""


@pytest.fixture(scope="module")
def buses() -> Iterator[type[Buses]]:
    Buses.start_system_bus()
    Buses.start_session_bus()
    yield Buses
    Buses.tearDownClass()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def logind(buses: type[Buses]) -> Iterator[dbus.Interface]:
    proc, obj = buses.spawn_server_template("logind", {}, subprocess.DEVNULL)
    mock = dbus.Interface(obj, dbusmock.MOCK_IFACE)
    mock.AddMethod("org.freedesktop.login1.Manager", "SetUserLinger", "ubb", "", SET_LINGER)
    mock.AddMethod("org.freedesktop.login1.Manager", "GetUser", "u", "o", GET_USER)
    yield mock
    _stop(proc)


def test_linger_is_enabled_once(logind: dbus.Interface) -> None:
    assert bus.linger_enabled(UID) is False
    assert bus.enable_linger(UID) is True
    assert bus.linger_enabled(UID) is True
    assert bus.enable_linger(UID) is False  # already on: no second SetUserLinger
    calls = logind.GetCalls()
    assert [c[1] for c in calls].count("SetUserLinger") == 1
    set_call = next(c for c in calls if c[1] == "SetUserLinger")
    assert list(set_call[2]) == [UID, True, False]


def test_logind_refusal_is_reported(logind: dbus.Interface) -> None:
    logind.AddMethod("org.freedesktop.login1.Manager", "SetUserLinger", "ubb", "",
                     "raise dbus.exceptions.DBusException('Access denied', "
                     "name='org.freedesktop.DBus.Error.AccessDenied')")
    with pytest.raises(BusError, match=r"logind SetUserLinger\(990\)"):
        bus.enable_linger(UID)


@pytest.fixture
def manager(buses: type[Buses]) -> Iterator[tuple[dbus.Interface, bus.UserManager]]:
    proc, obj = buses.spawn_server_template("systemd", {}, subprocess.DEVNULL,
                                            system_bus=False)
    mock = dbus.Interface(obj, dbusmock.MOCK_IFACE)
    mock.AddMockUnit("theiaos.service")
    iface = "org.freedesktop.systemd1.Manager"
    mock.AddMethod(iface, "Reload", "", "", "self.reloads = getattr(self, 'reloads', 0) + 1")
    mock.AddMethod(iface, "LoadUnit", "s", "o", LOAD_UNIT)
    mock.AddMethod(iface, "RestartUnit", "ss", "o", RESTART_UNIT)
    unit = dbus.Interface(
        buses.get_dbus(system_bus=False).get_object(
            "org.freedesktop.systemd1", "/org/freedesktop/systemd1/unit/theiaos_service"),
        dbusmock.MOCK_IFACE)
    unit.AddProperty("org.freedesktop.systemd1.Unit", "SubState", "dead")
    unit.AddProperty("org.freedesktop.systemd1.Unit", "StateChangeTimestamp", dbus.UInt64(7))
    address = os.environ["DBUS_SESSION_BUS_ADDRESS"]
    with bus.UserManager(UID, address=address, peer_to_peer=False) as mgr:
        yield mock, mgr
    _stop(proc)


def test_user_manager_sequence(manager: tuple[dbus.Interface, bus.UserManager]) -> None:
    mock, mgr = manager
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
    assert names == ["LoadUnit", "Reload", "StartUnit", "LoadUnit", "RestartUnit",
                     "StopUnit", "LoadUnit"]
    start = next(c for c in mock.GetCalls() if c[1] == "StartUnit")
    assert list(start[2]) == ["theiaos.service", "replace"]


def test_unknown_unit_is_a_bus_error(manager: tuple[dbus.Interface, bus.UserManager]) -> None:
    _mock, mgr = manager
    with pytest.raises(BusError, match="state of nope.service"):
        mgr.state("nope.service")


def test_missing_user_manager_is_a_bus_error(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(BusError, match="connect to the user manager of uid 990"), \
            bus.UserManager(UID, address=f"unix:path={tmp_path}/none"):
        pass
