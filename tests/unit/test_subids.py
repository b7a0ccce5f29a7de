from __future__ import annotations

import os
from pathlib import Path

import pytest

from theiaos_pkg import subids
from theiaos_pkg.errors import SubidError
from theiaos_pkg.logindefs import LoginDefs, parse
from theiaos_pkg.subids import COUNT, Range

from ..conftest import needs_root

DEFS = LoginDefs()
NAMES = ("theiaos", "999")


def test_parse_skips_comments_and_junk() -> None:
    text = "# c\nalice:100000:65536\nbroken\nbob:x:1\nnumeric-owner-ok:1:0\n\n1001:300000:10\n"
    assert subids.parse(text) == [Range("alice", 100000, 65536), Range("1001", 300000, 10)]


def test_first_range_when_empty() -> None:
    p = subids.plan(NAMES, "", "", DEFS)
    assert p.range == Range("theiaos", 100000, COUNT)
    assert p.subuid == p.subgid == "theiaos:100000:65536\n"


def test_free_in_both_files() -> None:
    uid = "alice:100000:65536\n"
    gid = "bob:165536:65536\n"
    p = subids.plan(NAMES, uid, gid, DEFS)
    assert p.range.start == 231072
    assert p.subuid == uid + "theiaos:231072:65536\n"
    assert p.subgid == gid + "theiaos:231072:65536\n"


def test_uses_a_gap_that_is_large_enough() -> None:
    uid = "a:100000:65536\nb:300000:65536\n"
    gid = "a:100000:65536\nc:165536:1000\n"
    assert subids.plan(NAMES, uid, gid, DEFS).range.start == 166536
    small_gap = "a:100000:65536\nb:200000:65536\n"
    assert subids.plan(NAMES, small_gap, "", DEFS).range.start == 265536


def test_login_defs_bounds_are_respected() -> None:
    defs = parse("SUB_UID_MIN 524288\nSUB_GID_MIN 524288\nSUB_UID_MAX 1000000\n")
    assert subids.plan(NAMES, "", "", defs).range.start == 524288
    with pytest.raises(SubidError, match="no free range .* between 524288 and 1000000"):
        subids.plan(NAMES, "x:524288:420000\n", "", defs)


def test_exhausted_space() -> None:
    defs = LoginDefs(sub_uid_min=100000, sub_uid_max=165535,
                     sub_gid_min=100000, sub_gid_max=165535)
    assert subids.plan(NAMES, "", "", defs).range.start == 100000
    with pytest.raises(SubidError, match="no free range"):
        subids.plan(NAMES, "alice:100000:1\n", "", defs)


def test_existing_valid_range_is_kept() -> None:
    text = "alice:100000:65536\ntheiaos:500000:65536\n"
    p = subids.plan(NAMES, text, text, DEFS)
    assert (p.subuid, p.subgid) == (None, None)
    assert p.range == Range("theiaos", 500000, COUNT)


def test_numeric_owner_counts_as_the_account() -> None:
    text = "999:500000:65536\n"
    assert subids.plan(NAMES, text, text, DEFS).subuid is None


def test_range_in_one_file_is_mirrored_when_free() -> None:
    p = subids.plan(NAMES, "theiaos:500000:65536\n", "", DEFS)
    assert p.subuid is None and p.subgid == "theiaos:500000:65536\n"


def test_range_in_one_file_taken_in_the_other() -> None:
    p = subids.plan(NAMES, "theiaos:500000:65536\n", "bob:500000:65536\n", DEFS)
    assert p.subuid is None
    assert p.subgid == "bob:500000:65536\ntheiaos:100000:65536\n"


def test_overlapping_or_short_range_is_replaced() -> None:
    uid = "alice:100000:65536\ntheiaos:120000:65536\n"
    p = subids.plan(NAMES, uid, "theiaos:700000:1000\n", DEFS)
    assert p.subuid == "alice:100000:65536\ntheiaos:165536:65536\n"
    assert p.subgid == "theiaos:165536:65536\n"


def test_missing_final_newline_is_kept_valid() -> None:
    p = subids.plan(NAMES, "alice:100000:65536", "", DEFS)
    assert p.subuid == "alice:100000:65536\ntheiaos:165536:65536\n"


@needs_root
def test_ensure_writes_under_lock_and_twice_changes_nothing(etc: Path) -> None:
    changed, rng = subids.ensure(str(etc), "theiaos", 999)
    assert changed and rng == Range("theiaos", 165536, COUNT)
    for f in ("subuid", "subgid"):
        assert (etc / f).read_text() == "alice:100000:65536\ntheiaos:165536:65536\n"
        assert (etc / f"{f}-").read_text() == "alice:100000:65536\n"
        assert oct((etc / f).stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in etc.iterdir() if "lock" in p.name) == [".pwd.lock"]
    before = {f: os.stat(etc / f).st_mtime_ns for f in ("subuid", "subgid")}
    assert subids.ensure(str(etc), "theiaos", 999) == (False, rng)
    assert before == {f: os.stat(etc / f).st_mtime_ns for f in ("subuid", "subgid")}


@needs_root
def test_stale_lock_is_taken_over_and_live_lock_waits(etc: Path) -> None:
    (etc / "subuid.lock").write_text("999999999\0")  # no such process
    assert subids.ensure(str(etc), "theiaos", 999)[0]
    (etc / "subgid.lock").write_text(f"{os.getppid()}\0")  # alive: must not be broken
    from theiaos_pkg import files
    from theiaos_pkg.errors import TheiaosError
    with pytest.raises(TheiaosError, match="subgid.lock: locked"), \
            files.shadow_lock(str(etc), ("subuid", "subgid"), timeout=0.3):
        pass
    assert (etc / "subgid.lock").exists() and not (etc / "subuid.lock").exists()
