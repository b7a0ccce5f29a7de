"""`theiaosctl doctor`: one line per check, pass or fail, and the exact fix.

The product doc's troubleshooting items map onto these checks: EACCES on config
(config-owner), missing gateway.mode (config-mode), rootless Podman failing for the
account (subids, newuidmap), container name in use (container-name), script not found
(launch-script), Quadlet service not found (quadlet-unit, cgroups).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import socket
import stat
from collections.abc import Callable

from . import account, bus, files, gateway, health, logindefs, podman, subids
from .account import Account
from .errors import TheiaosError
from .settings import UNIT, Settings


@dataclasses.dataclass(frozen=True)
class Check:
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
    return Check("podman", False, f"Podman {f.label()} has no Quadlet (needs 4.4)",
                 "upgrade podman, or use manual mode: sudo theiaosctl setup --container")


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
    texts = [(files.read_bytes(f"/etc/{f}") or b"").decode() for f in ("subuid", "subgid")]
    plan = subids.plan((acct.name, str(acct.uid)), texts[0], texts[1], logindefs.load("/etc"))
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


def _unit(s: Settings, acct: Account) -> Check:
    if not os.path.exists(s.quadlet_path):
        return Check("quadlet-unit", False, f"{s.quadlet_path} is missing (manual mode?)",
                     "sudo theiaosctl setup --quadlet")
    if not bus.manager_running(acct.uid):
        return Check("quadlet-unit", False, "cannot ask the user manager (not running)",
                     f"sudo systemctl start user@{acct.uid}.service")
    with bus.UserManager(acct.uid) as mgr:
        st = mgr.state(UNIT)
    if st.load == "loaded":
        return Check("quadlet-unit", True, f"{UNIT} is {st.active} ({st.sub})")
    return Check("quadlet-unit", False, f"{UNIT} is {st.load}: Quadlet rejected the file",
                 f"sudo -u {acct.name} /usr/libexec/podman/quadlet -dryrun -user, then "
                 "sudo systemctl --machine theiaos@ --user daemon-reload")


def _image(s: Settings, acct: Account) -> Check:
    image_id = podman.image_id(acct.identity(), s.image)
    if image_id:
        return Check("image", True, f"{s.image} ({image_id[:12]}) in {acct.name}'s store")
    return Check("image", False, f"{s.image} is not in {acct.name}'s Podman store",
                 "sudo theiaosctl image build /path/to/theiaos (or image load FILE)")


def _port_owner(port: int) -> str | None:
    """None when the port is free on the publish address, else a word on who holds it."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
    return None


def _ports(s: Settings, acct: Account) -> Check:
    ours = health.healthy(s)
    busy = []
    for name, port in (("THEIAOS_PODMAN_GATEWAY_HOST_PORT", s.gateway_port),
                       ("THEIAOS_PODMAN_BRIDGE_HOST_PORT", s.bridge_port)):
        if _port_owner(port) is not None and not ours:
            busy.append((name, port))
    if not busy:
        return Check("ports", True, f"{s.gateway_port} and {s.bridge_port} are free or ours")
    name, port = busy[0]
    return Check("ports", False, f"port {port} is taken by another program",
                 f"sudo ss -ltnp 'sport = :{port}' shows who; or set {name} in "
                 "/etc/theiaos/podman.env and run sudo theiaosctl setup")


def _selinux(s: Settings, acct: Account) -> Check:
    try:
        with open("/sys/fs/selinux/enforce") as f:
            mode = "enforcing" if f.read().strip() == "1" else "permissive"
    except FileNotFoundError:
        return Check("selinux", True, "SELinux is not enabled")
    text = (files.read_bytes(s.quadlet_path) or b"").decode()
    if text and ":Z\n" not in text:
        return Check("selinux", False, f"SELinux is {mode} but the Quadlet mounts have no :Z",
                     f"remove {s.quadlet_path} and run sudo theiaosctl setup")
    return Check("selinux", True, f"SELinux is {mode}; mounts are relabelled (:Z)")


def _config_owner(s: Settings, acct: Account) -> Check:
    wrong = []
    for path in (s.config_dir, s.env_file, s.config_file, s.workspace_dir):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            wrong.append(f"{path} missing")
            continue
        if st.st_uid != acct.uid or stat.S_ISLNK(st.st_mode):
            wrong.append(f"{path} is not owned by {acct.name}")
    if wrong:
        return Check("config-owner", False, "; ".join(wrong) + " (the gateway gets EACCES)",
                     f"sudo chown -R {acct.name}: {s.config_dir} {s.workspace_dir}")
    return Check("config-owner", True, f"config and workspace belong to {acct.name}")


def _config_mode(s: Settings, acct: Account) -> Check:
    raw = files.read_bytes(s.config_file)
    if raw is None:
        return Check("config-mode", False, f"{s.config_file} is missing", "sudo theiaosctl setup")
    try:
        cfg = gateway.parse_config(raw, s.config_file)
    except TheiaosError as exc:
        return Check("config-mode", False, exc.message, exc.fix or "")
    mode = cfg.get("gateway", {}).get("mode") if isinstance(cfg.get("gateway"), dict) else None
    if mode == "local":
        return Check("config-mode", True, 'gateway.mode is "local"')
    return Check("config-mode", False, f"gateway.mode is {mode!r}: the gateway refuses to start",
                 f'set "gateway": {{"mode": "local"}} in {s.config_file}')


def _token(s: Settings, acct: Account) -> Check:
    token = gateway.read_token(s)
    if not token:
        return Check("token", False, f"THEIAOS_GATEWAY_TOKEN is missing in {s.env_file}",
                     "sudo theiaosctl setup")
    other = gateway.config_token(s)
    if other and other != token:
        return Check("token", False, f"gateway.auth.token in {s.config_file} differs from "
                     f"THEIAOS_GATEWAY_TOKEN in {s.env_file} (the onboarding wizard wrote it)",
                     f"remove gateway.auth.token from {s.config_file}, then "
                     "sudo theiaosctl restart")
    return Check("token", True, f"token present in {s.env_file}")


def _container_name(s: Settings, acct: Account) -> Check:
    info = podman.inspect_container(acct.identity(), s.container_name)
    if info is None:
        return Check("container-name", True, f"no stray container named {s.container_name}")
    labels = (info.get("Config") or {}).get("Labels") or {}
    if labels.get("PODMAN_SYSTEMD_UNIT") == UNIT:
        return Check("container-name", True, f"{s.container_name} belongs to {UNIT}")
    state = (info.get("State") or {}).get("Status", "unknown")
    return Check("container-name", state == "running",
                 f"a manually started container {s.container_name} exists ({state}); "
                 f"{UNIT} replaces it when it starts",
                 f"sudo -u {acct.name} podman rm -f {s.container_name}")


def _launch_script(s: Settings, acct: Account) -> Check:
    path = f"{acct.home}/run-theiaos-podman.sh"
    if os.access(path, os.X_OK):
        return Check("launch-script", True, f"{path} is there (manual mode as {acct.name})")
    return Check("launch-script", False, f"{path} is missing or not executable",
                 "sudo theiaosctl setup")


CHECKS: tuple[Callable[[Settings, Account], Check], ...] = (
    _podman, _cgroups, _idmap, _subids, _linger, _manager, _unit, _image, _ports,
    _selinux, _config_owner, _config_mode, _token, _container_name, _launch_script,
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
