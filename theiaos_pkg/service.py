"""The gateway's systemd user service: bring it up (and prove it answers), stop it."""

from __future__ import annotations

import time
from collections.abc import Callable

from . import bus, container, health, journal
from .account import Account
from .errors import GatewayError, TheiaosError
from .settings import UNIT, Settings

#: How long start, restart and setup wait for the gateway to answer, all included
#: (start job, first answer of /healthz), beyond the old container's stop (up_timeout).
UP_TIMEOUT = 300.0
#: The bound inside maintainer scripts, a drain included: apt and dnf are never held
#: longer. A restart job still running then goes on in the user manager (the gateway
#: finishes its turns, then starts on the new state) and the change stays pending.
HOOK_UP_TIMEOUT = 120.0


def up_timeout(s: Settings) -> float:
    """How long an operator's start or restart waits, all included: a restart first
    waits for the old container's stop, which lets the gateway finish its turns."""
    return UP_TIMEOUT + container.stop_bound(s.stop_timeout)


def manager_running(acct: Account) -> bool:
    return bus.manager_running(acct.uid)


def is_active(acct: Account) -> bool:
    if not manager_running(acct):
        return False
    with bus.UserManager(acct.uid) as mgr:
        return mgr.state(UNIT).running


def bring_up(mgr: bus.UserManager, s: Settings, acct: Account, *, restart: bool = False,
             timeout: float = UP_TIMEOUT, say: Callable[[str], None] | None = None) -> str:
    """Start (or restart) the unit over ``mgr`` and wait, at most ``timeout`` seconds in
    all, until /healthz answers and systemd reports the unit active; what was done.

    Reloads when the unit is not loaded or its files changed since systemd loaded them
    (NeedDaemonReload: for a Quadlet unit that includes its .container file, the unit's
    SourcePath; and _generated_stale); restarts when asked (something it reads changed)
    and when it runs but does not answer. ``say`` hears what a draining gateway
    finishes before it restarts.
    """
    deadline = time.monotonic() + timeout
    st = mgr.state(UNIT)
    if st.load != "loaded" or mgr.needs_reload(UNIT) or _generated_stale(s, acct):
        mgr.reload()
        st = mgr.state(UNIT)
    if st.load != "loaded":
        raise _rejected(s, acct, st.load)
    if mgr.unit_file_state(UNIT) == "disabled":  # the plain unit; a Quadlet's is generated
        mgr.enable(UNIT)
        mgr.reload()
    # An operator's start or restart is no crash loop: reset the failed state and
    # the start rate limit first (five quick restarts would otherwise be refused).
    # A restart is asked for also while the unit is still starting (its start job
    # running, as right after another setup, before Notify=healthy reports ready): a
    # StartUnit would merge into that job and run the unit as systemd loaded it before
    # the reload, whereas systemd merges a RestartUnit into it and runs it again.
    job = None
    if (restart and st.active in ("activating", "active", "reloading")) or \
            (st.running and not health.healthy(s)):
        mgr.reset_failed(UNIT)
        job, action = mgr.queue("RestartUnit", UNIT), "restarted"
        _note_drain(mgr, acct, say)
    elif not st.running:
        mgr.reset_failed(UNIT)
        job, action = mgr.queue("StartUnit", UNIT), "started"
    else:
        action = "unchanged"
    up, st = _wait_up(mgr, s, job, restarting=action == "restarted", deadline=deadline,
                      since=st.since_usec)
    if not up and st.active == "activating" and health.healthy(s):
        raise GatewayError(
            f"{s.url}healthz answers, but after {timeout:.0f} s systemd still reports "
            f"{UNIT} {st.active} ({st.sub}): Podman's health check of the container has "
            f"not passed; last log lines:\n{journal.tail(acct.uid)}",
            "sudo theiaosctl doctor; sudo theiaosctl logs -n 100",
        )
    if not up:
        raise GatewayError(
            f"{UNIT} is {st.active} ({st.sub}) and {s.url}healthz does not answer"
            f"{' after ' + format(timeout, '.0f') + ' s' if st.active == 'active' else ''}; "
            f"last log lines:\n{journal.tail(acct.uid)}",
            "sudo theiaosctl doctor; sudo theiaosctl logs -n 100",
        )
    return action


def _generated_stale(s: Settings, acct: Account) -> bool:
    """The Quadlet file is newer than what the generator made of it at the last reload.
    NeedDaemonReload misses this where the manager loads the unit afresh (after it let
    go of an inactive unit): it then records the .container file's new mtime while the
    unit it loads is the generator's old output."""
    from . import files

    try:
        src = files.lstat(s.quadlet_path)
        if src is None:
            return False
        made = files.lstat(f"/run/user/{acct.uid}/systemd/generator/{UNIT}")
    except (OSError, TheiaosError):  # the account's runtime directory, in any shape
        return True
    return made is None or src.st_mtime_ns > made.st_mtime_ns


def _rejected(s: Settings, acct: Account, load: str) -> GatewayError:
    from . import files

    if files.lstat(s.quadlet_path) is not None:
        return GatewayError(
            f"{UNIT} does not exist after a reload ({load}): Quadlet rejected {s.quadlet_path}",
            f"sudo -u {acct.name} /usr/libexec/podman/quadlet -dryrun -user")
    return GatewayError(
        f"{UNIT} does not load ({load}): systemd rejected {s.plain_unit_path}",
        f"sudo -u {acct.name} XDG_RUNTIME_DIR=/run/user/{acct.uid} systemd-analyze --user "
        f"verify {s.plain_unit_path}")


#: How often a wait for the gateway asks it (one local HTTP request): at first every
#: PROBE seconds, then less and less often up to every PROBE_MAX (a gateway that never
#: answers is not asked a hundred times a second for its whole start timeout, each
#: request a line in its log); at once when systemd reports the unit active (its start
#: check saw the gateway answer). How often systemd (five calls), whose state decides
#: when to give up, and once the gateway answers, when it is up.
PROBE = 0.01
PROBE_MAX = 0.25
ASK_SYSTEMD = 0.1


def _wait_up(mgr: bus.UserManager, s: Settings, job: bytes | None, restarting: bool,
             deadline: float, since: int = 0) -> tuple[bool, bus.UnitState]:
    """Wait until /healthz answers and systemd reports the unit active, asking the
    gateway every PROBE to PROBE_MAX seconds and systemd every ASK_SYSTEMD seconds until
    it answers, then systemd every PROBE seconds: with Notify=healthy the unit turns
    active a moment after the first answer (when Podman's own health check has
    passed), and `systemctl start` waits for the same. During a restart the answer
    counts once the unit is seen starting again, after a state change since ``since`` (the unit's
    StateChangeTimestamp when the job was queued: it may have been starting already),
    or once the job is done, so that it is the new container's. Give up at once when the
    job is done and the unit failed or waits to be restarted (the gateway exited: a
    refused config exits at once, so ActiveState alone could read "active" while
    nothing answers)."""
    fresh = not restarting  # a restart: the old container answers until it is stopped
    answers = False
    asked = probed = 0.0
    interval = PROBE
    while True:
        if not fresh or answers or time.monotonic() - asked >= ASK_SYSTEMD:
            st = mgr.state(UNIT)
            pending = job is not None and mgr.job_pending(job)
            fresh = fresh or not pending or (st.active == "activating"
                                             and st.since_usec != since)
            asked = time.monotonic()
            if not pending and (st.active in ("failed", "inactive") or st.sub == "auto-restart"):
                return False, st
            if answers and st.active == "active":
                return True, st
            if fresh and st.active == "active":
                probed = 0.0  # its start check passed: ask the gateway now
        if not answers and fresh and time.monotonic() - probed >= interval:
            probed, interval = time.monotonic(), min(interval * 2, PROBE_MAX)
            if health.healthy(s):
                answers = True
                continue  # ask systemd at once
        if time.monotonic() > deadline:
            return False, st
        time.sleep(PROBE)


def stop(acct: Account, timeout: float, say: Callable[[str], None] | None = None
         ) -> bus.UnitState | None:
    """Stop the unit and wait at most ``timeout`` s until it is down (its state then:
    "deactivating" while the gateway still finishes its turns and the stop job goes
    on); None when the user manager is not running. ``say`` hears what a draining
    gateway finishes first."""
    if not manager_running(acct):
        return None
    began = time.monotonic()
    with bus.UserManager(acct.uid) as mgr:
        job = mgr.queue("StopUnit", UNIT)
        _note_drain(mgr, acct, say)
        mgr.wait_job(job, timeout - (time.monotonic() - began))
        return mgr.wait(UNIT, ("inactive", "failed"), 0)


#: How long a stop may take before theiaosctl says what the gateway finishes first: an
#: idle gateway stops within a fraction of a second, a busy one drains its turns.
DRAIN_NOTE_AFTER = 1.5


def _note_drain(mgr: bus.UserManager, acct: Account, say: Callable[[str], None] | None) -> None:
    """When the unit is still stopping DRAIN_NOTE_AFTER s after its stop or restart was
    queued, say what the gateway finishes first (its own drain line in the journal)."""
    if say is None:
        return
    until = time.monotonic() + DRAIN_NOTE_AFTER
    while time.monotonic() < until:
        if mgr.state(UNIT).active not in ("active", "deactivating"):
            return  # stopped (or already starting again): nothing to wait for
        time.sleep(ASK_SYSTEMD)
    if mgr.state(UNIT).active == "deactivating":
        note = journal.draining(acct.uid)
        say(f"{UNIT} is stopping: the gateway finishes {note or 'its work'} first, "
            "then it stops")
