"""The public gateway (npm `openclaw` on Node 24, tests/gateway_image.py) under the
package's default settings, hardened, in one lab (tests in order): what users run,
not the stand-in. Install, health and readiness, the control UI, the token on an
operator call, a person's chat turns with a model server on the host (the tests'
own, tests/modelserver.py), and every operation with a 30 s turn in flight whose
answer must reach its client (restart, stop and start, token rotation, a power
cycle, a new image and a rollback, backup, an apt upgrade); then a crash and a power
cut, after which it answers again and earlier turns are in its transcript."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from theiaos_pkg.envfile import value as token_of

from ..gateway_image import load_real_image
from ..lab import IMAGE_REF, Lab, host_address
from ..modelserver import ModelServer
from .chat import (
    LEASE_REFUSED,
    TURN_SECONDS,
    Turn,
    chat,
    configure_model,
    in_transcript,
    journal_since,
    lab_now,
    turn_in_flight,
    turns_at_once,
)
from .conftest import DEB_IN_LAB, HOME, SHUTDOWN_BOUND, lab_only, lab_with_package, power_cycles, stop_user_manager
from .terminal import Terminal

pytestmark = lab_only

SYSTEMCTL = ("systemctl", "--machine", "theiaos@", "--user")
# The real gateway needs 10-20 s to answer on these machines (plugins, SQLite state).
ANSWER_BOUND = 120
#: Timed boots of the real gateway with nobody touching it (make soak: 5); one more boot
#: follows a power-off with a turn in flight, and one a power cut.
REAL_POWER_CYCLES = int(os.environ.get("THEIAOS_REAL_POWER_CYCLES", "1"))


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
def model() -> Iterator[ModelServer]:
    """The tests' model server on the build machine, where the lab's containers reach
    it as host.containers.internal (the host's own address, not loopback: docs/podman.md)."""
    with ModelServer(host=host_address()) as server:
        yield server
    assert server.errors == []


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


CONFIG = f"{HOME}/.theiaos/theiaos.json"


def test_it_chats_with_a_model_on_the_host_through_its_api(real: Real, model: ModelServer) -> None:
    """docs/podman.md's steps: the provider at host.containers.internal with
    allowPrivateNetwork, the OpenAI-compatible API on; a turn answered and streamed."""
    configure_model(real.lab, CONFIG, model)
    token = real.token()
    began = time.monotonic()
    while (got := chat(token, "hello from the tests"))[0] != 200:  # until it reloaded its config
        assert time.monotonic() - began < ANSWER_BOUND, got
        time.sleep(1)
    assert got[1].startswith("theiaos-test answer: ") and got[1].endswith("hello from the tests"), got
    code, streamed = chat(token, "and streamed", stream=True)
    assert code == 200 and streamed.endswith("and streamed"), streamed
    assert model.requests[-1].stream  # the gateway asks its provider for a stream
    assert chat(token[:-4] + "0000", "a wrong token")[0] == 401


def _dashboard() -> Any:
    pytest.importorskip("selenium", reason="python3-selenium (make deps installs it)")
    from ..browser import Dashboard

    return Dashboard()


def test_a_person_chats_from_the_dashboard_in_a_real_browser(real: Real, model: ModelServer,
                                                             tmp_path: Path) -> None:
    """What the package tells a person on the host to open (`theiaosctl dashboard`: the
    gateway's own single-use sign-in link, on the host's port), in Debian's chromium:
    connected with no token pasted and no approval, a message sent, the model's answer
    seen. The screenshot stays under the test's output."""
    proc = real.lab.run("theiaosctl", "dashboard", check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    link = proc.stdout.strip()
    assert link.startswith("http://127.0.0.1:18789/#bootstrapToken=") and real.token() not in link, link
    marker = f"browser-{secrets.token_hex(4)}"
    with _dashboard() as page:
        connected = page.open(link, timeout=180)
        # the model's answer quotes the message: expect all of it, after the message
        took = page.chat(f"hello from a browser {marker}",
                         expect=f"theiaos-test answer: hello from a browser {marker}", timeout=300)
        shot = page.screenshot(tmp_path / "dashboard-chat.png")
    assert any(marker in r.answer for r in model.requests), "the browser's turn never reached the model"
    print(f"dashboard: connected in {connected:.1f} s, answered in {took:.1f} s; screenshot {shot}")


def test_the_product_docs_url_and_token_end_connected(real: Real, tmp_path: Path) -> None:
    """The product doc's way: http://127.0.0.1:18789/ and the token from .env. Where the
    gateway sees the host's browser as a non-loopback peer (the lab: pasta hands it the
    host's TEST-NET address), it asks to approve the browser; one command does it, with
    the id the page shows, and the page connects without a reload."""
    with _dashboard() as page:
        page.load("http://127.0.0.1:18789/")
        try:
            page.sign_in_with_token(real.token(), timeout=60)
            approved = False
        except AssertionError:
            began = time.monotonic()
            while (request := page.pairing_request()) is None:
                assert time.monotonic() - began < 60, "neither connected nor asking for approval"
                time.sleep(0.5)
            code, out = real.ctl("devices", "approve", request)
            assert code == 0, out
            page.wait_connected(120, check_now=True)
            approved = True
        page.screenshot(tmp_path / "dashboard-token.png")
    print("the product doc's URL and token: connected" + (" after `theiaosctl devices approve`"
                                                         if approved else " at once"))


def test_the_onboarding_wizard_runs_beside_the_running_gateway(real: Real) -> None:
    """The product doc's step 3 with the service running: `theiaosctl launch setup` runs
    the real wizard in the gateway's own container (it edits the config the gateway
    reloads), on a real pseudo-terminal; the gateway keeps serving, untouched."""
    before = real.container_id()
    argv = real.lab.command("theiaosctl", "launch", "setup", env={"TERM": "xterm-256color"})
    with Terminal(argv) as term:
        # its security notice, then its first question (with a config in place: whether to
        # go on; on a fresh state dir: how to start)
        term.expect(r"docs\.openclaw\.ai/gateway/security", timeout=240)
        term.expect(r"Continue\?|How would you like to start\?", timeout=120)
        term.send("\x03")  # a person leaves the wizard
        term.expect(r"(?i)cancelled", timeout=60)
        term.wait(60)
    assert real.container_id() == before and answering()


def test_restart_brings_it_back(real: Real, model: ModelServer) -> None:
    """... without losing the turn in flight: the gateway finishes it within its stop
    timeout (330 s), then the new container starts and takes its lease at once."""
    before = real.container_id()
    with turn_in_flight(real.lab, model, real.token(), "restart"):
        code, out = real.ctl("restart")
        assert code == 0, out
    assert real.container_id() != before and answering()
    assert operator_call(real.token()) == 200


def test_stop_then_start_with_a_turn_in_flight(real: Real, model: ModelServer) -> None:
    with turn_in_flight(real.lab, model, real.token(), "stop") as turn:
        code, out = real.ctl("stop")
        assert code == 0 and "inactive" in out, out
        # stop returns once the gateway is down: after it answered the turn it drained
        assert turn.result(10)[0] == 200
    code, out = real.ctl("start")
    assert code == 0 and answering(), out


def test_a_rotated_token_is_accepted_and_the_old_one_refused(real: Real, model: ModelServer) -> None:
    old = real.token()
    with turn_in_flight(real.lab, model, old, "rotate"):
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


def test_a_power_cycle_with_a_turn_in_flight(real: Real, model: ModelServer) -> None:
    """A clean power-off waits for the turn (the user manager's drop-in stops the gateway
    first, within its stop timeout), then the gateway comes back by itself."""
    with turn_in_flight(real.lab, model, real.token(), "poweroff"):
        took = real.lab.power_cycle()
    assert took < TURN_SECONDS + SHUTDOWN_BOUND, f"the power-off took {took:.1f} s"
    wait_until(answering, "the gateway after the boot", real.lab)


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


def test_image_load_of_a_new_build_then_rollback(real: Real, model: ModelServer) -> None:
    before = real.image_id()
    new = _derived(real, "rebuild", "LABEL org.theiaos.build=2\\n")
    with turn_in_flight(real.lab, model, real.token(), "image-load"):
        code, out = real.ctl("image", "load", "/var/tmp/rebuild.tar", timeout=900)
        assert code == 0 and "restarted" in out, out
    assert real.image_id() == new == real.running_image() and answering()
    assert operator_call(real.token()) == 200
    with turn_in_flight(real.lab, model, real.token(), "rollback"):
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


def test_backup_and_restore_keep_the_gateways_own_state(real: Real, model: ModelServer) -> None:
    token = real.token()
    with turn_in_flight(real.lab, model, token, "backup"):
        code, out = real.ctl("backup", "/root/real.tgz", timeout=900)
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


def test_a_crash_is_back_within_its_restart_and_keeps_the_transcript(real: Real, model: ModelServer) -> None:
    """SIGKILL of the container (what the OOM killer or HealthOnFailure=kill does; never
    by exhausting memory, the lab has no memory controller): systemd restarts it after
    RestartSec and the new container takes the dead one's lease at once (a stable host
    name), and what was said before is still there."""
    token = real.token()
    marker = f"before-the-crash-{secrets.token_hex(4)}"
    assert chat(token, marker)[0] == 200
    since = lab_now(real.lab)
    real.lab.run_as("theiaos", "podman", "kill", "--signal", "KILL", "theiaos")
    began = time.monotonic()
    time.sleep(1)
    wait_until(answering, "the gateway after SIGKILL", real.lab)
    back = time.monotonic() - began
    refused = [ln for ln in journal_since(real.lab, since).splitlines() if LEASE_REFUSED in ln]
    assert not refused, "\n".join(refused)
    assert in_transcript(real.lab, f"{HOME}/.theiaos", marker)
    assert chat(token, "after the crash")[0] == 200
    print(f"SIGKILL: answering again after {back:.1f} s")


def test_a_power_cut_comes_back_by_itself_with_the_transcript(real: Real, model: ModelServer) -> None:
    token = real.token()
    marker = f"before-the-power-cut-{secrets.token_hex(4)}"
    assert chat(token, marker)[0] == 200
    real.lab.power_cut()
    since = lab_now(real.lab)
    wait_until(answering, "the gateway after the power cut", real.lab, bound=ANSWER_BOUND + 60)
    refused = [ln for ln in journal_since(real.lab, since).splitlines() if LEASE_REFUSED in ln]
    assert not refused, "\n".join(refused)
    assert in_transcript(real.lab, f"{HOME}/.theiaos", marker)
    assert chat(token, "after the power cut")[0] == 200


def test_an_apt_upgrade_with_a_turn_in_flight(real: Real, model: ModelServer) -> None:
    """apt upgrades to the next build while a turn runs: apt is not held beyond the
    hooks' bound, the turn is answered, the gateway answers on the new package."""
    deb_next = os.environ.get("THEIAOS_DEB_NEXT")
    if not deb_next:
        pytest.fail("THEIAOS_DEB_NEXT must name the next build: run `make check`")
    real.lab.put(Path(deb_next), DEB_IN_LAB)
    with turn_in_flight(real.lab, model, real.token(), "apt-upgrade"):
        proc = real.lab.run("apt-get", "install", "-y", DEB_IN_LAB, check=False, timeout=600,
                            env={"DEBIAN_FRONTEND": "noninteractive"})
        assert proc.returncode == 0, proc.stdout + proc.stderr
    wait_until(answering, "the gateway after the upgrade", real.lab)
    assert operator_call(real.token()) == 200


def test_many_turns_at_once_during_a_restart(real: Real, model: ModelServer) -> None:
    """30 turns of 2 s at once, a restart 3 s in. What the gateway does with them on
    SIGTERM is its own policy: the turns it admitted are finished, the ones still
    queued are refused ("Gateway is draining; new tasks are not accepted", a 500 its
    client may retry). Neither kind may hang or end in a reset connection, and every
    turn is answered when sent again once it is back."""
    token = real.token()
    turns = turns_at_once(token, 30, 2, "load")
    time.sleep(3)
    code, out = real.ctl("restart")
    assert code == 0, out
    answered, refused = 0, []
    for turn in turns:
        status, answer = turn.result(600)
        if status == 200:
            assert turn.text.rsplit(" ", 1)[1] in answer, answer
            answered += 1
        else:
            assert status == 500 and "internal error" in answer, (status, answer)
            refused.append(turn)
    again = [Turn(token, turn.text, timeout=600) for turn in refused]  # the clients retry
    for turn in again:
        status, answer = turn.result(600)
        assert status == 200 and turn.text.rsplit(" ", 1)[1] in answer, (status, answer)
    print(f"30 turns during a restart: {answered} answered, {len(refused)} refused while it "
          "drained and answered when sent again")
    assert answered > 0
