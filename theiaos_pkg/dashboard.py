"""`theiaosctl dashboard`: a sign-in link for a person on this host.

A browser on the host reaches the container through rootless Podman's port forwarding
and arrives at the gateway from a non-loopback address, so the gateway asks to pair it
("pairing-required") even with the right token. The gateway's own handoff for that is
``openclaw dashboard --json`` run where the gateway runs: a single-use, short-lived link
(``#bootstrapToken=…``) that signs that one browser in, never the shared token in a URL.
Inside the container that link names the container's port; the person needs the host's
published address and port. This module asks the gateway for the link and gives it the
host's address (pure, tested), and nothing else of what the container printed.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .account import Account
from .errors import TheiaosError
from .journal import printable
from .run import run
from .settings import CONTAINER_GATEWAY_PORT, Settings

#: The gateway's own command for a browser handoff (as its image runs it: WORKDIR /app).
HANDOFF = ("node", "dist/index.js", "dashboard", "--json")
#: How long the gateway may take to make the link (a node process in the container).
HANDOFF_TIMEOUT = 90.0
#: More than a link's worth of JSON is not what the gateway prints.
MAX_OUTPUT = 64 * 1024
MAX_LINK = 4096
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def sign_in_link(s: Settings, acct: Account) -> str:
    """Ask the running gateway for a single-use sign-in link; the link for this host."""
    proc = run(["podman", "exec", s.container_name, *HANDOFF], as_user=acct.identity(),
               check=False, timeout=HANDOFF_TIMEOUT)
    if proc.returncode != 0 and not proc.stdout.strip():
        why = printable((proc.stderr.strip().splitlines() or ["no output"])[-1])[:300]
        raise TheiaosError(f"the gateway could not make a sign-in link: {why}",
                           "sudo theiaosctl status (the gateway must be running)")
    return host_link(proc.stdout, s)


def host_link(output: str, s: Settings) -> str:
    """The ``browserUrl`` of the gateway's ``dashboard --json`` output, moved from the
    container's port to where the host publishes it. Everything in ``output`` is the
    container's: it is bounded, parsed, and only a loopback http(s) link to the
    gateway's own port with a bootstrap fragment is taken."""
    answer = _json(output)
    if answer.get("ok") is not True:
        reason = answer.get("reason")
        raise TheiaosError("the gateway could not make a sign-in link: "
                           + (printable(reason)[:300] if isinstance(reason, str) else "no reason given"),
                           "sudo theiaosctl status; sudo theiaosctl logs -n 50")
    link = answer.get("browserUrl")
    if not isinstance(link, str) or not link.isascii() or not link.isprintable() \
            or len(link) > MAX_LINK:
        raise TheiaosError("the gateway's sign-in link is not a link", "sudo theiaosctl logs -n 50")
    parts = urlsplit(link)
    if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK \
            or (parts.port or CONTAINER_GATEWAY_PORT) != CONTAINER_GATEWAY_PORT \
            or "bootstrapToken=" not in parts.fragment:
        raise TheiaosError(f"the gateway's sign-in link is not one for its own port "
                           f"({parts.scheme}://{printable(parts.netloc)[:100]})",
                           "sudo theiaosctl logs -n 50")
    host = s.local_host
    netloc = f"[{host}]:{s.gateway_port}" if ":" in host else f"{host}:{s.gateway_port}"
    # The fragment names the WebSocket the page connects to (gatewayUrl): the same place.
    fragment = parse_qsl(parts.fragment, keep_blank_values=True)
    ws = "wss" if parts.scheme == "https" else "ws"
    fragment = [(k, f"{ws}://{netloc}" if k == "gatewayUrl" else v) for k, v in fragment]
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query,
                       urlencode(fragment, safe="")))


def _json(output: str) -> dict[str, Any]:
    if len(output) > MAX_OUTPUT:
        raise TheiaosError(f"the gateway's answer is longer than {MAX_OUTPUT} bytes",
                           "sudo theiaosctl logs -n 50")
    start, end = output.find("{"), output.rfind("}")
    try:
        answer = json.loads(output[start:end + 1]) if 0 <= start < end else None
    except (ValueError, RecursionError):
        answer = None
    if not isinstance(answer, dict):
        raise TheiaosError("the gateway's answer to `dashboard --json` is not JSON",
                           "sudo theiaosctl logs -n 50")
    return answer


#: The gateway's own pairing commands (openclaw devices), run where it runs.
DEVICES = ("node", "dist/index.js", "devices")
#: A pairing request id as the dashboard shows it ("Approve this browser").
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def devices_argv(action: str, request_id: str | None = None) -> list[str]:
    """The gateway's ``devices list`` or ``devices approve ID`` (the id checked first:
    it comes from whoever types it, and goes on to the container's command line)."""
    if action == "list":
        return [*DEVICES, "list"]
    if request_id is None or not REQUEST_ID.fullmatch(request_id):
        raise TheiaosError(f"not a pairing request id: {printable(request_id or '')[:140]!r}",
                           "sudo theiaosctl devices list (or the id the dashboard shows)")
    return [*DEVICES, "approve", request_id]


def devices(s: Settings, acct: Account, action: str, request_id: str | None = None) -> str:
    """What the running gateway says to ``devices list`` or ``devices approve ID``:
    the browsers waiting to be paired, or the approval. A browser on this host reaches
    the gateway as a non-loopback peer; where the gateway does not pair it by itself,
    the dashboard shows the request id to approve."""
    proc = run(["podman", "exec", s.container_name, *devices_argv(action, request_id)],
               as_user=acct.identity(), check=False, timeout=HANDOFF_TIMEOUT)
    said = "\n".join(printable(line) for line in
                     (proc.stdout + proc.stderr)[:MAX_OUTPUT].rstrip().splitlines())
    if proc.returncode != 0:
        raise TheiaosError(f"the gateway's devices {action} failed: "
                           f"{said.splitlines()[-1] if said else 'no output'}",
                           "sudo theiaosctl devices list; sudo theiaosctl status")
    return said
