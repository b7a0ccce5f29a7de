"""The one table of settings.

Every setting is declared once here: attribute, environment variable, default,
parser and help. Setup, the Quadlet template, ``launch`` and ``theiaosctl`` all read
the same frozen :class:`Settings`, so they cannot drift apart.

Sources, later wins: the defaults, the admin file ``/etc/theiaos/podman.env``
(parsed with python-dotenv, never executed), the environment.

The admin file is the admin's alone: the package ships no file in /etc. Every setting
with its default is documented in DEFAULTS_FILE (the package's, replaced by every
upgrade); setup creates the admin file, holding only a pointer there, when it is absent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from . import state
from .errors import SettingError

ADMIN_FILE = "/etc/theiaos/podman.env"
#: Every setting, commented out with its default (env_file_template; the package's file).
DEFAULTS_FILE = "/usr/share/theiaos-podman/podman.env"
#: What setup writes to ADMIN_FILE when there is none (never over one that exists).
ADMIN_STUB = f"""\
# theiaos-podman settings for this host. This file is yours: the package never changes
# it (setup creates it only when it is absent; remove keeps it, purge removes it).
# Every setting, with its default and what it does, is in {DEFAULTS_FILE}:
# copy a line here, uncomment and change it, then run: sudo theiaosctl setup
"""
#: sha256 of ADMIN_FILE as packages up to 0.2.0 shipped it (a conffile then). Found
#: unmodified it is replaced by ADMIN_STUB, as dpkg and rpm replace an unmodified
#: conffile: its comments would only grow stale. Any other content is the admin's.
SHIPPED_ADMIN_FILES = {
    "929341f10d0becc9960ecc3925282023a6c5abee4350fd163c450f95ba6ee5d5": "0.1.0",
    "bae8b301128e3574044bdd5cf5bf3075e1383e3a401e6b280b617445b3c384e6": "0.2.0",
}
#: What `theiaosctl setup --quadlet|--container|--user NAME` chose, kept across upgrades
#: in the package's state (state.CHOICES).
CHOICE_KEYS = ("THEIAOS_PODMAN_QUADLET", "THEIAOS_PODMAN_ACCOUNT", "THEIAOS_PODMAN_USER",
               "THEIAOS_PODMAN_HOME")

#: Ports the gateway listens on inside the container (fixed by the image).
CONTAINER_GATEWAY_PORT = 18789
CONTAINER_BRIDGE_PORT = 18790
#: Where the image expects its state (the image user's home is /home/node).
CONTAINER_HOME = "/home/node"
CONTAINER_CONFIG_DIR = f"{CONTAINER_HOME}/.theiaos"
CONTAINER_WORKSPACE_DIR = f"{CONTAINER_CONFIG_DIR}/workspace"
#: The systemd user unit Quadlet generates from ``theiaos.container``.
QUADLET_FILE = "theiaos.container"
UNIT = "theiaos.service"
TOKEN_KEY = "THEIAOS_GATEWAY_TOKEN"

# shadow's own rule for names (useradd accepts dots; a name is not all digits).
_USER_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,30}")
_CONTAINER_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
# Paths become unit file values and `-v HOST:CONTAINER:OPTIONS` arguments: ':' and ','
# would split them, '%' is a specifier, quotes and spaces change how systemd splits.
_PATH_RE = re.compile(r"/[A-Za-z0-9._@+/-]*")
# An image reference as Podman's store names it: [registry[:port]/]path[:tag][@digest].
# No transport ("docker://", "oci-archive:"…): the Quadlet and `podman run` want a name.
_IMAGE_RE = re.compile(
    r"(?:(?P<registry>(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)(?::[0-9]{1,5})?"
    r"|[A-Za-z0-9-]+:[0-9]{1,5})/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
_TRANSPORTS = ("docker:", "docker-archive:", "oci:", "oci-archive:", "dir:",
               "containers-storage:", "docker-daemon:", "sif:", "ostree:")
BINDS = ("lan", "loopback", "auto", "tailnet")


def _user(value: str) -> str:
    if not _USER_RE.fullmatch(value) or value.endswith((".", "-")):
        raise ValueError("not a valid user name (lower case letters, digits, '_', '.' and '-', "
                         "at most 31)")
    return value


def check_user(value: str) -> str:
    """A user name as setup --user takes it: one line naming the problem, or the name."""
    try:
        return _user(value)
    except ValueError as exc:
        raise SettingError(f"--user {value!r}: {exc}", "give an existing account's name") \
            from None


def _path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("not an absolute path")
    if not _PATH_RE.fullmatch(value):
        raise ValueError("may hold only letters, digits and . _ @ + - / (no spaces, ':', ',', "
                         "'%', quotes)")
    norm = os.path.normpath(value)
    if norm == "/" or norm.startswith("//"):
        raise ValueError("must not be /")
    return norm


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError("not a port number (1-65535)")
    return int(value)


def _container(value: str) -> str:
    if not _CONTAINER_RE.fullmatch(value):
        raise ValueError("not a valid container name (letters, digits, '_', '.', '-')")
    return value


def _image(value: str) -> str:
    if re.match(r"[a-z][a-z0-9+.-]*://", value) or value.startswith(_TRANSPORTS):
        raise ValueError("names a transport; give the image's name in the account's store "
                         "(for example localhost/theiaos:local) and bring the image there with "
                         "theiaosctl image pull/load")
    if not _IMAGE_RE.fullmatch(value) or len(value) > 255:
        raise ValueError("not an image reference ([registry/]name[:tag][@sha256:digest], "
                         "lower case name)")
    return value


def _address(value: str) -> str:
    octets = value.split(".")
    if value.isascii() and len(octets) == 4 and all(
            o.isdigit() and int(o) <= 255 and (o == "0" or o[0] != "0") for o in octets):
        if 224 <= int(octets[0]) <= 239:
            raise ValueError("is a multicast address")
        return value  # IPv4 as ipaddress would write it (it costs every command 1 ms)
    import ipaddress

    if "%" in value:
        raise ValueError("has a zone id (%…); Podman publishes on an address without one")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("not an IP address") from None
    if addr.is_multicast:
        raise ValueError("is a multicast address")
    return str(addr)


def _bind(value: str) -> str:
    if value not in BINDS:
        raise ValueError(f"must be one of: {', '.join(BINDS)}")
    return value


def _account_kind(value: str) -> str:
    if value not in ("system", "existing"):
        raise ValueError("must be system (create the account) or existing (theiaosctl "
                         "setup --user NAME)")
    return value


def _flag(value: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "yes", "true", "on"):
        return True
    if low in ("0", "no", "false", "off"):
        return False
    raise ValueError("must be 1 or 0")


def _memory(value: str) -> str:
    if not re.fullmatch(r"0|[1-9][0-9]*[kmg]?", value.lower()):
        raise ValueError("not a memory size (a number with k, m or g, like 2g; 0: no limit)")
    return value.lower()


def _count(value: str) -> int:
    if not value.isdigit() or int(value) > 4194304:
        raise ValueError("not a number from 0 (no limit) to 4194304")
    return int(value)


def _seconds(value: str) -> int:
    if not value.isdigit() or not 10 <= int(value) <= 3600:
        raise ValueError("not a number of seconds from 10 to 3600")
    return int(value)


AUTO_UPDATES = ("off", "local", "registry")


def _auto_update(value: str) -> str:
    if value not in AUTO_UPDATES:
        raise ValueError(f"must be one of: {', '.join(AUTO_UPDATES)}")
    return value


class Setting(NamedTuple):
    attr: str
    env: str
    default: Callable[[Mapping[str, Any]], str]
    parse: Callable[[str], Any]
    help: str


def _const(value: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda _done: value


TABLE: tuple[Setting, ...] = (
    Setting("account_kind", "THEIAOS_PODMAN_ACCOUNT", _const("system"), _account_kind,
            "system: setup creates (or reuses) a system account; existing: an existing "
            "user's own account (theiaosctl setup --user NAME)"),
    Setting("user", "THEIAOS_PODMAN_USER", _const("theiaos"), _user,
            "service account that owns and runs the gateway"),
    Setting("home", "THEIAOS_PODMAN_HOME", lambda d: f"/home/{d['user']}", _path,
            "home directory of the service account"),
    Setting("config_dir", "THEIAOS_CONFIG_DIR", lambda d: f"{d['home']}/.theiaos", _path,
            "host directory with .env and theiaos.json (mounted as the gateway's state)"),
    Setting("workspace_dir", "THEIAOS_WORKSPACE_DIR",
            lambda d: f"{d['config_dir']}/workspace", _path,
            "host directory mounted as the gateway's workspace"),
    Setting("image", "THEIAOS_PODMAN_IMAGE", _const("localhost/theiaos:local"), _image,
            "container image of the gateway, in the service account's store"),
    Setting("container_name", "THEIAOS_PODMAN_CONTAINER", _const("theiaos"), _container,
            "name of the gateway container"),
    Setting("gateway_port", "THEIAOS_PODMAN_GATEWAY_HOST_PORT", _const("18789"), _port,
            "host port published for the gateway (HTTP, WebSocket, Control UI)"),
    Setting("bridge_port", "THEIAOS_PODMAN_BRIDGE_HOST_PORT", _const("18790"), _port,
            "host port published for the legacy bridge"),
    Setting("publish_address", "THEIAOS_PODMAN_PUBLISH_ADDRESS", _const("127.0.0.1"),
            _address, "host address the ports are published on"),
    Setting("gateway_bind", "THEIAOS_GATEWAY_BIND", _const("lan"), _bind,
            "bind mode of the gateway inside the container (keep 'lan': 'loopback' "
            "is unreachable through published ports)"),
    Setting("quadlet", "THEIAOS_PODMAN_QUADLET", _const("1"), _flag,
            "1: run the gateway as a systemd user service (Quadlet); 0: manual mode"),
    Setting("read_only", "THEIAOS_PODMAN_READ_ONLY", _const("1"), _flag,
            "1: the container's root file system is read-only (the gateway writes its "
            "state dir and /tmp); 0 for an image that needs to write elsewhere"),
    Setting("memory", "THEIAOS_PODMAN_MEMORY", _const("2g"), _memory,
            "memory limit of the container (0: none); applied where the host's cgroups "
            "have the memory controller"),
    Setting("pids_limit", "THEIAOS_PODMAN_PIDS_LIMIT", _const("1024"), _count,
            "most processes and threads in the container (0: none); applied where the "
            "host's cgroups have the pids controller"),
    Setting("start_timeout", "THEIAOS_PODMAN_START_TIMEOUT", _const("120"), _seconds,
            "seconds the gateway may take from start until it answers; then the start "
            "failed (and an image update rolls back)"),
    Setting("stop_timeout", "THEIAOS_PODMAN_STOP_TIMEOUT", _const("330"), _seconds,
            "seconds the gateway may take to stop: on SIGTERM it finishes the turns in "
            "flight (its own drain policy is 330 s); then Podman kills it. An idle "
            "gateway stops at once"),
    Setting("auto_update", "THEIAOS_PODMAN_AUTO_UPDATE", _const("off"), _auto_update,
            "off, local or registry: Podman's auto-update (its timer, daily) restarts the "
            "gateway on a newer image, and rolls back when it does not get healthy"),
)
_BY_ATTR = {x.attr: x for x in TABLE}


class Settings(NamedTuple):
    account_kind: str
    user: str
    home: str
    config_dir: str
    workspace_dir: str
    image: str
    container_name: str
    gateway_port: int
    bridge_port: int
    publish_address: str
    gateway_bind: str
    quadlet: bool
    read_only: bool
    memory: str
    pids_limit: int
    start_timeout: int
    stop_timeout: int
    auto_update: str

    @property
    def env_file(self) -> str:
        return f"{self.config_dir}/.env"

    @property
    def config_file(self) -> str:
        return f"{self.config_dir}/theiaos.json"

    @property
    def quadlet_dir(self) -> str:
        return f"{self.home}/.config/containers/systemd"

    @property
    def quadlet_path(self) -> str:
        return f"{self.quadlet_dir}/{QUADLET_FILE}"

    @property
    def plain_unit_dir(self) -> str:
        """Where the plain user unit goes when Podman has no Quadlet (before 4.4)."""
        return f"{self.home}/.config/systemd/user"

    @property
    def plain_unit_path(self) -> str:
        return f"{self.plain_unit_dir}/{UNIT}"

    @property
    def local_host(self) -> str:
        """The address this host reaches the gateway at (any-address: loopback)."""
        return "127.0.0.1" if self.publish_address in ("0.0.0.0", "::") else self.publish_address

    @property
    def url(self) -> str:
        host = self.local_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.gateway_port}/"


def _root_text(path: str | os.PathLike[str]) -> str | None:
    """A root-owned settings file through the file door (no FIFO, no symlink of
    another owner, size-capped); None when it is absent."""
    from . import files

    raw = files.read_bytes(str(path), files.ROOT, files.SMALL)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingError(f"{path}: not UTF-8 text", f"fix {path}") from None


def parse_admin(text: str, path: str | os.PathLike[str] = ADMIN_FILE) -> dict[str, str]:
    """The admin file's assignments (parsed with python-dotenv, never executed). A line
    the parser cannot read, a setting without a value or an unknown setting is an error
    naming the file and line: never ignored, never a fallback to the defaults."""
    if not any(ln.strip() and not ln.lstrip().startswith("#") for ln in text.splitlines()):
        return {}  # all commented out (as shipped): no need to load the parser
    import io

    from dotenv.parser import parse_stream

    known = {s.env for s in TABLE}
    out: dict[str, str] = {}
    for b in parse_stream(io.StringIO(text)):
        raw = b.original.string  # python-dotenv counts blank lines before it into it
        where = f"{path} line {b.original.line + raw[:len(raw) - len(raw.lstrip())].count(chr(10))}"
        if b.error:
            raise SettingError(f"{where}: cannot parse {b.original.string.strip()!r}",
                               f"write it as NAME=VALUE in {path}")
        if b.key is None:
            continue  # blank line or comment
        if b.key not in known:
            raise SettingError(f"{where}: unknown setting {b.key}",
                               f"remove it or use one of: {', '.join(sorted(known))}")
        if b.value is None:
            raise SettingError(f"{where}: {b.key} has no value",
                               f"write {b.key}=VALUE, or comment the line out")
        out[b.key] = b.value
    return out


def read_admin_file(path: str | os.PathLike[str] = ADMIN_FILE) -> dict[str, str]:
    """The admin file's settings; {} when it is absent."""
    text = _root_text(path)
    return parse_admin(text, path) if text is not None else {}


def read_choices(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """What `theiaosctl setup` flags chose (KEY=VALUE lines we wrote); {} if nothing."""
    if path is None:
        path = state.path(state.CHOICES)
    text = _root_text(path)
    return parse_choices(text, path) if text is not None else {}


def parse_choices(text: str, path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    path = state.path(state.CHOICES) if path is None else path
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not line.strip():
            continue
        if not sep or key not in CHOICE_KEYS:
            raise SettingError(f"{path}: unexpected line {line!r}",
                               f"remove {path} and run sudo theiaosctl setup again")
        out[key] = value
    return out


def format_choices(choices: Mapping[str, str]) -> str:
    return "".join(f"{k}={choices[k]}\n" for k in CHOICE_KEYS if k in choices)


def load(
    environ: Mapping[str, str] | None = None,
    admin: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    chosen: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting: defaults < admin file < what setup flags chose <
    environment < overrides (command line)."""
    environ = os.environ if environ is None else environ
    admin = read_admin_file() if admin is None else admin
    chosen = read_choices() if chosen is None else chosen
    overrides = overrides or {}
    done: dict[str, Any] = {}
    for s in TABLE:
        if s.env in overrides:
            raw, origin = overrides[s.env], "command line"
        elif environ.get(s.env):
            raw, origin = environ[s.env], "environment"
        elif chosen.get(s.env):
            raw, origin = chosen[s.env], state.path(state.CHOICES)
        elif admin.get(s.env):
            raw, origin = admin[s.env], str(ADMIN_FILE)
        else:
            raw, origin = s.default(done), "default"
        try:
            done[s.attr] = s.parse(raw.strip())
        except ValueError as exc:
            raise SettingError(
                f"{s.env}={raw!r} ({origin}): {exc}",
                f"correct or remove {s.env} in {ADMIN_FILE} or the environment",
            ) from None
    settings = Settings(**done)
    if settings.gateway_port == settings.bridge_port:
        raise SettingError(
            f"THEIAOS_PODMAN_GATEWAY_HOST_PORT and THEIAOS_PODMAN_BRIDGE_HOST_PORT "
            f"are both {settings.gateway_port}",
            "give them different values",
        )
    return settings


def env_name(attr: str) -> str:
    """The variable that sets Settings.``attr`` (KeyError for anything else)."""
    return _BY_ATTR[attr].env


#: Where the unit setup last rendered publishes the gateway: recorded with the unit
#: (state.UNIT_SETTINGS), so that verbs which do not rewrite it (start, status) ask the
#: gateway where it listens, also after podman.env changed and before setup ran again.
PUBLISHED = ("gateway_port", "publish_address")


def format_published(s: Settings) -> str:
    return "".join(f"{env_name(a)}={getattr(s, a)}\n" for a in PUBLISHED)


def with_published(s: Settings, text: str | None, origin: str) -> Settings:
    """``s`` with the recorded PUBLISHED values (format_published's lines) in place."""
    if text is None:
        return s
    by_env = {x.env: x for x in TABLE if x.attr in PUBLISHED}
    values: dict[str, Any] = {}
    for line in text.splitlines():
        key, _, raw = line.partition("=")
        try:
            values[by_env[key].attr] = by_env[key].parse(raw)
        except (KeyError, ValueError):
            raise SettingError(f"{origin}: unexpected line {line!r}",
                               "sudo theiaosctl setup (it records the unit again)") from None
    return s._replace(**values)


def admin_file_update(current: bytes | None) -> tuple[bytes, str] | None:
    """What setup writes to ADMIN_FILE, and why; None to leave it as it is. Only an
    absent file or one a release shipped unmodified is written."""
    if current is None:
        return ADMIN_STUB.encode(), "created"
    import hashlib

    version = SHIPPED_ADMIN_FILES.get(hashlib.sha256(current).hexdigest())
    if version is not None:
        return ADMIN_STUB.encode(), f"replaced the unmodified file {version} shipped"
    return None


def env_file_template() -> str:
    """DEFAULTS_FILE: every setting commented out with its default and help."""
    lines = [
        "# theiaos-podman: every setting with its default. This file is the package's and",
        "# is replaced by every upgrade: set values in /etc/theiaos/podman.env (copy a line",
        "# there and uncomment it) or in the environment, which wins.", ""]
    done: dict[str, Any] = {}
    for s in TABLE:
        default = s.default(done)
        done[s.attr] = s.parse(default)
        lines += [f"# {s.help}", f"#{s.env}={default}", ""]
    return "\n".join(lines)
