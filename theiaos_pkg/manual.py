"""Manual mode's container (the product doc's launch script): the gateway run directly
with ``podman run`` as the service account, from the same Spec as the Quadlet.
runtime.Manual checks what a launch needs first (and is the only caller).
"""

from __future__ import annotations

import sys
import time

from . import container, gateway, health, podman, state
from .account import Account
from .errors import GatewayError
from .run import interactive, run, stream
from .settings import Settings

LAUNCH_TIMEOUT = 60.0


def container_state(s: Settings, acct: Account) -> dict[str, object]:
    """The manual container's State from ``podman container inspect`` ({} when none)."""
    info = podman.inspect_container(acct.identity(), s.container_name)
    got = (info or {}).get("State")
    return got if isinstance(got, dict) else {}


def running(s: Settings, acct: Account) -> bool:
    return bool(container_state(s, acct).get("Running"))


def launch(s: Settings, acct: Account, features: podman.Features) -> None:
    """Start (or replace) the gateway container detached; return only when it answers."""
    who = acct.identity()
    # --replace stops a running one first: it finishes its turns within its stop timeout
    run(container.run_argv(container.spec(s), acct.uid, acct.gid, secret=features.secret,
                           hard=container.hardening(s, features)), as_user=who,
        timeout=container.stop_bound(s.stop_timeout) + LAUNCH_TIMEOUT)
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not health.healthy(s):
        st = container_state(s, acct)
        if st.get("Status") != "running" or time.monotonic() > deadline:
            logs = run(["podman", "logs", "--tail", "20", s.container_name], as_user=who,
                       check=False)
            raise GatewayError(
                f"container {s.container_name} is {st.get('Status', 'gone')} "
                f"(exit code {st.get('ExitCode', '?')}) and {s.url}healthz does not "
                f"answer; its last lines:\n{(logs.stdout + logs.stderr).rstrip()}",
                "sudo theiaosctl doctor",
            )
        time.sleep(0.2)
    state.clear_pending()


def stop(s: Settings, acct: Account) -> str:
    """Stop the manual container (kept, as `podman stop` keeps it); its state after."""
    who = acct.identity()
    if podman.inspect_container(who, s.container_name) is None:
        return "not there"
    # the gateway finishes its turns within its stop timeout, then Podman kills it
    run(["podman", "stop", "--time", str(s.stop_timeout), s.container_name], as_user=who,
        timeout=container.stop_bound(s.stop_timeout))
    return str(container_state(s, acct).get("Status", "gone"))


def logs(s: Settings, acct: Account, lines: int | None, follow: bool, since: str | None) -> int:
    """``podman logs`` of the manual container (k8s-file log: the account reads it)."""
    argv = ["podman", "logs"]
    if lines is not None:
        argv += ["--tail", str(lines)]
    if follow:
        argv.append("--follow")
    if since:
        argv += ["--since", since]
    return stream([*argv, s.container_name], as_user=acct.identity())


def onboard(s: Settings, acct: Account, features: podman.Features | None) -> int:
    """The interactive onboarding wizard on a terminal of its own (run.interactive),
    never root's: inside the gateway's running container (``features`` None: the
    gateway, service or manual, keeps running and reloads what the wizard writes), or
    in a container of its own (same image and mounts, no ports published)."""
    before = gateway.config_token(s, acct.uid)
    argv = container.onboard_exec_argv(container.spec(s)) if features is None else \
        container.run_argv(container.spec(s), acct.uid, acct.gid, secret=features.secret,
                           onboard=True, hard=container.hardening(s, features))
    code = interactive(argv, as_user=acct.identity())
    after = gateway.config_token(s, acct.uid)
    if after and after != before and after != gateway.read_token(s, acct.uid):
        print(f"warning: the wizard wrote gateway.auth.token into {s.config_file}, which "
              f"differs from THEIAOS_GATEWAY_TOKEN in {s.env_file}; clients must use the "
              "one the gateway reads (see: sudo theiaosctl doctor)", file=sys.stderr, flush=True)
    return code
