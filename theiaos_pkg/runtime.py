"""How the gateway runs, decided once: ``of(s, acct)`` gives the systemd user service
(THEIAOS_PODMAN_QUADLET=1: the Quadlet, or the plain unit before Podman 4.4) or manual
mode (the product doc's `podman run` as the account: `theiaosctl launch`). Every verb
and flow (setup's activation, start, restart, stop, logs, token rotate, image change,
backup and restore, status, doctor) goes through the same small interface; neither
mode's code is written twice and no caller asks which mode it is in to act.

    up(out, report, ...)   setup's last phase: bring it up on the state just written
    start(report)          start it (when stopped) and wait until it answers
    restart(report, t)     restart it onto what changed; it must answer within t s
    stop()                 stop it; (stopped?, what it is now)
    running()              does it run now
    running_image()        the image id it runs, or None
    logs(...)              its log lines on standard output

``start`` and ``restart`` raise GatewayError when the gateway does not answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from . import bus, container, files, gateway, manual, podman, service, state
from .account import Account
from .errors import BusError, ConfigError, GatewayError, TheiaosError
from .files import Perm
from .settings import UNIT, Settings

Report = Callable[[str], None]


class Step(NamedTuple):
    name: str
    state: str  # created | changed | unchanged | kept | skipped | missing | started…
    detail: str = ""

    def line(self) -> str:
        return f"{self.name}: {self.state}" + (f" ({self.detail})" if self.detail else "")


class Outcome:
    """What a run did, step by step (filled in as it goes), and whether the gateway answered."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.healthy = False

    def changed(self, *names: str) -> bool:
        return any(s.name in names and s.state == "changed" for s in self.steps)


def _quiet(line: str) -> None:
    pass


class Runtime(Protocol):
    mode: str

    def up(self, out: Outcome, report: Report, *, may_start: bool = True,
           restart: bool = False, timeout: float | None = None,
           features: podman.Features | None = None, say: Report | None = None) -> None: ...

    def start(self, report: Report) -> None: ...

    def restart(self, report: Report, timeout: float | None = None) -> None: ...

    def stop(self, report: Report = ...) -> tuple[bool, str]: ...

    def running(self) -> bool: ...

    def running_image(self) -> str | None: ...

    def logs(self, lines: int | None, follow: bool, since: str | None) -> int: ...

    def facts(self) -> dict[str, Any]: ...


def service_mode(s: Settings) -> bool:
    """The one reading of the run mode (THEIAOS_PODMAN_QUADLET): the user service, or
    manual mode. Setup's plan (which unit to write) and doctor ask it; everything that
    acts on the gateway gets a Runtime from ``of``."""
    return s.quadlet


def of(s: Settings, acct: Account) -> Runtime:
    """The gateway's runtime for these settings and this account."""
    return Service(s, acct) if service_mode(s) else Manual(s, acct)


def sync_secret(s: Settings, acct: Account, features: podman.Features) -> bool:
    """Make the account's token secret hold `.env`'s token; True when it had to change
    (the running gateway then needs a restart, which is recorded first)."""
    if not features.secret:
        return False
    token = gateway.read_token(s, acct.uid)
    if not token:
        raise ConfigError(f"no THEIAOS_GATEWAY_TOKEN in {s.env_file}", "sudo theiaosctl setup")
    want = gateway.digest(token)
    who = acct.identity()
    if podman.secret_digest(who) == want:
        return False
    state.mark_pending("token secret updated")
    podman.put_secret(who, token, want)
    return True


class _Mode:
    """What both run modes share: the settings and account they act for."""

    mode: str

    def __init__(self, s: Settings, acct: Account) -> None:
        self.s, self.acct = s, acct

    def running(self) -> bool:
        raise NotImplementedError

    def running_image(self) -> str | None:
        if not self.running():
            return None
        return podman.running_image(self.acct.identity(), self.s.container_name)


# --- the systemd user service ------------------------------------------------------------


LINGER_DIR = "/var/lib/systemd/linger"
AUTO_UPDATE_TIMER = "podman-auto-update.timer"


class Service(_Mode):
    """The gateway as the account's systemd user service (theiaos.service)."""

    mode = "service"

    def up(self, out: Outcome, report: Report, *, may_start: bool = True,
           restart: bool = False, timeout: float | None = None,
           features: podman.Features | None = None, say: Report | None = None) -> None:
        """Linger, user manager, image, token secret, then start or restart (when a
        change is pending, the image changed or ``restart``) and wait until it answers;
        ``say`` (else ``report``) hears what a draining gateway finishes first."""
        s, acct = self.s, self.acct

        def add(step: Step) -> None:
            out.steps.append(step)
            report(step.line())

        if not bus.systemd_running() or not may_start:
            _adopt_linger_dir(acct)
            _linger_file(acct)
            if not bus.systemd_running():
                state.clear_pending()  # nothing runs: the next boot starts from what is on disk
            why = ("systemd is not running (chroot or image build)" if may_start
                   else "policy-rc.d forbids starting services now")
            add(Step("service", "skipped", f"{why}; lingering takes effect at the next boot"))
            return
        # logind's Linger is the existence of this file (logind reads nothing else): with
        # it there and the manager answering, nothing needs asking (start, a no-op setup).
        if files.lstat(f"{LINGER_DIR}/{acct.name}") is not None and bus.manager_running(acct.uid):
            add(Step("linger", "unchanged"))
        else:
            if bus.enable_linger(acct.uid):
                state.write(state.LINGER_MARKER, f"{acct.name}\n")
                add(Step("linger", "changed"))
            else:
                add(Step("linger", "unchanged"))
            bus.wait_for_user_manager(acct.uid)
        who = acct.identity()
        image_id = podman.image_id(who, s.image)
        if image_id is None:
            add(Step("image", "missing", podman.provide_hint(who, s.image)))
            return
        step = _auto_update_timer(s, acct)
        if step:
            add(step)
        with bus.UserManager(acct.uid) as mgr:  # one connection from here on
            active = mgr.state(UNIT).running
            running = podman.running_image(who, s.container_name) if active else None
            new_image = running is not None and running != image_id
            add(Step("image", "changed" if new_image else "unchanged",
                     f"{s.image} {image_id[:12]}"))
            if sync_secret(s, acct, features or podman.detect()):
                add(Step("token-secret", "changed",
                         f"{podman.SECRET} holds the token of {s.env_file}"))
            pending = state.pending()
            # A pending change restarts; bring_up reloads only where the unit's files
            # changed since systemd loaded them, not on every pending change.
            action = service.bring_up(mgr, s, acct,
                                      restart=restart or new_image or pending is not None,
                                      timeout=service.up_timeout(s) if timeout is None
                                      else timeout, say=say or report)
        state.clear_pending()
        out.healthy = True
        add(Step("service", action, f"{UNIT} answers at {s.url}"))

    def _up(self, report: Report, restart: bool, timeout: float | None,
            say: Report | None = None) -> None:
        out = Outcome()
        self.up(out, report, restart=restart, timeout=timeout, say=say)
        if not out.healthy:
            raise GatewayError(f"the gateway is not up: {out.steps[-1].line()}"
                               if out.steps else "the gateway is not up",
                               "sudo theiaosctl doctor")

    def start(self, report: Report) -> None:
        self._up(report, restart=False, timeout=None)

    def restart(self, report: Report, timeout: float | None = None) -> None:
        self._up(_quiet, restart=True, timeout=timeout, say=report)
        report(f"{UNIT} restarted; the gateway answers at {self.s.url}")

    def stop(self, report: Report = _quiet) -> tuple[bool, str]:
        st = service.stop(self.acct, container.stop_bound(self.s.stop_timeout), say=report)
        if st is None:
            return True, f"{UNIT}: inactive (user manager not running)"
        return st.active in ("inactive", "failed"), f"{UNIT}: {st.active}"

    def running(self) -> bool:
        return service.is_active(self.acct)

    def logs(self, lines: int | None, follow: bool, since: str | None) -> int:
        from . import journal
        from .run import stream

        return stream(journal.argv(self.acct.uid, lines, follow, since))

    def facts(self) -> dict[str, Any]:
        """What status reports of the unit: its file on disk, and systemd's view."""
        facts: dict[str, Any] = {"unit_file": _unit_file(self.s)}
        try:
            with bus.UserManager(self.acct.uid) as mgr:
                st = mgr.state(UNIT)
                exit_status = mgr.main_status(UNIT) if st.active == "failed" else 0
        except BusError:
            return {**facts, "unit_active": "inactive", "unit_sub": "user manager not running"}
        return {**facts, "manager_running": True, "unit_load": st.load,
                "unit_active": st.active, "unit_sub": st.sub, "since_usec": st.since_usec,
                "exit_status": exit_status}


def _unit_file(s: Settings) -> str:
    """Which kind of unit is on disk (no `podman --version`: status must be quick)."""
    from . import quadlet

    for uf in quadlet.unit_files(s):
        if files.lstat(uf.path) is not None:
            return f"{uf.describe()} {uf.path}"
    return "none (run sudo theiaosctl setup)"


def _linger_file(acct: Account) -> None:
    """Without logind to ask (chroot, image build, policy-rc.d): logind reads this file
    at boot, so the gateway starts with the next boot. Where there is no running systemd
    and no directory yet, the package makes it and says so (purge removes it again);
    on a running system it is logind's StateDirectory."""
    if files.lstat(LINGER_DIR) is None and not bus.systemd_running():
        state.write(state.LINGER_DIR_MARKER, f"{LINGER_DIR}\n")
    files.ensure_dir(LINGER_DIR, Perm(0, 0, 0o755), parents=Perm(0, 0, 0o755))
    linger = f"{LINGER_DIR}/{acct.name}"
    if files.lstat(linger) is None:
        files.write_bytes(linger, b"", Perm(0, 0, 0o644))
        state.write(state.LINGER_MARKER, f"{acct.name}\n")


def _auto_update_timer(s: Settings, acct: Account) -> Step | None:
    """Podman's own auto-update timer in the account's manager: on while
    THEIAOS_PODMAN_AUTO_UPDATE is local or registry, off again when the package turned
    it on and the setting is off."""
    want = s.auto_update != "off"
    ours = state.read(state.AUTO_UPDATE_MARKER) is not None
    if not want and not ours:
        return None  # not ours to turn off; nothing to ask systemd
    with bus.UserManager(acct.uid) as mgr:
        on = mgr.unit_file_state(AUTO_UPDATE_TIMER) == "enabled"
        if want and not on:
            mgr.enable(AUTO_UPDATE_TIMER)
            mgr.reload()
            mgr.start(AUTO_UPDATE_TIMER, 60)
            state.write(state.AUTO_UPDATE_MARKER, f"{acct.name}\n")
            return Step("auto-update", "changed", f"{AUTO_UPDATE_TIMER} enabled ({s.auto_update})")
        if not want and on and ours:
            mgr.disable(AUTO_UPDATE_TIMER)
            mgr.stop(AUTO_UPDATE_TIMER, 60)
            state.clear(state.AUTO_UPDATE_MARKER)
            return Step("auto-update", "changed", f"{AUTO_UPDATE_TIMER} disabled")
    return None


def _adopt_linger_dir(acct: Account) -> None:
    """Without systemd (a chroot or image build), 0.1.0 made /var/lib/systemd/linger
    without saying so: when this package turned lingering on and the directory holds
    nothing but its account's file, it is the package's to remove again on purge.
    (On a running system the directory is logind's StateDirectory: never ours.)"""
    if bus.systemd_running() or state.read(state.LINGER_DIR_MARKER) is not None \
            or state.read(state.LINGER_MARKER) is None:
        return
    if files.lstat(LINGER_DIR) is not None and _only_entry(LINGER_DIR, acct.name):
        state.write(state.LINGER_DIR_MARKER, f"{LINGER_DIR}\n")


def _only_entry(path: str, name: str) -> bool:
    with files.open_dir(path) as fd:
        return os.listdir(fd) == [name]


# --- manual mode -------------------------------------------------------------------------


class Manual(_Mode):
    """The gateway as a container the account runs itself (`theiaosctl launch`); its
    restart is a launch, which waits LAUNCH_TIMEOUT whatever ``timeout`` says."""

    mode = "manual"

    def up(self, out: Outcome, report: Report, *, may_start: bool = True,
           restart: bool = False, timeout: float | None = None,
           features: podman.Features | None = None, say: Report | None = None) -> None:
        """Setup starts nothing in manual mode; a unit file it just retired is unloaded."""
        if out.changed("quadlet") and service.manager_running(self.acct):
            with bus.UserManager(self.acct.uid) as mgr:
                mgr.reload()
        step = Step("service", "skipped", "manual mode: start the gateway with "
                    "sudo theiaosctl launch")
        out.steps.append(step)
        report(step.line())

    def _features(self) -> podman.Features:
        """What a launch needs first: no service owning the name, the image, the secret."""
        s, acct = self.s, self.acct
        if service.is_active(acct):
            raise TheiaosError(
                f"{UNIT} is running and owns the container name {s.container_name}; "
                "launch would fight systemd over it",
                "sudo theiaosctl stop (then launch), or keep using the service")
        who = acct.identity()
        if podman.image_id(who, s.image) is None:
            raise TheiaosError(podman.provide_hint(who, s.image))
        features = podman.detect()
        sync_secret(s, acct, features)
        return features

    def _launch(self, report: Report, done: str) -> None:
        manual.launch(self.s, self.acct, self._features())
        report(f"container {self.s.container_name} {done} (manual mode); the gateway "
               f"answers at {self.s.url}")

    def start(self, report: Report) -> None:
        self._launch(report, "started")

    def restart(self, report: Report, timeout: float | None = None) -> None:
        self._launch(report, "restarted")

    def onboard(self) -> int:
        """The wizard beside a running gateway (service or manual: the same container
        name), else in a container of its own."""
        if manual.running(self.s, self.acct):
            return manual.onboard(self.s, self.acct, None)
        return manual.onboard(self.s, self.acct, self._features())

    def stop(self, report: Report = _quiet) -> tuple[bool, str]:
        now = manual.stop(self.s, self.acct)
        return now != "running", \
            f"container {self.s.container_name}: {now} (manual mode)"

    def running(self) -> bool:
        return manual.running(self.s, self.acct)

    def logs(self, lines: int | None, follow: bool, since: str | None) -> int:
        return manual.logs(self.s, self.acct, lines, follow, since)

    def facts(self) -> dict[str, Any]:
        """What status reports in manual mode: the container in place of a unit."""
        st = manual.container_state(self.s, self.acct)
        return {"unit_file": "", "unit_load": "manual",
                "unit_active": "active" if st.get("Running") else "inactive",
                "unit_sub": f"container {st.get('Status', 'not there')}",
                "manager_running": bus.manager_running(self.acct.uid)}
