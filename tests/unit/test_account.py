from __future__ import annotations

import os
from pathlib import Path

import pytest

from theiaos_pkg import account
from theiaos_pkg.errors import AccountError
from theiaos_pkg.logindefs import LoginDefs

from ..conftest import needs_root, needs_useradd

pytestmark = [needs_root, needs_useradd]


def ensure(etc: str, name: str, home: str, existing: bool = False) -> tuple[str, account.Account]:
    return account.apply(etc, account.plan(etc, name, home, existing))


def test_creates_a_system_account_with_nologin_and_private_home(etc: Path) -> None:
    home = str(etc.parent / "home" / "theiaos")
    state, acct = ensure(str(etc), "theiaos", home)
    assert state == "created"
    assert acct.uid < 1000 and acct.uid != 0
    assert acct.shell in account.NOLOGIN and acct.home == home
    assert "theiaos:" in (etc / "group").read_text()
    st = os.stat(home)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (acct.uid, acct.gid, 0o700)
    assert ensure(str(etc), "theiaos", home) == ("unchanged", acct)


def test_existing_fit_account_is_reused_and_home_fixed(etc: Path) -> None:
    home = etc.parent / "home" / "theiaos"
    with open(etc / "passwd", "a") as f:
        f.write(f"theiaos:x:990:990::{home}:/usr/sbin/nologin\n")
    home.mkdir(mode=0o755)
    os.chown(home, 990, 990)
    state, acct = ensure(str(etc), "theiaos", str(home))
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
        ensure(str(etc), "theiaos", str(home))
    assert (etc / "passwd").read_text() == before and not home.exists()


def test_home_owned_by_someone_else_is_refused(etc: Path) -> None:
    home = etc.parent / "home" / "theiaos"
    with open(etc / "passwd", "a") as f:
        f.write(f"theiaos:x:990:990::{home}:/usr/sbin/nologin\n")
    home.mkdir()
    os.chown(home, 1000, 1000)
    with pytest.raises(AccountError, match="belongs to uid 1000, not to theiaos"):
        ensure(str(etc), "theiaos", str(home))
    assert home.stat().st_uid == 1000


def test_new_account_with_an_existing_home_is_refused_before_useradd(etc: Path) -> None:
    """THEIAOS_PODMAN_USER=new with THEIAOS_PODMAN_HOME=/etc: refused, nobody created,
    and the fix is not to chown a system directory."""
    before = (etc / "passwd").read_text()
    with pytest.raises(AccountError) as err:
        ensure(str(etc), "new", str(etc))
    assert "exists already" in err.value.message and "chown" not in str(err.value)
    assert (etc / "passwd").read_text() == before


def test_home_below_a_directory_others_can_change_is_refused(etc: Path) -> None:
    shared = etc.parent / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(AccountError, match="can be changed by others than root"):
        account.plan(str(etc), "theiaos", str(shared / "theiaos"))


@pytest.mark.parametrize(("line", "why"), [
    ("root2:x:0:0::/root:/bin/bash", "is root"),
    ("nobody2:x:65534:65534::/nonexistent:/usr/sbin/nologin", "not a directory of its own"),
])
def test_setup_user_refuses_root_and_accounts_without_a_home(etc: Path, line: str,
                                                            why: str) -> None:
    with open(etc / "passwd", "a") as f:
        f.write(line + "\n")
    name, home = line.split(":")[0], line.split(":")[5]
    with pytest.raises(AccountError, match=why):
        account.plan(str(etc), name, home, existing=True)


def test_reach_problem_names_the_directory_the_account_cannot_enter(world: Path) -> None:
    private = world / "root-only"
    private.mkdir(mode=0o700)
    from theiaos_pkg import files

    chain, missing = files.stat_chain(str(private / "x"))
    assert missing == str(private / "x")
    why = account.reach_problem(chain, "theiaos", 990, frozenset({990}))
    assert why == f"theiaos cannot enter {private} (mode 0700, owner uid 0)"
    assert account.reach_problem(chain, "root", 0, frozenset({0})) is None


def test_problems_pure() -> None:
    acct = account.Account("t", 990, 990, "/home/t", "/usr/sbin/nologin")
    assert account.problems(acct, "/home/t", LoginDefs()) == []


# --- sysusers.d (issue 17) ---------------------------------------------------------------

SHIPPED = Path(__file__).resolve().parents[2] / "sysusers" / "theiaos-podman.conf"


def test_the_shipped_sysusers_file_is_the_default_account() -> None:
    from theiaos_pkg import settings

    s = settings.load(environ={}, admin={}, chosen={})
    assert SHIPPED.read_text() == account.sysusers_text(s.user, s.home), \
        "regenerate: python3 -c 'from theiaos_pkg import account; print(account.sysusers_text(" \
        "\"theiaos\", \"/home/theiaos\"), end=\"\")' > sysusers/theiaos-podman.conf"


def _shadow(etc: Path, name: str) -> list[str]:
    return [ln.split(":") for ln in (etc / "shadow").read_text().splitlines()
            if ln.startswith(f"{name}:")][0]


@pytest.mark.skipif(not os.path.exists(account.SYSUSERS), reason="no systemd-sysusers")
def test_the_account_comes_from_the_sysusers_file(etc: Path) -> None:
    """The plan's line is the shipped file's (its home here is the test root's): sysusers
    applies the file itself; the account is a locked system account with its group."""
    home = str(etc.parent / "home" / "theiaos")
    shipped = etc.parent / "usr" / "lib" / "sysusers.d" / "theiaos-podman.conf"
    shipped.parent.mkdir(parents=True)
    shipped.write_text(account.sysusers_text("theiaos", home))
    argv = account._create(str(etc.parent), "theiaos", home, "/usr/sbin/nologin")
    assert argv == [account.SYSUSERS, f"--root={etc.parent}", str(shipped)]
    state, acct = ensure(str(etc), "theiaos", home)
    assert state == "created" and 0 < acct.uid < 1000 and acct.home == home
    assert f"theiaos:x:{acct.gid}:" in (etc / "group").read_text()
    assert _shadow(etc, "theiaos")[1].startswith("!"), "no password, locked"
    assert "TheiaOS gateway" in (etc / "passwd").read_text()


@pytest.mark.skipif(not os.path.exists(account.SYSUSERS), reason="no systemd-sysusers")
def test_another_name_is_made_by_sysusers_from_its_own_line(etc: Path) -> None:
    home = str(etc.parent / "home" / "gw")
    argv = account._create(str(etc.parent), "gw", home, "/usr/sbin/nologin")
    assert argv[-2:] == ["--inline", account.sysusers_line("gw", home)]
    state, acct = ensure(str(etc), "gw", home)
    assert state == "created" and acct.name == "gw" and acct.home == home


def test_useradd_where_there_is_no_systemd_sysusers(etc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(account, "SYSUSERS", str(etc / "no-such-systemd-sysusers"))
    home = str(etc.parent / "home" / "theiaos")
    assert account._create(str(etc.parent), "theiaos", home, "/usr/sbin/nologin")[0] == "useradd"
    state, acct = ensure(str(etc), "theiaos", home)
    assert state == "created" and 0 < acct.uid < 1000 and acct.shell in account.NOLOGIN
