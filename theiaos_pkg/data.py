"""Files the package ships besides its code: found in the source tree when running
from a checkout, else where the package installs them."""

from __future__ import annotations

from pathlib import Path

SHARE = Path("/usr/share/theiaos-podman")
_SOURCE = Path(__file__).resolve().parent.parent

LAUNCH_SCRIPT = "scripts/run-theiaos-podman.sh"


def find(rel: str) -> Path:
    """``units/…`` or ``scripts/…``: the checkout's copy if there is one, else the installed."""
    here = _SOURCE / rel
    return here if here.is_file() else SHARE / rel
