"""The gateway's health, asked over HTTP (``GET /healthz``): the only network door."""

from __future__ import annotations

import http.client
import time

from .settings import Settings


def _host(s: Settings) -> str:
    return "127.0.0.1" if s.publish_address in ("0.0.0.0", "::") else s.publish_address


def probe(s: Settings, path: str = "/healthz", timeout: float = 2.0,
          headers: dict[str, str] | None = None) -> int | None:
    """The HTTP status of ``GET path`` on the published gateway port, None if no answer."""
    conn = http.client.HTTPConnection(_host(s), s.gateway_port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def healthy(s: Settings) -> bool:
    return probe(s) == 200


def wait_healthy(s: Settings, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if healthy(s):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
