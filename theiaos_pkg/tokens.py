"""The gateway token: `.env` is where it lives (the admin's and the gateway's file);
where Podman has secrets, the container gets it from a Podman secret kept in step with
`.env` (runtime.sync_secret, at every start), so that it is in no `podman inspect`,
database or command line.

A rotation goes through state.PENDING: recorded before the write, cleared only once the
gateway answers with the new token, so a rotation killed half-way is finished by the
next setup, start or restart.
"""

from __future__ import annotations

from . import files, gateway, runtime, state
from .account import Account
from .files import Perm
from .settings import Settings


def rotate(s: Settings, acct: Account, report: runtime.Report,
           rt: runtime.Runtime | None = None) -> str:
    """Write a new token into `.env` (every other line kept), restart a running gateway
    onto it and wait until it answers; the new token (printed only when asked).

    ``rt`` is the gateway's run mode (``runtime.of`` unless a caller has one)."""
    data, token = gateway.rotated(s, acct.uid)
    state.mark_pending("token rotated")
    files.write_bytes(s.env_file, data, Perm(acct.uid, acct.gid, 0o600))
    report(f"new token written to {s.env_file}")
    rt = rt or runtime.of(s, acct)
    if rt.running():
        rt.restart(report)
        report("the gateway answers, started with the new token")
    else:
        state.clear_pending()  # nothing runs with the old one; start brings the secret along
        report("the gateway is not running: it uses the new token when it starts")
    return token
