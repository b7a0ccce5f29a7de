"""The gateway's log lines. A system account's user units log to the SYSTEM journal;
``journalctl --machine theiaos@ --user`` does not find them, these matches do."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from .run import run
from .settings import UNIT

#: How many records ``tail`` reads to choose its lines from: a gateway that logs every
#: request (or a health check that polls it twice a second) must not push out the
#: lines that say why its start failed, and the read stays bounded.
WINDOW = 400


def matches(uid: int, unit: str = UNIT) -> list[str]:
    """journalctl matches for the unit's own output and the manager's lines about it,
    and the gateway's lines by their identifier (both units set SyslogIdentifier=%N):
    Podman before 5.3 may move itself out of the unit into a podman-PID.scope."""
    ident = unit.removesuffix(".service")
    return [f"_SYSTEMD_USER_UNIT={unit}", f"_UID={uid}", "+",
            f"USER_UNIT={unit}", f"_UID={uid}", "+",
            f"SYSLOG_IDENTIFIER={ident}", f"_UID={uid}"]


def argv(uid: int, lines: int | None = None, follow: bool = False,
         since: str | None = None, output: str = "short-iso") -> list[str]:
    cmd = ["journalctl", "--no-pager", "-o", output]
    if lines is not None:
        cmd += ["-n", str(lines)]
    if follow:
        cmd.append("-f")
    if since:
        cmd += ["--since", since]
    return cmd + matches(uid)


def tail(uid: int, lines: int = 40) -> str:
    """The last lines that explain the unit's state: systemd's, Podman's and the start
    check's lines, and no more than half of ``lines`` of the gateway's own output."""
    proc = run(argv(uid, WINDOW, output="json"), check=False)
    if proc.returncode != 0:
        return f"(journalctl failed: {(proc.stderr or '').strip()})"
    return "\n".join(format_record(r) for r in pick(parse(proc.stdout), lines))


def parse(text: str) -> list[dict[str, object]]:
    """journalctl's ``-o json`` records (one object a line); a line that is not one is
    skipped."""
    records = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def from_container(rec: dict[str, object]) -> bool:
    """A line the gateway wrote (Podman's journald log driver marks it); the rest are
    systemd's, Podman's, conmon's and the unit's own commands'."""
    return "CONTAINER_ID" in rec


def pick(records: list[dict[str, object]], lines: int) -> list[dict[str, object]]:
    """The last ``lines`` records, of which the gateway's take at most half where there
    are others to show; in their order."""
    ours = [i for i, r in enumerate(records) if not from_container(r)]
    theirs = [i for i, r in enumerate(records) if from_container(r)]
    keep_theirs = min(len(theirs), max(lines // 2, lines - len(ours)))
    keep_ours = min(len(ours), lines - keep_theirs)
    chosen = set(theirs[len(theirs) - keep_theirs:]) | set(ours[len(ours) - keep_ours:])
    return [records[i] for i in sorted(chosen)]


def _text(value: object) -> str:
    if isinstance(value, list):  # journalctl's form of a message that is not UTF-8
        value = bytes(b for b in value if isinstance(b, int) and 0 <= b < 256).decode(
            "utf-8", "replace")
    return value if isinstance(value, str) else ""


def printable(text: str) -> str:
    """The gateway's text for root's terminal: control characters (an escape sequence,
    a carriage return that hides what came before) shown as escapes."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


def format_record(rec: dict[str, object]) -> str:
    """One record as ``journalctl -o short-iso`` prints it (the lines of a message of
    several indented under the first)."""
    try:
        ts = datetime.fromtimestamp(int(str(rec.get("__REALTIME_TIMESTAMP"))) / 1e6,
                                    timezone.utc).astimezone()
        when = ts.isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):
        when = "-"
    ident = _text(rec.get("SYSLOG_IDENTIFIER")) or _text(rec.get("_COMM")) or "?"
    pid = _text(rec.get("SYSLOG_PID")) or _text(rec.get("_PID"))
    head = f"{when} {_text(rec.get('_HOSTNAME'))} {ident}{f'[{pid}]' if pid else ''}: "
    first, *rest = _text(rec.get("MESSAGE")).rstrip("\n").split("\n")
    return "\n".join(printable(line) for line in
                     [head + first, *(" " * len(head) + more for more in rest)])



#: What the gateway logs when SIGTERM finds it busy, and when that work is done.
_DRAINING = re.compile(r"draining active work before stop with timeout (\d+)ms: (.*)")
_DRAINED = ("active-work drain settled", "[shutdown] completed")
#: The gateway's counts of its active work, as a person would say them.
_WORK = (("embeddedRuns", "agent run"), ("queueSize", "queued task"),
         ("rootRequests", "open request"))


def drain_note(records: list[dict[str, object]]) -> str | None:
    """What a stopping gateway is finishing, from its own last lines: "1 agent run, 2
    queued tasks (at most 315 s)", or None when it is not draining."""
    for rec in reversed(records):
        if not from_container(rec):
            continue
        text = _text(rec.get("MESSAGE"))
        if any(done in text for done in _DRAINED):
            return None
        m = _DRAINING.search(text)
        if m:
            counts = dict(kv.split("=", 1) for kv in m[2].split() if "=" in kv)
            work = [f"{n} {what}{'s' if n != '1' else ''}" for key, what in _WORK
                    if (n := counts.get(key, "0")).isdigit() and n != "0"]
            return f"{', '.join(work) or 'its work'} (at most {int(m[1]) // 1000} s)"
    return None


def _recent(uid: int, count: int = 100) -> list[dict[str, object]] | str:
    """The unit's last ``count`` records, or what journalctl said when it failed."""
    proc = run(argv(uid, count, output="json"), check=False)
    if proc.returncode != 0:
        return f"(journalctl failed: {printable((proc.stderr or '').strip())})"
    return parse(proc.stdout)


def gateway_said(uid: int, lines: int = 3) -> str:
    """The gateway's own last lines (the reason it gives for exiting), printable, joined;
    journalctl's own error where it could not be read."""
    records = _recent(uid)
    if isinstance(records, str):
        return records
    said = [printable(_text(r.get("MESSAGE")).strip()) for r in records
            if from_container(r) and _text(r.get("MESSAGE")).strip()]
    return " / ".join(said[-lines:])


def draining(uid: int) -> str | None:
    """drain_note of the unit's last lines (a bounded read); None where journalctl fails
    (the caller then says only that the gateway finishes its work)."""
    records = _recent(uid)
    return None if isinstance(records, str) else drain_note(records)
