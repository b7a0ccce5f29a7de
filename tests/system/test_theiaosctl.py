"""Every theiaosctl verb against the installed .deb in a booted lab, including doctor
on a host broken on purpose (each problem detected with the right fix)."""

from __future__ import annotations

import json
import re
import socket

from .conftest import HOME, Installed, http_get, lab_only

pytestmark = lab_only


def test_status_json(installed: Installed) -> None:
    code, out = installed.ctl("status", "--json")
    assert code == 0, out
    st = json.loads(out)
    assert (st["unit_active"], st["unit_sub"], st["healthy"], st["linger"]) == \
        ("active", "running", True, True)
    assert st["image"] == "localhost/theiaos:local" and len(st["image_id"]) == 64
    assert st["ports"] == ["127.0.0.1:18789:18789", "127.0.0.1:18790:18790"]
    assert st["container_health"] in ("healthy", "starting")
    assert st["token_file"] == f"{HOME}/.theiaos/.env" and installed.token() not in out


def test_url(installed: Installed) -> None:
    assert installed.ctl("url") == (0, "http://127.0.0.1:18789/\n")


def test_restart_replaces_the_container(installed: Installed) -> None:
    def cid() -> str:
        return installed.lab.run_as("theiaos", "podman", "inspect", "--format", "{{.Id}}",
                                    "theiaos").stdout.strip()

    before = cid()
    code, out = installed.ctl("restart")
    assert code == 0 and "answers at http://127.0.0.1:18789/" in out, out
    assert cid() != before and http_get("/healthz") == 200


def test_logs(installed: Installed) -> None:
    code, out = installed.ctl("logs", "-n", "200")
    assert code == 0, out
    assert "[gateway] listening on http://0.0.0.0:18789" in out
    code, out = installed.ctl("logs", "--since", "2000-01-01", "-n", "1")
    assert code == 0 and len(out.strip().splitlines()) == 1, out


def test_token_show_and_rotate(installed: Installed) -> None:
    old = installed.token()
    assert installed.ctl("token", "show") == (0, old + "\n")
    code, out = installed.ctl("token", "rotate")
    assert code == 0 and "restarted" in out, out
    new = installed.token()
    assert new != old and new not in out and old not in out
    assert http_get("/", new) == 200 and http_get("/", old) == 401
    code, out = installed.ctl("token", "rotate", "--show")
    assert code == 0 and installed.token() in out


def test_image_verbs(installed: Installed) -> None:
    lab = installed.lab
    code, out = installed.ctl("image", "list")
    assert code == 0 and "localhost/theiaos" in out, out
    # pull from an archive transport (no registry here); same image: no restart
    lab.run_as("theiaos", "podman", "save", "-o", "/var/tmp/gw.tar", "localhost/theiaos:local")
    code, out = installed.ctl("image", "pull", "docker-archive:/var/tmp/gw.tar")
    assert code == 0 and "(unchanged)" in out and "restarted" not in out, out
    code, out = installed.ctl("image", "load", "/var/tmp/gw.tar")
    assert code == 0 and "(unchanged)" in out, out
    proc = lab.run("sh", "-c", "theiaosctl image load - < /var/tmp/gw.tar", timeout=300)
    assert "(unchanged)" in proc.stdout, proc.stdout + proc.stderr
    code, out = installed.ctl("--debug", "image", "list")
    assert code == 0 and "+ [theiaos] podman images" in out, out
    # build a new image from a checkout: the running gateway restarts onto it
    lab.run("mkdir", "-p", "/var/tmp/checkout")
    lab.run("sh", "-c", "printf 'FROM localhost/theiaos:local\\nLABEL rev=2\\n' "
            "> /var/tmp/checkout/Dockerfile && chmod -R a+rX /var/tmp/checkout")
    code, out = installed.ctl("image", "build", "/var/tmp/checkout")
    assert code == 0 and "restarted" in out, out
    assert http_get("/healthz") == 200
    lab.run("mkdir", "-m", "700", "-p", "/root/private")
    lab.run("cp", "/var/tmp/checkout/Dockerfile", "/root/private/")
    code, out = installed.ctl("image", "build", "/root/private")
    assert code == 1 and "theiaos cannot read /root/private/Dockerfile" in out, out


def test_doctor_on_a_healthy_host(installed: Installed) -> None:
    code, out = installed.ctl("doctor")
    assert code == 0, out
    assert "[FAIL]" not in out and "0 failed" in out


def _doctor_fails(installed: Installed, check: str, fix: str) -> None:
    code, out = installed.ctl("doctor")
    assert code == 1, out
    line = next((ln for ln in out.splitlines() if ln.startswith(f"[FAIL] {check}:")), None)
    assert line, out
    assert f"fix: {fix}" in out.split(line, 1)[1].splitlines()[1], out


def test_doctor_missing_subids(installed: Installed) -> None:
    path = installed.path("/etc/subuid")
    good = path.read_text()
    path.write_text("".join(ln for ln in good.splitlines(keepends=True)
                            if not ln.startswith("theiaos:")))
    try:
        _doctor_fails(installed, "subids", "sudo theiaosctl setup")
    finally:
        path.write_text(good)


def test_doctor_port_taken(installed: Installed) -> None:
    assert installed.ctl("stop")[0] == 0
    with socket.socket() as squatter:  # the lab shares this host's network
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 18789))
        squatter.listen()
        _doctor_fails(installed, "ports", "sudo ss -ltnp 'sport = :18789'")
    assert installed.ctl("start")[0] == 0


def test_doctor_missing_image_and_stopped_user_manager(installed: Installed) -> None:
    lab = installed.lab
    assert installed.ctl("stop")[0] == 0
    lab.run_as("theiaos", "podman", "tag", "localhost/theiaos:local", "localhost/keep:me")
    lab.run_as("theiaos", "podman", "rmi", "localhost/theiaos:local")
    _doctor_fails(installed, "image", "sudo theiaosctl image build /path/to/theiaos")
    code, out = installed.ctl("start")
    assert code == 1 and "not in theiaos's Podman store" in out, out
    lab.run_as("theiaos", "podman", "tag", "localhost/keep:me", "localhost/theiaos:local")
    uid = str(installed.acct.uid)
    lab.run("loginctl", "disable-linger", "theiaos")
    lab.run("systemctl", "stop", f"user@{uid}.service")
    _doctor_fails(installed, "user-manager", f"sudo systemctl start user@{uid}.service")
    _doctor_fails(installed, "linger", "sudo loginctl enable-linger theiaos")
    code, out = installed.ctl("start")  # start turns lingering on again
    assert code == 0, out
    assert installed.ctl("doctor")[0] == 0


def test_launch_manual_mode(installed: Installed) -> None:
    code, out = installed.ctl("launch")
    assert code == 1 and "fight systemd" in out and "sudo theiaosctl stop" in out, out
    assert installed.ctl("stop")[0] == 0
    code, out = installed.ctl("launch")
    assert code == 0 and "answers at http://127.0.0.1:18789/" in out, out
    assert http_get("/", installed.token()) == 200
    info = installed.lab.run_as("theiaos", "podman", "inspect", "theiaos").stdout
    assert "PODMAN_SYSTEMD_UNIT" not in info  # a manual container, not the service's
    code, out = installed.ctl("launch")  # --replace: launching again is fine
    assert code == 0, out
    installed.lab.run_as("theiaos", "podman", "rm", "-f", "theiaos")
    assert installed.ctl("start")[0] == 0


def test_launch_reports_a_dead_container(installed: Installed) -> None:
    assert installed.ctl("stop")[0] == 0
    cfg = installed.path(f"{HOME}/.theiaos/theiaos.json")
    good = cfg.read_text()
    cfg.write_text(good.replace('"mode": "local"', '"mode": "remote"'))
    try:
        code, out = installed.ctl("launch")
        assert code == 1, out
        # podman reports the dead container as exited, or stopped while it cleans up
        assert re.search(r"container theiaos is (exited|stopped) \(exit code 1\)", out), out
        assert 'gateway.mode is "remote"' in out and "started" not in out
    finally:
        cfg.write_text(good)
    installed.lab.run_as("theiaos", "podman", "rm", "-f", "theiaos")
    assert installed.ctl("start")[0] == 0


def test_launch_setup_warns_about_a_second_token(installed: Installed) -> None:
    assert installed.ctl("stop")[0] == 0
    proc = installed.lab.run("script", "-qec", "theiaosctl launch setup", "/dev/null",
                             input="wizard-token\n", check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert "warning: the wizard wrote gateway.auth.token" in out, out
    _doctor_fails(installed, "token", f"remove gateway.auth.token from {HOME}/.theiaos/"
                  "theiaos.json, then sudo theiaosctl restart")
    cfg = installed.path(f"{HOME}/.theiaos/theiaos.json")
    data = json.loads(cfg.read_text())
    del data["gateway"]["auth"]
    cfg.write_text(json.dumps(data))
    assert installed.ctl("start")[0] == 0


def test_setup_container_then_every_verb_in_manual_mode_then_quadlet(
        installed: Installed) -> None:
    quadlet = installed.path(f"{HOME}/.config/containers/systemd/theiaos.container")
    code, out = installed.ctl("setup", "--container")
    assert code == 0 and "removed" in out and "manual mode" in out, out
    assert not quadlet.exists()
    code, out = installed.ctl("setup")  # the chosen mode sticks (upgrades run setup too)
    assert code == 0 and not quadlet.exists(), out
    code, out = installed.ctl("start")  # manual mode: start launches the container
    assert code == 0 and "(manual mode)" in out and http_get("/healthz") == 200, out
    code, out = installed.ctl("status")
    assert code == 0 and out.startswith("manual mode (theiaosctl launch): active"), out
    assert "gateway:   answers" in out
    code, out = installed.ctl("logs", "-n", "50")
    assert code == 0 and "[gateway] listening on" in out, out
    assert installed.ctl("doctor")[0] == 0
    before = installed.lab.run_as("theiaos", "podman", "inspect", "--format", "{{.Id}}",
                                  "theiaos").stdout
    code, out = installed.ctl("restart")
    assert code == 0 and "restarted (manual mode)" in out, out
    assert installed.lab.run_as("theiaos", "podman", "inspect", "--format", "{{.Id}}",
                                "theiaos").stdout != before
    code, out = installed.ctl("stop")
    assert code == 0 and "container theiaos: exited (manual mode)" in out, out
    code, out = installed.ctl("status")
    assert code == 3 and "manual mode (theiaosctl launch): inactive" in out, out
    code, out = installed.ctl("setup", "--quadlet")
    assert code == 0 and "Setup complete" in out and quadlet.exists(), out


def test_the_service_account_may_read_but_not_change(installed: Installed) -> None:
    lab = installed.lab
    proc = lab.run_as("theiaos", "theiaosctl", "status", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = lab.run_as("theiaos", "theiaosctl", "token", "show", check=False)
    assert proc.returncode == 1 and installed.token() not in proc.stdout
    assert proc.stderr.strip() == \
        "theiaosctl: token show needs root; run: sudo theiaosctl token show"
    proc = lab.run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                   "theiaosctl", "status", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "theiaosctl: status needs root; run: sudo theiaosctl status"


def test_status_loads_neither_lxml_nor_pystemds_object_layer(installed: Installed) -> None:
    """status must start fast: pystemd's low-level binding only (bus._pystemd), no
    introspection layer (lxml), no templates, no podman process, and neither dataclasses
    nor pprint (with inspect, a third of the time systemctl needs in all)."""
    proc = installed.lab.run("python3", "-X", "importtime", "/usr/bin/theiaosctl", "status")
    modules = {ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines()
               if ln.startswith("import time:")}
    assert "pystemd.dbuslib" in modules, sorted(modules)
    heavy = {m for m in modules if m.split(".")[0] in ("lxml", "jinja2", "dotenv")
             or m in ("pystemd.base", "pystemd.systemd1", "pystemd.utils", "dataclasses",
                      "pprint", "inspect")}
    assert heavy == set(), heavy
