"""The setup steps, in order. Only this module knows the order.

Each step is idempotent and returns a Step saying what it did; "changed" results
drive the decision to reload and restart, so a second run changes and restarts
nothing. The gateway is declared up only when ``/healthz`` answers.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from . import account, bus, files, gateway, podman, quadlet, service, subids
from .account import Account
from .errors import TheiaosError
from .files import Perm
from .run import run
from .settings import UNIT, Settings


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
    add(write_quadlet(s, acct, features) if s.quadlet else remove_quadlet(s, acct))
    return acct


def remove_quadlet(s: Settings, acct: Account) -> Step:
    """Manual mode: stop the service and remove our Quadlet (an admin-edited one stays)."""
    raw = files.read_bytes(s.quadlet_path)
    if raw is None:
        return Step("quadlet", "unchanged", "manual mode: none installed")
    if quadlet.edited_by_admin(raw.decode("utf-8", "replace")):
        return Step("quadlet", "kept", f"{s.quadlet_path} was edited by hand; remove it "
                    "yourself if manual mode is meant")
    if bus.systemd_running():
        service.stop(acct)
    files.remove(s.quadlet_path)
    return Step("quadlet", "changed", f"removed {s.quadlet_path} (manual mode)")


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

    if not s.quadlet:
        if out.changed("quadlet") and service.manager_running(acct):
            with bus.UserManager(acct.uid) as mgr:
                mgr.reload()
        add(Step("service", "skipped", "manual mode: start the gateway with "
                 "sudo theiaosctl launch"))
        return
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
    if podman.image_id(who, s.image) is None:
        add(Step("image", "missing", podman.provide_hint(who, s.image)))
        return
    add(Step("image", "unchanged", s.image))
    action = service.bring_up(s, acct, reload=out.changed("quadlet"),
                              restart=out.changed("quadlet", "gateway-config"))
    out.healthy = True
    add(Step("service", action, f"{UNIT} answers at {s.url}"))


def configure(s: Settings, etc: str = "/etc", report: Report = print) -> Outcome:
    out = Outcome()
    acct = prepare(s, etc, out, report, podman.detect())
    activate(s, acct, out, report)
    if out.healthy:
        report(f"Setup complete: the gateway answers at {s.url} "
               f"(its token is THEIAOS_GATEWAY_TOKEN in {s.env_file})")
    return out
