"""The gateway's own configuration: ``.env`` with the token, and ``theiaos.json``.

``with_token`` and ``merged_config`` are pure; ``ensure`` writes through the files
door. Nothing an admin wrote is dropped: other ``.env`` lines are kept verbatim and
``theiaos.json`` is merged, never replaced.
"""

from __future__ import annotations

import copy
import io
import json
import re
import secrets
from collections.abc import Callable
from typing import Any

from dotenv import dotenv_values

from . import files
from .errors import ConfigError
from .files import Perm
from .settings import TOKEN_KEY, Settings

_TOKEN_LINE = re.compile(rf"\s*(export\s+)?{TOKEN_KEY}\s*=")


def new_token() -> str:
    return secrets.token_hex(32)


def token_of(env_text: str) -> str | None:
    """The gateway token in ``.env`` text, or None when missing or empty."""
    value = dotenv_values(stream=io.StringIO(env_text), interpolate=False).get(TOKEN_KEY)
    return value or None


def with_token(env_text: str, make: Callable[[], str] = new_token) -> str:
    """``env_text`` with a token: unchanged when one is set, else set (in place or appended)."""
    if token_of(env_text):
        return env_text
    line = f"{TOKEN_KEY}={make()}\n"
    lines = env_text.splitlines(keepends=True)
    for i, old in enumerate(lines):
        if _TOKEN_LINE.match(old):
            lines[i] = line
            return "".join(lines)
    if env_text and not env_text.endswith("\n"):
        env_text += "\n"
    return env_text + line


def replace_token(env_text: str, token: str) -> str:
    """``env_text`` with every token line set to ``token`` (appended when there is none)."""
    lines = env_text.splitlines(keepends=True)
    hits = [i for i, old in enumerate(lines) if _TOKEN_LINE.match(old)]
    if not hits:
        return with_token(env_text, lambda: token)
    for i in hits:
        lines[i] = f"{TOKEN_KEY}={token}\n"
    return "".join(lines)


def rotate(s: Settings, uid: int, gid: int) -> str:
    """Write a new token into ``.env``, keeping every other line; the new token."""
    raw = files.read_bytes(s.env_file)
    token = new_token()
    text = replace_token(raw.decode("utf-8") if raw else "", token)
    files.write_bytes(s.env_file, text.encode(), Perm(uid, gid, 0o600))
    return token


def read_token(s: Settings) -> str | None:
    raw = files.read_bytes(s.env_file)
    return token_of(raw.decode("utf-8", "replace")) if raw else None


def config_token(s: Settings) -> str | None:
    """``gateway.auth.token`` from theiaos.json (the onboarding wizard may write one)."""
    raw = files.read_bytes(s.config_file)
    if raw is None:
        return None
    gw = parse_config(raw, s.config_file).get("gateway")
    auth = gw.get("auth") if isinstance(gw, dict) else None
    token = auth.get("token") if isinstance(auth, dict) else None
    return token if isinstance(token, str) and token else None


def origins(port: int) -> list[str]:
    return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]


_OURS = re.compile(r"http://(127\.0\.0\.1|localhost):\d+")


def merged_config(existing: dict[str, Any] | None, port: int) -> dict[str, Any]:
    """The config with what the gateway needs in a container; the admin's keys are kept.

    ``gateway.mode`` is set to "local" only when absent. ``allowedOrigins`` is seeded
    with the host-side origins when absent, and re-seeded when it holds only origins
    we seeded for another port (the port setting changed).
    """
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


def ensure(s: Settings, uid: int, gid: int) -> list[str]:
    """Make config dir, ``.env``, ``theiaos.json`` and workspace right; what changed."""
    changed = []
    private = Perm(uid, gid, 0o700)
    if files.ensure_dir(s.config_dir, private, parents=private):
        changed.append(s.config_dir)
    raw = files.read_bytes(s.env_file)
    try:
        env_text = raw.decode("utf-8") if raw is not None else ""
    except UnicodeDecodeError:
        raise ConfigError(f"{s.env_file}: not UTF-8 text", f"fix {s.env_file}") from None
    if files.write_bytes(s.env_file, with_token(env_text).encode(), Perm(uid, gid, 0o600)):
        changed.append(s.env_file)
    raw = files.read_bytes(s.config_file)
    existing = parse_config(raw, s.config_file) if raw is not None else None
    merged = merged_config(existing, s.gateway_port)
    data = dump_config(merged) if merged != existing else raw
    assert data is not None
    if files.write_bytes(s.config_file, data, Perm(uid, gid, 0o600)):
        changed.append(s.config_file)
    if files.ensure_dir(s.workspace_dir, private, parents=private):
        changed.append(s.workspace_dir)
    return changed
