"""The only door to D-Bus (pystemd): logind's lingering and the user's systemd manager.

Root drives the service account's manager over its private socket
(``/run/user/UID/systemd/private``, peer to peer); root may not use the account's
session bus. One opened connection is shared by all objects of a sequence.
Every D-Bus error is turned into a BusError naming what failed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from .binding import load as _pystemd
from .errors import BusError

SYSTEMD = b"org.freedesktop.systemd1"
SYSTEMD_PATH = b"/org/freedesktop/systemd1"
LOGIN1 = b"org.freedesktop.login1"
LOGIN1_PATH = b"/org/freedesktop/login1"


def _dbus_error() -> type[Exception]:
    err: type[Exception] = _pystemd()[1].DBusBaseError
    return err


def systemd_running() -> bool:
    """Whether systemd is PID 1 (false in chroots, image builds and containers without it)."""
    return os.path.isdir("/run/systemd/system")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    try:
        yield
    except _dbus_error() as exc:
        raise BusError(f"{what}: {_describe(exc)}") from None


def _describe(exc: Exception) -> str:
    """pystemd's error as one line: the D-Bus message and error name when it has them."""
    name, message = getattr(exc, "err_name", None), getattr(exc, "err_message", None)
    if name and message:
        return f"{_text(message)} ({_text(name)})"
    return str(exc).splitlines()[0]


@contextlib.contextmanager
def _open(bus: Any, what: str) -> Iterator[Any]:
    with _errors(what):
        bus.open()
    try:
        yield bus
    finally:
        bus.close()


def _call(bus: Any, dest: bytes, path: bytes, iface: bytes, method: bytes,
          signature: bytes = b"", *args: Any) -> Any:
    """A method call with a known signature: no introspection round trip and XML parse
    (pystemd's objects introspect first, which costs `theiaosctl status` its speed)."""
    apply_signature = _pystemd()[0].apply_signature
    return bus.call_method(dest, path, iface, method, apply_signature(signature, list(args))).body


def _prop(bus: Any, dest: bytes, path: bytes, iface: bytes, name: bytes, kind: bytes) -> Any:
    return bus.get_property(dest, path, iface, name, kind)


_LOGIN_MANAGER = b"org.freedesktop.login1.Manager"
_LOGIN_USER = b"org.freedesktop.login1.User"
_SD_MANAGER = b"org.freedesktop.systemd1.Manager"
_SD_UNIT = b"org.freedesktop.systemd1.Unit"
_SD_SERVICE = b"org.freedesktop.systemd1.Service"
_SD_JOB = b"org.freedesktop.systemd1.Job"


# --- logind ---------------------------------------------------------------------------


def _system_bus() -> Any:
    return _pystemd()[0].DBus()


def linger_enabled(uid: int) -> bool:
    """logind's Linger for ``uid`` (False when logind knows no such user)."""
    with _open(_system_bus(), "connect to the system bus") as bus:
        try:
            path = _call(bus, LOGIN1, LOGIN1_PATH, _LOGIN_MANAGER, b"GetUser", b"u", uid)
        except _dbus_error() as exc:
            if getattr(exc, "err_name", None) == b"org.freedesktop.login1.NoSuchUser":
                return False
            raise BusError(f"logind GetUser({uid}): {_describe(exc)}") from None
        with _errors(f"logind user {uid}"):
            return bool(_prop(bus, LOGIN1, path, _LOGIN_USER, b"Linger", b"b"))


def enable_linger(uid: int) -> bool:
    """Turn lingering on for ``uid`` through logind; True when it was off.

    Also asks when it is on but the user manager is not running (the linger file was
    written while logind could not be asked): SetUserLinger is what starts it.
    """
    was_on = linger_enabled(uid)
    if was_on and manager_running(uid):
        return False
    with _open(_system_bus(), "connect to the system bus") as bus, \
            _errors(f"logind SetUserLinger({uid})"):
        _call(bus, LOGIN1, LOGIN1_PATH, _LOGIN_MANAGER, b"SetUserLinger", b"ubb",
              uid, True, False)
    return not was_on


def disable_linger(uid: int) -> None:
    with _open(_system_bus(), "connect to the system bus") as bus, \
            _errors(f"logind SetUserLinger({uid}, false)"):
        _call(bus, LOGIN1, LOGIN1_PATH, _LOGIN_MANAGER, b"SetUserLinger", b"ubb",
              uid, False, False)


def reload_system_manager_for(unit: str, dropin: str, present: bool) -> bool:
    """daemon-reload of PID 1 after ``unit``'s drop-in ``dropin`` was written (``present``)
    or removed, only where PID 1 has the unit loaded with another view of it: the
    drop-in missing from (or still in) its DropInPaths, or NeedDaemonReload (its content
    changed). systemd 252 does not count a new drop-in directory in NeedDaemonReload;
    a unit not loaded is read from disk when it is first needed; a reload costs every
    install about half a second. True when it reloaded."""
    with _open(_system_bus(), "connect to the system bus") as bus:
        try:
            path = _call(bus, SYSTEMD, SYSTEMD_PATH, _SD_MANAGER, b"GetUnit", b"s", unit.encode())
        except _dbus_error() as exc:
            # pystemd raises its DBusNoSuchUnitError for this name (err_name left empty)
            if type(exc).__name__ == "DBusNoSuchUnitError" or \
                    _text(getattr(exc, "err_name", b"")) == "org.freedesktop.systemd1.NoSuchUnit":
                return False
            raise BusError(f"systemd GetUnit({unit}): {_describe(exc)}") from None
        with _errors(f"daemon-reload of the system manager for {unit}"):
            seen = {_text(p) for p in _prop(bus, SYSTEMD, path, _SD_UNIT, b"DropInPaths", b"as")}
            if (dropin in seen) == present and \
                    not _prop(bus, SYSTEMD, path, _SD_UNIT, b"NeedDaemonReload", b"b"):
                return False
            _call(bus, SYSTEMD, SYSTEMD_PATH, _SD_MANAGER, b"Reload")
    return True


def private_socket(uid: int) -> str:
    return f"/run/user/{uid}/systemd/private"


#: Where user managers answer: None is each user's private socket (peer to peer); the
#: D-Bus tests set the address of a bus where python-dbusmock plays the manager (as
#: they point state.DIR elsewhere). An ``address`` given to a call comes first.
USER_BUS: str | None = None


#: Manager states in which it takes jobs ("stopping": the socket may still be there
#: while an old manager goes away, and a new one comes up behind it).
_SERVING = ("initializing", "starting", "running", "degraded")


def manager_state(uid: int, address: str | None = None) -> str | None:
    """The user manager's SystemState when it answers on its private socket (or on the
    bus at ``address``, as UserManager takes it), else None (no socket, connection
    refused, or it does not answer)."""
    address = address or USER_BUS
    if address is None and not os.path.exists(private_socket(uid)):
        return None
    try:
        with UserManager(uid, address) as mgr:
            return _text(mgr._get(b"SystemState", b"s"))
    except (BusError, _dbus_error()):
        return None


def manager_running(uid: int, address: str | None = None) -> bool:
    """Whether the user manager of ``uid`` answers and takes jobs."""
    return manager_state(uid, address) in _SERVING


def wait_for_user_manager(uid: int, timeout: float = 60.0, address: str | None = None) -> None:
    """Lingering starts ``user@UID.service`` asynchronously: wait (bounded) until the
    manager answers on its socket and takes jobs, not just until the socket exists."""
    deadline = time.monotonic() + timeout
    while True:
        state = manager_state(uid, address)
        if state in _SERVING:
            return
        if time.monotonic() > deadline:
            raise BusError(
                f"the user manager of uid {uid} does not answer after {timeout:.0f} s "
                f"({'state ' + state if state else private_socket(uid) + ' refuses or is missing'})",
                f"journalctl -b -u user@{uid}.service",
            )
        time.sleep(0.2)


# --- the user's systemd manager ---------------------------------------------------------


#: How often a wait asks systemd again: often enough that a command returns within
#: a few hundredths of a second of what it waits for.
POLL = 0.02


class UnitState(NamedTuple):
    load: str
    active: str
    sub: str
    since_usec: int

    @property
    def running(self) -> bool:
        return self.active in ("active", "reloading")


class UserManager:
    """A connection to one user's systemd manager; use as a context manager. By default
    its private socket, peer to peer; ``address``: a bus where a manager answers (as
    pystemd's DBusAddress takes it; the tests' python-dbusmock)."""

    def __init__(self, uid: int, address: str | None = None, peer_to_peer: bool | None = None):
        self.uid = uid
        address = address or USER_BUS
        self.address = address or f"unix:path={private_socket(uid)}"
        self.peer_to_peer = address is None if peer_to_peer is None else peer_to_peer
        self._bus: Any = None
        self._paths: dict[str, bytes] = {}

    def __enter__(self) -> UserManager:
        self._bus = _pystemd()[0].DBusAddress(self.address.encode(),
                                              peer_to_peer=self.peer_to_peer)
        with _errors(f"connect to the user manager of uid {self.uid} ({self.address})"):
            self._bus.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bus.close()

    def _manager(self, method: bytes, signature: bytes = b"", *args: Any) -> Any:
        return _call(self._bus, SYSTEMD, SYSTEMD_PATH, _SD_MANAGER, method, signature, *args)

    def _get(self, name: bytes, kind: bytes) -> Any:
        return _prop(self._bus, SYSTEMD, SYSTEMD_PATH, _SD_MANAGER, name, kind)

    def _unit(self, unit: str) -> bytes:
        """The unit's object path (LoadUnit, once per connection: the path follows from
        the name, and systemd loads the unit again when it is asked through it)."""
        if unit not in self._paths:
            self._paths[unit] = self._manager(b"LoadUnit", b"s", unit.encode())
        return self._paths[unit]

    def needs_reload(self, unit: str) -> bool:
        """systemd's NeedDaemonReload: the unit's files (for a Quadlet unit: the
        .container file, its SourcePath) changed since the manager loaded them."""
        with _errors(f"NeedDaemonReload of {unit}"):
            path = self._unit(unit)
            return bool(_prop(self._bus, SYSTEMD, path, _SD_UNIT, b"NeedDaemonReload", b"b"))

    def reload(self) -> None:
        with _errors("daemon-reload of the user manager"):
            self._manager(b"Reload")

    def state(self, unit: str) -> UnitState:
        with _errors(f"state of {unit}"):
            path = self._unit(unit)

            def prop(name: bytes, kind: bytes = b"s") -> Any:
                return _prop(self._bus, SYSTEMD, path, _SD_UNIT, name, kind)

            return UnitState(_text(prop(b"LoadState")), _text(prop(b"ActiveState")),
                             _text(prop(b"SubState")),
                             int(prop(b"StateChangeTimestamp", b"t")))

    def main_status(self, unit: str) -> int:
        """The exit status of the service's main process when it last exited (0 if none)."""
        with _errors(f"ExecMainStatus of {unit}"):
            return int(_prop(self._bus, SYSTEMD, self._unit(unit), _SD_SERVICE,
                             b"ExecMainStatus", b"i"))

    def queue(self, method: str, unit: str) -> bytes:
        """Queue a start, stop or restart job without waiting; its object path."""
        with _errors(f"{method} {unit}"):
            path: bytes = self._manager(method.encode(), b"ss", unit.encode(), b"replace")
        return path

    def _job(self, method: str, unit: str, timeout: float) -> None:
        """Queue a job and wait (bounded) until systemd has finished it, so that the
        state read next is its result, not the state before it."""
        self.wait_job(self.queue(method, unit), timeout)

    def wait_job(self, path: bytes, timeout: float) -> bool:
        """Wait (bounded) until systemd has finished the job at ``path``; whether it has."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.job_pending(path):
                return True
            time.sleep(POLL)
        return not self.job_pending(path)

    def job_pending(self, path: bytes) -> bool:
        try:
            return bool(_prop(self._bus, SYSTEMD, path, _SD_JOB, b"State", b"s"))
        except _dbus_error():
            return False  # the job object is gone: the job is done

    def start(self, unit: str, timeout: float = 300) -> None:
        self._job("StartUnit", unit, timeout)

    def stop(self, unit: str, timeout: float = 300) -> None:
        self._job("StopUnit", unit, timeout)

    def restart(self, unit: str, timeout: float = 300) -> None:
        self._job("RestartUnit", unit, timeout)

    def unit_file_state(self, unit: str) -> str:
        """enabled, disabled, generated (a Quadlet unit), static…"""
        with _errors(f"UnitFileState of {unit}"):
            path = self._unit(unit)
            return _text(_prop(self._bus, SYSTEMD, path, _SD_UNIT, b"UnitFileState", b"s"))

    def enable(self, unit: str) -> None:
        """`systemctl --user enable UNIT`: its [Install] links (the plain unit's)."""
        with _errors(f"enable {unit}"):
            self._manager(b"EnableUnitFiles", b"asbb", [unit.encode()], False, True)

    def disable(self, unit: str) -> None:
        with _errors(f"disable {unit}"):
            self._manager(b"DisableUnitFiles", b"asb", [unit.encode()], False)

    def reset_failed(self, unit: str) -> None:
        with _errors(f"reset-failed {unit}"):
            self._manager(b"ResetFailedUnit", b"s", unit.encode())

    def wait(self, unit: str, want: tuple[str, ...], timeout: float) -> UnitState:
        """Poll until the unit's ActiveState is one of ``want``, or it failed or waits to be
        restarted (its process exited); the last state."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.state(unit)
            if st.active in want or st.active == "failed" or st.sub == "auto-restart" \
                    or time.monotonic() > deadline:
                return st
            time.sleep(POLL)
