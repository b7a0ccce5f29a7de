"""The package itself: the built .deb installed with apt into the booted Debian 13 lab.

One lab for the module: install, provide the test image, start; then every test
checks one promise of the slice. The lab is stopped by PID at the end, pass or fail.
The lab shares the host's network, so the gateway is probed from here on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import stat

from theiaos_pkg import subids

from .conftest import DEB_IN_LAB, HOME, Installed, http_get, lab_only

pytestmark = lab_only


def test_install_without_image_says_how_to_provide_it(installed: Installed) -> None:
    out = installed.install_output
    assert "theiaos-podman: image: missing" in out
    assert "sudo -u theiaos -H podman build -t localhost/theiaos:local" in out
    assert "Setup complete" not in out  # nothing answers yet, so no success claim


def test_system_account_with_nologin(installed: Installed) -> None:
    line = installed.lab.run("getent", "passwd", "theiaos").stdout.strip().split(":")
    assert int(line[2]) < 1000 and line[5] == HOME and line[6].endswith("/nologin")
    st = installed.path(HOME).stat()
    assert st.st_uid == installed.acct.uid and stat.S_IMODE(st.st_mode) == 0o700


def test_the_account_comes_from_the_sysusers_file(installed: Installed) -> None:
    """systemd-sysusers made it ("!*" in shadow; useradd writes "!"), from the shipped
    file, which now has nothing left to do."""
    conf = "/usr/lib/sysusers.d/theiaos-podman.conf"
    assert 'u theiaos - "TheiaOS gateway" /home/theiaos /usr/sbin/nologin' in installed.lab.run(
        "cat", conf).stdout
    shadow = installed.lab.run("getent", "shadow", "theiaos").stdout.split(":")
    assert shadow[1] == "!*", shadow
    proc = installed.lab.run("systemd-sysusers", "--dry-run", conf)
    assert "Creating" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_subids_in_both_files_overlapping_nobody(installed: Installed) -> None:
    for name in ("subuid", "subgid"):
        ranges = subids.parse(installed.path(f"/etc/{name}").read_text())
        mine = [r for r in ranges if r.owner == "theiaos"]
        assert len(mine) == 1 and mine[0].size == 65536, ranges
        assert not any(mine[0].overlaps(r) for r in ranges if r.owner != "theiaos")
    out = installed.lab.run("getsubids", "theiaos").stdout
    assert "theiaos" in out


def test_env_file_private_with_64_hex_token(installed: Installed) -> None:
    env = installed.path(f"{HOME}/.theiaos/.env")
    st = env.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == installed.acct.uid
    assert re.fullmatch(r"[0-9a-f]{64}", installed.token())
    cfg_dir = installed.path(f"{HOME}/.theiaos").stat()
    assert stat.S_IMODE(cfg_dir.st_mode) == 0o700


def test_config_mode_local(installed: Installed) -> None:
    cfg = json.loads(installed.path(f"{HOME}/.theiaos/theiaos.json").read_text())
    assert cfg["gateway"]["mode"] == "local"
    assert "http://127.0.0.1:18789" in cfg["gateway"]["controlUi"]["allowedOrigins"]


def test_quadlet_owned_by_theiaos(installed: Installed) -> None:
    q = installed.path(f"{HOME}/.config/containers/systemd/theiaos.container")
    assert q.stat().st_uid == installed.acct.uid
    assert "UserNS=keep-id\nUser=%U:%G\n" in q.read_text()


def test_linger_on(installed: Installed) -> None:
    out = installed.lab.run("loginctl", "show-user", "theiaos", "-p", "Linger").stdout
    assert out.strip() == "Linger=yes"


def test_unit_active_as_the_product_doc_asks(installed: Installed) -> None:
    proc = installed.lab.run("systemctl", "--machine", "theiaos@", "--user", "is-active",
                             "theiaos.service", check=False)
    assert proc.stdout.strip() == "active", proc.stderr


def test_gateway_answers_and_checks_the_token(installed: Installed) -> None:
    assert http_get("/healthz") == 200
    assert http_get("/") == 401
    assert http_get("/", installed.token()) == 200


def test_token_in_no_command_line(installed: Installed) -> None:
    # /proc in the lab is its own mount: scan it from inside, the token on stdin.
    token = installed.token().encode()
    script = ("import glob,sys\n"
              "tok=sys.stdin.read().strip().encode()\n"
              "hits=[p for p in glob.glob('/proc/[0-9]*/cmdline')\n"
              "      if tok in open(p,'rb').read()] if tok else ['no token']\n"
              "seen=b' '.join(open(p,'rb').read() for p in glob.glob('/proc/[0-9]*/cmdline'))\n"
              "print(b'conmon' in seen and b'dist/index.js' in seen, hits)\n")
    out = installed.lab.run("python3", "-c", script, input=token.decode()).stdout
    saw_gateway, hits = out.split(" ", 1)
    assert saw_gateway == "True", out  # the scan did see the container's processes
    assert hits.strip() == "[]", out


def test_status_reports_running(installed: Installed) -> None:
    code, out = installed.ctl("status")
    assert code == 0, out
    assert "theiaos.service: active (running) since " in out
    assert "gateway:   answers (http://127.0.0.1:18789/healthz)" in out


def test_second_configure_changes_and_restarts_nothing(installed: Installed) -> None:
    lab = installed.lab
    quadlet = installed.path(f"{HOME}/.config/containers/systemd/theiaos.container")

    def snapshot() -> tuple[str, int, int]:
        cid = lab.run_as("theiaos", "podman", "inspect", "--format", "{{.Id}}", "theiaos").stdout
        pid = lab.run("systemctl", "--machine", "theiaos@", "--user", "show", "-p",
                      "ExecMainPID", "--value", "theiaos.service").stdout
        return cid.strip(), int(pid), quadlet.stat().st_mtime_ns

    before = snapshot()
    proc = lab.run("python3", "-m", "theiaos_pkg.hooks", "configure", timeout=400)
    states = re.findall(r"^theiaos-podman: ([a-z-]+): (\w+)", proc.stdout, re.M)
    assert [step for step, _st in states] == [
        "settings-file", "account", "subids", "gateway-config", "quadlet", "shutdown-order",
        "launch-script", "linger", "image", "service"], proc.stdout
    assert {st for _step, st in states} == {"unchanged"}, proc.stdout
    assert "Setup complete" in proc.stdout
    assert snapshot() == before


def test_a_setup_that_changes_nothing_writes_and_restarts_nothing(installed: Installed) -> None:
    """Every file setup could touch keeps its content and mtime; the same container runs."""
    from . import trust

    lab = installed.lab
    trust.install_snapshot(lab)
    lab.run("theiaosctl", "setup", timeout=400)
    before, running = trust.host(lab), trust.gateway(lab)
    proc = lab.run("theiaosctl", "setup", timeout=400)
    assert "Setup complete" in proc.stdout
    assert trust.diff(before, trust.host(lab)) == [] and trust.gateway(lab) == running


def test_stop_then_start(installed: Installed) -> None:
    code, out = installed.ctl("stop")
    assert code == 0, out
    code, out = installed.ctl("status")
    assert code == 3, out
    code, out = installed.ctl("start")
    assert code == 0 and "answers at http://127.0.0.1:18789/" in out, out
    assert http_get("/healthz") == 200


def test_start_failure_says_why_with_the_journal(installed: Installed) -> None:
    cfg = installed.path(f"{HOME}/.theiaos/theiaos.json")
    good = cfg.read_text()
    assert installed.ctl("stop")[0] == 0
    cfg.write_text(good.replace('"mode": "local"', '"mode": "remote"'))
    try:
        code, out = installed.ctl("start")
        assert code == 1, out
        assert "theiaos.service is " in out and "healthz does not answer; last log lines:" in out
        assert 'gateway.mode is "remote"' in out  # the gateway's own words, from the journal
        assert "Traceback" not in out
    finally:
        cfg.write_text(good)
    code, out = installed.ctl("start")  # running but not answering: start restarts it
    assert code == 0, out
    assert http_get("/healthz") == 200


def test_a_gateway_that_does_not_answer_is_reported_not_fatal_to_apt(
        installed: Installed) -> None:
    """apt is never wedged: the postinst says why and what to run, and exits 0."""
    import time

    cfg = installed.path(f"{HOME}/.theiaos/theiaos.json")
    good = cfg.read_text()
    assert installed.ctl("stop")[0] == 0
    cfg.write_text(good.replace('"mode": "local"', '"mode": "remote"'))
    try:
        began = time.monotonic()
        proc = installed.lab.run("apt-get", "install", "-y", "--reinstall", DEB_IN_LAB,
                                 check=False, timeout=600,
                                 env={"DEBIAN_FRONTEND": "noninteractive"})
        took = time.monotonic() - began
    finally:
        cfg.write_text(good)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "theiaos-podman: warning: the gateway is installed but not up" in out, out
    assert "sudo theiaosctl start" in out and "Setup complete" not in out
    assert took < 150, took  # HOOK_UP_TIMEOUT (120 s) bounds the wait, and more
    status = installed.lab.run("dpkg-query", "-W", "-f=${Status}", "theiaos-podman").stdout
    assert status == "install ok installed"
    assert installed.ctl("start")[0] == 0 and http_get("/healthz") == 200


def test_non_root_gets_the_sudo_form(installed: Installed) -> None:
    proc = installed.lab.run_as("theiaos", "theiaosctl", "stop", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "theiaosctl: stop needs root; run: sudo theiaosctl stop"


def test_configure_failure_fails_the_install_visibly(installed: Installed) -> None:
    """Last in the module: a bad admin setting makes postinst, and so apt, fail loudly."""
    lab = installed.lab
    admin = installed.path("/etc/theiaos/podman.env")
    admin.parent.mkdir(exist_ok=True)
    admin.write_text("THEIAOS_PODMAN_GATEWAY_HOST_PORT=99999\n")
    try:
        proc = lab.run("apt-get", "install", "-y", "--reinstall", DEB_IN_LAB, check=False,
                       timeout=600, env={"DEBIAN_FRONTEND": "noninteractive"})
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert ("theiaos-podman: error: THEIAOS_PODMAN_GATEWAY_HOST_PORT='99999' "
                "(/etc/theiaos/podman.env): not a port number (1-65535)") in out
        assert "Traceback" not in out
    finally:
        admin.unlink()
    lab.run("dpkg", "--configure", "-a", timeout=600)
    assert http_get("/healthz") == 200
