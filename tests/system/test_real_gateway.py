"""The public gateway (npm `openclaw` on Node 24, tests/gateway_image.py) under the
package's default settings, hardened, in one lab (tests in order): what users run,
not the stand-in. Install, health and readiness, the control UI, the token on an
operator call, restart, token rotation, logs, a power cycle, a new image and a
rollback, backup and restore."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
from collections.abc import Iterator

import pytest

from theiaos_pkg.envfile import value as token_of

from ..gateway_image import load_real_image
from ..lab import IMAGE_REF, Lab
from .conftest import HOME, lab_only, lab_with_package, power_cycles, stop_user_manager

pytestmark = lab_only

SYSTEMCTL = ("systemctl", "--machine", "theiaos@", "--user")
# The real gateway needs 10-20 s to answer on these machines (plugins, SQLite state).
ANSWER_BOUND = 120
REAL_POWER_CYCLES = int(os.environ.get("THEIAOS_REAL_POWER_CYCLES", "3"))


def request(method: str, path: str, token: str | None = None, body: dict | None = None,
            timeout: float = 10) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", 18789, timeout=timeout)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def operator_call(token: str) -> int:
    """An authenticated HTTP call of the gateway's operator API (a tool invocation)."""
    return request("POST", "/tools/invoke", token, {"tool": "session_status", "args": {}})[0]


def answering(path: str = "/healthz") -> bool:
    try:
        return request("GET", path, timeout=3)[0] == 200
    except OSError:
        return False


def wait_until(check, what: str, lab: Lab, bound: float = ANSWER_BOUND) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > bound:
            status = lab.run("theiaosctl", "status", check=False)
            pytest.fail(f"{what} not within {bound:.0f} s:\n{status.stdout}{status.stderr}")
        time.sleep(0.5)
    return time.monotonic() - began


def ready() -> bool:
    try:
        code, _, body = request("GET", "/readyz", timeout=3)
    except OSError:
        return False
    return code == 200 and json.loads(body).get("ready") is True


class Real:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def ctl(self, *args: str, timeout: float = 400) -> tuple[int, str]:
        proc = self.lab.run("theiaosctl", *args, check=False, timeout=timeout)
        return proc.returncode, proc.stdout + proc.stderr

    def token(self) -> str:
        tok = token_of(self.lab.host_path(f"{HOME}/.theiaos/.env").read_text())
        assert tok
        return tok

    def image_id(self, ref: str = IMAGE_REF) -> str:
        return self.lab.run_as("theiaos", "podman", "image", "inspect", "--format", "{{.Id}}", ref,
                               check=False).stdout.strip()

    def running_image(self) -> str:
        return self.lab.run_as("theiaos", "podman", "inspect", "--format", "{{.Image}}", "theiaos",
                               check=False).stdout.strip()

    def container_id(self) -> str:
        return self.lab.run_as("theiaos", "podman", "inspect", "--format", "{{.Id}}", "theiaos",
                               check=False).stdout.strip()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Real]:
    with lab_with_package(tmp_path_factory, "real-gateway") as (lab, _):
        admin = lab.host_path("/etc/theiaos/podman.env").read_text().splitlines()
        assert all(not ln.strip() or ln.lstrip().startswith("#") for ln in admin), \
            "the real-gateway tier runs on the package's default settings"
        load_real_image(lab, "theiaos", IMAGE_REF, say=lambda line: print(line, flush=True))
        yield Real(lab)


def test_it_starts_on_the_default_settings_and_answers(real: Real) -> None:
    began = time.monotonic()
    code, out = real.ctl("start")
    took = time.monotonic() - began
    assert code == 0 and "answers at http://127.0.0.1:18789/" in out, out
    status, ctype, body = request("GET", "/healthz")
    assert status == 200 and json.loads(body) == {"ok": True, "status": "live"}, body
    wait_until(ready, "/readyz reporting ready", real.lab)
    code, out = real.ctl("status")
    assert code == 0 and "  state:     running" in out, out
    print(f"theiaosctl start of the real gateway: {took:.1f} s")


def test_the_control_ui_is_served_without_a_token(real: Real) -> None:
    status, ctype, body = request("GET", "/")
    assert status == 200 and ctype.startswith("text/html") and "<html" in body.lower(), (status, ctype)


def test_the_token_in_env_authenticates_an_operator_call_and_a_wrong_one_is_refused(real: Real) -> None:
    token = real.token()
    assert operator_call(token) == 200
    assert operator_call(token[:-4] + "0000") == 401
    assert request("POST", "/tools/invoke", None, {"tool": "session_status", "args": {}})[0] == 401


def test_the_real_gateway_serves_hardened(real: Real) -> None:
    """Every hardening flag of the default settings, read back while the gateway serves."""
    info = json.loads(real.lab.run_as("theiaos", "podman", "inspect", "theiaos").stdout)[0]
    host = info["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert "no-new-privileges" in " ".join(host.get("SecurityOpt") or [])
    assert (info.get("EffectiveCaps") or []) == []
    uid = real.lab.account("theiaos").uid
    cache = (host.get("Tmpfs") or {}).get("/home/node/.cache", "")
    assert "mode=0700" in cache and f"uid={uid}" in cache, host.get("Tmpfs")
    probe = ("const fs=require('fs');for(const p of ['/app/x','/home/node/x','/tmp/x',"
             "'/home/node/.cache/x','/home/node/.theiaos/x']){try{fs.writeFileSync(p,'x');"
             "fs.unlinkSync(p);console.log(p,'ok')}catch(e){console.log(p,e.code)}}")
    writes = real.lab.run_as("theiaos", "podman", "exec", "theiaos", "node", "-e", probe).stdout
    assert "/app/x EROFS" in writes and "/home/node/x EROFS" in writes, writes
    for ok in ("/tmp/x ok", "/home/node/.cache/x ok", "/home/node/.theiaos/x ok"):
        assert ok in writes, writes
    # what the gateway itself made there: private to its uid
    made = real.lab.run_as("theiaos", "podman", "exec", "theiaos", "stat", "-c", "%a %u %n",
                           "/home/node/.cache", "/tmp/openclaw").stdout.split("\n")
    assert all(line.startswith(f"700 {uid} ") for line in made if line), made
    code, out = real.ctl("doctor")
    assert code == 0 and "read-only root: yes" in out, out


def test_restart_brings_it_back(real: Real) -> None:
    before = real.container_id()
    code, out = real.ctl("restart")
    assert code == 0, out
    assert real.container_id() != before and answering()
    assert operator_call(real.token()) == 200


def test_a_rotated_token_is_accepted_and_the_old_one_refused(real: Real) -> None:
    old = real.token()
    code, out = real.ctl("token", "rotate")
    assert code == 0 and old not in out, out
    new = real.token()
    assert new != old
    wait_until(answering, "the gateway after the rotation", real.lab)
    assert operator_call(new) == 200
    assert operator_call(old) == 401


def test_logs_show_the_gateways_own_lines(real: Real) -> None:
    code, out = real.ctl("logs", "-n", "300")
    assert code == 0 and "[gateway]" in out and "http server listening" in out, out[-3000:]
    assert real.token() not in out


def test_power_cycles_bring_it_back_with_nobody_touching_it(real: Real) -> None:
    """Boots (3; make soak: 5): the real gateway answers each time, and the unit is active within
    LATE_BOUND s of its first answer."""
    power_cycles(real.lab, count=REAL_POWER_CYCLES)
    assert operator_call(real.token()) == 200


def test_its_user_manager_stops_promptly_and_cleanly(real: Real) -> None:
    """What every shutdown does: the real gateway stopped first, within the bound, nothing
    SIGKILLed (Podman says "resorting to SIGKILL" when the gateway ignores SIGTERM)."""
    stop_user_manager(real.lab, says=None)
    assert operator_call(real.token()) == 200


def _derived(real: Real, name: str, lines: str) -> str:
    """A new build FROM the running image, saved to /var/tmp/NAME.tar; its image id."""
    ctx = f"/var/tmp/ctx-{name}"
    real.lab.run("sh", "-ec", f"mkdir -p {ctx} && printf 'FROM {IMAGE_REF}\\n{lines}' "
                 f"> {ctx}/Containerfile && chmod -R a+rX {ctx}")
    ref = f"localhost/test:{name}"
    real.lab.run_as("theiaos", "podman", "build", "-q", "-t", ref, ctx, timeout=300)
    real.lab.run_as("theiaos", "podman", "save", "-o", f"/var/tmp/{name}.tar", ref, timeout=600)
    return real.image_id(ref)


def test_image_load_of_a_new_build_then_rollback(real: Real) -> None:
    before = real.image_id()
    new = _derived(real, "rebuild", "LABEL org.theiaos.build=2\\n")
    code, out = real.ctl("image", "load", "/var/tmp/rebuild.tar", timeout=900)
    assert code == 0 and "restarted" in out, out
    assert real.image_id() == new == real.running_image() and answering()
    assert operator_call(real.token()) == 200
    code, out = real.ctl("image", "rollback", timeout=600)
    assert code == 0 and "restarted" in out, out
    assert real.image_id() == before == real.running_image() and answering()


def test_a_broken_build_rolls_back_to_the_real_gateway(real: Real) -> None:
    before = real.image_id()
    _derived(real, "broken", "ENV NODE_OPTIONS=--import=/nonexistent.mjs\\n")
    code, out = real.ctl("image", "load", "/var/tmp/broken.tar", timeout=900)
    assert code == 1 and "rolled back" in out, out
    assert real.image_id() == before == real.running_image() and answering()
    assert operator_call(real.token()) == 200


def _tree(real: Real) -> dict[str, str]:
    root = real.lab.host_path(f"{HOME}/.theiaos")
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_backup_and_restore_keep_the_gateways_own_state(real: Real) -> None:
    token = real.token()
    code, out = real.ctl("backup", "/root/real.tgz", timeout=600)
    assert code == 0 and "backup written to /root/real.tgz" in out, out
    wait_until(answering, "the gateway after the backup", real.lab)
    victim = real.lab.host_path(f"{HOME}/.theiaos/theiaos.json")
    victim.write_text('{"gateway": {"mode": "broken"}}\n')
    code, out = real.ctl("restore", "/root/real.tgz", timeout=600)
    assert code == 0 and "Setup complete" in out, out
    assert real.token() == token and operator_call(token) == 200
    assert json.loads(victim.read_text())["gateway"]["mode"] == "local"
    state = [name for name in _tree(real) if name.startswith("state/")]
    assert state, sorted(_tree(real))  # the gateway's own SQLite state came back
