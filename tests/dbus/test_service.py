"""service.py and status.py against python-dbusmock (logind and the user manager) and
a real HTTP server standing in for the gateway's /healthz."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dbus
import pytest

from theiaos_pkg import bus, service, settings, status
from theiaos_pkg.account import Account
from theiaos_pkg.errors import GatewayError

from .conftest import UID

ACCT = Account("theiaos", UID, UID, "/home/theiaos", "/usr/sbin/nologin")
UNIT_PATH = "/org/freedesktop/systemd1/unit/theiaos_service"


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _settings(port: int) -> settings.Settings:
    return settings.load(environ={"THEIAOS_PODMAN_GATEWAY_HOST_PORT": str(port),
                                  "THEIAOS_PODMAN_BRIDGE_HOST_PORT": str(port + 1)},
                         admin={}, chosen={})


@pytest.fixture
def user_bus(manager: dbus.Interface, monkeypatch: pytest.MonkeyPatch) -> dbus.Interface:
    import os

    monkeypatch.setattr(bus, "USER_BUS", os.environ["DBUS_SESSION_BUS_ADDRESS"])
    return manager


def _calls(mock: dbus.Interface) -> list[str]:
    return [str(c[1]) for c in mock.GetCalls() if c[1] not in ("AddMockUnit", "LoadUnit")]


def _set_unit(buses_session: dbus.Interface, **props: str) -> None:
    buses_session.UpdateProperties("org.freedesktop.systemd1.Unit", props)


@pytest.fixture
def unit(buses: object) -> dbus.Interface:
    from .conftest import Buses

    obj = Buses.get_dbus(system_bus=False).get_object("org.freedesktop.systemd1", UNIT_PATH)
    return dbus.Interface(obj, "org.freedesktop.DBus.Mock")


def _bring_up(s: settings.Settings, **kwargs: Any) -> str:
    import os

    with bus.UserManager(UID, os.environ["DBUS_SESSION_BUS_ADDRESS"]) as mgr:
        return service.bring_up(mgr, s, ACCT, **kwargs)


def test_bring_up_starts_and_waits_for_health(user_bus: dbus.Interface, gateway: int) -> None:
    assert _bring_up(_settings(gateway)) == "started"
    assert _calls(user_bus) == ["ResetFailedUnit", "StartUnit"]


def test_running_and_answering_is_left_alone(user_bus: dbus.Interface, unit: dbus.Interface,
                                             gateway: int) -> None:
    _set_unit(unit, ActiveState="active", SubState="running")
    assert _bring_up(_settings(gateway)) == "unchanged"
    assert _calls(user_bus) == []
    unit.UpdateProperties("org.freedesktop.systemd1.Unit", {"NeedDaemonReload": True})
    assert _bring_up(_settings(gateway), restart=True) == "restarted"  # its files changed
    assert _calls(user_bus) == ["Reload", "ResetFailedUnit", "RestartUnit"]


def test_a_restart_asked_while_the_unit_is_still_starting_restarts_it(
        user_bus: dbus.Interface, unit: dbus.Interface, gateway: int) -> None:
    """A setup right after another finds the unit still "activating" (Notify=healthy
    reports ready after the first answer). A StartUnit would merge into that start job,
    which runs the unit as it was before the reload: the change must be a RestartUnit
    (systemd merges it into the running job and runs it again)."""
    _set_unit(unit, ActiveState="activating", SubState="start")
    user_bus.AddMethod(
        "org.freedesktop.systemd1.Manager", "RestartUnit", "ss", "o",
        f"objects['{UNIT_PATH}'].UpdateProperties('org.freedesktop.systemd1.Unit', "
        "{'ActiveState': 'active', 'SubState': 'running', 'StateChangeTimestamp': "
        "dbus.UInt64(5)}); ret = dbus.ObjectPath('/org/freedesktop/systemd1/job/1')")
    assert _bring_up(_settings(gateway), restart=True) == "restarted"
    assert _calls(user_bus) == ["ResetFailedUnit", "RestartUnit"]
    user_bus.ClearCalls()
    assert _bring_up(_settings(gateway)) == "unchanged"  # nothing asked


def _activating_start(user_bus: dbus.Interface) -> None:
    """StartUnit leaves the unit starting, as Notify=healthy does until Podman's own
    health check has passed (the gateway answers already)."""
    user_bus.AddMethod(
        "org.freedesktop.systemd1.Manager", "StartUnit", "ss", "o",
        f"objects['{UNIT_PATH}'].UpdateProperties('org.freedesktop.systemd1.Unit', "
        "{'ActiveState': 'activating', 'SubState': 'start'}); "
        "ret = dbus.ObjectPath('/org/freedesktop/systemd1/job/1')")


def test_start_returns_once_the_unit_is_active_not_at_the_first_answer(
        user_bus: dbus.Interface, unit: dbus.Interface, gateway: int) -> None:
    """`systemctl start` waits for READY (Notify=healthy: the first passed health
    check); so does start, or a status right after it would say "starting"."""
    _activating_start(user_bus)
    turned: list[bool] = []

    def turn_active() -> None:
        turned.append(True)  # before the change: a return that saw it finds this set
        _set_unit(unit, ActiveState="active", SubState="running")

    ready = threading.Timer(0.5, turn_active)
    ready.start()
    try:
        assert _bring_up(_settings(gateway)) == "started"
        # returned after the unit turned active (the timer thread itself may still be
        # finishing its D-Bus call: is_alive() raced here under load)
        assert turned
    finally:
        ready.cancel()


def test_an_answering_unit_that_never_turns_active_is_reported(
        user_bus: dbus.Interface, unit: dbus.Interface, gateway: int) -> None:
    _activating_start(user_bus)
    with pytest.raises(GatewayError, match=r"healthz answers, but after 1 s systemd still "
                       r"reports theiaos.service activating \(start\)"):
        _bring_up(_settings(gateway), timeout=1)


class _Unhealthy(http.server.BaseHTTPRequestHandler):
    asked = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).asked += 1
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_gateway_that_never_answers_is_not_flooded_with_requests(
        user_bus: dbus.Interface, unit: dbus.Interface) -> None:
    """Each request is a line in the gateway's log (the journal an operator reads to
    see why the start failed): the wait asks less and less often, up to PROBE_MAX."""
    _activating_start(user_bus)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unhealthy)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(GatewayError, match=r"activating \(start\) and http://127.0.0.1:\d+/"
                           r"healthz does not answer"):
            _bring_up(_settings(srv.server_address[1]), timeout=3)
    finally:
        srv.shutdown()
        srv.server_close()
    # 0.01 doubling to 0.25 s: 6 in the first 0.5 s, then 4 a second (was 100 a second)
    assert 5 <= _Unhealthy.asked <= 3 / service.PROBE_MAX + 6, _Unhealthy.asked


def test_a_disabled_plain_unit_is_enabled_before_it_starts(user_bus: dbus.Interface,
                                                            unit: dbus.Interface,
                                                            gateway: int) -> None:
    """The plain user unit (Podman before 4.4) is not generated: like `systemctl --user
    enable`, EnableUnitFiles gives it its [Install] link, then the manager reloads."""
    user_bus.AddMethod("org.freedesktop.systemd1.Manager", "EnableUnitFiles", "asbb", "ba(sss)",
                       "objects['/org/freedesktop/systemd1/unit/theiaos_service']"
                       ".UpdateProperties('org.freedesktop.systemd1.Unit', "
                       "{'UnitFileState': 'enabled'}); ret = (True, [])")
    _set_unit(unit, UnitFileState="disabled")
    assert _bring_up(_settings(gateway)) == "started"
    assert _calls(user_bus) == ["EnableUnitFiles", "Reload", "ResetFailedUnit", "StartUnit"]
    enable = next(c for c in user_bus.GetCalls() if c[1] == "EnableUnitFiles")
    assert [list(enable[2][0]), bool(enable[2][1]), bool(enable[2][2])] == \
        [["theiaos.service"], False, True]


def test_failed_start_is_reported_at_once(user_bus: dbus.Interface, gateway: int) -> None:
    user_bus.AddMethod(
        "org.freedesktop.systemd1.Manager", "StartUnit", "ss", "o",
        f"objects['{UNIT_PATH}'].UpdateProperties('org.freedesktop.systemd1.Unit', "
        "{'ActiveState': 'failed', 'SubState': 'failed'}); "
        "ret = dbus.ObjectPath('/org/freedesktop/systemd1/job/1')")
    with pytest.raises(GatewayError, match=r"theiaos.service is failed \(failed\) and "
                       r"http://127.0.0.1:\d+/healthz does not answer"):
        _bring_up(_settings(gateway + 2))  # nothing listens there


def test_stop(user_bus: dbus.Interface, unit: dbus.Interface) -> None:
    _set_unit(unit, ActiveState="active", SubState="running")
    st = service.stop(ACCT, 30)
    assert st is not None and st.active == "inactive"
    assert _calls(user_bus) == ["StopUnit"]


def test_a_stop_that_outlasts_its_bound_says_the_gateway_is_still_draining(
        user_bus: dbus.Interface, unit: dbus.Interface) -> None:
    """A gateway finishing its turns: the wait ends at its bound (a maintainer script's)
    with the unit still stopping, and systemd's stop job goes on."""
    job = "/org/freedesktop/systemd1/job/7"
    user_bus.AddObject(job, "org.freedesktop.systemd1.Job", {"State": "running"}, [])
    user_bus.AddMethod(
        "org.freedesktop.systemd1.Manager", "StopUnit", "ss", "o",
        f"objects['{UNIT_PATH}'].UpdateProperties('org.freedesktop.systemd1.Unit', "
        "{'ActiveState': 'deactivating', 'SubState': 'stop'}); "
        f"ret = dbus.ObjectPath('{job}')")
    _set_unit(unit, ActiveState="active", SubState="running")
    began = time.monotonic()
    st = service.stop(ACCT, 0.5)
    assert st is not None and (st.active, st.sub) == ("deactivating", "stop")
    assert 0.5 <= time.monotonic() - began < 3
    # told, once it has stopped for DRAIN_NOTE_AFTER, that the gateway finishes first
    heard: list[str] = []
    st = service.stop(ACCT, 2.5, say=heard.append)
    assert st is not None and st.active == "deactivating"
    assert len(heard) == 1 and heard[0].startswith("theiaos.service is stopping: the gateway "
                                                   "finishes"), heard


def test_an_idle_stop_says_nothing(user_bus: dbus.Interface, unit: dbus.Interface) -> None:
    _set_unit(unit, ActiveState="active", SubState="running")
    heard: list[str] = []
    began = time.monotonic()
    st = service.stop(ACCT, 30, say=heard.append)
    assert st is not None and st.active == "inactive" and heard == []
    assert time.monotonic() - began < service.DRAIN_NOTE_AFTER


def test_status_collects_from_the_buses(user_bus: dbus.Interface, unit: dbus.Interface,
                                        logind: dbus.Interface, gateway: int,
                                        tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(f"theiaos:x:{UID}:{UID}::/home/theiaos:/usr/sbin/nologin\n")
    s = _settings(gateway)
    st = status.collect(s, etc=str(etc))
    assert (st.installed, st.unit_active, st.healthy, st.linger) == (True, "inactive", True, False)
    assert st.exit_code == status.EXIT_NOT_RUNNING
    _set_unit(unit, ActiveState="active", SubState="running")
    (tmp_path / "var/lib/systemd/linger").mkdir(parents=True)
    (tmp_path / "var/lib/systemd/linger/theiaos").touch()  # what logind reads and writes
    st = status.collect(s, etc=str(etc))
    assert (st.unit_active, st.unit_sub, st.linger, st.exit_code) == ("active", "running", True, 0)
    text = status.format_text(st)
    assert text.startswith("theiaos.service: active (running) since 1970-01-01T00:00:00+00:00")
    assert f"ports:     127.0.0.1:{gateway}:18789, 127.0.0.1:{gateway + 1}:18790" in text
    assert '"exit_code": 0' in status.format_json(st)
    missing = status.collect(s, etc=str(tmp_path))  # no passwd there: not installed
    assert missing.exit_code == status.EXIT_UNKNOWN


def test_status_names_a_configuration_the_gateway_refused(user_bus: dbus.Interface,
                                                          unit: dbus.Interface,
                                                          tmp_path: Path) -> None:
    """Exit 78 (the gateway's word for a configuration it refuses): the unit is not
    restarted (RestartPreventExitStatus=), and status says why and what fixes it."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(f"theiaos:x:{UID}:{UID}::/home/theiaos:/usr/sbin/nologin\n")
    unit.AddProperty("org.freedesktop.systemd1.Service", "ExecMainStatus", dbus.Int32(78))
    _set_unit(unit, ActiveState="failed", SubState="failed")
    st = status.collect(_settings(1), etc=str(etc))  # nothing answers on port 1
    assert st.verdict == "failed: the gateway refused its configuration (exit 78)"
    text = status.format_text(st)
    assert "  fix:       correct /home/theiaos/.theiaos/theiaos.json as its last lines say" in text
    unit.UpdateProperties("org.freedesktop.systemd1.Service", {"ExecMainStatus": dbus.Int32(1)})
    assert status.collect(_settings(1), etc=str(etc)).verdict == "failed"
