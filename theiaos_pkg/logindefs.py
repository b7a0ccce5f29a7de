"""/etc/login.defs: the bounds shadow uses for system uids and subordinate ids (pure)."""

from __future__ import annotations

from typing import NamedTuple

from . import files


class LoginDefs(NamedTuple):
    uid_min: int = 1000
    sys_uid_max: int = 999
    sub_uid_min: int = 100000
    sub_uid_max: int = 600100000
    sub_gid_min: int = 100000
    sub_gid_max: int = 600100000


_KEYS = {
    "UID_MIN": "uid_min",
    "SYS_UID_MAX": "sys_uid_max",
    "SUB_UID_MIN": "sub_uid_min",
    "SUB_UID_MAX": "sub_uid_max",
    "SUB_GID_MIN": "sub_gid_min",
    "SUB_GID_MAX": "sub_gid_max",
}


def parse(text: str) -> LoginDefs:
    """Read the keys we use; others, comments and malformed lines are ignored, like shadow."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] in _KEYS:
            try:
                found[_KEYS[fields[0]]] = int(fields[1], 0)
            except ValueError:
                continue
    return LoginDefs(**found)


def load(etc: str) -> LoginDefs:
    raw = files.read_bytes(f"{etc}/login.defs", files.ROOT)
    return parse(raw.decode("utf-8", "replace")) if raw is not None else LoginDefs()
