"""Setup in three phases; only this module knows their order.

1. ``preflight`` reads the host through the doors and checks everything it can before
   anything is written: the settings, the account and its home, every directory the
   account must own and reach, the gateway's files, the rendered unit, the ports. A
   refusal leaves the host exactly as it was.
2. ``apply`` writes what the plan says (account, subids, config, unit, launch script).
   A change the running gateway must pick up is recorded first (state.PENDING).
3. ``activate`` brings the gateway up on the new state and clears the record only once
   ``/healthz`` answers, so a run killed at any point converges on the next one.

Each step is idempotent and returns a Step saying what it did.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from . import (
    account,
    bus,
    container,
    files,
    gateway,
    health,
    podman,
    quadlet,
    runtime,
    service,
    settings,
    state,
    subids,
)
from .account import Account
from .errors import BusError, SettingError, TheiaosError, UnsafePathError
from .files import Perm
from .run import run
from .runtime import AUTO_UPDATE_TIMER, LINGER_DIR, Outcome, Report, Step
from .settings import UNIT, Settings


def _state(changed: bool) -> str:
    return "changed" if changed else "unchanged"


# --- 1. preflight ------------------------------------------------------------------------


class UnitPlan(NamedTuple):
    """The gateway's unit file of the kind this Podman gets: what to do with it and its
    text; and our files of the other kind (or of both, in manual mode), retired: stopped,
    disabled, removed (after a Podman upgrade past 4.4, or a downgrade)."""

    unit: quadlet.UnitFile | None  # None: manual mode
    action: str  # write | unchanged | kept (edited by an admin) | none
    text: str = ""
    retire: tuple[quadlet.UnitFile, ...] = ()
    kept: tuple[quadlet.UnitFile, ...] = ()  # edited by an admin: never removed
    rendered: str = ""  # "KEY DIGEST" (quadlet.render_key) of what was rendered, to remember

    @property
    def path(self) -> str:
        return self.unit.path if self.unit else ""


class AdminFilePlan(NamedTuple):
    """The admin's settings file (settings.admin_file_update): written only when absent,
    or as a release shipped it, unmodified."""

    path: str
    data: bytes | None = None  # None: left as it is
    why: str = ""


def _plan_admin_file(etc: str) -> AdminFilePlan:
    path = os.path.join(etc, os.path.relpath(settings.ADMIN_FILE, "/etc"))
    update = settings.admin_file_update(files.read_bytes(path, files.ROOT, files.SMALL))
    return AdminFilePlan(path, *update) if update else AdminFilePlan(path)


class Plan(NamedTuple):
    s: Settings
    features: podman.Features
    account: account.Plan
    subids: subids.Plan
    config: gateway.Files
    unit: UnitPlan
    admin_file: AdminFilePlan

    @property
    def restart_reason(self) -> str | None:
        """What the running gateway must pick up (config or unit), or None."""
        what = [os.path.basename(p) for p in self.config.changed]
        if self.unit.action == "write" or self.unit.retire:
            what += [os.path.basename(u.path) for u in (self.unit.unit, *self.unit.retire)
                     if u is not None]
        return f"changed {', '.join(what)}" if what else None


_DIR_SETTINGS = ("config_dir", "workspace_dir")


def _check_dir(path: str, setting: str, s: Settings, ap: account.Plan) -> None:
    """A directory the account will own: it must not exist yet, or be the account's, or
    lie in its home; and the account must be able to reach it."""
    acct = ap.existing
    uid = acct.uid if acct else None
    try:
        chain, missing = files.stat_chain(path)
    except UnsafePathError as exc:
        raise SettingError(f"{setting}={path}: {exc.message}", exc.fix) from None
    if missing is None:
        st = chain[-1][1]
        below_home = path == s.home or path.startswith(s.home.rstrip("/") + "/")
        if st.st_uid != uid and not below_home:
            raise SettingError(
                f"{setting}={path}: it exists and belongs to uid {st.st_uid}; refusing to "
                f"give it to {ap.name}",
                "choose a directory that does not exist yet (setup creates it) in "
                "/etc/theiaos/podman.env",
            )
    why = account.reach_problem(chain, ap.name, uid, ap.groups)
    if why:
        raise SettingError(f"{setting}={path}: {why}",
                           f"choose a directory {ap.name} can reach in /etc/theiaos/podman.env")


def _unprivileged_start() -> int:
    raw = files.read_bytes("/proc/sys/net/ipv4/ip_unprivileged_port_start", files.ROOT,
                           files.SMALL) if os.path.isdir("/proc/sys/net") else None
    try:
        return int(raw) if raw else 1024
    except ValueError:
        return 1024


def _check_ports(s: Settings, ours: frozenset[int]) -> None:
    """Each port must be free, or held by the gateway itself: its sockets (Podman's port
    forwarder, pasta or rootlessport) belong to the account's uid (``ours``), also while
    a restart is half done."""
    lowest = _unprivileged_start()
    ports = {settings.env_name(a): getattr(s, a) for a in ("gateway_port", "bridge_port")}
    for setting, port in ports.items():
        if port < lowest:
            raise SettingError(
                f"{setting}={port}: rootless Podman cannot publish ports below {lowest}",
                f"choose a port of {lowest} or more, or lower net.ipv4.ip_unprivileged_port_start")
    problems = health.port_problems(s.publish_address, list(ports.values()), ours)
    for setting, port in ports.items():
        if port in problems:
            raise SettingError(
                f"{setting}={port}: {problems[port]}",
                f"sudo ss -ltnp 'sport = :{port}' shows who; or choose another port in "
                "/etc/theiaos/podman.env")


def _plan_unit(s: Settings, features: podman.Features, uid: int | None) -> UnitPlan:
    """Quadlet from Podman 4.4, a plain user unit before; in manual mode neither. An
    admin-edited file is kept, whichever kind (and while an edited unit of the other kind
    is there, it is the one systemd runs: ours is not written beside it)."""
    want = features.unit_kind if runtime.service_mode(s) else None
    texts = {}
    for uf in quadlet.unit_files(s):
        raw = files.read_bytes(uf.path, uid, files.SMALL) if uid is not None else None
        texts[uf.kind] = raw.decode("utf-8", "replace") if raw is not None else None
    retire: list[quadlet.UnitFile] = []
    kept: list[quadlet.UnitFile] = []
    for uf in quadlet.unit_files(s):
        old = texts[uf.kind]
        if uf.kind == want or old is None:
            continue
        (kept if quadlet.edited_by_admin(old) else retire).append(uf)
    if want is None:
        return UnitPlan(None, "none", retire=tuple(retire), kept=tuple(kept))
    target = quadlet.unit_file(s, want)
    old = texts[want]
    key = quadlet.render_key(s, features)
    remembered = state.read(state.UNIT_RENDER) if old is not None else None
    if old is not None and remembered == f"{key} {quadlet.text_digest(old)}\n":
        return UnitPlan(target, "unchanged", old, tuple(retire), tuple(kept))
    text = quadlet.render_unit(s, features)
    rendered = f"{key} {quadlet.text_digest(text)}\n"
    if kept:
        action, text = "none", ""
    elif old == text:
        action = "unchanged"
    elif old is not None and quadlet.edited_by_admin(old):
        action, text = "kept", old
    else:
        action = "write"
    return UnitPlan(target, action, text, tuple(retire), tuple(kept), rendered)


def preflight(s: Settings, etc: str, features: podman.Features,
              also_ours: frozenset[int] = frozenset(), will_start: bool = True) -> Plan:
    """Read and check everything; raise before anything is written.

    ``will_start`` False (a chroot or image build, or policy-rc.d forbids starting):
    the host's ports now say nothing about the ports at the next boot: not checked.
    ``also_ours``: uids whose ports count as the gateway's (the account setup --user
    moves it from)."""
    ap = account.plan(etc, s.user, s.home, s.account_kind == "existing")
    uid = ap.existing.uid if ap.existing else None
    sub = subids.check(etc, s.user, uid)
    for attr in _DIR_SETTINGS:
        _check_dir(getattr(s, attr), settings.env_name(attr), s, ap)
    if runtime.service_mode(s):
        _check_dir(quadlet.unit_file(s, features.unit_kind).directory,
                   settings.env_name("home"), s, ap)
    cfg = gateway.plan(s, uid)
    unit = _plan_unit(s, features, uid)
    if s.auto_update != "off" and not (runtime.service_mode(s) and features.auto_update_key):
        name = settings.env_name("auto_update")
        raise SettingError(
            f"{name}={s.auto_update}: Podman's auto-update needs the "
            f"Quadlet service and Podman 4.6 or later (this is {features.label()})",
            f"set {name}=off in {settings.ADMIN_FILE}")
    if will_start:
        _check_ports(s, also_ours | ({uid} if uid is not None else set()))
    return Plan(s, features, ap, sub, cfg, unit, _plan_admin_file(etc))


# --- 2. apply ----------------------------------------------------------------------------


def _apply_admin_file(a: AdminFilePlan) -> Step:
    if a.data is None:
        return Step("settings-file", "unchanged", a.path)
    root = Perm(files.ROOT, files.ROOT, 0o755)
    files.ensure_dir(os.path.dirname(a.path), root, parents=root)
    files.write_bytes(a.path, a.data, Perm(files.ROOT, files.ROOT, 0o644))
    return Step("settings-file", a.why, f"{a.path}: every setting is in {settings.DEFAULTS_FILE}")


def _manager_dropins(etc: str, keep: int | None) -> list[str]:
    """Our user@UID.service drop-ins but the one for uid ``keep``."""
    import glob

    mine = quadlet.manager_dropin_path(etc, keep) if keep is not None else None
    return sorted(p for p in glob.glob(quadlet.manager_dropin_glob(etc)) if p != mine)


def _remove_manager_dropins(etc: str, keep: int | None) -> tuple[list[str], list[str]]:
    """Remove our user@UID.service drop-ins but ``keep``'s (and their emptied
    directories), PID 1 told: the paths that were there, and the warnings of PID 1."""
    gone: list[str] = []
    warnings: list[str] = []
    for path in _manager_dropins(etc, keep):
        if files.remove(path):
            gone.append(path)
        files.remove_empty_dir(os.path.dirname(path))
        if (warning := _reload_system_manager(etc, path, False)):
            warnings.append(warning)
    return gone, warnings


def _loaded_by_pid1(etc: str) -> bool:
    """A test's etc is not the system's: only the real one is loaded by PID 1."""
    return etc == "/etc" and bus.systemd_running()


def _reload_system_manager(etc: str, path: str, present: bool) -> str:
    """PID 1 picks up a written (``present``) or removed drop-in of user@UID.service.
    A D-Bus failure is not the install's: it is returned as a warning with the fix
    (the drop-in is on disk; PID 1 reads it at its next reload or boot)."""
    if not _loaded_by_pid1(etc):
        return ""
    unit = os.path.basename(os.path.dirname(path)).removesuffix(".d")
    try:
        bus.reload_system_manager_for(unit, path, present)
    except BusError as exc:
        return (f"warning: PID 1 not reloaded for {unit} ({exc.message}); "
                "run: sudo systemctl daemon-reload")
    return ""


def _apply_manager_dropin(p: Plan, etc: str, acct: Account) -> Step:
    """The service mode's user@UID.service drop-in (quadlet.manager_dropin): the account's
    user manager stops the gateway first. Manual mode and other accounts get none."""
    path = quadlet.manager_dropin_path(etc, acct.uid)
    gone, warnings = _remove_manager_dropins(etc, acct.uid if p.unit.unit is not None else None)
    changed = bool(gone)
    if p.unit.unit is not None:
        root = Perm(files.ROOT, files.ROOT, 0o755)
        files.ensure_dir(os.path.dirname(path), root, parents=root)
        text = quadlet.manager_dropin(acct.gid, p.s.stop_timeout)
        changed = files.write_bytes(path, text.encode(), Perm(files.ROOT, files.ROOT, 0o644)) \
            or changed
        # also when PID 1 loaded the unit before the file was there
        if (warning := _reload_system_manager(etc, path, True)):
            warnings.append(warning)
    where = path if p.unit.unit is not None else "manual mode: none"
    return Step("shutdown-order", _state(changed), "; ".join([where, *warnings]))


def launch_script_path(s: Settings) -> str:
    return f"{s.home}/run-theiaos-podman.sh"


def write_launch_script(s: Settings, acct: Account) -> Step:
    """The product doc's launch script in the account's home (manual mode, as itself)."""
    from . import data

    text = data.read(data.LAUNCH_SCRIPT)
    path = launch_script_path(s)
    return Step("launch-script", _state(files.write_bytes(path, text,
                                                          Perm(acct.uid, acct.gid, 0o755))), path)


def _retire(s: Settings, acct: Account, uf: quadlet.UnitFile) -> str:
    """Stop the gateway, disable (a plain unit) and remove one of our unit files."""
    if bus.systemd_running() and service.manager_running(acct):
        service.stop(acct, container.stop_bound(s.stop_timeout))
        if uf.kind == "plain":
            with bus.UserManager(acct.uid) as mgr:
                mgr.disable(UNIT)
    if uf.kind == "plain":  # the [Install] link, also where no manager could be asked
        files.remove(f"{uf.directory}/default.target.wants/{UNIT}")
    files.remove(uf.path)
    return f"removed {uf.path}"


def _apply_unit(p: Plan, acct: Account) -> Step:
    u, s = p.unit, p.s
    name = "quadlet" if (u.unit is None or u.unit.kind == "quadlet") else "unit"
    done = [_retire(s, acct, uf) for uf in u.retire]
    kept = "; ".join(f"kept {uf.path}: edited by hand" for uf in u.kept)
    if u.unit is None:
        detail = "; ".join([*done, kept] if kept else done) or "manual mode: none installed"
        if kept and not done:
            return Step(name, "kept", f"{kept}; remove it yourself if manual mode is meant")
        return Step(name, "changed" if done else "unchanged",
                    detail + (" (manual mode)" if done else ""))
    if u.action == "none":
        return Step(name, "kept", f"{kept}; it runs the gateway; remove it and run "
                    "`theiaosctl setup` to switch to the generated one")
    if u.action == "kept":
        return Step(name, "kept", f"{u.path} was edited by hand; remove it and run "
                    "`theiaosctl setup` to regenerate")
    mine = Perm(acct.uid, acct.gid, 0o755)
    files.ensure_dir(u.unit.directory, mine, parents=mine, adopt_below=s.home)
    changed = files.write_bytes(u.path, u.text.encode(), Perm(acct.uid, acct.gid, 0o644))
    if u.rendered and os.geteuid() == 0:
        state.write(state.UNIT_RENDER, u.rendered)
        state.write(state.UNIT_SETTINGS, settings.format_published(s))
    if u.unit.kind == "plain" and not bus.systemd_running():
        _link_install(s, acct, u.unit)
    state_ = "changed" if changed or done else "unchanged"
    return Step(name, state_, "; ".join([*done, u.path]))


def _link_install(s: Settings, acct: Account, uf: quadlet.UnitFile) -> None:
    """What `systemctl --user enable` does, for a chroot or image where no user manager
    can be asked: the plain unit's [Install] WantedBy=default.target link."""
    mine = Perm(acct.uid, acct.gid, 0o755)
    wants = f"{uf.directory}/default.target.wants"
    files.ensure_dir(wants, mine, parents=mine, adopt_below=s.home)
    files.symlink(f"{wants}/{UNIT}", f"../{UNIT}", Perm(acct.uid, acct.gid, 0o777))


def apply(p: Plan, etc: str, out: Outcome, report: Report) -> Account:
    """Write what the plan says; a change the gateway must pick up is recorded first."""

    def add(step: Step) -> None:
        out.steps.append(step)
        report(step.line())

    why = p.restart_reason
    if why:
        state.mark_pending(why)
    add(_apply_admin_file(p.admin_file))
    st, acct = account.apply(etc, p.account)
    add(Step("account", st, f"{acct.name}, uid {acct.uid}"))
    changed, rng = subids.ensure(etc, acct.name, acct.uid)
    add(Step("subids", _state(changed), f"{rng.start}-{rng.end - 1}"))
    if changed and os.path.isdir(f"{acct.home}/.local/share/containers"):
        run(["podman", "system", "migrate"], as_user=acct.identity())
    paths = gateway.apply(p.s, p.config, acct.uid, acct.gid)
    add(Step("gateway-config", _state(bool(paths)), ", ".join(paths)))
    add(_apply_unit(p, acct))
    add(_apply_manager_dropin(p, etc, acct))
    add(write_launch_script(p.s, acct))
    return acct


# --- 3. activate -------------------------------------------------------------------------


def activate(s: Settings, acct: Account, out: Outcome, report: Report,
             may_start: bool = True, restart: bool = False,
             timeout: float | None = None,
             features: podman.Features | None = None) -> None:
    """The gateway up on what apply wrote, as its run mode does it (runtime.up)."""
    runtime.of(s, acct).up(out, report, may_start=may_start, restart=restart,
                           timeout=timeout, features=features)


# --- remove ------------------------------------------------------------------------------


def remove(s: Settings, etc: str, report: Report) -> None:
    """Before the package goes: stop the gateway, remove our Quadlet (an admin-edited
    one is kept, and said so), reload, and turn lingering off if we turned it on.

    Never blocks removal: each step that fails is reported and the next one runs."""
    acct = account.lookup(etc, s.user)
    if acct is None:
        report(f"remove: no account {s.user}: nothing to stop")
        return
    def dropins(s: Settings, acct: Account, report: Report) -> None:
        gone, warnings = _remove_manager_dropins(etc, keep=None)
        if gone:
            report(f"remove: removed {', '.join(gone)}")
        for line in warnings:
            report(f"remove: {line}")

    for step in (_stop_all, _remove_unit, dropins, _auto_update_off, _remove_launch_script,
                 _linger_off):
        try:
            step(s, acct, report)
        except TheiaosError as exc:
            report(f"remove: warning: {exc.message}"
                   + (f" (then: {exc.fix})" if exc.fix else ""))


#: Removal lets a draining gateway finish its turns for this long (the hooks' bound),
#: then stops its container within REMOVE_KILL_WAIT: removal always proceeds.
REMOVE_STOP_BOUND = service.HOOK_UP_TIMEOUT
REMOVE_KILL_WAIT = 10


def _stop_all(s: Settings, acct: Account, report: Report) -> None:
    if not (bus.systemd_running() and service.manager_running(acct)):
        return
    st = service.stop(acct, min(REMOVE_STOP_BOUND, container.stop_bound(s.stop_timeout)))
    report(f"remove: {UNIT} {st.active if st else 'inactive'}")
    if podman.inspect_container(acct.identity(), s.container_name) is not None:
        # the manual container, or the unit's when its turns outlasted the bound
        run(["podman", "rm", "--force", "--time", str(REMOVE_KILL_WAIT), s.container_name],
            as_user=acct.identity())
        report(f"remove: removed the container {s.container_name}")


def _remove_unit(s: Settings, acct: Account, report: Report) -> None:
    for uf in quadlet.unit_files(s):
        raw = files.read_bytes(uf.path, acct.uid, files.SMALL)
        if raw is not None and quadlet.edited_by_admin(raw.decode("utf-8", "replace")):
            report(f"remove: kept {uf.path} (edited by hand); remove it yourself")
        elif raw is not None:
            report(f"remove: {_retire(s, acct, uf)}")
    if bus.systemd_running() and service.manager_running(acct):
        with bus.UserManager(acct.uid) as mgr:
            mgr.reload()


def _auto_update_off(s: Settings, acct: Account, report: Report) -> None:
    if state.read(state.AUTO_UPDATE_MARKER) is None:
        return
    if bus.systemd_running() and service.manager_running(acct):
        with bus.UserManager(acct.uid) as mgr:
            mgr.disable(AUTO_UPDATE_TIMER)
            mgr.stop(AUTO_UPDATE_TIMER, 60)
    state.clear(state.AUTO_UPDATE_MARKER)
    report(f"remove: {AUTO_UPDATE_TIMER} disabled (this package enabled it)")


def _remove_launch_script(s: Settings, acct: Account, report: Report) -> None:
    from . import data

    script = launch_script_path(s)
    if files.read_bytes(script, acct.uid, files.SMALL) == data.read(data.LAUNCH_SCRIPT):
        files.remove(script)
        report(f"remove: removed {script}")


def _linger_off(s: Settings, acct: Account, report: Report) -> None:
    marker = state.read(state.LINGER_MARKER)
    if marker is None or marker.strip() != acct.name:
        return
    if bus.systemd_running():
        bus.disable_linger(acct.uid)
    else:
        files.remove(f"{LINGER_DIR}/{acct.name}")
    state.clear(state.LINGER_MARKER)
    report(f"remove: lingering turned off for {acct.name} (this package turned it on)")


# --- all three -----------------------------------------------------------------------------


def configure(s: Settings, etc: str = "/etc", report: Report = print,
              may_start: bool = True, plan: Plan | None = None,
              timeout: float | None = None) -> Outcome:
    """preflight (unless given), apply, activate; "Setup complete" only when it answers."""
    out = Outcome()
    p = plan or preflight(s, etc, podman.detect())
    acct = apply(p, etc, out, report)
    activate(s, acct, out, report, may_start, timeout=timeout, features=p.features)
    if out.healthy:
        report(f"Setup complete: the gateway answers at {s.url} "
               f"(its token is THEIAOS_GATEWAY_TOKEN in {s.env_file})")
    return out
