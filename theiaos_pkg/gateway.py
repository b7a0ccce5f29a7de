"""The gateway's own configuration: ``.env`` with the token, and ``theiaos.json``.

``plan`` reads what is there through the file door (the account's files: regular,
its own, one link, size-capped) and decides what must be written, refusing before
anything is written; ``apply`` writes it. Nothing an admin wrote is dropped: other
``.env`` lines are kept verbatim and ``theiaos.json`` is merged, never replaced.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from . import envfile, files
from .errors import ConfigError
from .files import Perm
from .settings import Settings

#: theiaos.json may grow with the gateway's own state; root reads at most this much.
CONFIG_LIMIT = files.LARGE


def new_token() -> str:
    import secrets

    return secrets.token_hex(32)


def digest(token: str) -> str:
    """How the token secret's label names the token it holds (never the token itself)."""
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


def read_env(s: Settings, uid: int) -> str:
    """``.env`` as text ("" when missing), checked the way Podman reads it."""
    raw = files.read_bytes(s.env_file, uid, files.SMALL)
    if raw is None:
        return ""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{s.env_file}: not UTF-8 text", f"fix {s.env_file}") from None
    envfile.check(text, s.env_file)
    return text


def read_token(s: Settings, uid: int) -> str | None:
    return envfile.value(read_env(s, uid))


def read_config(s: Settings, uid: int) -> dict[str, Any] | None:
    raw = files.read_bytes(s.config_file, uid, CONFIG_LIMIT)
    return parse_config(raw, s.config_file) if raw is not None else None


def config_token(s: Settings, uid: int) -> str | None:
    """``gateway.auth.token`` from theiaos.json (the onboarding wizard may write one)."""
    cfg = read_config(s, uid)
    gw = cfg.get("gateway") if cfg else None
    auth = gw.get("auth") if isinstance(gw, dict) else None
    token = auth.get("token") if isinstance(auth, dict) else None
    return token if isinstance(token, str) and token else None


class Files(NamedTuple):
    """What ``.env`` and ``theiaos.json`` must hold, and which of them change."""

    env: bytes
    config: bytes
    changed: tuple[str, ...]


def plan(s: Settings, uid: int | None) -> Files:
    """The files setup writes, from what is there (``uid`` None: a new account, so
    nothing is there yet). Raises ConfigError for anything unusable: nothing written."""
    env_text = read_env(s, uid) if uid is not None else None
    new_env = env_text or ""
    if not envfile.value(new_env):
        new_env = envfile.with_token(new_env, new_token())
    raw = files.read_bytes(s.config_file, uid, CONFIG_LIMIT) if uid is not None else None
    existing = parse_config(raw, s.config_file) if raw is not None else None
    merged = merged_config(existing, s.gateway_port)
    config = raw if raw is not None and merged == existing else dump_config(merged)
    changed = [s.env_file] if new_env != env_text else []
    if config != raw:
        changed.append(s.config_file)
    return Files(new_env.encode(), config, tuple(changed))


def apply(s: Settings, f: Files, uid: int, gid: int) -> list[str]:
    """Directories and files as planned; the paths that changed (owner or mode too)."""
    changed = []
    private = Perm(uid, gid, 0o700)
    if files.ensure_dir(s.config_dir, private, parents=private, adopt_below=s.home):
        changed.append(s.config_dir)
    if files.write_bytes(s.env_file, f.env, Perm(uid, gid, 0o600)):
        changed.append(s.env_file)
    if files.write_bytes(s.config_file, f.config, Perm(uid, gid, 0o600)):
        changed.append(s.config_file)
    if files.ensure_dir(s.workspace_dir, private, parents=private, adopt_below=s.home):
        changed.append(s.workspace_dir)
    return changed


def rotated(s: Settings, uid: int) -> tuple[bytes, str]:
    """``.env`` with a new token (every other line kept), and that token."""
    token = new_token()
    return envfile.with_token(read_env(s, uid), token).encode(), token


def origins(port: int) -> list[str]:
    return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]


_OURS = re.compile(r"http://(127\.0\.0\.1|localhost):\d+")


def merged_config(existing: dict[str, Any] | None, port: int) -> dict[str, Any]:
    """The config with what the gateway needs in a container; the admin's keys are kept.

    ``gateway.mode`` is set to "local" only when absent. ``allowedOrigins`` is seeded
    with the host-side origins when absent, and re-seeded when it holds only origins
    we seeded for another port (the port setting changed).
    """
    import copy

    cfg = copy.deepcopy(existing) if existing is not None else {}
    gw = cfg.setdefault("gateway", {})
    if not isinstance(gw, dict):
        raise ConfigError("theiaos.json: 'gateway' is not an object")
    gw.setdefault("mode", "local")
    ui = gw.setdefault("controlUi", {})
    if not isinstance(ui, dict):
        raise ConfigError("theiaos.json: 'gateway.controlUi' is not an object")
    have = ui.get("allowedOrigins")
    if have is None or (
        isinstance(have, list) and have and all(
            isinstance(o, str) and _OURS.fullmatch(o) for o in have
        ) and have != origins(port)
    ):
        ui["allowedOrigins"] = origins(port)
    return cfg


def parse_config(raw: bytes, path: str) -> dict[str, Any]:
    try:
        cfg = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text", f"fix or move {path} aside") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            f"fix it, or move it aside and run setup again: mv {path} {path}.bad",
        ) from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: top level is not a JSON object", f"fix {path}")
    return cfg


def dump_config(cfg: dict[str, Any]) -> bytes:
    return (json.dumps(cfg, indent=2, ensure_ascii=False) + "\n").encode()
