"""The gateway's log lines. A system account's user units log to the SYSTEM journal;
``journalctl --machine theiaos@ --user`` does not find them, these matches do."""

from __future__ import annotations

from .run import run
from .settings import UNIT


def matches(uid: int, unit: str = UNIT) -> list[str]:
    """journalctl matches for the unit's own output and the manager's lines about it,
    and the gateway's lines by their identifier (both units set SyslogIdentifier=%N):
    Podman before 5.3 may move itself out of the unit into a podman-PID.scope."""
    ident = unit.removesuffix(".service")
    return [f"_SYSTEMD_USER_UNIT={unit}", f"_UID={uid}", "+",
            f"USER_UNIT={unit}", f"_UID={uid}", "+",
            f"SYSLOG_IDENTIFIER={ident}", f"_UID={uid}"]


def argv(uid: int, lines: int | None = None, follow: bool = False,
         since: str | None = None) -> list[str]:
    cmd = ["journalctl", "--no-pager", "-o", "short-iso"]
    if lines is not None:
        cmd += ["-n", str(lines)]
    if follow:
        cmd.append("-f")
    if since:
        cmd += ["--since", since]
    return cmd + matches(uid)


def tail(uid: int, lines: int = 40) -> str:
    proc = run(argv(uid, lines), check=False)
    if proc.returncode != 0:
        return f"(journalctl failed: {(proc.stderr or '').strip()})"
    return proc.stdout.rstrip()
