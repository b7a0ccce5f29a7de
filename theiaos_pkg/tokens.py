"""The gateway token: `.env` is where it lives (the admin's and the gateway's file);
where Podman has secrets, the container gets it from a Podman secret kept in step with
`.env`, so that it is in no `podman inspect`, database or command line.

Both changes go through state.PENDING: recorded before the write, cleared only once the
gateway answers with the new token, so a rotation killed half-way is finished by the
next setup, start or restart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from . import files, gateway, podman, service, state
from .account import Account
from .errors import ConfigError
from .files import Perm
from .settings import UNIT, Settings


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sync_secret(s: Settings, acct: Account, features: podman.Features) -> bool:
    """Make the account's token secret hold `.env`'s token; True when it had to change
    (the running gateway then needs a restart, which is recorded first)."""
    if not features.secret:
        return False
    token = gateway.read_token(s, acct.uid)
    if not token:
        raise ConfigError(f"no THEIAOS_GATEWAY_TOKEN in {s.env_file}", "sudo theiaosctl setup")
    want = digest(token)
    who = acct.identity()
    if podman.secret_digest(who) == want:
        return False
    state.mark_pending("token secret updated")
    podman.put_secret(who, token, want)
    return True


def rotate(s: Settings, acct: Account, report: Callable[[str], None]) -> str:
    """Write a new token into `.env` (every other line kept), restart a running gateway
    onto it and wait until it answers; the new token (printed only when asked)."""
    from . import configure, manual

    data, token = gateway.rotated(s, acct.uid)
    state.mark_pending("token rotated")
    files.write_bytes(s.env_file, data, Perm(acct.uid, acct.gid, 0o600))
    report(f"new token written to {s.env_file}")
    if not s.quadlet:
        if manual.running(s, acct):
            manual.launch(s, acct)
            report(f"container {s.container_name} restarted with it (manual mode)")
        else:
            state.clear_pending()
        return token
    if service.is_active(acct):
        out = configure.Outcome()
        configure.activate(s, acct, out, lambda line: None, restart=True)
        report(f"{UNIT} restarted; the gateway answers at {s.url} with the new token")
    else:
        state.clear_pending()  # nothing runs with the old one; start brings the secret along
        report("the gateway is not running: it uses the new token when it starts")
    return token
