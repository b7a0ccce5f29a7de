from __future__ import annotations

import os
from pathlib import Path

import pytest

from theiaos_pkg import account
from theiaos_pkg.errors import AccountError
from theiaos_pkg.logindefs import LoginDefs

from ..conftest import needs_root, needs_useradd

pytestmark = [needs_root, needs_useradd]


def test_creates_a_system_account_with_nologin_and_private_home(etc: Path) -> None:
    home = str(etc.parent / "home" / "theiaos")
    state, acct = account.ensure(str(etc), "theiaos", home)
    assert state == "created"
    assert acct.uid < 1000 and acct.uid != 0
    assert acct.shell in account.NOLOGIN and acct.home == home
    assert "theiaos:" in (etc / "group").read_text()
    st = os.stat(home)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (acct.uid, acct.gid, 0o700)
    assert account.ensure(str(etc), "theiaos", home) == ("unchanged", acct)


def test_existing_fit_account_is_reused_and_home_fixed(etc: Path) -> None:
    home = etc.parent / "home" / "theiaos"
    with open(etc / "passwd", "a") as f:
        f.write(f"theiaos:x:990:990::{home}:/usr/sbin/nologin\n")
    home.mkdir(mode=0o755)
    os.chown(home, 990, 990)
    state, acct = account.ensure(str(etc), "theiaos", str(home))
    assert state == "changed" and acct.uid == 990
    assert (home.stat().st_mode & 0o777) == 0o700


@pytest.mark.parametrize(("line", "why"), [
    ("theiaos:x:0:0::{home}:/usr/sbin/nologin", "uid 0"),
    ("theiaos:x:1001:1001::{home}:/usr/sbin/nologin", "regular user's"),
    ("theiaos:x:990:990::/var/lib/elsewhere:/usr/sbin/nologin", "its home is /var/lib/elsewhere"),
    ("theiaos:x:990:990::{home}:/bin/bash", "shell /bin/bash allows logins"),
])
def test_unfit_account_is_refused_with_reason(etc: Path, line: str, why: str) -> None:
    home = etc.parent / "home" / "theiaos"
    with open(etc / "passwd", "a") as f:
        f.write(line.format(home=home) + "\n")
    before = (etc / "passwd").read_text()
    with pytest.raises(AccountError, match=why):
        account.ensure(str(etc), "theiaos", str(home))
    assert (etc / "passwd").read_text() == before and not home.exists()


def test_home_owned_by_someone_else_is_refused(etc: Path) -> None:
    home = etc.parent / "home" / "theiaos"
    home.mkdir()
    os.chown(home, 1000, 1000)
    with pytest.raises(AccountError, match="not a directory owned by theiaos"):
        account.ensure(str(etc), "theiaos", str(home))


def test_problems_pure() -> None:
    acct = account.Account("t", 990, 990, "/home/t", "/usr/sbin/nologin")
    assert account.problems(acct, "/home/t", LoginDefs()) == []
