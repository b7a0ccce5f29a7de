"""Subordinate uid/gid ranges for the service account.

The allocator is pure: it reads the text of /etc/subuid and /etc/subgid and the
bounds of /etc/login.defs and returns what to add. ``ensure`` applies it under
shadow's locks, re-reading both files inside the lock so that nobody's range is
overlapped.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from . import files, logindefs
from .errors import SubidError
from .files import Perm

COUNT = 65536


class Range(NamedTuple):
    """One line of /etc/subuid or /etc/subgid."""

    owner: str
    start: int
    size: int  # the file's count (not `count`: a tuple has a method of that name)

    @property
    def end(self) -> int:
        """One past the last id."""
        return self.start + self.size

    def overlaps(self, other: Range) -> bool:
        return self.start < other.end and other.start < self.end

    def line(self) -> str:
        return f"{self.owner}:{self.start}:{self.size}\n"


Span = tuple[int, int]  # [start, end) of another owner's range: all the allocator needs


# owner:start:count as shadow reads it (spaces around the line ignored; a comment, a
# count of 0 or anything else is no range). One regular expression over the whole file:
# a file of 60,000 owners is planned within bench P4's tenth of a second or so.
_ROW = re.compile(r"^[^\S\n]*((?:[^:\n#\s][^:\n]*)?):([0-9]+):(0*[1-9][0-9]*)[^\S\n]*$", re.M)


def _rows(text: str) -> list[tuple[str, str, str]]:
    """(owner, start, count) of every range line; comments and malformed lines skipped."""
    return _ROW.findall(text)


def parse(text: str) -> list[Range]:
    """The ranges of a subuid/subgid file; comments and malformed lines are skipped."""
    return [Range(o, int(s), int(c)) for o, s, c in _rows(text)]


def _split(text: str, names: tuple[str, ...]) -> tuple[list[Range], list[Span]]:
    """The account's ranges, and everyone else's as spans (no object per line)."""
    rows = _rows(text)
    mine = [Range(o, int(s), int(c)) for o, s, c in rows if o in names]
    others = [(start, start + int(c)) for o, s, c in rows if o not in names
              for start in (int(s),)]
    return mine, others


def _usable(mine: list[Range], others: list[Span]) -> bool:
    return sum(r.size for r in mine) >= COUNT and not any(
        m.start < end and start < m.end for m in mine for start, end in others
    )


def _free(start: int, taken: list[Span]) -> bool:
    stop = start + COUNT
    return not any(start < end and begin < stop for begin, end in taken)


def _first_free(taken: list[Span], lo: int, hi: int) -> int | None:
    candidate = lo
    for start, end in sorted(taken):
        if end <= candidate:
            continue
        if candidate + COUNT <= start:
            break
        candidate = end
    return candidate if candidate + COUNT - 1 <= hi else None


class Plan(NamedTuple):
    """What to write: the new text of each file, or None where it stays as it is."""

    subuid: str | None
    subgid: str | None
    range: Range


def plan(names: tuple[str, ...], uid_text: str, gid_text: str,
         defs: logindefs.LoginDefs) -> Plan:
    """Keep a usable range (>= 65536 ids, overlapping nobody's); else add one free in both.

    ``names`` are how the account may be written: its name, and its uid as text.
    The new range is written by name (numeric owners break Podman 4).
    """
    name = names[0]
    mine_u, others_u = _split(uid_text, names)
    mine_g, others_g = _split(gid_text, names)
    ok_u, ok_g = _usable(mine_u, others_u), _usable(mine_g, others_g)
    if ok_u and ok_g:
        return Plan(None, None, mine_u[0])
    lo = max(defs.sub_uid_min, defs.sub_gid_min)
    hi = min(defs.sub_uid_max, defs.sub_gid_max)
    start: int | None = None
    # A range kept in one file is reused in the other when it is free there.
    if ok_u != ok_g:
        kept, taken = (mine_u, others_g) if ok_u else (mine_g, others_u)
        r = kept[0]
        if len(kept) == 1 and r.size == COUNT and lo <= r.start and r.end - 1 <= hi \
                and _free(r.start, taken):
            start = r.start
    if start is None:
        kept_spans = [(r.start, r.end) for r in (mine_u if ok_u else []) + (mine_g if ok_g else [])]
        start = _first_free(others_u + others_g + kept_spans, lo, hi)
    if start is None:
        raise SubidError(
            f"no free range of {COUNT} subordinate ids between {lo} and {hi} "
            "in both /etc/subuid and /etc/subgid",
            "raise SUB_UID_MAX/SUB_GID_MAX in /etc/login.defs or free a range",
        )
    new = Range(name, start, COUNT)
    return Plan(
        None if ok_u else _rewrite(uid_text, names, new),
        None if ok_g else _rewrite(gid_text, names, new),
        new,
    )


def _rewrite(text: str, names: tuple[str, ...], new: Range) -> str:
    """``text`` without the account's unusable lines, plus ``new``."""
    owner = re.compile(r"^[ \t]*(" + "|".join(map(re.escape, names)) + r")[ \t]*:", re.M)
    if not any(name in text for name in names) or not owner.search(text):
        body = text  # nothing of the account's to drop (the usual case: a new account)
    else:
        body = "".join(line for line in text.splitlines(keepends=True)
                       if line.strip().split(":")[0] not in names or line.lstrip().startswith("#"))
    if body and not body.endswith("\n"):
        body += "\n"
    return body + new.line()


ROOT_FILE = Perm(0, 0, 0o644)


def _texts(etc: str) -> dict[str, str]:
    out = {}
    for f in ("subuid", "subgid"):
        raw = files.read_bytes(f"{etc}/{f}", files.ROOT)
        try:
            out[f] = raw.decode("utf-8") if raw is not None else ""
        except UnicodeDecodeError:
            raise SubidError(f"{etc}/{f}: not UTF-8 text", f"fix {etc}/{f}") from None
    return out


def _names(name: str, uid: int | None) -> tuple[str, ...]:
    return (name, str(uid)) if uid is not None else (name,)


def check(etc: str, name: str, uid: int | None) -> Plan:
    """What ``ensure`` would do, without locking or writing: refuses early when no free
    range exists. (``uid`` None: the account is not created yet.)"""
    texts = _texts(etc)
    return plan(_names(name, uid), texts["subuid"], texts["subgid"], logindefs.load(etc))


def ensure(etc: str, name: str, uid: int) -> tuple[bool, Range]:
    """Give ``name`` a usable subuid and subgid range; (changed, the range)."""
    defs = logindefs.load(etc)
    with files.shadow_lock(etc, ("subuid", "subgid")):
        texts = _texts(etc)
        p = plan(_names(name, uid), texts["subuid"], texts["subgid"], defs)
        for f, new in (("subuid", p.subuid), ("subgid", p.subgid)):
            if new is None:
                continue
            files.write_bytes(f"{etc}/{f}-", texts[f].encode(), ROOT_FILE)
            files.write_bytes(f"{etc}/{f}", new.encode(), ROOT_FILE)
    return (p.subuid is not None or p.subgid is not None), p.range
