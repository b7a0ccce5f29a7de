"""The gateway's health, asked over HTTP (``GET /healthz``): the only network door.

A bare HTTP/1.0 request on a socket: all a probe needs, and it keeps http.client
(and the email parser it imports) off `theiaosctl status`'s start-up path.
"""

from __future__ import annotations

import socket

from .settings import Settings


def _host(s: Settings) -> str:
    return "127.0.0.1" if s.publish_address in ("0.0.0.0", "::") else s.publish_address


def probe(s: Settings, path: str = "/healthz", timeout: float = 2.0) -> int | None:
    """The HTTP status of ``GET path`` on the published gateway port, None if no answer."""
    host = _host(s)
    request = (f"GET {path} HTTP/1.0\r\nHost: {host}:{s.gateway_port}\r\n"
               "Connection: close\r\n\r\n").encode()
    try:
        with socket.create_connection((host, s.gateway_port), timeout=timeout) as sock:
            sock.sendall(request)
            head = b""
            while b"\r\n" not in head and len(head) < 4096:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return None
    fields = head.split(b"\r\n", 1)[0].split()
    if len(fields) >= 2 and fields[0].startswith(b"HTTP/") and fields[1].isdigit():
        return int(fields[1])
    return None


def healthy(s: Settings) -> bool:
    return probe(s) == 200
