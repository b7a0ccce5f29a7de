"""The gateway container, described once (pure).

The Quadlet template and ``theiaosctl launch`` (plain ``podman run``) are both made
from this one Spec, so the two modes cannot drift apart: same image, mounts, ports,
user namespace, environment and command.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, NamedTuple

from .settings import (
    CONTAINER_BRIDGE_PORT,
    CONTAINER_CONFIG_DIR,
    CONTAINER_GATEWAY_PORT,
    CONTAINER_HOME,
    CONTAINER_WORKSPACE_DIR,
    TOKEN_KEY,
    Settings,
)

if TYPE_CHECKING:
    from .podman import Features

#: The gateway's exit status for a configuration it refuses (sysexits' EX_CONFIG): the
#: units do not restart it (RestartPreventExitStatus=), status and doctor say so.
CONFIG_REFUSED = 78

#: The probe gives up by itself after HealthTimeout's 5 s less a margin: Podman does
#: not stop a probe that hangs (a gateway that accepts and never answers).
HEALTH_CMD = json.dumps([
    "node", "-e",
    f"fetch('http://127.0.0.1:{CONTAINER_GATEWAY_PORT}/healthz',"
    "{signal:AbortSignal.timeout(4000)})"
    ".then(r=>process.exit(r.ok?0:1),()=>process.exit(1))",
])
ONBOARD = ("node", "dist/index.js", "onboard")


class Volume(NamedTuple):
    host: str
    container: str
    options: str = "Z"

    def spec(self) -> str:
        return f"{self.host}:{self.container}:{self.options}"


class Port(NamedTuple):
    address: str
    host: int
    container: int

    def spec(self) -> str:
        addr = f"[{self.address}]" if ":" in self.address else self.address
        return f"{addr}:{self.host}:{self.container}"


class Tmpfs(NamedTuple):
    """A private, empty, writable place in the container: owned by the gateway's uid
    (``U``: Podman chowns it to the container's user), mode 0700, gone when it stops."""

    container: str
    options: str = "rw,nosuid,nodev,size=512m,mode=0700,U"

    def spec(self) -> str:
        return f"{self.container}:{self.options}"


#: The gateway's cache: its private SQLite snapshot staging and temp root live under
#: $XDG_CACHE_HOME or $HOME/.cache, which it refuses unless owned by its own uid and
#: not group/world writable (openclaw's secure temp root). $HOME is the image's, on a
#: read-only root and owned by the image's user, not the account's uid (keep-id).
CACHE_TMPFS = Tmpfs(f"{CONTAINER_HOME}/.cache")


class Spec(NamedTuple):
    image: str
    name: str
    environment: tuple[tuple[str, str], ...]
    env_file: str
    volumes: tuple[Volume, ...]
    tmpfs: tuple[Tmpfs, ...]
    ports: tuple[Port, ...]
    command: tuple[str, ...]
    health_cmd: str
    hostname: str
    stop_timeout: int


class Hardening(NamedTuple):
    """What the container may do beyond running the gateway: nothing it does not need.
    No capabilities (the gateway runs as the account's own uid), no privilege gain, a
    read-only root with a tmpfs /tmp (the gateway writes its state dir, which is mounted,
    its log under /tmp/openclaw and its cache in the Spec's private tmpfs), and
    resource limits where the host's cgroups have them."""

    read_only: bool
    memory: str | None
    pids_limit: int | None


def hardening(s: Settings, features: Features) -> Hardening:
    return Hardening(
        read_only=s.read_only,
        memory=s.memory if s.memory != "0" and features.limit("memory") else None,
        pids_limit=s.pids_limit if s.pids_limit and features.limit("pids") else None,
    )


def hardening_argv(h: Hardening) -> list[str]:
    """The ``podman run`` flags of ``h`` (launch and the plain unit; Quadlet has keys)."""
    argv = ["--cap-drop=all", "--security-opt=no-new-privileges"]
    if h.read_only:
        argv.append("--read-only")  # with Podman's default --read-only-tmpfs: /tmp, /run
    if h.memory:
        argv.append(f"--memory={h.memory}")
    if h.pids_limit:
        argv.append(f"--pids-limit={h.pids_limit}")
    return argv


def spec(s: Settings) -> Spec:
    return Spec(
        image=s.image,
        name=s.container_name,
        environment=(("HOME", CONTAINER_HOME),),
        env_file=s.env_file,
        volumes=(Volume(s.config_dir, CONTAINER_CONFIG_DIR),
                 Volume(s.workspace_dir, CONTAINER_WORKSPACE_DIR)),
        tmpfs=(CACHE_TMPFS,),
        ports=(Port(s.publish_address, s.gateway_port, CONTAINER_GATEWAY_PORT),
               Port(s.publish_address, s.bridge_port, CONTAINER_BRIDGE_PORT)),
        command=("node", "dist/index.js", "gateway", "--bind", s.gateway_bind,
                 "--port", str(CONTAINER_GATEWAY_PORT)),
        health_cmd=HEALTH_CMD,
        hostname=hostname(s.container_name),
        stop_timeout=s.stop_timeout,
    )


def hostname(container_name: str) -> str:
    """The container's host name: the same in every container of this gateway. The
    gateway's owner lease (in its state dir) records the host name of the process
    holding it and never takes a lease of another host name for dead; Podman gives each
    new container a random one, so after a crash or a stop past the drain every new
    container was refused until the lease expired (300 s). A name a host name may be:
    the container name, ``_`` as ``-``, at most 63 characters."""
    return container_name.replace("_", "-").replace(".", "-")[:63].strip("-") or "theiaos"


#: How long past the gateway's stop timeout a wait for its stop lasts: the SIGKILL
#: Podman sends then, conmon's exit and the container's removal.
STOP_ROOM = 30


def stop_bound(stop_timeout: int) -> int:
    """How long anything waits for the gateway to stop (the unit's TimeoutStopSec, the
    shutdown drop-in, theiaosctl stop): its drain, then Podman's SIGKILL, then room."""
    return stop_timeout + STOP_ROOM


def token_secret() -> str:
    """How the token reaches the container where Podman has secrets (podman.SECRET)."""
    from .podman import SECRET

    return f"{SECRET},type=env,target={TOKEN_KEY}"


def onboard_exec_argv(sp: Spec) -> list[str]:
    """The onboarding wizard inside the running gateway's container (``podman exec``):
    it edits the config the gateway reloads by itself, so the gateway keeps running."""
    return ["podman", "exec", "-it", "--env", "BROWSER=echo", sp.name, *ONBOARD]


def run_argv(sp: Spec, uid: int, gid: int, *, secret: bool, onboard: bool = False,
             hard: Hardening | None = None) -> list[str]:
    """``podman run`` for manual mode: the gateway detached, or the onboarding wizard.
    ``secret``: the token as a Podman secret (else the .env file, as older Podman)."""
    argv = ["podman", "run", "--replace", "--name", sp.name, "--hostname", sp.hostname,
            "--userns=keep-id", "--user", f"{uid}:{gid}"]
    if hard is not None:
        argv += hardening_argv(hard)
    for key, value in sp.environment:
        argv += ["--env", f"{key}={value}"]
    argv += ["--secret", token_secret()] if secret else ["--env-file", sp.env_file]
    for vol in sp.volumes:
        argv += ["--volume", vol.spec()]
    for tmp in sp.tmpfs:
        argv += ["--tmpfs", tmp.spec()]
    if onboard:
        return [*argv, "--rm", "-it", "--env", "BROWSER=echo", sp.image, *ONBOARD]
    for port in sp.ports:
        argv += ["--publish", port.spec()]
    argv += ["--stop-timeout", str(sp.stop_timeout)]
    pull = "never" if sp.image.startswith("localhost/") else "missing"
    # k8s-file, not the journal: a system account cannot read its own lines in the
    # system journal, and `sudo -u theiaos podman logs -f theiaos` must show them.
    return [*argv, "--detach", f"--pull={pull}", "--log-driver", "k8s-file", sp.image,
            *sp.command]


#: How often the unit's start runs the health check until the gateway first answers.
READY_INTERVAL = "0.5"
#: One run of the health check may take this long (its own timeout is HealthTimeout,
#: 5 s, but Podman does not enforce it: a probe that hangs would hang the start).
PROBE_BOUND = 10
#: A start that never answered is stopped with `podman stop -t STOP_WAIT`: SIGTERM, then
#: SIGKILL this many seconds later (it never answered, so it runs no turn to finish).
STOP_WAIT = 10
#: How long past the start bound the unit's start may take to give up in order:
#: one probe in flight and the container's stop (TimeoutStartSec is only a backstop).
START_ROOM = PROBE_BOUND + STOP_WAIT + 10


def unit_start_timeout(start_timeout: int, ready_check: bool) -> int:
    """TimeoutStartSec: with the ready check, the check gives up first (ready_argv)."""
    return start_timeout + START_ROOM if ready_check else start_timeout


def ready_argv(sp: Spec, start_timeout: int) -> list[str]:
    """The unit's ExecStartPost: the container's own health check, run until it passes.
    ``podman healthcheck run`` counts as the startup check Podman's timer would run, so
    Podman's view agrees; systemd runs and tracks this process and keeps the unit
    "activating" until it exits, so the unit turns active within READY_INTERVAL (plus
    one check) of the gateway's first answer, whatever becomes of an sd_notify message
    or of Podman's health timers.

    A gateway that has not answered ``start_timeout`` seconds after its container
    started is stopped here, in order (``podman stop``: SIGTERM, SIGKILL after
    STOP_WAIT), and the start fails (exit 1): systemd's own TimeoutStartSec, and a
    stop or restart asked for while the unit starts, would instead signal conmon and
    Podman (the "conmon exited prematurely" of a container that ignores SIGTERM). One
    that exits ends the check at once."""
    name = sp.name
    # systemd runs the unit's main process out of START_POST only once this exits: when
    # the main process (conmon, or the plain unit's podman) is gone, give up at once.
    # $$ reaches the shell as $: MAINPID is in its environment (systemd.exec(5)).
    # Its verdicts ("starting", "unhealthy") go nowhere; Podman's errors reach the journal.
    loop = (f"end=$$(( $$(date +%s) + {start_timeout} )); "
            f"until /usr/bin/timeout -k 2 {PROBE_BOUND - 2} "
            f"/usr/bin/podman healthcheck run {name} >/dev/null; do "
            "[ -z \"$$MAINPID\" ] || kill -0 \"$$MAINPID\" 2>/dev/null || exit 1; "
            "if [ \"$$(date +%s)\" -ge \"$$end\" ]; then "
            f"echo \"{name} did not answer its health check within {start_timeout} s: "
            "stopping it\" >&2; "
            f"/usr/bin/podman stop -t {STOP_WAIT} {name} >/dev/null; exit 1; fi; "
            f"sleep {READY_INTERVAL}; done")
    return ["/bin/sh", "-c", loop]


#: How the plain unit's Podman knows its container (systemd expands %t and %N).
CIDFILE = "%t/%N.cid"


def service_argv(sp: Spec, features: Features, hard: Hardening, start_timeout: int) -> list[str]:
    """``podman run`` for the plain user unit (Podman without Quadlet): in the
    foreground, removed when it stops, every flag one that ``features`` accepts. The
    Quadlet generator makes the same command from the same Spec on newer Podman."""
    argv = ["/usr/bin/podman", "run", "--rm", "--replace", "--name", sp.name,
            "--hostname", sp.hostname, f"--cidfile={CIDFILE}", "--userns=keep-id", "--user", "%U:%G",
            *hardening_argv(hard)]
    for key, value in sp.environment:
        argv += ["--env", f"{key}={value}"]
    argv += ["--secret", token_secret()] if features.secret else ["--env-file", sp.env_file]
    for vol in sp.volumes:
        argv += ["--volume", vol.spec()]
    for tmp in sp.tmpfs:
        argv += ["--tmpfs", tmp.spec()]
    for port in sp.ports:
        argv += ["--publish", port.spec()]
    argv += ["--stop-timeout", str(sp.stop_timeout)]
    argv += ["--health-cmd", sp.health_cmd, "--health-interval", "30s", "--health-timeout",
             "5s", "--health-retries", "3", "--health-start-period", f"{start_timeout}s"]
    if features.health_on_failure:
        argv += ["--health-on-failure", "kill"]
    if sp.image.startswith("localhost/"):
        argv.append("--pull=never")
    # k8s-file: the container's output reaches the journal once, through the attached
    # foreground podman (the unit's main process); `podman logs` reads the file.
    return [*argv, "--log-driver", "k8s-file", sp.image, *sp.command]
