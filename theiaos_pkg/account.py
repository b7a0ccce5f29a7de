"""The service account: find it, check it is fit for the job, or create it."""

from __future__ import annotations

import dataclasses
import os
import stat

from . import files, logindefs
from .errors import AccountError
from .files import Perm
from .run import Identity, run

NOLOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/usr/bin/false", "/bin/false")


@dataclasses.dataclass(frozen=True)
class Account:
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
    raw = files.read_bytes(f"{etc}/passwd")
    return parse_passwd(raw.decode("utf-8", "replace"), name) if raw else None


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


def _nologin(root: str) -> str:
    for path in NOLOGIN[:2]:
        if os.path.exists(os.path.join(root, path.lstrip("/"))):
            return path
    return "/usr/sbin/nologin"


def ensure(etc: str, name: str, home: str, existing: bool = False) -> tuple[str, Account]:
    """Reuse a fit account or create one; make its home 0700.

    Returns ("created" | "changed" (its home was fixed) | "unchanged", the account).

    ``existing``: a person's own account chosen with `theiaosctl setup --user NAME`:
    never created, and a login shell and a regular uid are what it should have.
    """
    defs = logindefs.load(etc)
    acct = lookup(etc, name)
    created = False
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
    elif acct is None:
        root = os.path.dirname(os.path.normpath(etc))
        argv = ["useradd"]
        if root != "/":
            argv += ["--prefix", root]
        argv += ["--system", "--user-group", "--home-dir", home, "--no-create-home",
                 "--shell", _nologin(root), "--comment", "TheiaOS gateway", name]
        run(argv)
        acct = lookup(etc, name)
        if acct is None:
            raise AccountError(f"useradd reported success but {name} is not in {etc}/passwd")
        created = True
    else:
        wrong = problems(acct, home, defs)
        if wrong:
            raise AccountError(
                f"account {name} exists but {'; '.join(wrong)}",
                f"fix the account (usermod) or choose another with THEIAOS_PODMAN_USER "
                f"(and THEIAOS_PODMAN_HOME={acct.home} if that home is intended)",
            )
    fixed = _ensure_home(acct)
    return ("created" if created else "changed" if fixed else "unchanged"), acct


def _ensure_home(acct: Account) -> bool:
    try:
        st = os.lstat(acct.home)
    except FileNotFoundError:
        return files.ensure_dir(acct.home, Perm(acct.uid, acct.gid, 0o700))
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != acct.uid:
        raise AccountError(
            f"{acct.home} exists but is not a directory owned by {acct.name}",
            f"move {acct.home} aside or chown -R {acct.name}: {acct.home}",
        )
    return files.ensure_dir(acct.home, Perm(acct.uid, acct.gid, 0o700))
