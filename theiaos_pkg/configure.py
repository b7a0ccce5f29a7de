"""The setup steps, in order. Only this module knows the order.

Each step is idempotent and returns a Step saying what it did; "changed" results
drive the decision to reload and restart, so a second run changes and restarts
nothing. The gateway is declared up only when ``/healthz`` answers.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from . import account, bus, data, files, gateway, podman, quadlet, service, subids
from .account import Account
from .errors import TheiaosError
from .files import Perm
from .run import run
from .settings import LINGER_MARKER, STATE_DIR, UNIT, Settings


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    state: str  # created | changed | unchanged | kept | skipped | missing | started…
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

    state, acct = account.ensure(etc, s.user, s.home, s.account_kind == "existing")
    add(Step("account", state, f"{acct.name}, uid {acct.uid}"))
    changed, rng = subids.ensure(etc, acct.name, acct.uid)
    add(Step("subids", _state(changed), f"{rng.start}-{rng.end - 1}"))
    if changed and os.path.isdir(f"{acct.home}/.local/share/containers"):
        run(["podman", "system", "migrate"], as_user=acct.identity())
    paths = gateway.ensure(s, acct.uid, acct.gid)
    add(Step("gateway-config", _state(bool(paths)), ", ".join(paths)))
    add(write_quadlet(s, acct, features) if s.quadlet else remove_quadlet(s, acct))
    add(write_launch_script(s, acct))
    return acct


def launch_script_path(s: Settings) -> str:
    return f"{s.home}/run-theiaos-podman.sh"


def write_launch_script(s: Settings, acct: Account) -> Step:
    """The product doc's launch script in the account's home (manual mode, as itself)."""
    text = data.find(data.LAUNCH_SCRIPT).read_bytes()
    path = launch_script_path(s)
    return Step("launch-script", _state(files.write_bytes(path, text,
                                                          Perm(acct.uid, acct.gid, 0o755))), path)


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


def write_state(path: Path, text: str) -> None:
    """A file of the package's own state under /var/lib/theiaos-podman (root's, 0644)."""
    files.ensure_dir(str(STATE_DIR), Perm(0, 0, 0o755), parents=Perm(0, 0, 0o755))
    files.write_bytes(str(path), text.encode(), Perm(0, 0, 0o644))


def _mark_linger(name: str) -> None:
    write_state(LINGER_MARKER, f"{name}\n")


def activate(s: Settings, acct: Account, out: Outcome, report: Report,
             may_start: bool = True) -> None:
    """Linger, user manager, image check, start or restart, wait until healthy.

    ``may_start`` False (policy-rc.d said no) does everything but start the service.
    """

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
    if not bus.systemd_running() or not may_start:
        # No logind to ask (chroot, image build), or policy-rc.d forbids starting now:
        # logind reads this file at boot, so the gateway starts with the next boot.
        linger = f"/var/lib/systemd/linger/{acct.name}"
        files.ensure_dir("/var/lib/systemd/linger", Perm(0, 0, 0o755), parents=Perm(0, 0, 0o755))
        if files.read_bytes(linger) is None:
            files.write_bytes(linger, b"", Perm(0, 0, 0o644))
            _mark_linger(acct.name)
        why = ("systemd is not running (chroot or image build)" if may_start
               else "policy-rc.d forbids starting services now")
        add(Step("service", "skipped", f"{why}; lingering takes effect at the next boot"))
        return
    if bus.enable_linger(acct.uid):
        _mark_linger(acct.name)
        add(Step("linger", "changed"))
    else:
        add(Step("linger", "unchanged"))
    bus.wait_for_user_manager(acct.uid)
    who = acct.identity()
    image_id = podman.image_id(who, s.image)
    if image_id is None:
        add(Step("image", "missing", podman.provide_hint(who, s.image)))
        return
    running = podman.running_image(who, s.container_name) if service.is_active(acct) else None
    new_image = running is not None and running != image_id
    add(Step("image", "changed" if new_image else "unchanged", f"{s.image} {image_id[:12]}"))
    action = service.bring_up(s, acct, reload=out.changed("quadlet"),
                              restart=out.changed("quadlet", "gateway-config", "image"))
    out.healthy = True
    add(Step("service", action, f"{UNIT} answers at {s.url}"))


def remove(s: Settings, etc: str, report: Report) -> None:
    """Before the package goes: stop the gateway, remove our Quadlet (an admin-edited
    one is kept, and said so), reload, and turn lingering off if we turned it on."""
    acct = account.lookup(etc, s.user)
    if acct is None:
        report(f"remove: no account {s.user}: nothing to stop")
        return
    running = bus.systemd_running() and service.manager_running(acct)
    if running:
        st = service.stop(acct)
        report(f"remove: {UNIT} {st.active if st else 'inactive'}")
        if podman.inspect_container(acct.identity(), s.container_name) is not None:
            run(["podman", "rm", "--force", s.container_name], as_user=acct.identity())
            report(f"remove: removed the manual container {s.container_name}")
    raw = files.read_bytes(s.quadlet_path)
    if raw is not None and quadlet.edited_by_admin(raw.decode("utf-8", "replace")):
        report(f"remove: kept {s.quadlet_path} (edited by hand); remove it yourself")
    elif raw is not None:
        files.remove(s.quadlet_path)
        report(f"remove: removed {s.quadlet_path}")
    if running:
        with bus.UserManager(acct.uid) as mgr:
            mgr.reload()
    script = launch_script_path(s)
    if files.read_bytes(script) == data.find(data.LAUNCH_SCRIPT).read_bytes():
        files.remove(script)
        report(f"remove: removed {script}")
    marker = files.read_bytes(str(LINGER_MARKER))
    if marker is not None and marker.decode().strip() == acct.name:
        if bus.systemd_running():
            bus.disable_linger(acct.uid)
        else:
            files.remove(f"/var/lib/systemd/linger/{acct.name}")
        files.remove(str(LINGER_MARKER))
        report(f"remove: lingering turned off for {acct.name} (this package turned it on)")


def configure(s: Settings, etc: str = "/etc", report: Report = print,
              may_start: bool = True) -> Outcome:
    out = Outcome()
    acct = prepare(s, etc, out, report, podman.detect())
    activate(s, acct, out, report, may_start)
    if out.healthy:
        report(f"Setup complete: the gateway answers at {s.url} "
               f"(its token is THEIAOS_GATEWAY_TOKEN in {s.env_file})")
    return out
