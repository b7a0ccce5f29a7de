#!/usr/bin/python3 -IS
"""Stand-in for the TheiaOS gateway image (tests only, never shipped).

Installed in the test image as /usr/local/bin/node so the real command lines work
unchanged (working directory /app):

    node dist/index.js gateway --bind lan --port 18789
    node dist/index.js onboard
    node -e "fetch('http://127.0.0.1:18789/healthz')..."     (health probe)

Contract (reference.md section A), made stricter where a test profits from it:
- refuses to start unless $HOME/.theiaos/theiaos.json is strict JSON with
  gateway.mode == "local" (or --allow-unconfigured is given);
- refuses to start without a non-empty THEIAOS_GATEWAY_TOKEN in its environment
  (the real gateway also accepts gateway.auth.token; the stand-in does not, so a
  test proves the token reached the container through the environment);
- serves HTTP on the port and on port + 1 (the legacy bridge port):
  /healthz, /health -> 200 {"ok":true,"status":"live"}; /readyz, /ready -> 200
  {"ready":true}; / -> 401 without the token, 200 text/html with
  `Authorization: Bearer TOKEN` or `?token=TOKEN` (the real gateway serves / freely);
- logs one line per request to stdout; writes nothing outside the state dir.

Python 3 standard library only; runs as any uid.
"""

from __future__ import annotations

import hmac
import http.client
import json
import os
import re
import signal
import sys
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

VERSION = "v22.0.0-theiaos-test-stub"
DEFAULT_PORT = 18789
PROBE_URL = f"http://127.0.0.1:{DEFAULT_PORT}/healthz"
BIND_ADDRESSES = {"lan": "0.0.0.0", "loopback": "127.0.0.1", "all": "0.0.0.0"}
INDEX_HTML = (
    b"<!doctype html>\n<html><head><title>TheiaOS Control (test stand-in)</title></head>\n"
    b"<body><h1>TheiaOS Control</h1><p>test stand-in gateway</p></body></html>\n"
)


class StubError(Exception):
    """A refusal the real gateway would also make: message on stderr, exit 1."""


def log(message: str) -> None:
    print(f"[gateway] {message}", flush=True)


def state_dir() -> Path:
    override = os.environ.get("THEIAOS_STATE_DIR")
    if override:
        return Path(override)
    home = os.environ.get("HOME")
    if not home:
        raise StubError("HOME is not set; cannot find the state directory ~/.theiaos")
    return Path(home) / ".theiaos"


def config_path() -> Path:
    return state_dir() / "theiaos.json"


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def load_config(path: Path) -> dict[str, Any]:
    """Read theiaos.json as strict JSON (no NaN/Infinity, no duplicate keys)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise StubError(f"config {path} not found; run onboarding or write it") from exc
    except OSError as exc:
        raise StubError(f"cannot read config {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except ValueError as exc:
        raise StubError(f"config {path} is not strict JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise StubError(f"config {path} must hold a JSON object")
    return data


def gateway_section(config: dict[str, Any]) -> dict[str, Any]:
    section = config.get("gateway", {})
    return section if isinstance(section, dict) else {}


def require_local_mode(config: dict[str, Any], path: Path) -> None:
    mode = gateway_section(config).get("mode")
    if mode != "local":
        raise StubError(
            f"gateway.mode is {json.dumps(mode)} in {path}; refusing to start "
            '(set "gateway": {"mode": "local"} or pass --allow-unconfigured)'
        )


def require_token() -> str:
    token = os.environ.get("THEIAOS_GATEWAY_TOKEN", "")
    if not token:
        raise StubError("THEIAOS_GATEWAY_TOKEN is not set; refusing to bind a non-loopback address")
    return token


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        log(f"{client_address[0]} :{self.server_address[1]} connection error: {exc!r}")


def make_handler(token: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "theiaos-gateway-stub"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            url = urllib.parse.urlsplit(self.path)
            if url.path in ("/healthz", "/health") and BROKEN == "unhealthy":
                self.send_json(500, {"ok": False, "status": "broken on purpose"})
            elif url.path in ("/healthz", "/health") and BROKEN == "slow":
                threading.Event().wait()  # accepted, never answered: the probe times out
            elif url.path in ("/healthz", "/health"):
                self.send_json(200, {"ok": True, "status": "live"})
            elif url.path in ("/readyz", "/ready"):
                self.send_json(200, {"ready": True})
            elif url.path == "/":
                if self.authorized(url.query):
                    self.send_body(200, "text/html; charset=utf-8", INDEX_HTML)
                else:
                    self.send_json(401, {"error": "unauthorized"})
            else:
                self.send_json(404, {"error": "not found"})

        def authorized(self, query: str) -> bool:
            header = self.headers.get("Authorization", "")
            offered = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
            if not offered:
                offered = urllib.parse.parse_qs(query).get("token", [""])[0]
            return bool(offered) and hmac.compare_digest(offered.encode(), token.encode())

        def send_json(self, status: int, body: dict[str, Any]) -> None:
            self.send_body(status, "application/json", json.dumps(body, separators=(",", ":")).encode())

        def send_body(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
            # never log the query string: it may carry the token
            path = urllib.parse.urlsplit(self.path).path if hasattr(self, "path") else "-"
            port = self.connection.getsockname()[1]
            status = args[1] if len(args) > 1 and format.startswith('"%s"') else "-"
            log(f"{self.client_address[0]} :{port} {getattr(self, 'command', None) or '-'} {path} {status}")

    return Handler


def parse_gateway_args(args: list[str]) -> tuple[str, int, bool]:
    bind, port, allow_unconfigured = "lan", DEFAULT_PORT, False
    it = iter(args)
    for arg in it:
        if arg == "--bind":
            bind = next(it, "")
        elif arg == "--port":
            value = next(it, "")
            if not value.isdigit() or not 0 < int(value) < 65535:
                raise StubError(f"--port needs a port number below 65535, got {value!r}")
            port = int(value)
        elif arg == "--allow-unconfigured":
            allow_unconfigured = True
        else:
            raise StubError(f"unknown gateway option {arg!r}")
    if bind not in BIND_ADDRESSES:
        raise StubError(f"--bind must be one of {', '.join(BIND_ADDRESSES)}, got {bind!r}")
    return bind, port, allow_unconfigured


#: An image built FROM the stand-in with `ENV THEIAOS_STUB_BROKEN=` one of: `exit`
#: (refuses to start), `unhealthy` (runs, /healthz answers 500), `slow` (runs, accepts
#: /healthz and never answers: the probe's own timeout ends it), `hang` (starts, never
#: listens, ignores SIGTERM, and its health probe hangs): broken images an update meets.
BROKEN = os.environ.get("THEIAOS_STUB_BROKEN", "")


def hang() -> int:
    log("started; hanging on purpose (THEIAOS_STUB_BROKEN=hang)")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        signal.pause()


def gateway(args: list[str]) -> int:
    if BROKEN == "exit":
        raise StubError("this image is broken on purpose (THEIAOS_STUB_BROKEN=exit)")
    if BROKEN == "hang":
        return hang()
    bind, port, allow_unconfigured = parse_gateway_args(args)
    path = config_path()
    config = load_config(path) if not allow_unconfigured or path.exists() else {}
    if not allow_unconfigured:
        require_local_mode(config, path)
    token = require_token()
    config_token = gateway_section(config).get("auth", {}).get("token")
    if config_token and config_token != token:
        log(f"warning: gateway.auth.token in {path} differs from THEIAOS_GATEWAY_TOKEN")
    address = BIND_ADDRESSES[bind]
    handler = make_handler(token)
    servers = [Server((address, p), handler) for p in (port, port + 1)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        log(f"listening on http://{address}:{server.server_address[1]}")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # as PID 1 in a container SIGTERM is ignored unless handled
        log(f"received signal {signum}, shutting down")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    for server in servers:
        server.shutdown()
        server.server_close()
    return 0


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def onboard(args: list[str]) -> int:
    path = config_path()
    config = load_config(path) if path.exists() else {}
    print("TheiaOS onboarding (test stand-in)", flush=True)
    print("Gateway token (leave empty to keep the current one): ", end="", flush=True)
    answer = sys.stdin.readline().strip()
    if answer:
        section = config.setdefault("gateway", {})
        section.setdefault("auth", {})["token"] = answer
        write_json_atomic(path, config)
        print(f"\nwrote gateway.auth.token to {path}", flush=True)
    else:
        print("\nno token given; config unchanged", flush=True)
    return 0


def probe(code: str) -> int:
    """`node -e CODE`: only health probes are understood."""
    if "healthz" not in code and "/health" not in code:
        raise StubError("the test stand-in node can only evaluate health probes (code mentioning /healthz)")
    match = re.search(r"https?://[^\s'\"`)]+", code)
    url = urllib.parse.urlsplit(match.group(0) if match else PROBE_URL)
    limit = re.search(r"AbortSignal\.timeout\((\d+)\)", code)  # as node's fetch would
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80,
                                      timeout=int(limit.group(1)) / 1000 if limit else None)
    try:
        conn.request("GET", url.path or "/healthz")
        response = conn.getresponse()
        response.read()
        status = response.status
    except OSError as exc:
        print(f"health probe {url.geturl()} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0 if status == 200 else 1


def main(argv: list[str]) -> int:
    if argv[:1] in (["--version"], ["-v"]):
        print(VERSION)
        return 0
    if argv[:1] == ["-e"] and len(argv) >= 2:
        if BROKEN == "hang":
            threading.Event().wait()  # the probe hangs too: only its timeout ends it
        return probe(argv[1])
    if len(argv) >= 2 and argv[0].endswith(".js"):
        command, rest = argv[1], argv[2:]
        if command == "gateway":
            return gateway(rest)
        if command == "onboard":
            return onboard(rest)
    raise StubError(f"unsupported command line: node {' '.join(argv)}")


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except StubError as exc:
        print(f"[gateway] error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
