"""`theiaosctl image`: the gateway's images in the service account's own store (never
root's). A new image restarts a running gateway onto it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from . import podman
from .account import Account
from .errors import TheiaosError
from .settings import Settings


def list_(s: Settings, acct: Account) -> int:
    return podman.images(acct.identity())


def _load(s: Settings, acct: Account, source: str | None) -> None:
    who = acct.identity()
    if not source or source == "-":
        if sys.stdin.isatty():
            raise TheiaosError("image load - reads an image archive from standard input, "
                               "which is a terminal",
                               "sudo theiaosctl image load FILE, or: ... | sudo theiaosctl "
                               "image load -")
        podman.load(who, sys.stdin.buffer, s.image)
        return
    try:
        archive = open(source, "rb")  # noqa: SIM115 (closed below); root reads, podman gets a pipe
    except OSError as exc:
        raise TheiaosError(f"{source}: {exc.strerror}") from None
    with archive:
        podman.load(who, archive, s.image)


def change(s: Settings, acct: Account, action: str, source: str | None,
           report: Callable[[str], None]) -> int:
    """build | pull | load, then restart a running gateway when the image changed."""
    who = acct.identity()
    before = podman.image_id(who, s.image)
    if action == "build":
        podman.build(who, s.image, os.path.abspath(source or "."))
    elif action == "pull":
        assert source
        podman.pull(who, source, s.image)
    else:
        _load(s, acct, source)
    after = podman.image_id(who, s.image)
    report(f"{s.image}: {after[:12] if after else 'missing'}"
           + (" (unchanged)" if after == before else ""))
    if after != before:
        restart_if_running(s, acct, report)
    return 0


def restart_if_running(s: Settings, acct: Account, report: Callable[[str], None]) -> None:
    from . import configure, manual, service
    from .settings import UNIT

    if s.quadlet and service.is_active(acct):
        configure.activate(s, acct, configure.Outcome(), lambda line: None, restart=True)
        report(f"{UNIT} restarted; the gateway answers at {s.url}")
    elif not s.quadlet and manual.running(s, acct):
        manual.launch(s, acct)
        report(f"container {s.container_name} restarted on it (manual mode)")
