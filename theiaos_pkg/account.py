"""The service account: find it, check it is fit for the job, or create it.

``plan`` only reads (/etc/passwd, /etc/group, the home's path) and refuses an unfit
account or home before anything is written: no account is made for a setup that
would fail later. ``apply`` creates the account and its home as planned.

The package declares the account in sysusers.d (SYSUSERS_FILE, the defaults' line):
``apply`` creates it with ``systemd-sysusers`` (that file when the plan is its line,
the plan's own line inline for another name or home), or with ``useradd`` where
systemd-sysusers is missing. Subordinate ids are not sysusers.d's (subids.py).
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

from . import files, logindefs
from .errors import AccountError
from .files import Perm
from .run import Identity, run

NOLOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/usr/bin/false", "/bin/false")
#: The package's sysusers.d file (rpm >= 4.19 and Fedora's macros read it too).
SYSUSERS_FILE = "/usr/lib/sysusers.d/theiaos-podman.conf"
SYSUSERS = "/usr/bin/systemd-sysusers"
COMMENT = "TheiaOS gateway"


def sysusers_line(name: str, home: str, shell: str = NOLOGIN[0]) -> str:
    """A system user with a group of its name, its uid picked by systemd-sysusers from
    the system range (as useradd --system does)."""
    return f'u {name} - "{COMMENT}" {home} {shell}'


def sysusers_text(name: str, home: str) -> str:
    """SYSUSERS_FILE (tests/unit/test_account.py checks the shipped one is this)."""
    return ("# theiaos-podman: the account that owns and runs the TheiaOS gateway.\n"
            "# Its subordinate uid/gid ranges are allocated by the package's setup.\n"
            f"{sysusers_line(name, home)}\n")


class Account(NamedTuple):
    name: str
    uid: int
    gid: int
    home: str
    shell: str

    def identity(self) -> Identity:
        return Identity(self.name, self.uid, self.gid, self.home)


def parse_passwd(text: str, name: str) -> Account | None:
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[0] == name:
            try:
                return Account(name, int(fields[2]), int(fields[3]), fields[5], fields[6])
            except ValueError:
                raise AccountError(f"/etc/passwd: malformed entry for {name}") from None
    return None


def lookup(etc: str, name: str) -> Account | None:
    raw = files.read_bytes(f"{etc}/passwd", files.ROOT)
    return parse_passwd(raw.decode("utf-8", "replace"), name) if raw else None


def parse_groups(text: str, name: str, gid: int) -> frozenset[int]:
    """The account's groups: its primary group and every group listing it as a member."""
    out = {gid}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) == 4 and name in fields[3].split(",") and fields[2].isdigit():
            out.add(int(fields[2]))
    return frozenset(out)


def groups(etc: str, name: str, gid: int) -> frozenset[int]:
    raw = files.read_bytes(f"{etc}/group", files.ROOT)
    return parse_groups(raw.decode("utf-8", "replace") if raw else "", name, gid)


def can_enter(st: os.stat_result, uid: int | None, gids: frozenset[int]) -> bool:
    """Whether ``uid`` (None: an account not created yet) may traverse a directory."""
    if uid == 0:
        return True
    if uid is not None and st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def reach_problem(chain: list[tuple[str, os.stat_result]], who: str, uid: int | None,
                  gids: frozenset[int]) -> str | None:
    """Why the account cannot reach the end of ``chain`` (files.stat_chain), or None."""
    for path, st in chain:
        if not can_enter(st, uid, gids):
            return (f"{who} cannot enter {path} (mode {stat.S_IMODE(st.st_mode):04o}, "
                    f"owner uid {st.st_uid})")
    return None


def problems(acct: Account, home: str, defs: logindefs.LoginDefs) -> list[str]:
    """What makes an existing account unfit to be the gateway's system account."""
    out = []
    if acct.uid == 0:
        out.append("it is uid 0 (root)")
    elif acct.uid >= defs.uid_min:
        out.append(f"its uid {acct.uid} is a regular user's (>= UID_MIN {defs.uid_min}), "
                   "not a system account")
    if os.path.normpath(acct.home) != home:
        out.append(f"its home is {acct.home}, not {home}")
    if acct.shell not in NOLOGIN:
        out.append(f"its shell {acct.shell} allows logins")
    return out


class Plan(NamedTuple):
    name: str
    home: str
    existing: Account | None  # None: create it
    groups: frozenset[int]
    person: bool = False  # a person's own account (setup --user): its home is left as it is


def _home_problem(home: str, acct: Account | None, name: str) -> str | None:
    """A home must be a directory of the account, or not exist yet below directories
    only root can change (so nobody can swap it) that the account can enter."""
    chain, missing = files.stat_chain(home)
    if missing is None:
        st = chain[-1][1]
        if acct is None:
            return (f"{home} exists already (owner uid {st.st_uid}) but there is no account "
                    f"{name}; refusing to give it away")
        if st.st_uid != acct.uid:
            return f"{home} belongs to uid {st.st_uid}, not to {name}"
        chain = chain[:-1]
    for path, st in chain:
        # Sticky directories (/tmp) let others add entries, not replace root's.
        if st.st_uid != 0 or (st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
                              and not st.st_mode & stat.S_ISVTX):
            return (f"{path}, above the home {home}, can be changed by others than root "
                    f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")
    return None


def plan(etc: str, name: str, home: str, existing: bool = False) -> Plan:
    """Reuse a fit account or plan to create one; refuse an unfit one. Writes nothing.

    ``existing``: a person's own account chosen with `theiaosctl setup --user NAME`:
    never created, a login shell and a regular uid are what it should have, and its
    home must be a real directory of its own (not /nonexistent).
    """
    acct = lookup(etc, name)
    if existing:
        if acct is None:
            raise AccountError(f"there is no account {name}",
                               f"create it first (useradd --create-home {name}), or "
                               "sudo theiaosctl setup --user theiaos")
        if acct.uid == 0:
            raise AccountError(f"{name} is root: the gateway must run rootless",
                               "choose another account")
        if os.path.normpath(acct.home) != home:
            raise AccountError(f"{name}'s home is {acct.home}, not {home}",
                               f"sudo theiaosctl setup --user {name}")
        st = files.lstat(home)
        if st is None or not stat.S_ISDIR(st.st_mode) or st.st_uid != acct.uid:
            raise AccountError(f"{name}'s home {home} is not a directory of its own "
                               f"({'missing' if st is None else files.kind(st.st_mode)})",
                               f"choose an account with a home of its own, or create it: "
                               f"sudo mkhomedir_helper {name}")
    elif acct is not None:
        wrong = problems(acct, home, logindefs.load(etc))
        if wrong:
            raise AccountError(
                f"account {name} exists but {'; '.join(wrong)}",
                f"fix the account (usermod) or choose another with THEIAOS_PODMAN_USER "
                f"(and THEIAOS_PODMAN_HOME={acct.home} if that home is intended)",
            )
    why = _home_problem(home, acct, name)
    if why:
        fix = ("set THEIAOS_PODMAN_HOME (or THEIAOS_PODMAN_USER) in /etc/theiaos/podman.env "
               "to a home that does not exist yet: setup creates it")
        if acct is None and files.lstat(home) is not None:
            st = files.lstat(home)
            assert st is not None
            fix = (f"move {home} aside, or recreate the account that owned it: sudo useradd "
                   f"--system --uid {st.st_uid} --home-dir {home} --shell /usr/sbin/nologin "
                   f"{name}")
        raise AccountError(why, fix)
    gids = groups(etc, name, acct.gid) if acct is not None else frozenset()
    return Plan(name, home, acct, gids, existing)


def _nologin(root: str) -> str:
    for path in NOLOGIN[:2]:
        if os.path.exists(os.path.join(root, path.lstrip("/"))):
            return path
    return "/usr/sbin/nologin"


def _create(root: str, name: str, home: str, shell: str) -> list[str]:
    """The command that creates the account below ``root`` ("/" on a host)."""
    if not os.path.exists(SYSUSERS):
        return ["useradd", *(["--prefix", root] if root != "/" else []), "--system",
                "--user-group", "--home-dir", home, "--no-create-home", "--shell", shell,
                "--comment", COMMENT, name]
    line = sysusers_line(name, home, shell)
    argv = [SYSUSERS, *([f"--root={root}"] if root != "/" else [])]
    shipped = os.path.join(root, SYSUSERS_FILE.lstrip("/"))  # a host path, also with --root
    raw = files.read_bytes(shipped, files.ROOT, files.SMALL)
    if raw is not None and line in raw.decode("utf-8", "replace").splitlines():
        return [*argv, shipped]
    return [*argv, "--inline", line]


def apply(etc: str, p: Plan) -> tuple[str, Account]:
    """Create the account if planned, and make its home a 0700 directory of its own.

    Returns ("created" | "changed" (its home was fixed) | "unchanged", the account).
    """
    acct = p.existing
    if acct is None:
        root = os.path.dirname(os.path.normpath(etc))
        argv = _create(root, p.name, p.home, _nologin(root))
        run(argv)
        acct = lookup(etc, p.name)
        if acct is None:
            raise AccountError(f"{os.path.basename(argv[0])} reported success but {p.name} "
                               f"is not in {etc}/passwd")
    fixed = False if p.person else files.ensure_dir(
        acct.home, Perm(acct.uid, acct.gid, 0o700), parents=Perm(0, 0, 0o755))
    state = "created" if p.existing is None else "changed" if fixed else "unchanged"
    return state, acct
