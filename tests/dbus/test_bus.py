"""bus.py against python-dbusmock on private buses: logind's lingering and the
user manager's load/start/stop/restart/reload sequence, through real pystemd."""

from __future__ import annotations

import os
from collections.abc import Iterator

import dbus
import pytest

from theiaos_pkg import bus
from theiaos_pkg.errors import BusError

from .conftest import UID


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
