"""The gateway's health, asked over HTTP (``GET /healthz``): the only network door.

A bare HTTP/1.0 request on a socket: all a probe needs, and it keeps http.client
(and the email parser it imports) off `theiaosctl status`'s start-up path.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Collection, Sequence

from .settings import Settings


def probe(s: Settings, path: str = "/healthz", timeout: float = 2.0) -> int | None:
    """The HTTP status of ``GET path`` on the published gateway port, None if no answer."""
    host = s.local_host
    request = (f"GET {path} HTTP/1.0\r\nHost: {host}:{s.gateway_port}\r\n"
               "Connection: close\r\n\r\n").encode()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:  # an address, never a name: no getaddrinfo (and the idna codec it loads)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect((host, s.gateway_port))
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


def port_taken(address: str, port: int) -> str | None:
    """None when ``address:port`` could be published now, else why not (taken, or the
    address is not on this host). Asked by binding, as Podman's port forwarder will."""
    host = "0.0.0.0" if address == "0.0.0.0" else address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {address} is taken by another program"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{address} is not an address of this host"
            return f"cannot bind {address}:{port}: {exc.strerror}"
    return None


def listeners(ports: Collection[int]) -> dict[int, set[int]]:
    """The uids of the sockets listening on each TCP port of ``ports`` (any address), from
    the kernel's /proc/net/tcp and tcp6: who holds a port, without asking the program.
    The kernel builds these tables as they are read (slow on a busy host): read once."""
    from . import files

    uids: dict[int, set[int]] = {port: set() for port in ports}
    wanted = {f"{port:04X}": port for port in ports}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        raw = files.read_bytes(table, files.ROOT, files.LARGE)
        for line in (raw or b"").decode("ascii", "replace").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 7 and fields[3] == "0A" and fields[7].isdigit():
                port = wanted.get(fields[1].rsplit(":", 1)[-1])
                if port is not None:
                    uids[port].add(int(fields[7]))
    return uids


def port_problems(address: str, ports: Sequence[int], ours: frozenset[int]) -> dict[int, str]:
    """Why each of ``ports`` cannot be the gateway's; ports that are free, or whose every
    listening socket belongs to a uid in ``ours`` (the account's: Podman's port forwarder
    runs as it, also while a restart is half done), are left out."""
    why = {port: problem for port in ports if (problem := port_taken(address, port))}
    if why and ours:
        held = listeners(why)
        why = {port: problem for port, problem in why.items()
               if not held[port] <= ours}
    return why
