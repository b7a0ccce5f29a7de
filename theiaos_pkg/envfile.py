"""The gateway's ``.env``, read the way Podman's ``--env-file`` reads it (pure).

Podman (pkg/env ParseFile, the same from 4.3 to 5.x): each line loses its leading
blanks; empty lines and lines starting with ``#`` are skipped; the rest splits at the
first ``=``: the name keeps any blanks before ``=``, the value is taken literally
(quotes, trailing blanks and ``# comments`` included); a line starting with ``=`` makes
``podman run`` fail; a line without ``=`` imports that variable from Podman's own
environment; the last assignment wins.

The gateway also loads this file itself (dotenv), which strips quotes and comments.
A token line the two would read differently is refused with the fix, never rewritten
behind the admin's back. Messages never quote the token's value.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import ConfigError
from .settings import TOKEN_KEY

_BLANKS = " \t"
# What a token may hold so that Podman and dotenv read the same value.
_TOKEN_OK = re.compile(r"[^\s\"'`\\#$]+")


class Line(NamedTuple):
    number: int
    name: str | None  # None: blank or comment
    value: str | None  # None: no '=' (Podman imports the variable from its environment)


def lines(text: str) -> list[Line]:
    """Every line as Podman sees it."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip(_BLANKS)
        if not line or line.startswith("#"):
            out.append(Line(number, None, None))
            continue
        name, sep, value = line.partition("=")
        out.append(Line(number, name, value if sep else None))
    return out


def check(text: str, path: str) -> None:
    """Refuse what would make ``podman run`` fail, and any token line that Podman and
    the gateway would read differently."""
    for ln in lines(text):
        where = f"{path} line {ln.number}"
        if ln.name is None:
            continue
        if ln.name.strip(_BLANKS) == "":
            raise ConfigError(f"{where} starts with '=': Podman refuses the whole file",
                              f"give the line a name or remove it from {path}")
        bare = ln.name.strip(_BLANKS)
        if bare.split()[-1] == TOKEN_KEY and ln.name != TOKEN_KEY:
            raise ConfigError(
                f"{where}: Podman reads the name as {ln.name!r}, not {TOKEN_KEY}",
                f"write the line as {TOKEN_KEY}=VALUE (no export, no blanks around '=')")
        if ln.name != TOKEN_KEY:
            continue
        if ln.value is None:
            raise ConfigError(f"{where}: {TOKEN_KEY} has no '='",
                              f"write {TOKEN_KEY}=VALUE, or remove the line (setup then "
                              "writes a new token)")
        if ln.value and not _TOKEN_OK.fullmatch(ln.value):
            raise ConfigError(
                f"{where}: the value of {TOKEN_KEY} has quotes, blanks, '#', '$' or a "
                "backslash; Podman would pass them on literally, the gateway would not",
                f"edit {path}: {TOKEN_KEY}=VALUE with the bare value (no quotes, no comment "
                "on the line)")


def value(text: str, name: str = TOKEN_KEY) -> str | None:
    """The value Podman gives ``name`` (the last assignment), None when unset or empty."""
    found = None
    for ln in lines(text):
        if ln.name == name and ln.value is not None:
            found = ln.value
    return found or None


def with_token(text: str, token: str) -> str:
    """``text`` with every assignment of the token set to ``token``, or one appended;
    every other line is kept byte for byte."""
    out, hit = [], False
    for raw, ln in zip(text.splitlines(keepends=True), lines(text)):
        if ln.name == TOKEN_KEY:
            raw, hit = f"{TOKEN_KEY}={token}\n", True
        out.append(raw)
    body = "".join(out)
    if hit:
        return body
    if body and not body.endswith("\n"):
        body += "\n"
    return body + f"{TOKEN_KEY}={token}\n"
