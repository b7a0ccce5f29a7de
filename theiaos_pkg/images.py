"""`theiaosctl image`: the gateway's images in the service account's own store (never
root's). A new image never leaves a broken gateway behind: the image the gateway runs
now is kept as PREVIOUS, the gateway restarts onto the new one and must answer within
THEIAOS_PODMAN_START_TIMEOUT; if it does not, PREVIOUS is put back, the gateway
restarted on it and confirmed healthy, and the verb fails saying "rolled back".

A new image that exits or does not answer (500, a probe that times out, a hang) fails
its start by itself: the unit's ExecStartPost stops a container that has not answered
within the start bound, in order (`podman stop -t 10`, container.ready_argv), and the
start fails. The rollback is then an ordinary restart of a failed unit, never a stop
of a starting one (which systemd does by signals). The verb returns, the previous
image answering, within the start bound plus container.START_ROOM, the old
container's stop and the previous image's start (tests/system/test_operations.py
states and checks a margin)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from . import podman, runtime
from .account import Account
from .errors import GatewayError, TheiaosError
from .run import run
from .settings import Settings

#: The image the gateway ran before the last change, kept for a rollback.
PREVIOUS = "localhost/theiaos:previous"
Report = Callable[[str], None]


def list_(s: Settings, acct: Account) -> int:
    """The account's images, the gateway's current and previous marked."""
    who = acct.identity()
    current, previous = podman.image_id(who, s.image), podman.image_id(who, PREVIOUS)
    rows = run(["podman", "images", "--format",
                "{{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"],
               as_user=who).stdout.splitlines()
    print(f"{'IMAGE':48} {'ID':12}  {'CREATED':16} {'SIZE':10} ROLE")
    for row in rows:
        name, iid, created, size = (row.split("\t") + ["", "", "", ""])[:4]
        role = ("current" if current and current.startswith(iid) and name == s.image else
                "previous" if previous and previous.startswith(iid) and name == PREVIOUS else "")
        print(f"{name:48} {iid[:12]:12}  {created:16} {size:10} {role}".rstrip())
    return 0


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


def _running_image(s: Settings, acct: Account) -> str | None:
    """The image id the gateway runs now, None if it runs nothing."""
    return runtime.of(s, acct).running_image()


def change(s: Settings, acct: Account, action: str, source: str | None, report: Report,
           rollback: bool = True) -> int:
    """build | pull | load, keeping what runs now as PREVIOUS; restart a running gateway
    onto a new image and roll back when it does not answer (unless ``rollback`` is off)."""
    who = acct.identity()
    before = podman.image_id(who, s.image)
    running = _running_image(s, acct)
    keep = to_keep(before, running)
    if keep:
        run(["podman", "tag", keep, PREVIOUS], as_user=who)
    if action == "build":
        podman.build(who, s.image, os.path.abspath(source or "."))
    elif action == "pull":
        assert source
        podman.pull(who, source, s.image)
    else:
        _load(s, acct, source)
    after = podman.image_id(who, s.image)
    step = next_step(before, after, running)
    if step == "unchanged":
        report(f"{s.image}: {after[:12] if after else 'missing'} (unchanged)")
        return 0
    assert after is not None
    report(f"{s.image}: {after[:12]} (new; the one before is kept as {PREVIOUS})")
    if step == "left stopped":
        report("the gateway is not running: `theiaosctl start` uses the new image; "
               "`theiaosctl image rollback` goes back")
        return 0
    try:
        restart(s, acct, report, _bound(s))
    except GatewayError as exc:
        if not rollback or not keep:
            raise
        report(f"the new image does not answer: rolling back to {keep[:12]}")
        run(["podman", "tag", keep, s.image], as_user=who)
        restart(s, acct, report, _bound(s))
        raise TheiaosError(
            f"rolled back: the gateway answers again on {keep[:12]}; the new image "
            f"{after[:12]} did not answer within {s.start_timeout} s ({exc.message})",
            "fix the image and load or build it again; --no-rollback keeps a new image "
            "whatever happens") from None
    prune(s, acct, report)
    return 0


def to_keep(before: str | None, running: str | None) -> str | None:
    """What becomes PREVIOUS before a change: the image the gateway runs (which may no
    longer carry the name, after a change made by hand), else the one the name has."""
    return running or before


def next_step(before: str | None, after: str | None, running: str | None) -> str:
    """After build, pull or load: "unchanged" (the name points where it did, or nowhere),
    "left stopped" (a new image; nothing runs, the next start uses it) or "restart"."""
    if after is None or after == before:
        return "unchanged"
    return "left stopped" if running is None else "restart"


def rollback(s: Settings, acct: Account, report: Report) -> int:
    """Back to PREVIOUS by hand; what ran becomes PREVIOUS (a second rollback returns)."""
    who = acct.identity()
    previous, current = podman.image_id(who, PREVIOUS), podman.image_id(who, s.image)
    if previous is None:
        raise TheiaosError(f"no previous image is kept ({PREVIOUS} is not in {acct.name}'s "
                           "store)", "theiaosctl image list")
    if previous == current:
        report(f"{s.image} is {previous[:12]} already: nothing to roll back")
        return 0
    running = _running_image(s, acct) is not None
    run(["podman", "tag", previous, s.image], as_user=who)
    if current:
        run(["podman", "tag", current, PREVIOUS], as_user=who)
    report(f"{s.image}: {previous[:12]} again ({(current or 'none')[:12]} kept as {PREVIOUS})")
    if running:
        restart(s, acct, report, _bound(s))
    return 0


def _bound(s: Settings) -> float:
    """How long an image change's restart may take before the verb gives up: the old
    container's stop (the turns it finishes first, within its stop timeout), then the
    new one's start until it answers or its unit gives up."""
    from .container import START_ROOM, stop_bound

    return stop_bound(s.stop_timeout) + s.start_timeout + START_ROOM


def restart(s: Settings, acct: Account, report: Report, timeout: float) -> None:
    """Restart a running gateway onto its image; it must answer within ``timeout``."""
    runtime.of(s, acct).restart(report, timeout)


def prune(s: Settings, acct: Account, report: Report) -> None:
    """Dangling images go once the gateway answers on the new one: current and previous
    are tagged, so neither is touched."""
    proc = run(["podman", "image", "prune", "--force"], as_user=acct.identity(), check=False)
    removed = [ln for ln in proc.stdout.split() if ln]
    if proc.returncode != 0:
        report(f"warning: podman image prune failed: {proc.stderr.strip()}")
    elif removed:
        report(f"pruned {len(removed)} dangling image(s)")
