"""The product doc's commands against the installed package, as a table: each test is
one row, command -> expected effect (docs/podman.md is the doc rewritten from it).
The rows run in order in one lab and leave the gateway up for the next."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from ..lab import build_test_image
from .conftest import HOME, Installed, http_get, lab_only

pytestmark = lab_only

SYSTEMCTL = ("systemctl", "--machine", "theiaos@", "--user")
QUADLET = f"{HOME}/.config/containers/systemd/theiaos.container"
TOP = Path(__file__).resolve().parents[2]


def answers(port: int = 18789, timeout: float = 60) -> bool:
    """Whether /healthz answers on the host port within ``timeout`` seconds."""
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return True
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.5)
    return False


def down(port: int = 18789) -> bool:
    return not answers(port, timeout=0.5)


def run(installed: Installed, *argv: str, ok: bool = True) -> str:
    proc = installed.lab.run(*argv, check=False, timeout=400)
    out = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ok, f"{argv}: {proc.returncode}\n{out}"
    return out


def as_theiaos(installed: Installed, *argv: str, ok: bool = True) -> str:
    proc = installed.lab.run_as("theiaos", *argv, check=False, timeout=400)
    out = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ok, f"{argv}: {proc.returncode}\n{out}"
    return out


# --- Systemd (Quadlet) section ---------------------------------------------------------

def test_systemctl_status_start_stop(installed: Installed) -> None:
    assert "Active: active (running)" in run(installed, *SYSTEMCTL, "status", "theiaos.service")
    run(installed, *SYSTEMCTL, "stop", "theiaos.service")
    assert down()
    run(installed, *SYSTEMCTL, "start", "theiaos.service")
    assert answers()


def test_doc_journal_command_fails_and_ours_work(installed: Installed) -> None:
    out = run(installed, "journalctl", "--machine", "theiaos@", "--user", "-u",
              "theiaos.service", "--no-pager", ok=False)
    assert "theiaos@" in out  # "No machine 'theiaos@' known": why our docs replace it
    assert "[gateway] listening" in run(installed, "theiaosctl", "logs", "-n", "200")
    uid = str(installed.acct.uid)
    plain = run(installed, "journalctl", "--no-pager", "_SYSTEMD_USER_UNIT=theiaos.service",
                f"_UID={uid}")
    assert "[gateway] listening" in plain


def test_edit_quadlet_then_daemon_reload(installed: Installed) -> None:
    q = installed.path(QUADLET)
    q.write_text(q.read_text().replace("127.0.0.1:18789:18789", "127.0.0.1:38789:18789"))
    run(installed, *SYSTEMCTL, "daemon-reload")
    run(installed, *SYSTEMCTL, "restart", "theiaos.service")
    assert answers(38789) and down(18789)
    out = run(installed, "theiaosctl", "setup")
    assert f"quadlet: kept ({QUADLET} was edited by hand" in out
    assert answers(38789)
    q.unlink()
    out = run(installed, "theiaosctl", "setup")
    assert "quadlet: changed" in out and "service: restarted" in out
    assert answers(18789) and down(38789)


# --- Environment and config: both modes -----------------------------------------------

def test_settings_take_effect_in_both_modes(installed: Installed) -> None:
    admin = installed.path("/etc/theiaos/podman.env")
    shipped = admin.read_text()
    admin.write_text(shipped + "THEIAOS_PODMAN_GATEWAY_HOST_PORT=28789\n"
                     "THEIAOS_PODMAN_BRIDGE_HOST_PORT=28790\n"
                     "THEIAOS_CONFIG_DIR=/srv/theiaos/config\n"
                     "THEIAOS_WORKSPACE_DIR=/srv/theiaos/work\n")
    try:
        run(installed, "theiaosctl", "setup")
        env = installed.path("/srv/theiaos/config/.env")
        env.write_text(env.read_text() + "GROQ_API_KEY=groq-test-key\n")
        run(installed, "theiaosctl", "restart")
        for mode in ("quadlet", "launch"):
            if mode == "launch":
                run(installed, "theiaosctl", "stop")
                run(installed, "theiaosctl", "launch")
            assert answers(28789) and down(18789), mode
            info = json.loads(as_theiaos(installed, "podman", "inspect", "theiaos"))[0]
            mounts = {m["Source"]: m["Destination"] for m in info["Mounts"]}
            assert mounts["/srv/theiaos/config"] == "/home/node/.theiaos", mode
            assert mounts["/srv/theiaos/work"] == "/home/node/.theiaos/workspace", mode
            # Provider keys reach the gateway through its own .env, which it loads from
            # the config mount (the token comes from the Podman secret).
            inside = as_theiaos(installed, "podman", "exec", "theiaos", "python3", "-c",
                                "print(open('/home/node/.theiaos/.env').read())")
            assert "GROQ_API_KEY=groq-test-key" in inside, mode
            ports = info["NetworkSettings"]["Ports"]
            assert ports["18790/tcp"][0]["HostPort"] == "28790", mode
        # the doc's manual-mode podman commands, as theiaos
        assert "[gateway] listening" in as_theiaos(installed, "podman", "logs", "theiaos")
        as_theiaos(installed, "podman", "stop", "theiaos")
        assert down(28789)
        as_theiaos(installed, "podman", "start", "theiaos")
        assert answers(28789)
        as_theiaos(installed, "podman", "rm", "-f", "theiaos")
        assert down(28789) and installed.path("/srv/theiaos/config/theiaos.json").exists()
    finally:
        admin.write_text(shipped)
    run(installed, "theiaosctl", "setup")
    assert answers(18789)


# --- The theiaos user: the launch script in its home -----------------------------------

def test_launch_script_in_theiaos_home(installed: Installed) -> None:
    script = f"{HOME}/run-theiaos-podman.sh"
    assert installed.path(script).stat().st_mode & 0o111
    run(installed, "theiaosctl", "stop")
    out = as_theiaos(installed, script)
    assert "answers at http://127.0.0.1:18789/" in out and answers()
    proc = installed.lab.run_as("theiaos", "script", "-qec", f"{script} setup", "/dev/null",
                                input="\n", check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert "TheiaOS onboarding" in out and "no token given; config unchanged" in out, out
    as_theiaos(installed, "podman", "rm", "-f", "theiaos")
    run(installed, "theiaosctl", "start")


# --- From a source checkout: the doc's scripts as shims -------------------------------

def test_source_checkout_shims(installed: Installed) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=TOP, capture_output=True, text=True,
                           check=True).stdout.split()
    src = installed.path("/root/src")
    for rel in files:
        if (TOP / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((TOP / rel).read_bytes())
            (src / rel).chmod((TOP / rel).stat().st_mode & 0o777)

    def shim(*argv: str, env: str = "") -> str:
        cmd = f"cd /root/src && {env} {' '.join(argv)}"
        return run(installed, "sh", "-c", cmd)

    out = shim("./setup-podman.sh")  # the doc's default: manual mode, no service
    assert "removed" in out and "manual mode" in out and down()
    assert not installed.path(QUADLET).exists()
    out = shim("./scripts/run-theiaos-podman.sh", "launch")
    assert answers()
    as_theiaos(installed, "podman", "rm", "-f", "theiaos")
    out = shim("./setup-podman.sh", env="THEIAOS_PODMAN_QUADLET=1")
    assert "Setup complete" in out and installed.path(QUADLET).exists()
    out = shim("./setup-podman.sh", "--container")
    assert "manual mode" in out and down()
    out = shim("./setup-podman.sh", "--quadlet")
    assert "Setup complete" in out and answers()


# --- Run as your own user --------------------------------------------------------------

def test_setup_for_your_own_user(installed: Installed) -> None:
    run(installed, "useradd", "--create-home", "--shell", "/bin/bash", "alice")
    out = run(installed, "theiaosctl", "setup", "--user", "alice")
    assert "remove: removed " + QUADLET in out, out  # one gateway: theiaos's goes
    assert "account: unchanged (alice, uid 1000)" in out and "image: missing" in out, out
    build_test_image(installed.lab, "alice")  # alice's own store
    run(installed, "theiaosctl", "start")
    alice = installed.lab.account("alice")
    cfg = installed.path("/home/alice/.theiaos/.env")
    assert cfg.stat().st_uid == alice.uid and answers()
    assert installed.path("/home/alice/.config/containers/systemd/theiaos.container").exists()
    status = json.loads(run(installed, "theiaosctl", "status", "--json"))
    assert status["user"] == "alice" and status["healthy"]
    out = run(installed, "theiaosctl", "setup", "--user", "theiaos")
    assert "Setup complete" in out and answers()
    assert json.loads(run(installed, "theiaosctl", "status", "--json"))["user"] == "theiaos"


# --- Troubleshooting: each item is a doctor check --------------------------------------

def doctor_says(installed: Installed, check: str, fix: str) -> None:
    out = run(installed, "theiaosctl", "doctor", ok=False)
    m = re.search(rf"^\[FAIL\] {check}: .*\n +fix: (.*)$", out, re.M)
    assert m and fix in m[1], out


def test_troubleshooting_items(installed: Installed) -> None:
    lab = installed.lab
    cfg = f"{HOME}/.theiaos/theiaos.json"
    # Permission denied (EACCES) on config
    lab.run("chown", "root:root", cfg)
    doctor_says(installed, "config-owner", f"sudo chown -R theiaos: {HOME}/.theiaos")
    lab.run("chown", "theiaos:theiaos", cfg)
    # Gateway start blocked (missing gateway.mode=local)
    good = installed.path(cfg).read_text()
    installed.path(cfg).write_text(good.replace('"mode": "local"', '"mode": "remote"'))
    doctor_says(installed, "config-mode", f'set "gateway": {{"mode": "local"}} in {cfg}')
    installed.path(cfg).write_text(good)
    # Container name in use
    run(installed, "theiaosctl", "stop")
    as_theiaos(installed, "podman", "create", "--name", "theiaos", "localhost/theiaos:local")
    doctor_says(installed, "container-name", "sudo -u theiaos podman rm -f theiaos")
    as_theiaos(installed, "podman", "rm", "-f", "theiaos")
    # Script not found when running as theiaos
    installed.path(f"{HOME}/run-theiaos-podman.sh").unlink()
    doctor_says(installed, "launch-script", "sudo theiaosctl setup")
    # Quadlet service not found
    q = installed.path(QUADLET)
    q.write_text(q.read_text().replace("[Container]\n", "[Container]\nNoSuchKey=1\n"))
    run(installed, *SYSTEMCTL, "daemon-reload")
    doctor_says(installed, "unit", "quadlet -dryrun -user")
    q.unlink()
    out = run(installed, "theiaosctl", "setup")
    assert "Setup complete" in out
    assert "0 failed" in run(installed, "theiaosctl", "doctor")
    assert http_get("/healthz") == 200
