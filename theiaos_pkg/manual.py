"""Manual mode (the product doc's launch script): the gateway container run directly
with ``podman run`` as the service account, from the same Spec as the Quadlet."""

from __future__ import annotations

import sys
import time

from . import container, gateway, health, podman, service
from .account import Account
from .errors import GatewayError, TheiaosError
from .run import run, stream
from .settings import UNIT, Settings

LAUNCH_TIMEOUT = 60.0


def _preflight(s: Settings, acct: Account) -> None:
    if service.is_active(acct):
        raise TheiaosError(
            f"{UNIT} is running and owns the container name {s.container_name}; "
            "launch would fight systemd over it",
            "sudo theiaosctl stop (then launch), or keep using the service",
        )
    who = acct.identity()
    if podman.image_id(who, s.image) is None:
        raise TheiaosError(podman.provide_hint(who, s.image))


def launch(s: Settings, acct: Account) -> None:
    """Start the gateway container detached; return only when it answers."""
    _preflight(s, acct)
    who = acct.identity()
    run(container.run_argv(container.spec(s), acct.uid, acct.gid), as_user=who)
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not health.healthy(s):
        info = podman.inspect_container(who, s.container_name)
        state = (info or {}).get("State") or {}
        if state.get("Status") != "running" or time.monotonic() > deadline:
            logs = run(["podman", "logs", "--tail", "20", s.container_name], as_user=who,
                       check=False)
            raise GatewayError(
                f"container {s.container_name} is {state.get('Status', 'gone')} "
                f"(exit code {state.get('ExitCode', '?')}) and {s.url}healthz does not "
                f"answer; its last lines:\n{(logs.stdout + logs.stderr).rstrip()}",
                "sudo theiaosctl doctor",
            )
        time.sleep(0.5)


def onboard(s: Settings, acct: Account) -> int:
    """The interactive onboarding wizard (same image and mounts, no ports published)."""
    _preflight(s, acct)
    before = gateway.config_token(s)
    code = stream(container.run_argv(container.spec(s), acct.uid, acct.gid, onboard=True),
                  as_user=acct.identity(), stdin=sys.stdin.fileno())
    after = gateway.config_token(s)
    if after and after != before and after != gateway.read_token(s):
        print(f"warning: the wizard wrote gateway.auth.token into {s.config_file}, which "
              f"differs from THEIAOS_GATEWAY_TOKEN in {s.env_file}; clients must use the "
              "one the gateway reads (see: sudo theiaosctl doctor)", file=sys.stderr)
    return code
