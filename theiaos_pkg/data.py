"""Files the package ships besides its code: found in the source tree when running
from a checkout, else where the package installs them (os.path, not pathlib: setup reads
them on every run, and pathlib's import alone costs a no-op setup a few milliseconds)."""

from __future__ import annotations

import os

SHARE = "/usr/share/theiaos-podman"
_SOURCE = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))

LAUNCH_SCRIPT = "scripts/run-theiaos-podman.sh"


def find(rel: str) -> str:
    """``units/…`` or ``scripts/…``: the checkout's copy if there is one, else the installed."""
    here = os.path.join(_SOURCE, rel)
    return here if os.path.isfile(here) else os.path.join(SHARE, rel)


def read(rel: str) -> bytes:
    """The contents of a shipped file (root's, under /usr: read as it is)."""
    with open(find(rel), "rb") as fh:
        return fh.read()
