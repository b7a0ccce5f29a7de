"""Bad-input tier: settings, environment, arguments, existing files and accounts that
setup must refuse. For each: exit status 1 (2 for what argparse refuses), one line
naming the culprit (plus the fix), never a traceback, and the host exactly as it was:
every file setup could touch (owner, mode, links, content, mtime) and the running
gateway (same container, same start). One lab for the module, the gateway running."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from ..lab import Lab
from . import trust
from .conftest import HOME, Installed, http_get, lab_only

pytestmark = lab_only

ADMIN = "/etc/theiaos/podman.env"
ENV = f"{HOME}/.theiaos/.env"
CONFIG = f"{HOME}/.theiaos/theiaos.json"


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...] = ("theiaosctl", "setup")
    admin: str | None = None            # /etc/theiaos/podman.env for the case
    env: dict[str, str] = field(default_factory=dict)
    expect: str = ""                    # in the error line
    code: int = 1
    prepare: str = ""                   # sh run as root before (the state under test)
    undo: str = ""                      # sh run as root after


def _port_env(port: str) -> dict[str, str]:
    return {"THEIAOS_PODMAN_GATEWAY_HOST_PORT": port}


CASES = [
    # /etc/theiaos/podman.env
    Case("admin-no-equals", admin="THEIAOS_PODMAN_GATEWAY_HOST_PORT 18795\n",
         expect=f"{ADMIN} line 1: cannot parse"),
    Case("admin-no-value", admin="# x\nTHEIAOS_PODMAN_GATEWAY_HOST_PORT\n",
         expect=f"{ADMIN} line 2: THEIAOS_PODMAN_GATEWAY_HOST_PORT has no value"),
    Case("admin-unknown", admin="THEIAOS_PODMAN_PORT=1\n", expect="unknown setting"),
    Case("admin-shell", admin='THEIAOS_PODMAN_IMAGE="x" ; touch /tmp/pwned\n',
         expect="cannot parse"),
    Case("admin-port-range", admin="THEIAOS_PODMAN_GATEWAY_HOST_PORT=99999\n",
         expect="not a port number"),
    Case("admin-port-zero", admin="THEIAOS_PODMAN_BRIDGE_HOST_PORT=0\n", expect="not a port"),
    Case("admin-port-privileged", admin="THEIAOS_PODMAN_GATEWAY_HOST_PORT=80\n",
         expect="cannot publish ports below 1024"),
    Case("admin-same-ports", admin="THEIAOS_PODMAN_GATEWAY_HOST_PORT=18790\n",
         expect="are both 18790"),
    Case("admin-zone-id", admin="THEIAOS_PODMAN_PUBLISH_ADDRESS=fe80::1%eth0\n",
         expect="zone id"),
    Case("admin-double-equals", admin="THEIAOS_PODMAN_GATEWAY_HOST_PORT==18795\n",
         expect="not a port number"),
    Case("admin-hostname", admin="THEIAOS_PODMAN_PUBLISH_ADDRESS=localhost\n",
         expect="not an IP address"),
    Case("admin-transport", admin="THEIAOS_PODMAN_IMAGE=docker://host/x:1\n",
         expect="names a transport"),
    Case("admin-archive", admin="THEIAOS_PODMAN_IMAGE=oci-archive:/tmp/x.tar\n",
         expect="names a transport"),
    Case("admin-image-case", admin="THEIAOS_PODMAN_IMAGE=Upper/Case\n",
         expect="not an image reference"),
    Case("admin-unreachable-config", admin="THEIAOS_CONFIG_DIR=/root/x\n",
         expect="theiaos cannot enter /root (mode 0700"),
    Case("admin-relative", admin="THEIAOS_CONFIG_DIR=relative\n", expect="not an absolute"),
    Case("admin-colon", admin="THEIAOS_CONFIG_DIR=/srv/a:b\n", expect="':'"),
    Case("admin-system-workspace", admin="THEIAOS_WORKSPACE_DIR=/usr/local/bin\n",
         expect="/usr/local/bin: it exists and belongs to uid 0; refusing to give it"),
    Case("admin-etc-workspace", admin="THEIAOS_WORKSPACE_DIR=/etc\n",
         expect="refusing to give it"),
    Case("admin-tmp-config", admin="THEIAOS_CONFIG_DIR=/tmp\n", expect="refusing to give it"),
    Case("admin-new-user-etc-home",
         admin="THEIAOS_PODMAN_USER=new\nTHEIAOS_PODMAN_HOME=/etc\n",
         expect="/etc exists already (owner uid 0) but there is no account new"),
    Case("admin-root-user", admin="THEIAOS_PODMAN_USER=root\n", expect="uid 0 (root)"),
    Case("admin-nobody", admin="THEIAOS_PODMAN_USER=nobody\n",
         expect="account nobody exists but"),
    Case("admin-bad-user", admin="THEIAOS_PODMAN_USER=Bad User\n", expect="not a valid user"),
    Case("admin-container", admin="THEIAOS_PODMAN_CONTAINER=-x\n", expect="container name"),
    Case("admin-bind", admin="THEIAOS_GATEWAY_BIND=everywhere\n", expect="must be one of"),
    Case("admin-flag", admin="THEIAOS_PODMAN_QUADLET=maybe\n", expect="must be 1 or 0"),
    Case("admin-root-home", admin="THEIAOS_PODMAN_HOME=/home/theiaos/../..\n",
         expect="must not be /"),
    Case("admin-account-kind", admin="THEIAOS_PODMAN_ACCOUNT=other\n", expect="must be system"),
    Case("admin-fifo", prepare=f"mv {ADMIN} {ADMIN}.keep && mkfifo -m 600 {ADMIN}",
         undo=f"rm -f {ADMIN} && mv {ADMIN}.keep {ADMIN}",
         expect=f"{ADMIN} is a FIFO (named pipe), not a regular file"),
    Case("admin-not-utf8", prepare=f"cp -p {ADMIN} {ADMIN}.keep && printf '\\377\\376' > {ADMIN}",
         undo=f"mv {ADMIN}.keep {ADMIN}", expect="not UTF-8"),
    # the environment
    Case("env-port-word", env=_port_env("http"), expect="not a port number"),
    Case("env-new-user-etc-home",
         env={"THEIAOS_PODMAN_USER": "new", "THEIAOS_PODMAN_HOME": "/etc"},
         expect="/etc exists already (owner uid 0) but there is no account new"),
    Case("env-home-space", env={"THEIAOS_PODMAN_HOME": "/home/a b"}, expect="no spaces"),
    Case("env-port-taken", env=_port_env("18795"),
         expect="port 18795 on 127.0.0.1 is taken by another program"),
    # arguments
    Case("user-root", argv=("theiaosctl", "setup", "--user", "root"), expect="is root"),
    Case("user-nobody", argv=("theiaosctl", "setup", "--user", "nobody"),
         expect="nobody's home /nonexistent is not a directory of its own"),
    Case("user-missing", argv=("theiaosctl", "setup", "--user", "john.doe"),
         expect="there is no account john.doe"),
    Case("user-bad-name", argv=("theiaosctl", "setup", "--user", "bad name!"),
         expect="not a valid user name"),
    Case("logs-negative", argv=("theiaosctl", "logs", "-n", "-5"), code=2,
         expect="argument -n/--lines"),
    Case("token-verb", argv=("theiaosctl", "token", "frobnicate"), code=2,
         expect="invalid choice"),
    Case("image-missing-file", argv=("theiaosctl", "image", "load", "/nonexistent.tar"),
         expect="/nonexistent.tar: No such file or directory"),
    Case("image-pull-no-ref", argv=("theiaosctl", "image", "pull"),
         expect="image pull needs a reference"),
    # existing files the account (or the gateway) controls
    Case("env-quoted-token",
         prepare=f"cp -p {ENV} /root/env.keep && sed -i 's/^THEIAOS_GATEWAY_TOKEN=\\(.*\\)$/"
                 f"THEIAOS_GATEWAY_TOKEN=\"\\1\"/' {ENV}",
         undo=f"mv /root/env.keep {ENV}", expect=f"{ENV} line 1: the value of"),
    Case("env-export-token",
         prepare=f"cp -p {ENV} /root/env.keep && sed -i 's/^THEIAOS_GATEWAY_TOKEN=/export &/' "
                 f"{ENV}",
         undo=f"mv /root/env.keep {ENV}",
         expect="Podman reads the name as 'export THEIAOS_GATEWAY_TOKEN'"),
    Case("config-bad-json",
         prepare=f"cp -p {CONFIG} /root/cfg.keep && printf '{{oops' > {CONFIG}",
         undo=f"mv /root/cfg.keep {CONFIG}", expect="not valid JSON"),
    Case("config-array", prepare=f"cp -p {CONFIG} /root/cfg.keep && echo '[]' > {CONFIG}",
         undo=f"mv /root/cfg.keep {CONFIG}", expect="top level is not a JSON object"),
    Case("config-foreign-owner",
         prepare=f"cp -p {CONFIG} /root/cfg.keep && chown root: {CONFIG}",
         undo=f"mv /root/cfg.keep {CONFIG}",
         expect=f"{CONFIG} belongs to uid 0, not uid"),
    # existing accounts
    Case("account-login-shell", prepare="usermod -s /bin/bash theiaos",
         undo="usermod -s /usr/sbin/nologin theiaos", expect="shell /bin/bash allows logins"),
    # (usermod refuses while the account runs processes: the admin edits /etc/passwd)
    Case("account-home-moved",
         prepare=f"sed -i 's|^\\(theiaos:.*:\\){HOME}:|\\1/var/lib/elsewhere:|' /etc/passwd",
         undo=f"sed -i 's|^\\(theiaos:.*:\\)/var/lib/elsewhere:|\\1{HOME}:|' /etc/passwd",
         expect="its home is /var/lib/elsewhere"),
]


@pytest.fixture(scope="module")
def lab(installed: Installed) -> Iterator[Lab]:
    trust.install_snapshot(installed.lab)
    with socket.socket() as squatter:  # a program of someone else's on 18795
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 18795))
        squatter.listen()
        yield installed.lab


def test_at_least_forty_cases() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


def _with_admin(lab: Lab, text: str | None) -> Callable[[], None]:
    if text is None:
        return lambda: None
    path = lab.host_path(ADMIN)
    saved = path.read_text()
    path.write_text(text)
    return lambda: path.write_text(saved)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_with_one_line_and_the_host_unchanged(lab: Lab, case: Case) -> None:
    if case.prepare:
        lab.run("sh", "-ec", case.prepare)
    restore = _with_admin(lab, case.admin)
    try:
        before, running = trust.host(lab), trust.gateway(lab)
        proc = lab.run(*case.argv, env=case.env, check=False, timeout=60)
        after, still = trust.host(lab), trust.gateway(lab)
    finally:
        restore()
        if case.undo:
            lab.run("sh", "-ec", case.undo)
    out = proc.stdout + proc.stderr
    assert proc.returncode == case.code, out
    assert "Traceback" not in out and proc.stdout == "", out
    lines = proc.stderr.strip().splitlines()
    if case.code == 2:  # argparse: usage, then its one error line
        assert lines[-1].startswith("theiaosctl ") and case.expect in lines[-1], out
    else:
        assert lines[0].startswith("theiaosctl: ") and case.expect in lines[0], out
        assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  fix: ")), out
    assert trust.diff(before, after) == []
    assert still == running and still[0], (running, still)
    assert http_get("/healthz") == 200


def test_afterwards_setup_still_changes_nothing(lab: Lab) -> None:
    before = trust.gateway(lab)
    proc = lab.run("theiaosctl", "setup", timeout=300)
    assert "Setup complete" in proc.stdout and trust.gateway(lab) == before
    trust.converged(lab)
