"""`theiaosctl doctor`: one line per check, pass or fail, and the exact fix.

The product doc's troubleshooting items map onto these checks: EACCES on config
(config-owner), missing gateway.mode (config-mode), rootless Podman failing for the
account (subids, newuidmap), container name in use (container-name), script not found
(launch-script), Quadlet service not found (unit, cgroups).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from typing import NamedTuple

from . import account, bus, container, files, gateway, health, journal, podman, runtime, settings, state, subids
from .account import Account
from .errors import TheiaosError
from .settings import TOKEN_KEY, UNIT, Settings


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{'ok' if self.ok else 'FAIL'}] {self.name}: {self.detail}"
        return text + (f"\n       fix: {self.fix}" if self.fix and not self.ok else "")


def _podman(s: Settings, acct: Account) -> Check:
    f = podman.detect()
    if f.quadlet:
        return Check("podman", True, f"Podman {f.label()} (Quadlet supported)")
    return Check("podman", True, f"Podman {f.label()} has no Quadlet: the gateway runs as "
                 "a plain user unit (podman run in the foreground)")


def _cgroups(s: Settings, acct: Account) -> Check:
    version = podman.cgroups_version(acct.identity())
    if version == "v2":
        return Check("cgroups", True, "cgroups v2")
    return Check("cgroups", False, f"cgroups {version}: Quadlet and rootless Podman need v2",
                 "boot with systemd.unified_cgroup_hierarchy=1")


def _idmap(s: Settings, acct: Account) -> Check:
    missing = []
    for tool in ("newuidmap", "newgidmap"):
        path = shutil.which(tool, path="/usr/bin:/bin:/usr/sbin:/sbin")
        if path is None:
            missing.append(f"{tool} missing")
            continue
        st = os.stat(path)
        has_caps = "security.capability" in os.listxattr(path)
        if not (st.st_mode & stat.S_ISUID and st.st_uid == 0) and not has_caps:
            missing.append(f"{path} is neither setuid root nor has file capabilities")
    if missing:
        return Check("newuidmap", False, "; ".join(missing), "apt install --reinstall uidmap "
                     "(dnf reinstall shadow-utils)")
    return Check("newuidmap", True, "newuidmap and newgidmap are usable")


def _subids(s: Settings, acct: Account) -> Check:
    plan = subids.check("/etc", acct.name, acct.uid)
    if plan.subuid is None and plan.subgid is None:
        return Check("subids", True, f"{acct.name} has {plan.range.start}-{plan.range.end - 1} "
                     "in /etc/subuid and /etc/subgid")
    where = " and ".join(f for f, new in (("/etc/subuid", plan.subuid),
                                         ("/etc/subgid", plan.subgid)) if new is not None)
    return Check("subids", False, f"{acct.name} has no usable range of {subids.COUNT} ids "
                 f"in {where}", "sudo theiaosctl setup")


def _linger(s: Settings, acct: Account) -> Check:
    if bus.linger_enabled(acct.uid):
        return Check("linger", True, f"lingering is on for {acct.name} (starts at boot)")
    return Check("linger", False, f"lingering is off for {acct.name}: the gateway will not "
                 "start at boot", f"sudo loginctl enable-linger {acct.name}")


def _manager(s: Settings, acct: Account) -> Check:
    if bus.manager_running(acct.uid):
        return Check("user-manager", True, f"user@{acct.uid}.service is running")
    return Check("user-manager", False, f"the user manager of {acct.name} is not running",
                 f"sudo systemctl start user@{acct.uid}.service")


def _unit_file(s: Settings) -> tuple[str, str]:
    """(path, what) of the unit this Podman gets."""
    from . import quadlet

    uf = quadlet.unit_file(s, podman.detect().unit_kind)
    return uf.path, uf.describe()


def _unit(s: Settings, acct: Account) -> Check:
    """The unit is there, and valid for this Podman: systemd loaded it."""
    if not runtime.service_mode(s):
        return Check("unit", True, "manual mode (setup --container): no unit; "
                     "theiaosctl launch runs the container")
    path, what = _unit_file(s)
    if files.lstat(path) is None:
        return Check("unit", False, f"{path} ({what}) is missing (manual mode, or Podman "
                     "changed since the last setup?)", "sudo theiaosctl setup --quadlet")
    if not bus.manager_running(acct.uid):
        return Check("unit", False, "cannot ask the user manager (not running)",
                     f"sudo systemctl start user@{acct.uid}.service")
    with bus.UserManager(acct.uid) as mgr:
        st = mgr.state(UNIT)
        refused = st.active == "failed" and mgr.main_status(UNIT) == container.CONFIG_REFUSED
    if st.load == "loaded" and st.active == "failed" and refused:
        said = journal.gateway_said(acct.uid)
        return Check("unit", False, f"{UNIT} failed: the gateway refused its configuration "
                     f"(exit {container.CONFIG_REFUSED}){': ' + said if said else ''}",
                     f"correct {s.config_file}, then: sudo theiaosctl restart")
    if st.load == "loaded":
        return Check("unit", True, f"{UNIT} ({what}) is {st.active} ({st.sub})")
    if what == "Quadlet":
        return Check("unit", False, f"{UNIT} is {st.load}: Quadlet rejected {path}",
                     f"sudo -u {acct.name} /usr/libexec/podman/quadlet -dryrun -user, then "
                     f"sudo systemctl --machine {acct.name}@ --user daemon-reload")
    return Check("unit", False, f"{UNIT} is {st.load}: systemd rejected {path}",
                 f"sudo -u {acct.name} XDG_RUNTIME_DIR=/run/user/{acct.uid} systemd-analyze "
                 f"--user verify {path}")


def _settings_applied(s: Settings, acct: Account) -> Check:
    """Our unit on disk is what the settings render now (podman.env or the environment
    changed since the last setup otherwise)."""
    from . import quadlet

    path, _what = _unit_file(s)
    raw = files.read_bytes(path, acct.uid, files.SMALL) if runtime.service_mode(s) else None
    if raw is None or quadlet.edited_by_admin(raw.decode("utf-8", "replace")):
        return Check("settings", True, "nothing rendered from the settings to compare")
    if quadlet.render_unit(settings.load(), podman.detect()).encode() == raw:
        return Check("settings", True, f"{path} is what the settings render")
    return Check("settings", False, "the settings changed since the last setup (podman.env "
                 f"or the environment); {path} still has the old ones",
                 "sudo theiaosctl setup")


def _limits(s: Settings, acct: Account) -> Check:
    """Resource limits the host can enforce (its cgroups need the controllers)."""
    from . import container

    f = podman.detect()
    hard = container.hardening(s, f)
    missing = [f"{name} (no {ctl} controller in this host's cgroups)"
               for name, ctl, want, got in (("memory limit", "memory", s.memory != "0", hard.memory),
                                            ("pids limit", "pids", bool(s.pids_limit),
                                             hard.pids_limit)) if want and not got]
    applied = ", ".join(x for x in (f"memory {hard.memory}" if hard.memory else "",
                                    f"pids {hard.pids_limit}" if hard.pids_limit else "") if x)
    text = (f"limits: {applied or 'none'}; read-only root: {'yes' if hard.read_only else 'no'}; "
            "no capabilities, no new privileges")
    if missing:
        text += f"; not applied: {', '.join(missing)}"
    return Check("hardening", True, text)


def _image(s: Settings, acct: Account) -> Check:
    image_id = podman.image_id(acct.identity(), s.image)
    if image_id:
        return Check("image", True, f"{s.image} ({image_id[:12]}) in {acct.name}'s store")
    return Check("image", False, f"{s.image} is not in {acct.name}'s Podman store",
                 "sudo theiaosctl image build /path/to/theiaos (or image load FILE)")


def _ports(s: Settings, acct: Account) -> Check:
    problems = health.port_problems(s.publish_address, (s.gateway_port, s.bridge_port),
                                    frozenset({acct.uid}))
    for name, port in ((settings.env_name(a), getattr(s, a)) for a in ("gateway_port", "bridge_port")):
        if port in problems:
            return Check("ports", False, problems[port],
                         f"sudo ss -ltnp 'sport = :{port}' shows who; or set {name} in "
                         "/etc/theiaos/podman.env and run sudo theiaosctl setup")
    return Check("ports", True, f"{s.gateway_port} and {s.bridge_port} are free or ours")


def _selinux(s: Settings, acct: Account) -> Check:
    enforce = files.read_bytes("/sys/fs/selinux/enforce", files.ROOT, files.SMALL)
    if enforce is None:
        return Check("selinux", True, "SELinux is not enabled")
    mode = "enforcing" if enforce.strip() == b"1" else "permissive"
    path, what = _unit_file(s)
    text = (files.read_bytes(path, acct.uid, files.SMALL) or b"").decode()
    if text and ":Z\n" not in text and ":Z " not in text:
        return Check("selinux", False, f"SELinux is {mode} but the {what}'s mounts have no :Z",
                     f"remove {path} and run sudo theiaosctl setup")
    return Check("selinux", True, f"SELinux is {mode}; mounts are relabelled (:Z)")


def _config_owner(s: Settings, acct: Account) -> Check:
    wrong = []
    for path in (s.config_dir, s.env_file, s.config_file, s.workspace_dir):
        st = files.lstat(path)
        if st is None:
            wrong.append(f"{path} missing")
            continue
        if st.st_uid != acct.uid or stat.S_ISLNK(st.st_mode):
            wrong.append(f"{path} is not owned by {acct.name}")
    if wrong:
        return Check("config-owner", False, "; ".join(wrong) + " (the gateway gets EACCES)",
                     f"sudo chown -R {acct.name}: {s.config_dir} {s.workspace_dir}")
    return Check("config-owner", True, f"config and workspace belong to {acct.name}")


def _config_mode(s: Settings, acct: Account) -> Check:
    try:
        cfg = gateway.read_config(s, acct.uid)
    except TheiaosError as exc:
        return Check("config-mode", False, exc.message, exc.fix or "")
    if cfg is None:
        return Check("config-mode", False, f"{s.config_file} is missing", "sudo theiaosctl setup")
    mode = cfg.get("gateway", {}).get("mode") if isinstance(cfg.get("gateway"), dict) else None
    if mode == "local":
        return Check("config-mode", True, 'gateway.mode is "local"')
    return Check("config-mode", False, f"gateway.mode is {mode!r}: the gateway refuses to start",
                 f'set "gateway": {{"mode": "local"}} in {s.config_file}')


def _token(s: Settings, acct: Account) -> Check:
    token = gateway.read_token(s, acct.uid)
    if not token:
        return Check("token", False, f"{TOKEN_KEY} is missing in {s.env_file}",
                     "sudo theiaosctl setup")
    other = gateway.config_token(s, acct.uid)
    if other and other != token:
        return Check("token", False, f"gateway.auth.token in {s.config_file} differs from "
                     f"{TOKEN_KEY} in {s.env_file} (the onboarding wizard wrote it)",
                     f"remove gateway.auth.token from {s.config_file}, then "
                     "sudo theiaosctl restart")
    if podman.detect().secret:
        if podman.secret_digest(acct.identity()) != gateway.digest(token):
            return Check("token", False, f"the Podman secret {podman.SECRET} does not hold "
                         f"the token of {s.env_file}", "sudo theiaosctl restart")
        return Check("token", True, f"token in {s.env_file}, the same in the Podman secret "
                     f"{podman.SECRET}")
    return Check("token", True, f"token present in {s.env_file}")


def _pending(s: Settings, acct: Account) -> Check:
    why = state.pending()
    if why:
        return Check("pending", False, f"a change is not applied to the running gateway yet "
                     f"({why}; an interrupted setup or token rotate)", "sudo theiaosctl restart")
    return Check("pending", True, "the running gateway has every change")


def _container_name(s: Settings, acct: Account) -> Check:
    info = podman.inspect_container(acct.identity(), s.container_name)
    if info is None:
        return Check("container-name", True, f"no stray container named {s.container_name}")
    labels = (info.get("Config") or {}).get("Labels") or {}
    if labels.get("PODMAN_SYSTEMD_UNIT") == UNIT:
        return Check("container-name", True, f"{s.container_name} belongs to {UNIT}")
    status = (info.get("State") or {}).get("Status", "unknown")
    if not runtime.service_mode(s):
        return Check("container-name", True, f"{s.container_name} is the manual mode's "
                     f"container ({status})")
    return Check("container-name", status == "running",
                 f"a manually started container {s.container_name} exists ({status}); "
                 f"{UNIT} replaces it when it starts",
                 f"sudo -u {acct.name} podman rm -f {s.container_name}")


def _launch_script(s: Settings, acct: Account) -> Check:
    path = f"{acct.home}/run-theiaos-podman.sh"
    st = files.lstat(path)
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IXUSR:
        return Check("launch-script", True, f"{path} is there (manual mode as {acct.name})")
    return Check("launch-script", False, f"{path} is missing or not executable",
                 "sudo theiaosctl setup")


CHECKS: tuple[Callable[[Settings, Account], Check], ...] = (
    _podman, _cgroups, _idmap, _subids, _linger, _manager, _unit, _settings_applied, _image,
    _limits, _ports,
    _selinux, _config_owner, _config_mode, _token, _pending, _container_name, _launch_script,
)


def run_checks(s: Settings) -> list[Check]:
    acct = account.lookup("/etc", s.user)
    if acct is None:
        return [Check("account", False, f"account {s.user} does not exist",
                      "sudo theiaosctl setup")]
    out = [Check("account", True, f"{acct.name} (uid {acct.uid}, home {acct.home})")]
    for check in CHECKS:
        try:
            out.append(check(s, acct))
        except TheiaosError as exc:
            name = check.__name__.lstrip("_").replace("_", "-")
            out.append(Check(name, False, f"could not check: {exc.message}", exc.fix or ""))
    return out
