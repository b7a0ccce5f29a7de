"""The gateway's systemd user service: bring it up (and prove it answers), stop it."""

from __future__ import annotations

import time

from . import bus, health, journal
from .account import Account
from .errors import GatewayError
from .settings import UNIT, Settings

START_TIMEOUT = 300.0
HEALTH_TIMEOUT = 120.0


def manager_running(acct: Account) -> bool:
    return bus.manager_running(acct.uid)


def is_active(acct: Account) -> bool:
    if not manager_running(acct):
        return False
    with bus.UserManager(acct.uid) as mgr:
        return mgr.state(UNIT).running


def bring_up(s: Settings, acct: Account, *, reload: bool = False, restart: bool = False) -> str:
    """Start (or restart) the unit and wait until /healthz answers; what was done.

    Restarts when asked (the unit or its config changed) and when it runs but does
    not answer.
    """
    with bus.UserManager(acct.uid) as mgr:
        st = mgr.state(UNIT)
        if reload or st.load != "loaded":
            mgr.reload()
            st = mgr.state(UNIT)
        if st.load != "loaded":
            raise GatewayError(
                f"{UNIT} does not exist after a reload ({st.load}): Quadlet rejected "
                f"{s.quadlet_path}",
                f"sudo -u {acct.name} /usr/libexec/podman/quadlet -dryrun -user",
            )
        # An operator's start or restart is no crash loop: reset the failed state and
        # the start rate limit first (five quick restarts would otherwise be refused).
        if st.running and (restart or not health.healthy(s)):
            mgr.reset_failed(UNIT)
            mgr.restart(UNIT)
            action = "restarted"
        elif not st.running:
            mgr.reset_failed(UNIT)
            mgr.start(UNIT)
            action = "started"
        else:
            action = "unchanged"
        st = mgr.wait(UNIT, ("active",), START_TIMEOUT)
        up, st = _wait_up(mgr, s, st)
    if not up:
        raise GatewayError(
            f"{UNIT} is {st.active} ({st.sub}) and {s.url}healthz does not answer; "
            f"last log lines:\n{journal.tail(acct.uid)}",
            "sudo theiaosctl doctor; sudo theiaosctl logs -n 100",
        )
    return action


def _wait_up(mgr: bus.UserManager, s: Settings, st: bus.UnitState) -> tuple[bool, bus.UnitState]:
    """Wait until /healthz answers; give up at once when the unit failed or is between
    restarts (the gateway exited: a refused config exits at once and systemd restarts it,
    so ActiveState alone can read "active" while nothing answers)."""
    deadline = time.monotonic() + HEALTH_TIMEOUT
    while True:
        if st.active == "failed" or st.sub == "auto-restart":
            return False, st
        if health.healthy(s):
            return True, st
        if time.monotonic() > deadline:
            return False, st
        time.sleep(0.5)
        st = mgr.state(UNIT)


def stop(acct: Account) -> bus.UnitState | None:
    """Stop the unit and wait until it is down; None when the user manager is not running."""
    if not manager_running(acct):
        return None
    with bus.UserManager(acct.uid) as mgr:
        mgr.stop(UNIT)
        return mgr.wait(UNIT, ("inactive", "failed"), START_TIMEOUT)
