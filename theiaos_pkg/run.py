"""The only door to other programs.

``run()`` pins the locale, echoes ``+ argv`` with --debug, turns a missing program
into one clear error and reports a failure once, with the program's own words.
Running a program as the service account goes through here too (``as_user``).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import IO

from .errors import CommandError

#: Set by `theiaosctl --debug`: every command is echoed to stderr before it runs.
#: (No logging module: it would cost `theiaosctl status` its start-up time.)
DEBUG = False


def _trace(argv: Sequence[str], as_user: Identity | None) -> None:
    if DEBUG:
        who = f"[{as_user.name}] " if as_user else ""
        print(f"+ {who}{shlex.join(argv)}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who a program runs as: the service account, with its home and runtime dir."""

    name: str
    uid: int
    gid: int
    home: str

    @property
    def runtime_dir(self) -> str:
        return f"/run/user/{self.uid}"

    def environ(self) -> dict[str, str]:
        env = {
            "HOME": self.home,
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            "LANG": "C.UTF-8",
        }
        if os.path.isdir(self.runtime_dir):
            env["XDG_RUNTIME_DIR"] = self.runtime_dir
            bus = f"{self.runtime_dir}/bus"
            if os.path.exists(bus):
                env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={bus}"
        return env


def _environ(as_user: Identity | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    if as_user is not None:
        env = as_user.environ()
    else:
        env = dict(os.environ)
        env["LANG"] = env["LC_ALL"] = "C.UTF-8"
    if extra:
        env.update(extra)
    return env


def _ids(as_user: Identity | None) -> tuple[int | None, int | None, list[int] | None]:
    """Credentials to switch to; none when we already are that user (its read-only verbs)."""
    if as_user is None or os.geteuid() == as_user.uid:
        return None, None, None
    return as_user.uid, as_user.gid, []


def run(
    argv: Sequence[str],
    *,
    as_user: Identity | None = None,
    check: bool = True,
    capture: bool = True,
    input: str | None = None,
    stdin: IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; with ``check`` a non-zero exit raises CommandError with its stderr."""
    _trace(argv, as_user)
    user, group, groups = _ids(as_user)
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            stdin=stdin,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            text=True,
            env=_environ(as_user, env),
            timeout=timeout,
            cwd=as_user.home if as_user else None,
            check=False,
            user=user,
            group=group,
            extra_groups=groups,
        )
    except FileNotFoundError:
        raise CommandError(f"{argv[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise CommandError(f"{shlex.join(argv)}: no result after {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip().splitlines()
        why = detail[-1] if detail else f"exit status {proc.returncode}"
        raise CommandError(f"{shlex.join(argv)} failed: {why}")
    return proc


def stream(
    argv: Sequence[str],
    *,
    as_user: Identity | None = None,
    stdin: int | IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run ``argv`` with the terminal attached (output streams through); its exit status."""
    _trace(argv, as_user)
    user, group, groups = _ids(as_user)
    try:
        proc = subprocess.run(
            list(argv), stdin=stdin, env=_environ(as_user, env),
            cwd=as_user.home if as_user else None, check=False,
            user=user, group=group, extra_groups=groups,
        )
    except FileNotFoundError:
        raise CommandError(f"{argv[0]}: command not found") from None
    return proc.returncode
