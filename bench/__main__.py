"""`make bench`: every cost an operator pays, side by side with its floor, in one lab run.

    /usr/bin/python3 -m bench DEB [ROUNDS]

Boots the Debian 13 lab, installs DEB with apt, puts the stand-in image into the
account's store, then measures inside the lab (nsenter not counted), alternating each
command with its floor, ROUNDS times (default 15), and prints one table: the medians,
the ratio, the goal, pass or fail. Ratios come from one run on one machine; the
absolute times are for information (the machines are noisy).

  P1  theiaosctl status (and --json)     systemctl --machine theiaos@ --user status
  P2  theiaosctl setup, nothing changed   theiaosctl status
  P3  theiaosctl start (from stopped),    podman run of the same image as the account,
      theiaosctl restart, as the user      with the unit's health flags, then podman
      waits: until the command returns     wait --condition=healthy (restart: podman
      (the unit active, the gateway        stop first, then the same)
      answering)
  P4  subid planning, 60,000 owners in    (absolute: at most 0.2 s)
      both files
  P5  apt install of the .deb (deps and   apt install of an empty package plus the P3
      image present) until it returns     start floor
      ("Setup complete": it answers)

  P3r theiaosctl restart of the real        the same real image run bare: podman stop,
      gateway (npm openclaw), as the user     then podman run with the same health and
      waits (REAL_ROUNDS times)               hardening flags, then wait healthy
  P6  one chat turn through the package's     the same turn to the same image run bare
      gateway (/v1/chat/completions, the      (the same state dir, its provider the same
      tests' model server on the host)        model server)

The floor includes the health check because the unit's start does: it is active only
once the container's health check has passed (ExecStartPost), as `systemctl start`
waits. Rows for information: start and restart until /healthz first answers (polled
every 10 ms while the command runs) against a bare `podman run` polled the same way,
and apt install against `dpkg -i` of an empty package plus that floor.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.gateway_image import load_real_image
from tests.lab import IMAGE_REF, Lab, build_test_image, host_address
from tests.modelserver import ModelServer
from tests.system.chat import configure_model

DEB_IN_LAB = "/var/tmp/theiaos-podman.deb"
EMPTY_IN_LAB = "/var/tmp/bench-empty.deb"
FLOOR_PORT = 18797
#: Rounds with the real gateway: each restart takes tens of seconds.
REAL_ROUNDS = 3

# Runs inside the lab as root: one JSON object of lists of seconds.
TIMER = r"""
import json, subprocess, sys, time, urllib.request, pwd
rounds, which = int(sys.argv[1]), sys.argv[2]
u = pwd.getpwnam("theiaos")
AS = ["setpriv", f"--reuid={u.pw_uid}", f"--regid={u.pw_gid}", "--init-groups", "env", "-i",
      f"HOME={u.pw_dir}", f"XDG_RUNTIME_DIR=/run/user/{u.pw_uid}",
      f"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{u.pw_uid}/bus", "PATH=/usr/bin:/bin",
      f"--chdir={u.pw_dir}"]
def sh(argv, ok=True):
    p = subprocess.run(argv, capture_output=True, text=True)
    if ok and p.returncode:
        sys.exit(f"{argv}: {p.returncode}\n{p.stdout}{p.stderr}")
    return p
def timed(argv):
    t = time.perf_counter(); sh(argv); return time.perf_counter() - t
def answers(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
    except OSError:
        return False
def until_up(port, t, limit=120):
    while not answers(port):
        if time.perf_counter() - t > limit:
            sys.exit(f"nothing answers on {port}")
        time.sleep(0.01)
    return time.perf_counter() - t
FLOOR = ["podman", "run", "-d", "--rm", "--name", "bench-floor", "--userns=keep-id",
         "--user", f"{u.pw_uid}:{u.pw_gid}", "--env", "HOME=/home/node",
         "--env", "THEIAOS_GATEWAY_TOKEN=bench", "--volume",
         f"{u.pw_dir}/.theiaos:/home/node/.theiaos:Z", "--publish", "127.0.0.1:PORT:18789",
         "--publish", "127.0.0.1:PORT1:18790", "--pull=never",
         "localhost/theiaos:local", "node", "dist/index.js", "gateway", "--bind", "lan",
         "--port", "18789"]
HC = ("[\"node\", \"-e\", \"fetch('http://127.0.0.1:18789/healthz').then(r=>process.exit("
      "r.ok?0:1),()=>process.exit(1))\"]")
# The unit's health flags (Quadlet's HealthCmd and HealthStartup* keys), the P3 floor's.
HEALTH = ["--health-cmd", HC, "--health-interval", "30s", "--health-timeout", "5s",
          "--health-retries", "3", "--health-start-period", "120s",
          "--health-on-failure", "kill", "--health-startup-cmd", HC,
          "--health-startup-interval", "1s", "--health-startup-timeout", "5s"]
# What the unit adds for the real gateway (it refuses a cache it does not own, and the
# image's /home/node is not the account's uid's): the floor runs under the same flags.
HARDENED = ["--cap-drop=all", "--security-opt=no-new-privileges", "--read-only",
            "--tmpfs", "/home/node/.cache:rw,nosuid,nodev,size=512m,mode=0700,U"]
def chat(port, token):
    body = json.dumps({"model": "openclaw", "messages": [{"role": "user", "content": "bench"}]})
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body.encode(),
                                 {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as r:
        if r.status != 200 or b"theiaos-test answer" not in r.read():
            sys.exit(f"chat on {port}: {r.status}")
    return time.perf_counter() - t
def floor_argv(port, extra=()):
    argv = [a.replace("PORT1", str(port + 1)).replace("PORT", str(port)) for a in FLOOR]
    at = argv.index("--pull=never")
    argv[at:at] = list(extra)
    return AS + argv
def floor_run(port):  # a bare podman run, polled until /healthz answers
    t = time.perf_counter(); sh(floor_argv(port)); return until_up(port, t)
def floor_healthy(port):  # as the user waits: podman run, then podman wait healthy
    t = time.perf_counter(); sh(floor_argv(port, HEALTH))
    sh(AS + ["podman", "wait", "--condition=healthy", "--interval=10ms", "bench-floor"])
    return time.perf_counter() - t
def floor_healthy_real(port, token):
    t = time.perf_counter()
    sh(floor_argv(port, HEALTH + HARDENED + ["--env", f"THEIAOS_GATEWAY_TOKEN={token}"]))
    sh(AS + ["podman", "wait", "--condition=healthy", "--interval=10ms", "bench-floor"])
    return time.perf_counter() - t
def floor_stop():
    sh(AS + ["podman", "rm", "-f", "-t", "10", "bench-floor"], ok=False)
# Run argv, polling /healthz as until_up does: the seconds until the gateway answers
# (after a restart: answers again, once seen down) and until argv returns (with
# Notify=healthy, once systemd reports the unit active, as `systemctl start` waits).
def answered(argv, port, restart=False, limit=120):
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    down, up = not restart, None
    while up is None:
        if not answers(port):
            down = True
        elif down:
            up = time.perf_counter() - t
            break
        if p.poll() is not None and p.returncode:
            sys.exit(f"{argv}: {p.returncode}\n{p.stderr.read()}")
        if time.perf_counter() - t > limit:
            sys.exit(f"{argv}: nothing answers on {port}")
        time.sleep(0.01)
    err = p.communicate()[1]
    if p.returncode:
        sys.exit(f"{argv}: {p.returncode}\n{err}")
    return up, time.perf_counter() - t
def settled():  # until the unit is active (its health check passed: after the answer)
    for _ in range(300):
        if subprocess.run(["theiaosctl", "status"], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    sys.exit("the gateway does not settle: " + sh(["theiaosctl", "status"], ok=False).stdout)
out = {}
def add(k, v): out.setdefault(k, []).append(v)
SYSTEMCTL = ["systemctl", "--machine", "theiaos@", "--user", "--no-pager", "status",
             "theiaos.service"]
if which == "status":
    settled()
    for _ in range(3):
        sh(["theiaosctl", "status"]); sh(SYSTEMCTL)
    for _ in range(rounds):
        add("status", timed(["theiaosctl", "status"]))
        add("systemctl", timed(SYSTEMCTL))
        add("status --json", timed(["theiaosctl", "status", "--json"]))
        add("setup", timed(["theiaosctl", "setup"]))
if which == "start":
    port = int(sys.argv[3])
    for _ in range(rounds):
        sh(["theiaosctl", "stop"])
        up, done = answered(["theiaosctl", "start"], 18789)
        add("start", up); add("start returns", done)
        settled()
        up, done = answered(["theiaosctl", "restart"], 18789, restart=True)
        add("restart", up); add("restart returns", done)
        settled()
        sh(["theiaosctl", "stop"])
        add("floor start", floor_run(port))
        t = time.perf_counter(); floor_stop(); add("floor restart", time.perf_counter() - t + floor_run(port))
        floor_stop()
        add("floor start healthy", floor_healthy(port))
        t = time.perf_counter(); floor_stop()
        add("floor restart healthy", time.perf_counter() - t + floor_healthy(port))
        floor_stop()
        sh(["theiaosctl", "start"])
        settled()
if which == "real":
    port = int(sys.argv[3])
    token = open(f"{u.pw_dir}/.theiaos/.env").read().split("THEIAOS_GATEWAY_TOKEN=")[1].split()[0]
    settled()
    chat(18789, token)  # the first turn of a session warms the agent up: not measured
    for _ in range(rounds):
        up, done = answered(["theiaosctl", "restart"], 18789, restart=True, limit=600)
        add("real restart returns", done)
        settled()
        add("real chat", chat(18789, token))
        sh(["theiaosctl", "stop"])
        floor_healthy_real(port, token)
        chat(port, token)  # warm, as the package's was
        t = time.perf_counter(); floor_stop()
        add("real floor restart healthy", time.perf_counter() - t + floor_healthy_real(port, token))
        add("real floor chat", chat(port, token))
        floor_stop()
        sh(["theiaosctl", "start"])
        settled()
if which == "install":
    for _ in range(rounds):
        sh(["apt-get", "-y", "remove", "theiaos-podman"])
        t = time.perf_counter()
        p = sh(["apt-get", "-y", "install", sys.argv[3]])
        add("install", time.perf_counter() - t)
        if "Setup complete" not in p.stdout:
            sys.exit(p.stdout)
        settled()
        t = time.perf_counter(); sh(["apt-get", "-y", "install", sys.argv[4]])
        add("apt install empty", time.perf_counter() - t)
        sh(["dpkg", "--purge", "bench-empty"])
        t = time.perf_counter(); sh(["dpkg", "-i", sys.argv[4]]); add("dpkg -i empty", time.perf_counter() - t)
        sh(["dpkg", "--purge", "bench-empty"])
print(json.dumps(out))
"""


def _empty_deb(tmp: Path) -> Path:
    tree = tmp / "empty"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: bench-empty\nVersion: 1\nArchitecture: all\nMaintainer: bench <b@x.invalid>\n"
        "Description: an empty package (the floor of P5)\n")
    subprocess.run(["dpkg-deb", "-b", str(tree), str(tmp / "empty.deb")], check=True,
                   capture_output=True)
    return tmp / "empty.deb"


def _p4() -> list[float]:
    """Subid planning with 60,000 other owners in both files (pure; timed here)."""
    from theiaos_pkg import logindefs, subids

    lines = "".join(f"user{i}:{100000 + i * 65536}:65536\n" for i in range(60000))
    defs = logindefs.LoginDefs(sub_uid_max=2**32 - 1, sub_gid_max=2**32 - 1)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        plan = subids.plan(("theiaos", "990"), lines, lines, defs)
        times.append(time.perf_counter() - t)
        assert plan.range.start == 100000 + 60000 * 65536
    return times


def _real(lab: Lab) -> dict[str, list[float]]:
    """P3r and P6: the real gateway in the same lab, its provider the tests' model server."""
    load_real_image(lab, "theiaos", IMAGE_REF, say=lambda line: print(line, file=sys.stderr))
    with ModelServer(host=host_address()) as model:
        configure_model(lab, "/home/theiaos/.theiaos/theiaos.json", model)
        lab.run("theiaosctl", "restart", timeout=900)
        out = lab.run("python3", "-c", TIMER, str(REAL_ROUNDS), "real", str(FLOOR_PORT),
                      timeout=3600).stdout
    got: dict[str, list[float]] = json.loads(out)
    return got


def main(argv: list[str]) -> int:
    if not argv or not Path(argv[0]).is_file():
        print(__doc__, file=sys.stderr)
        return 2
    rounds = int(argv[1]) if len(argv) > 1 else 15
    with tempfile.TemporaryDirectory(prefix="theiaos-bench-", dir="/var/tmp") as work, \
            Lab(Path(work) / "lab") as lab:
        lab.put(Path(argv[0]), DEB_IN_LAB)
        lab.put(_empty_deb(Path(work)), EMPTY_IN_LAB)
        lab.run("apt-get", "install", "-y", DEB_IN_LAB, timeout=600,
                env={"DEBIAN_FRONTEND": "noninteractive"})
        build_test_image(lab, "theiaos")
        lab.run("theiaosctl", "start", timeout=400)
        got: dict[str, list[float]] = {}
        for which, extra in (("status", []), ("start", [str(FLOOR_PORT)]),
                             ("install", [DEB_IN_LAB, EMPTY_IN_LAB])):
            n = rounds if which != "install" else max(3, rounds // 3)
            out = lab.run("python3", "-c", TIMER, str(n), which, *extra, timeout=3600,
                          env={"DEBIAN_FRONTEND": "noninteractive"}).stdout
            got.update(json.loads(out))
        got.update(_real(lab))
    got["p4"] = _p4()
    med = {k: statistics.median(v) for k, v in got.items()}
    rows = [
        ("P1", "status", med["status"], "systemctl status", med["systemctl"], 1.0),
        ("P1", "status --json", med["status --json"], "systemctl status", med["systemctl"], 1.0),
        ("P2", "setup (no change)", med["setup"], "theiaosctl status", med["status"], 2.0),
        ("P3", "start, as the user waits", med["start returns"], "podman run + wait healthy",
         med["floor start healthy"], 1.3),
        ("P3", "restart, as the user waits", med["restart returns"],
         "podman stop + run + wait healthy", med["floor restart healthy"], 1.5),
        ("(i)", "start until it answers", med["start"], "podman run", med["floor start"], None),
        ("(i)", "restart until it answers", med["restart"], "podman stop + run",
         med["floor restart"], None),
        ("P3r", "restart real gateway, waited", med["real restart returns"],
         "podman stop + run + wait healthy", med["real floor restart healthy"], 1.5),
        ("P6", "chat turn through the package", med["real chat"], "the same turn, image bare",
         med["real floor chat"], 1.1),
        ("P4", "subid plan, 60,000 owners", med["p4"], "(absolute) 0.2 s", None, 0.2),
        ("P5", "apt install until it returns", med["install"],
         "apt install empty + P3 floor", med["apt install empty"] + med["floor start healthy"],
         1.5),
        ("(i)", "apt install until it returns", med["install"], "dpkg -i empty + P3 floor",
         med["dpkg -i empty"] + med["floor start healthy"], None),
    ]
    print(f"{'id':3} {'what':30} {'median':>9}  {'floor':30} {'median':>9}  {'ratio':>6} "
          f"{'goal':>5}  result")
    failed = 0
    for pid, what, ours, floor_name, floor, goal in rows:
        ratio = ours / floor if floor else ours
        ok = goal is None or ratio <= goal
        failed += not ok
        print(f"{pid:3} {what:30} {ours * 1000:7.0f}ms  {floor_name:30} "
              + (f"{floor * 1000:7.0f}ms" if floor else f"{'':9}")
              + f"  {ratio:6.2f} " + (f"{goal:5.1f}  {'pass' if ok else 'FAIL'}" if goal
                                      else f"{'':5}  info"))
    print(f"({rounds} rounds, P5 {max(3, rounds // 3)}, P3r and P6 {REAL_ROUNDS}; medians; "
          "(i): for information)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
