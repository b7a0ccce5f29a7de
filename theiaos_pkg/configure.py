"""The setup steps, in order. Only this module knows the order.

Each step is idempotent and returns a Step saying what it did; "changed" results
drive the decision to reload and restart, so a second run changes and restarts
nothing. The gateway is declared up only when ``/healthz`` answers.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

from . import account, bus, files, gateway, health, journal, podman, quadlet, subids
from .account import Account
from .errors import GatewayError, TheiaosError
from .files import Perm
from .run import run
from .settings import UNIT, Settings

START_TIMEOUT = 300.0
HEALTH_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    state: str  # changed | unchanged | skipped | kept | missing | running
    detail: str = ""

    def line(self) -> str:
        return f"{self.name}: {self.state}" + (f" ({self.detail})" if self.detail else "")


@dataclasses.dataclass
class Outcome:
    steps: list[Step] = dataclasses.field(default_factory=list)
    healthy: bool = False

    def changed(self, *names: str) -> bool:
        return any(s.name in names and s.state == "changed" for s in self.steps)


Report = Callable[[str], None]


def _state(changed: bool) -> str:
    return "changed" if changed else "unchanged"


def prepare(s: Settings, etc: str, out: Outcome, report: Report,
            features: podman.Features) -> Account:
    """Account, subids, gateway config and Quadlet: everything that is files."""

    def add(step: Step) -> None:
        out.steps.append(step)
        report(step.line())

    changed, acct = account.ensure(etc, s.user, s.home)
    add(Step("account", "created" if changed else "unchanged", f"{acct.name}, uid {acct.uid}"))
    changed, rng = subids.ensure(etc, acct.name, acct.uid)
    add(Step("subids", _state(changed), f"{rng.start}-{rng.end - 1}"))
    if changed and os.path.isdir(f"{acct.home}/.local/share/containers"):
        run(["podman", "system", "migrate"], as_user=acct.identity())
    paths = gateway.ensure(s, acct.uid, acct.gid)
    add(Step("gateway-config", _state(bool(paths)), ", ".join(paths)))
    add(write_quadlet(s, acct, features))
    return acct


def write_quadlet(s: Settings, acct: Account, features: podman.Features) -> Step:
    if not features.quadlet:
        raise TheiaosError(
            f"Podman {features.label()} has no Quadlet (needs 4.4 or later)",
            "upgrade podman",
        )
    text = quadlet.render(s, features)
    old = files.read_bytes(s.quadlet_path)
    if old is not None and old.decode("utf-8", "replace") != text \
            and quadlet.edited_by_admin(old.decode("utf-8", "replace")):
        return Step("quadlet", "kept",
                    f"{s.quadlet_path} was edited by hand; remove it and run "
                    "`theiaosctl setup` to regenerate")
    mine = Perm(acct.uid, acct.gid, 0o755)
    files.ensure_dir(s.quadlet_dir, mine, parents=mine)
    changed = files.write_bytes(s.quadlet_path, text.encode(), Perm(acct.uid, acct.gid, 0o644))
    return Step("quadlet", _state(changed), s.quadlet_path)


def activate(s: Settings, acct: Account, out: Outcome, report: Report) -> None:
    """Linger, user manager, image check, start or restart, wait until healthy."""

    def add(step: Step) -> None:
        out.steps.append(step)
        report(step.line())

    if not bus.systemd_running():
        linger = f"/var/lib/systemd/linger/{acct.name}"
        files.ensure_dir("/var/lib/systemd/linger", Perm(0, 0, 0o755), parents=Perm(0, 0, 0o755))
        files.write_bytes(linger, b"", Perm(0, 0, 0o644))
        add(Step("service", "skipped", "systemd is not running (chroot or image build); "
                 "lingering takes effect at the next boot"))
        return
    add(Step("linger", _state(bus.enable_linger(acct.uid))))
    bus.wait_for_user_manager(acct.uid)
    who = acct.identity()
    if not podman.image_exists(who, s.image):
        add(Step("image", "missing", podman.provide_hint(who, s.image)))
        return
    add(Step("image", "unchanged", s.image))
    with bus.UserManager(acct.uid) as mgr:
        st = mgr.state(UNIT)
        if out.changed("quadlet") or st.load != "loaded":
            mgr.reload()
            st = mgr.state(UNIT)
        if st.load != "loaded":
            raise GatewayError(
                f"{UNIT} does not exist after a reload ({st.load}): Quadlet rejected "
                f"{s.quadlet_path}",
                f"sudo -u {acct.name} /usr/libexec/podman/quadlet -dryrun -user",
            )
        if st.running and (out.changed("quadlet", "gateway-config") or not health.healthy(s)):
            mgr.restart(UNIT)  # new unit or config, or running but not answering
            action = "restarted"
        elif not st.running:
            if st.active == "failed":
                mgr.reset_failed(UNIT)  # an explicit start is not a crash loop
            mgr.start(UNIT)
            action = "started"
        else:
            action = "unchanged"
        st = mgr.wait(UNIT, ("active",), START_TIMEOUT)
        up, st = wait_up(mgr, s, st)
    if not up:
        raise GatewayError(
            f"{UNIT} is {st.active} ({st.sub}) and {s.url}healthz does not answer; "
            f"last log lines:\n{journal.tail(acct.uid)}",
            "sudo theiaosctl status; sudo journalctl "
            f"_SYSTEMD_USER_UNIT={UNIT} _UID={acct.uid}",
        )
    out.healthy = True
    add(Step("service", action, f"{UNIT} {st.active}/{st.sub}"))


def wait_up(mgr: bus.UserManager, s: Settings, st: bus.UnitState) -> tuple[bool, bus.UnitState]:
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


def configure(s: Settings, etc: str = "/etc", report: Report = print) -> Outcome:
    out = Outcome()
    acct = prepare(s, etc, out, report, podman.detect())
    activate(s, acct, out, report)
    if out.healthy:
        report(f"Setup complete: the gateway answers at {s.url} "
               f"(its token is THEIAOS_GATEWAY_TOKEN in {s.env_file})")
    return out
