"""Smoke test of the system lab: systemd, a lingering user, rootless Podman, the test image.

Proves the harness (tests/lab.py) and the stand-in gateway image (tests/image/) before
any package test relies on them. Needs root and systemd-nspawn; run with:

    cd /work/main && /usr/bin/python3 -m pytest -m lab tests/system/test_lab_smoke.py -x -q

The lab shares the host's network namespace: the gateway publishes 127.0.0.1:18789 and
127.0.0.1:18790 on the host's loopback while the module runs (nothing is left listening).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.lab import IMAGE_REF, Account, Lab, build_test_image

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (systemd-nspawn, nsenter)"),
    pytest.mark.skipif(
        shutil.which("systemd-nspawn", path="/usr/sbin:/usr/bin:/sbin:/bin") is None,
        reason="systemd-nspawn not found (apt-get install systemd-container)",
    ),
]

USER = "smoke"
PORTS = (18789, 18790)
GATEWAY_CMD = ("node", "dist/index.js", "gateway", "--bind", "lan", "--port", "18789")
HEALTH_CMD = "node -e \"fetch('http://127.0.0.1:18789/healthz').then(r=>process.exit(r.ok?0:1))\""
CONFIG_LOCAL = {"gateway": {"mode": "local"}}


def _require_free_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as servers set it: a TIME_WAIT left by an earlier probe is no user
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            pytest.fail(f"127.0.0.1:{port} is in use on the host (the lab shares the host network): {exc}")


def _write(lab: Lab, tmp: Path, dest: str, text: str, owner: str, mode: int = 0o600) -> None:
    src = tmp / Path(dest).name
    src.write_text(text)
    lab.put(src, dest, mode=mode, owner=owner)


def _make_config_dir(lab: Lab, tmp: Path, name: str, config: Mapping[str, object], token: str | None) -> str:
    """A state dir owned by USER with theiaos.json and .env; returns its path inside the lab."""
    home = lab.account(USER).home
    cfg = f"{home}/{name}"
    lab.run_as(USER, "mkdir", "-m", "700", cfg)
    _write(lab, tmp, f"{cfg}/theiaos.json", json.dumps(config) + "\n", USER)
    env = f"THEIAOS_GATEWAY_TOKEN={token}\n" if token is not None else "GROQ_API_KEY=none\n"
    _write(lab, tmp, f"{cfg}/.env", env, USER)
    return cfg


def _podman_args(acct: Account, cfg: str) -> list[str]:
    return [
        "--userns=keep-id", f"--user={acct.uid}:{acct.gid}", "-e", "HOME=/home/node",
        "-v", f"{cfg}:/home/node/.theiaos:Z", f"--env-file={cfg}/.env",
    ]  # fmt: skip


def _curl(lab: Lab, url: str, *headers: str) -> tuple[int, str, str]:
    """GET `url` as root inside the lab: (status, content type, body)."""
    args = [arg for header in headers for arg in ("-H", header)]
    marker = "\n--curl-meta--\n"
    proc = lab.run("curl", "-sS", "--max-time", "5", *args, "-w", f"{marker}%{{http_code}} %{{content_type}}", url)
    body, meta = proc.stdout.rsplit(marker, 1)
    status, _, content_type = meta.partition(" ")
    return int(status), content_type, body


def _wait_healthy(lab: Lab, url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        probe = lab.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url, check=False)
        if probe.stdout == "200":
            return
        if time.monotonic() > deadline:
            logs = lab.run_as(USER, "podman", "logs", "gw", check=False)
            pytest.fail(f"{url} not healthy after {timeout:.0f} s (curl: {probe.stdout!r})\n{logs.stdout}{logs.stderr}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for port in PORTS:
        _require_free_port(port)
    with Lab(tmp_path_factory.mktemp("lab")) as booted:
        yield booted


@pytest.fixture(scope="module")
def smoke(lab: Lab) -> Account:
    """A lingering user with subordinate ids and the test image in its store."""
    lab.run("useradd", "-m", USER)
    lab.run("usermod", "--add-subuids", "200000-265535", "--add-subgids", "200000-265535", USER)
    lab.run("loginctl", "enable-linger", USER)
    acct = lab.account(USER)
    lab.wait_for_path(f"/run/user/{acct.uid}/systemd/private")
    build_test_image(lab, USER)
    return acct


@pytest.fixture(scope="module")
def token(lab: Lab, smoke: Account, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The gateway container `gw` running as USER; yields its token."""
    value = secrets.token_urlsafe(24)
    cfg = _make_config_dir(lab, tmp_path_factory.mktemp("gw"), "gw", CONFIG_LOCAL, value)
    lab.run_as(
        USER, "podman", "run", "-d", "--name", "gw", *_podman_args(smoke, cfg),
        "-p", "127.0.0.1:18789:18789", "-p", "127.0.0.1:18790:18790",
        f"--health-cmd={HEALTH_CMD}", "--health-interval=disable",
        IMAGE_REF, *GATEWAY_CMD,
    )  # fmt: skip
    try:
        _wait_healthy(lab, "http://127.0.0.1:18789/healthz")
        yield value
    finally:
        lab.run_as(USER, "podman", "rm", "--force", "--time=5", "gw")


def test_systemd_runs_on_cgroup2(lab: Lab) -> None:
    state = lab.run("systemctl", "is-system-running", check=False).stdout.strip()
    assert state in ("running", "degraded")
    assert lab.run("stat", "-fc", "%T", "/sys/fs/cgroup").stdout.strip() == "cgroup2fs"


def test_lab_quirks_applied(lab: Lab) -> None:
    assert lab.run("stat", "-c", "%a %t:%T", "/dev/net/tun").stdout.strip() == "666 a:c8"
    assert lab.run("systemctl", "is-active", "network-online.target").stdout.strip() == "active"


def test_user_manager_and_image(lab: Lab, smoke: Account) -> None:
    assert lab.run("systemctl", "is-active", f"user@{smoke.uid}.service").stdout.strip() == "active"
    lab.run_as(USER, "podman", "image", "exists", IMAGE_REF)
    assert lab.run_as(USER, "id", "-un").stdout.strip() == USER
    assert lab.run_as(USER, "pwd").stdout.strip() == smoke.home


def test_health_endpoints(lab: Lab, token: str) -> None:
    for url in ("http://127.0.0.1:18789/healthz", "http://127.0.0.1:18789/health", "http://127.0.0.1:18790/healthz"):
        status, content_type, body = _curl(lab, url)
        assert (status, content_type, json.loads(body)) == (200, "application/json", {"ok": True, "status": "live"})
    status, _, body = _curl(lab, "http://127.0.0.1:18789/readyz")
    assert (status, json.loads(body)) == (200, {"ready": True})


def test_control_ui_needs_the_token(lab: Lab, token: str) -> None:
    assert _curl(lab, "http://127.0.0.1:18789/")[0] == 401
    assert _curl(lab, "http://127.0.0.1:18789/", "Authorization: Bearer wrong")[0] == 401
    status, content_type, body = _curl(lab, "http://127.0.0.1:18789/", f"Authorization: Bearer {token}")
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert "<html>" in body
    assert _curl(lab, f"http://127.0.0.1:18789/?token={token}")[0] == 200


def test_health_cmd_and_request_log(lab: Lab, token: str) -> None:
    lab.run_as(USER, "podman", "healthcheck", "run", "gw")
    logs = lab.run_as(USER, "podman", "logs", "gw").stdout
    assert "GET /healthz 200" in logs
    assert token not in logs


def test_refuses_without_local_mode(lab: Lab, smoke: Account, tmp_path: Path) -> None:
    cfg = _make_config_dir(lab, tmp_path, "nomode", {"gateway": {}}, "some-token")
    proc = lab.run_as(USER, "podman", "run", "--rm", *_podman_args(smoke, cfg), IMAGE_REF, *GATEWAY_CMD, check=False)
    assert proc.returncode != 0
    assert "gateway.mode" in proc.stderr


def test_refuses_without_token(lab: Lab, smoke: Account, tmp_path: Path) -> None:
    cfg = _make_config_dir(lab, tmp_path, "notoken", CONFIG_LOCAL, None)
    proc = lab.run_as(USER, "podman", "run", "--rm", *_podman_args(smoke, cfg), IMAGE_REF, *GATEWAY_CMD, check=False)
    assert proc.returncode != 0
    assert "THEIAOS_GATEWAY_TOKEN" in proc.stderr


def test_onboard_writes_token(lab: Lab, smoke: Account, tmp_path: Path) -> None:
    cfg = _make_config_dir(lab, tmp_path, "onboard", CONFIG_LOCAL, "env-token")
    lab.run_as(
        USER, "podman", "run", "--rm", "-i", *_podman_args(smoke, cfg), "-e", "BROWSER=echo",
        IMAGE_REF, "node", "dist/index.js", "onboard", input="wizard-token\n",
    )  # fmt: skip
    config = json.loads(lab.run_as(USER, "cat", f"{cfg}/theiaos.json").stdout)
    assert config == {"gateway": {"mode": "local", "auth": {"token": "wizard-token"}}}
