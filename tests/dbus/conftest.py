"""python-dbusmock on private buses: logind (system bus) and a user manager (session
bus, reached through THEIAOS_TEST_USER_MANAGER_BUS instead of the private socket)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

dbusmock = pytest.importorskip("dbusmock")
import dbus  # noqa: E402  (python3-dbus comes with python3-dbusmock)

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
RESET_FAILED = "self.resets = getattr(self, 'resets', 0) + 1"
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


@pytest.fixture
def manager(buses: type[Buses]) -> Iterator[dbus.Interface]:
    proc, obj = buses.spawn_server_template("systemd", {}, subprocess.DEVNULL,
                                            system_bus=False)
    mock = dbus.Interface(obj, dbusmock.MOCK_IFACE)
    mock.AddMockUnit("theiaos.service")
    iface = "org.freedesktop.systemd1.Manager"
    mock.AddMethod(iface, "Reload", "", "", "self.reloads = getattr(self, 'reloads', 0) + 1")
    mock.AddMethod(iface, "LoadUnit", "s", "o", LOAD_UNIT)
    mock.AddMethod(iface, "RestartUnit", "ss", "o", RESTART_UNIT)
    mock.AddMethod(iface, "ResetFailedUnit", "s", "", RESET_FAILED)
    unit = dbus.Interface(
        buses.get_dbus(system_bus=False).get_object(
            "org.freedesktop.systemd1", "/org/freedesktop/systemd1/unit/theiaos_service"),
        dbusmock.MOCK_IFACE)
    unit.AddProperty("org.freedesktop.systemd1.Unit", "SubState", "dead")
    unit.AddProperty("org.freedesktop.systemd1.Unit", "StateChangeTimestamp", dbus.UInt64(7))
    unit.AddProperty("org.freedesktop.systemd1.Unit", "NeedDaemonReload", False)
    unit.AddProperty("org.freedesktop.systemd1.Unit", "UnitFileState", "generated")
    mock.AddProperty(iface, "SystemState", "running")
    yield mock
    _stop(proc)


