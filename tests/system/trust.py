"""Helpers of the trust tiers (bad input, attacks, crashes): fingerprints of the host and
of the running gateway, and the convergence checks. Tests only."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from ..lab import Lab
from .conftest import HOME, http_get

SNAPSHOT = Path(__file__).resolve().parent / "snapshot.py"
SNAPSHOT_IN_LAB = "/usr/local/lib/theiaos-test-snapshot.py"
QUADLET = f"{HOME}/.config/containers/systemd/theiaos.container"


def install_snapshot(lab: Lab) -> None:
    lab.run("mkdir", "-p", "/usr/local/lib")
    lab.put(SNAPSHOT, SNAPSHOT_IN_LAB, mode=0o755)


def host(lab: Lab) -> dict[str, Any]:
    """Every file setup may touch: kind, owner, mode, links, mtime, content digest."""
    found: dict[str, Any] = json.loads(lab.run("python3", "-I", SNAPSHOT_IN_LAB).stdout)
    found.pop(SNAPSHOT_IN_LAB, None)
    return found


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    out = []
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            out.append(f"{path}: {before.get(path)} -> {after.get(path)}")
    return out


def gateway(lab: Lab) -> tuple[str, str]:
    """(container id, started at) of the running gateway: it must not be touched. (Run
    from / with the account's uid: a case may have moved its home in /etc/passwd.)"""
    uid = lab.account("theiaos").uid
    proc = lab.run("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "env", "-i",
                   "--chdir=/", f"XDG_RUNTIME_DIR=/run/user/{uid}", "HOME=/home/theiaos",
                   "PATH=/usr/bin:/bin", "podman", "inspect", "--format",
                   "{{.Id}} {{.State.StartedAt}} {{.State.Status}}", "theiaos", check=False)
    parts = proc.stdout.strip().split(" ", 1)
    return (parts[0], parts[1]) if len(parts) == 2 else ("", proc.stderr.strip())


def token(lab: Lab) -> str:
    from theiaos_pkg.envfile import value

    tok = value(lab.host_path(f"{HOME}/.theiaos/.env").read_text())
    assert tok
    return tok


def _expand(args: list[str], uid: int) -> list[str]:
    return [a.replace("%t", f"/run/user/{uid}").replace("%N", "theiaos")
             .replace("%U", str(uid)).replace("%G", str(uid)) for a in args]


def converged(lab: Lab, port: int = 18789, context: str = "") -> None:
    """After any interrupted run and one normal rerun: the running container is the one
    the unit on disk describes, the gateway uses the token in .env, theiaos.json is valid,
    one subid line each, no temporary file left, no change pending, and it answers."""
    uid = lab.account("theiaos").uid
    assert http_get("/healthz", port=port) == 200, context
    assert http_get("/", token(lab), port=port) == 200, f"the gateway uses another token\n{context}"
    generated = lab.run_as("theiaos", "/usr/libexec/podman/quadlet", "-dryrun", "-user").stdout
    exec_start = next(ln for ln in generated.splitlines() if ln.startswith("ExecStart="))
    want = _expand(shlex.split(exec_start.removeprefix("ExecStart=")), uid)
    got = json.loads(lab.run_as("theiaos", "podman", "inspect", "--format",
                                "{{json .Config.CreateCommand}}", "theiaos").stdout)
    # Quadlet (Podman 5.4) orders some options differently from one generation to the next
    # (--pull, --hostname, --stop-timeout were seen both ways): the same words, and the
    # same image and command at the end
    tail = want.index("localhost/theiaos:local") if "localhost/theiaos:local" in want else -8
    assert sorted(got) == sorted(want) and got[tail:] == want[tail:], \
        f"the container runs\n{got}\nthe unit on disk says\n{want}\n{context}"
    json.loads(lab.host_path(f"{HOME}/.theiaos/theiaos.json").read_text())
    for name in ("subuid", "subgid"):
        lines = [ln for ln in lab.host_path(f"/etc/{name}").read_text().splitlines()
                 if ln.startswith("theiaos:")]
        assert len(lines) == 1, (name, lines)
    stray = lab.run("find", HOME, "/etc", "/var/lib/theiaos-podman", "-path",
                    f"{HOME}/.local/share/containers", "-prune", "-o", "-name", ".#*",
                    "-print").stdout.split()
    assert stray == [], stray
    assert not lab.host_path("/var/lib/theiaos-podman/restart-pending").exists()
