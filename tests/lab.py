"""System test lab: a booted Debian 13 with systemd and rootless Podman.

The build machines run Debian 12 without systemd as PID 1 and with a hybrid
cgroup layout. The lab boots a cached Debian 13 root file system with
systemd-nspawn (pure cgroup v2) so that the package can be installed into a real
systemd + logind + rootless Podman host. See /work/shared/notes/lab.md.

Public API:
    ensure_rootfs() -> Path
    Lab(workdir, *, keep_root=False)  context manager; boots on enter, always stops on exit
        .run(*argv, ...) / .run_as(user, *argv, ...)   commands inside (nsenter)
        .put(src, dest, mode=0o644, owner="root")       host file -> lab
        .root, .host_path(path), .account(user), .wait_for_path(path), .stop()
    build_test_image(lab, user, ref="localhost/theiaos:local")   stand-in gateway image

CLI:  /usr/bin/python3 -m tests.lab rootfs   (build or reuse the cache, print its path)

Standard library only; must run as root.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import io
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import FrameType, TracebackType

# Bump when the way the cached tree is prepared changes (it is part of the cache key).
LAB_VERSION = "3"
MIRROR = "http://deb.debian.org/debian"
# Everything a lab needs, plus the runtime dependencies of theiaos-podman so that
# `apt-get install ./theiaos-podman_*.deb` inside the lab needs no network.
_COMMON: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "dbus-user-session",
    "systemd-container",
    "libpam-systemd",
    "podman",
    "uidmap",
    "crun",
    "python3",
    "iproute2",
    "ca-certificates",
    "curl",
    "python3-pystemd",
    "python3-jinja2",
    "python3-dotenv",
)


@dataclass(frozen=True)
class Release:
    """A Debian release the lab boots: what it installs and how it is prepared."""

    name: str  # for humans and cache file names
    suite: str
    include: tuple[str, ...]
    python: str  # the interpreter the stand-in image is made from
    # Packages downloaded (not installed) into the tree's apt cache from `download_from`:
    # a later `apt-get install -t SUITE` inside the lab then needs no network.
    download: tuple[str, ...] = ()
    download_from: str = ""
    storage_conf: str = ""  # lab-only containers storage.conf (empty: Podman's default)


# Debian 13: Podman 5.4 (Quadlet, pasta). dnf and rpm: the RPM lifecycle tests install
# our .rpm with dnf in the same lab.
# openssh-server and python3-apt: the fleet test drives three labs with Ansible over ssh
# (its apt module needs python3-apt); sshd is off until Lab.serve_ssh(port) turns it on.
DEBIAN13 = Release("Debian 13", "trixie", (*_COMMON, "passt", "dnf", "rpm", "openssh-server", "python3-apt"),
                   "python3.13")
# Debian 12: Podman 4.3 (no Quadlet, slirp4netns). Debian 13's podman is downloaded
# too, for the test that brings Podman past 4.4 the way a release upgrade does. Lab
# only: rootless Podman 4.3 falls back to the vfs driver in the lab (no fuse-overlayfs),
# which Podman 5 would refuse to take over; native overlay works here.
DEBIAN12 = Release("Debian 12", "bookworm", (*_COMMON, "slirp4netns"), "python3.11",
                   download=("podman", "passt", "crun", "conmon"), download_from="trixie",
                   storage_conf='[storage]\ndriver = "overlay"\nrunroot = "/run/containers/storage"\n'
                                'graphroot = "/var/lib/containers/storage"\n')
RELEASES = {"debian13": DEBIAN13, "debian12": DEBIAN12}

# Lab-only fixes for this host (lab.md section 4); never part of the package.
LAB_CONTAINERS_CONF = (
    "# theiaos lab only: the host binds `pids` to cgroup v1 and /proc/sys is read-only\n"
    "[containers]\n"
    "pids_limit = 0\n"
    "default_sysctls = []\n"
)
LAB_CONTAINERS_CONF_PATH = "etc/containers/containers.conf.d/50-lab.conf"
# The host's /dev/net/tun is 0600: rootless pasta and slirp4netns must open it. Fixed at
# boot, before lingering starts the user managers (a fix after boot loses that race).
LAB_TUN_UNIT = (
    "[Unit]\n"
    "Description=theiaos lab only: /dev/net/tun usable by rootless networking\n"
    "DefaultDependencies=no\n"
    "Before=sysinit.target\n"
    "\n"
    "[Service]\n"
    "Type=oneshot\n"
    "ExecStart=/bin/sh -c 'rm -f /dev/net/tun && mknod -m 666 /dev/net/tun c 10 200'\n"
)
LAB_TUN_UNIT_PATH = "etc/systemd/system/theiaos-lab-tun.service"
# The build machine's cgroup v1 hierarchies show through in /proc/self/cgroup inside the
# lab, at "/": Podman before 5.3 then finds a cgroup its user does not own and moves
# itself into a podman-PID.scope, as it never does on a host booted with pure cgroup v2
# (Debian 12's default). Lab.emulate_pure_cgroup_v2(user) gives that user the lab's
# cgroup root, at once and at every boot, so Podman 4.3 behaves as on such a host.
LAB_CGROUP_OWNER = "etc/theiaos-lab/cgroup-owner"
LAB_CGROUP_UNIT = (
    "[Unit]\n"
    "Description=theiaos lab only: the cgroup root for the user in /etc/theiaos-lab/cgroup-owner\n"
    "DefaultDependencies=no\n"
    "Before=sysinit.target\n"
    "ConditionPathExists=/etc/theiaos-lab/cgroup-owner\n"
    "\n"
    "[Service]\n"
    "Type=oneshot\n"
    "ExecStart=/bin/sh -c 'chown \"$(cat /etc/theiaos-lab/cgroup-owner)\" /sys/fs/cgroup'\n"
)
LAB_CGROUP_UNIT_PATH = "etc/systemd/system/theiaos-lab-cgroup.service"

BOOT_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
LAB_STAGING_DIR = "/var/tmp/.theiaos-lab-put"
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_DIR = Path(__file__).resolve().parent / "image"
GATEWAY_STUB = IMAGE_DIR / "gateway_stub.py"
IMAGE_REF = "localhost/theiaos:local"


class LabError(RuntimeError):
    """The lab could not be built, booted, driven or stopped."""


class LabCommandError(LabError):
    """A command inside (or for) the lab exited with a non-zero status."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"command failed with exit status {returncode}: {_quote(argv)}\n"
            f"--- stdout ---\n{stdout.rstrip()}\n--- stderr ---\n{stderr.rstrip()}"
        )


def _quote(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def _host_env() -> dict[str, str]:
    """A clean environment for host tools (no pyenv PATH leaking in)."""
    return {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8"}


def _host_tool(name: str) -> str:
    path = shutil.which(name, path=CONTAINER_PATH)
    if path is None:
        raise LabError(f"{name} not found on the host; install it (see lab.md section 1)")
    return path


def _run_host(argv: Sequence[str], *, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [_host_tool(argv[0]), *argv[1:]]
    try:
        proc = subprocess.run(cmd, env=_host_env(), text=True, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"command timed out after {timeout} s: {_quote(cmd)}") from exc
    if proc.returncode != 0:
        raise LabCommandError(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc


# --------------------------------------------------------------------------- rootfs


def cache_dir() -> Path:
    return Path(os.environ.get("THEIAOS_LAB_CACHE", "/var/cache/theiaos-lab"))


def rootfs_key(release: Release = DEBIAN13) -> str:
    spec = json.dumps(
        {
            "version": LAB_VERSION,
            "release": [release.suite, sorted(release.include), list(release.download),
                        release.download_from, release.storage_conf],
            "mirror": MIRROR,
            "containers_conf": LAB_CONTAINERS_CONF,
            "tun": LAB_TUN_UNIT,
            "cgroup": LAB_CGROUP_UNIT,
        },
        sort_keys=True,
    )
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (serialises concurrent cache builders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_rootfs(release: Release = DEBIAN13, say: Callable[[str], None] | None = None) -> Path:
    """Return the cached lab tree of `release`, building it once with mmdebstrap."""
    cache = cache_dir()
    final = cache / f"rootfs-{rootfs_key(release)}"
    if final.is_dir():
        return final
    with _locked(cache / ".rootfs.lock"):
        if final.is_dir():  # built by a concurrent run while we waited
            return final
        for stale in cache.glob(".rootfs-*.tmp"):  # left by an interrupted build (we hold the lock)
            _remove_tree(stale)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=cache))
        began = time.monotonic()
        if say:
            say(f"building the {release.name} lab's root file system with mmdebstrap "
                f"(about a minute, once; cached in {final})")
        try:
            _build_rootfs(tmp, release)
            tmp.rename(final)
        except BaseException:
            _remove_tree(tmp)
            raise
        if say:
            say(f"built {final} in {time.monotonic() - began:.0f} s")
    return final


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].encode().decode("unicode_escape")  # octal escapes like \040
        if mount_point == prefix or mount_point.startswith(prefix + "/"):
            found.append(mount_point)
    return found


def _remove_tree(path: Path) -> None:
    """rm -r `path`, refusing if anything is mounted below it (never delete through a mount)."""
    mounts = _mounts_below(path)
    if mounts:
        raise LabError(f"not removing {path}: still mounted below it: {', '.join(mounts)}; unmount them first")
    shutil.rmtree(path)


def _build_rootfs(target: Path, release: Release) -> None:
    target.chmod(0o755)
    hooks = []
    if release.download:
        # Into the apt cache, not installed; the other suite stays known to apt but
        # below the lab's own (APT::Default-Release), so `apt-get install ./x.deb` takes
        # the release's packages and only `-t SUITE` reaches the others.
        other = release.download_from
        hooks = [
            f'--customize-hook=echo "deb {MIRROR} {other} main" > "$1/etc/apt/sources.list.d/{other}.list"',
            f'--customize-hook=echo \'APT::Default-Release "{release.suite}";\' '
            '> "$1/etc/apt/apt.conf.d/50lab-release"',
            '--customize-hook=chroot "$1" apt-get update -q',
            f'--customize-hook=chroot "$1" apt-get install -y -q --download-only -t {other} '
            + " ".join(release.download),
        ]
    _run_host(
        [
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(release.include)}",
            # keep the package lists (`apt-get install ./x.deb` inside can resolve) and
            # the downloaded packages
            "--skip=cleanup/apt/lists",
            "--skip=cleanup/apt/cache",
            *hooks,
            release.suite,
            str(target),
            MIRROR,
        ],
        timeout=1800,
    )
    for rel, text in ((LAB_CONTAINERS_CONF_PATH, LAB_CONTAINERS_CONF), (LAB_TUN_UNIT_PATH, LAB_TUN_UNIT),
                      (LAB_CGROUP_UNIT_PATH, LAB_CGROUP_UNIT), ("etc/containers/storage.conf", release.storage_conf)):
        if not text:
            continue
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)
    wants = target / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("theiaos-lab-tun.service", "theiaos-lab-cgroup.service"):
        (wants / unit).symlink_to(f"../{unit}")
    # Labs share the build machine's network: no sshd on its port 22 unless asked for
    # (Lab.serve_ssh), and no host keys shared by every copy of the tree.
    for link in ("etc/systemd/system/multi-user.target.wants/ssh.service",
                 "etc/systemd/system/sshd.service", "etc/systemd/system/sockets.target.wants/ssh.socket"):
        if (target / link).is_symlink():
            (target / link).unlink()
    for key in (target / "etc/ssh").glob("ssh_host_*"):
        key.unlink()


# --------------------------------------------------------------------------- lab


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to nspawn if the test process dies (even by SIGKILL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


#: The build machine's cgroup v2 mount (its layout is hybrid: v1 controllers beside it,
#: so this tree has no controllers and no rule against processes in inner cgroups).
UNIFIED = Path("/sys/fs/cgroup/unified")


def _lab_cgroup_preexec(procs: Path) -> Callable[[], None]:
    """preexec_fn of nspawn: join the lab's own cgroup, then _die_with_parent. nspawn
    puts the container under its caller's cgroup (CALLER/payload): labs started from
    one process would share one tree, each lab's systemd would see (and wait for) the
    others' units, and the first to power off would kill the others' payload."""
    def preexec() -> None:
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
        _die_with_parent()
    return preexec


def _remove_cgroup(path: Path) -> list[str]:
    """Kill what is left in a stopped lab's cgroup (cgroup.kill: only processes
    started for this lab can be in it) and remove it, innermost first; what could not
    be removed, with the reason."""
    if not path.is_dir():
        return []
    with contextlib.suppress(OSError):  # a kernel before 5.14: the rmdir below says what is left
        (path / "cgroup.kill").write_text("1")
    left = []
    for _ in range(50):
        left = []
        for sub in sorted((d for d in path.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
            try:
                sub.rmdir()
            except OSError as exc:
                left.append(f"{sub}: {exc.strerror}")
        try:
            path.rmdir()
            return []
        except OSError as exc:
            left.append(f"{path}: {exc.strerror}")
        time.sleep(0.1)  # killed processes leave their cgroup when they are reaped
    return left


class Lab:
    """A booted copy of the cached lab tree.

    with Lab(tmp_path) as lab:
        lab.run("systemctl", "is-system-running")
    """

    def __init__(self, workdir: Path, *, keep_root: bool = False, release: Release = DEBIAN13) -> None:
        """`keep_root` keeps workdir/root after stopping (for debugging); the console log always stays."""
        self.release = release
        self.workdir = Path(workdir)
        self.keep_root = keep_root
        self.root = self.workdir / "root"
        self.console_log = self.workdir / "console.log"
        self.machine = f"theiaos-lab-{secrets.token_hex(4)}"
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._init_pid: int | None = None
        self._stop_lock = threading.Lock()
        self._owns_root = False  # True once __enter__ started copying the tree to self.root
        # The lab's own cgroup: nspawn starts in it, and so does every command entered
        # with nsenter (outside the container's cgroup namespace, as from its parent).
        self.cgroup = UNIFIED / self.machine
        self._sigterm_installed = False
        #: How long the last stop's power-off took (SIGTERM to nspawn's exit), in seconds.
        self.last_poweroff = 0.0

    # ---- lifecycle

    def __enter__(self) -> Lab:
        rootfs = ensure_rootfs(self.release)
        if self.root.exists():
            raise LabError(f"{self.root} already exists; give each Lab a fresh workdir")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._owns_root = True
        try:
            _run_host(["cp", "-a", "--reflink=auto", str(rootfs), str(self.root)], timeout=600)
        except BaseException:
            self.stop()
            raise
        self._start()
        return self

    def _start(self) -> None:
        """Boot the root, wait until systemd runs, apply the lab's quirks; on any failure
        stop what was started."""
        try:
            self._boot()
            self._wait_until_running()
            self._apply_runtime_quirks()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _boot(self) -> None:
        env = _host_env()
        env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        argv = [
            _host_tool("systemd-nspawn"),
            "-D", str(self.root),
            f"--machine={self.machine}",
            "--register=no",
            "--keep-unit",
            "-b",
            "--console=pipe",
            "--system-call-filter=@keyring bpf",
        ]  # fmt: skip
        # fallbacks first: an interruption right after Popen must still stop the lab
        atexit.register(self.stop)
        self._install_sigterm_handler()
        self.cgroup.mkdir(exist_ok=True)
        with open(self.console_log, "wb") as log:
            self._nspawn = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # setsid: own session and process group
                preexec_fn=_lab_cgroup_preexec(self.cgroup / "cgroup.procs"),
            )

    def _install_sigterm_handler(self) -> None:
        """Treat SIGTERM like Ctrl-C, so that __exit__ (pytest's teardown) and atexit stop the lab.

        SIGKILL of the test process is covered by PR_SET_PDEATHSIG on nspawn.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt(f"signal {signum}: stopping lab {self.machine}")

        signal.signal(signal.SIGTERM, on_sigterm)
        self._sigterm_installed = True

    def _restore_sigterm_handler(self) -> None:
        if not self._sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self._sigterm_installed = False

    @property
    def nspawn_pid(self) -> int:
        if self._nspawn is None:
            raise LabError("the lab is not booted")
        return self._nspawn.pid

    @property
    def init_pid(self) -> int:
        if self._init_pid is None:
            raise LabError("the lab is not booted")
        return self._init_pid

    def _console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    def _boot_failure(self, what: str) -> LabError:
        return LabError(
            f"lab {self.machine}: {what}\n--- console ({self.console_log}), last lines ---\n"
            f"{self._console_tail()}{self._diagnostics()}"
        )

    def _diagnostics(self) -> str:
        """Failed units and the journal tail from inside, if the container can be entered."""
        if self._init_pid is None or self._nspawn is None or self._nspawn.poll() is not None:
            return ""
        report = []
        for argv in (
            ("systemctl", "--failed", "--no-pager"),
            ("systemctl", "list-jobs", "--no-pager"),
            ("journalctl", "-b", "--no-pager", "-n", "40"),
        ):
            proc = self.run(*argv, check=False, timeout=30)
            report.append(f"\n--- {' '.join(argv)} ---\n{(proc.stdout + proc.stderr).rstrip()}")
        return "".join(report)

    def _find_init_pid(self) -> int | None:
        """The container's systemd: a child of nspawn whose command is `systemd`."""
        for child in _children(self.nspawn_pid):
            if _comm(child) == "systemd":
                return child
        return None

    def _wait_until_running(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        state = "(no answer yet)"
        while time.monotonic() < deadline:
            returncode = self._nspawn.poll() if self._nspawn is not None else None
            if returncode is not None:
                raise self._boot_failure(f"systemd-nspawn exited with status {returncode}")
            if self._init_pid is None:
                self._init_pid = self._find_init_pid()
            if self._init_pid is not None:
                proc = self.run("systemctl", "is-system-running", check=False, timeout=30)
                state = proc.stdout.strip() or proc.stderr.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.5)
        raise self._boot_failure(f"not running after {BOOT_TIMEOUT:.0f} s (systemctl is-system-running: {state})")

    def _apply_runtime_quirks(self) -> None:
        # (/dev/net/tun: fixed at boot by the lab's theiaos-lab-tun.service.)
        # Podman's user units wait for network-online.target, never reached by itself here.
        self.run("systemctl", "start", "network-online.target")

    def stop(self) -> None:
        """Power the lab off by PID (SIGTERM to nspawn), SIGKILL only if it hangs. Idempotent."""
        with self._stop_lock:
            proc = self._nspawn
            if proc is not None:
                t0 = time.monotonic()
                self._power_off(proc)
                self.last_poweroff = time.monotonic() - t0  # the guest's shutdown alone
                self._nspawn = None
                self._init_pid = None
            for left in _remove_cgroup(self.cgroup):
                print(f"lab {self.machine}: cgroup not removed: {left}", file=sys.stderr)
            atexit.unregister(self.stop)
            self._restore_sigterm_handler()
            if self._owns_root and not self.keep_root and self.root.exists():
                _remove_tree(self.root)
                self._owns_root = False

    def power_cycle(self) -> float:
        """Power the lab off (by PID, as stop does) and boot the same root again: a reboot
        with nobody touching anything in between. Returns how long the power-off took
        (from SIGTERM to nspawn's exit: the guest's whole shutdown)."""
        with self._stop_lock:
            proc = self._nspawn
            if proc is None:
                raise LabError("the lab is not booted")
            t0 = time.monotonic()
            self._power_off(proc)
            took = time.monotonic() - t0
            self._nspawn = None
            self._init_pid = None
            left = _remove_cgroup(self.cgroup)  # as after a real power-off: nothing is left
            if left:
                raise LabError(f"lab {self.machine}: cgroup not removed after power-off: {'; '.join(left)}")
        self._start()
        return took

    def power_cut(self) -> None:
        """Every process of the lab killed at once (its cgroup's cgroup.kill), as a power
        cut leaves a host, then the same root booted again."""
        with self._stop_lock:
            proc = self._nspawn
            if proc is None:
                raise LabError("the lab is not booted")
            (self.cgroup / "cgroup.kill").write_text("1")
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill(proc)
            self._nspawn = None
            self._init_pid = None
            left = _remove_cgroup(self.cgroup)  # nspawn's empty payload/supervisor cgroups
            if left:
                raise LabError(f"lab {self.machine}: cgroup not removed after the power cut: {'; '.join(left)}")
        self._start()

    def _power_off(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # nspawn powers the container off
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill(proc)

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        print(
            f"lab {self.machine}: nspawn {proc.pid} did not stop within {STOP_TIMEOUT:.0f} s; sending SIGKILL",
            file=sys.stderr,
        )
        init_pid = self._init_pid
        if init_pid is not None and init_pid in _children(proc.pid):
            os.kill(init_pid, signal.SIGKILL)  # kills the container's whole PID namespace
        os.killpg(proc.pid, signal.SIGKILL)  # nspawn was started with setsid: pgid == pid
        proc.wait(timeout=STOP_TIMEOUT)

    # ---- driving it

    def command(self, *argv: str, env: Mapping[str, str] | None = None) -> list[str]:
        """The host command line that runs argv as root inside the lab with a clean
        environment plus ``env``, for a caller that runs it itself (a terminal)."""
        full_env = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "HOME": "/root", **(env or {})}
        return [*self._nsenter(), "env", "-i", *(f"{k}={v}" for k, v in full_env.items()), *argv]

    def _nsenter(self) -> list[str]:
        """Enter the lab from its own cgroup (the host's /bin/sh joins it, then execs
        nsenter): from the host's root cgroup, which is no longer the container's
        parent, logind refuses the caller ("Could not enable linger: Protocol driver
        not attached")."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.cgroup / "cgroup.procs"),
                _host_tool("nsenter"), "-t", str(self.init_pid), "-a", "--"]

    def run(
        self,
        *argv: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv as root inside the lab (clean environment plus `env`)."""
        full_env = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "HOME": "/root"}
        full_env.update(env or {})
        return self._exec([*self._nsenter(), *argv], full_env, check=check, input=input, timeout=timeout)

    def run_as(
        self,
        user: str,
        *argv: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the lab as `user`, in its home, with its XDG_RUNTIME_DIR."""
        acct = self.account(user)
        runtime_dir = f"/run/user/{acct.uid}"
        user_env = {
            "PATH": CONTAINER_PATH,
            "LANG": "C.UTF-8",
            "HOME": acct.home,
            "USER": acct.name,
            "LOGNAME": acct.name,
            "XDG_RUNTIME_DIR": runtime_dir,
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime_dir}/bus",
        }
        user_env.update(env or {})
        inner = [
            "setpriv", f"--reuid={acct.uid}", f"--regid={acct.gid}", "--init-groups", "--",
            "env", "-i", f"--chdir={acct.home}", *(f"{k}={v}" for k, v in user_env.items()),
            *argv,
        ]  # fmt: skip
        return self._exec(
            [*self._nsenter(), *inner], {"PATH": CONTAINER_PATH}, check=check, input=input, timeout=timeout
        )

    def _exec(
        self,
        cmd: list[str],
        env: Mapping[str, str],
        *,
        check: bool,
        input: str | None,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(
                cmd,
                env=dict(env),
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                text=True,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"lab {self.machine}: timed out after {timeout} s: {_quote(cmd)}") from exc
        if check and proc.returncode != 0:
            raise LabCommandError(cmd, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def account(self, user: str) -> Account:
        """Look `user` up in the lab's /etc/passwd."""
        for line in (self.root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) == 7 and fields[0] == user:
                return Account(fields[0], int(fields[2]), int(fields[3]), fields[5])
        raise LabError(f"lab {self.machine}: no user {user!r} in /etc/passwd")

    def host_path(self, path: str) -> Path:
        """The host path of the lab's absolute `path` on its root file system.

        Only for paths on the root file system: /run, /tmp and /dev are the lab's own
        mounts and are not visible here. No symlinks are followed.
        """
        pure = PurePosixPath(path)
        if not pure.is_absolute() or ".." in pure.parts:
            raise LabError(f"need an absolute path without '..' inside the lab, got {path!r}")
        return self.root.joinpath(*pure.parts[1:])

    def put(self, src: Path, dest: str, mode: int = 0o644, owner: str = "root") -> None:
        """Copy the host file `src` to `dest` inside the lab (any mount), owned by `owner`."""
        acct = self.account(owner)
        staging = self.host_path(LAB_STAGING_DIR)
        staging.mkdir(mode=0o700, exist_ok=True)
        fd, staged = tempfile.mkstemp(dir=staging)
        os.close(fd)
        try:
            shutil.copyfile(src, staged)
            inside = str(PurePosixPath(LAB_STAGING_DIR) / Path(staged).name)
            self.run(
                "install", "-T", f"--mode={mode:o}", f"--owner={acct.uid}", f"--group={acct.gid}", inside, dest
            )  # fmt: skip
        finally:
            os.unlink(staged)

    def emulate_pure_cgroup_v2(self, user: str) -> None:
        """Give `user` the lab's cgroup root now and at every boot (LAB_CGROUP_UNIT)."""
        owner = self.host_path("/" + LAB_CGROUP_OWNER)
        owner.parent.mkdir(exist_ok=True)
        owner.write_text(f"{user}\n")
        self.run("chown", user, "/sys/fs/cgroup")

    def serve_ssh(self, port: int, authorized_key: str) -> None:
        """sshd on 127.0.0.1:`port` (the build machine's network), root's login by
        `authorized_key` only; host keys made for this lab."""
        conf = ("# theiaos lab only\n"
                f"Port {port}\nListenAddress 127.0.0.1\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUseDNS no\n")
        self.run("sh", "-c", "mkdir -p /etc/ssh/sshd_config.d && cat > /etc/ssh/sshd_config.d/50-lab.conf "
                 "&& install -d -m 700 /root/.ssh && ssh-keygen -A", input=conf)
        self.run("sh", "-c", "cat > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys",
                 input=authorized_key.strip() + "\n")
        self.run("systemctl", "start", "ssh.service")

    def wait_for_path(self, path: str, timeout: float = 60) -> None:
        """Wait (bounded) until `path` exists inside the lab (any mount)."""
        deadline = time.monotonic() + timeout
        while self.run("test", "-e", path, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise LabError(f"lab {self.machine}: {path} did not appear within {timeout:.0f} s")
            time.sleep(0.2)


def host_address() -> str:
    """The build machine's address that a lab's rootless containers reach as
    ``host.containers.internal``: the address of the interface of the default route,
    which pasta (Podman 5) copies into the container and maps 169.254.1.2 back to. A
    server the containers must reach listens there (loopback is not reachable)."""
    routes = _run_host(["ip", "-4", "-o", "route", "show", "default"], timeout=10).stdout.split()
    if "dev" not in routes:
        raise LabError("no default route on the build machine: no host address for the lab's containers")
    dev = routes[routes.index("dev") + 1]
    addrs = _run_host(["ip", "-4", "-o", "addr", "show", "dev", dev], timeout=10).stdout.split()
    if "inet" not in addrs:
        raise LabError(f"no IPv4 address on {dev}")
    return addrs[addrs.index("inet") + 1].split("/")[0]


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc/*/stat."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we looked
        # field 2 (comm) may contain spaces and parentheses: split after the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry))
    return found


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


# --------------------------------------------------------------------------- test image

# Bump when the image layout below changes (part of the image cache key).
IMAGE_LAYOUT_VERSION = "2"
# dash as /bin/sh: podman runs a string HealthCmd= / --health-cmd with `/bin/sh -c`.
IMAGE_SHELL = "/usr/bin/dash"
IMAGE_STDLIB_SKIP = frozenset(
    {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "pydoc_data", "lib2to3", "site-packages", "dist-packages"}
)
IMAGE_IMPORT_CHANGES: tuple[str, ...] = (
    "WORKDIR /app",
    "ENV PATH=/usr/local/bin:/usr/bin:/bin",
    "ENV HOME=/home/node",
    "USER node",
    "EXPOSE 18789",
    'CMD ["node","dist/index.js","gateway","--bind","lan","--port","18789"]',
)
IMAGE_PASSWD = "root:x:0:0:root:/root:/usr/sbin/nologin\nnode:x:1000:1000::/home/node:/usr/sbin/nologin\n"
IMAGE_GROUP = "root:x:0:\nnode:x:1000:\n"
IMAGE_INDEX_JS = "// placeholder: /usr/local/bin/node is the theiaos test stand-in (tests/image/gateway_stub.py)\n"
IMAGE_TAR_IN_LAB = "/var/tmp/theiaos-test-image.tar"
_USR_MERGED = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}


def build_test_image(lab: Lab, user: str, ref: str = IMAGE_REF) -> None:
    """Put the stand-in gateway image into `user`'s rootless Podman store inside `lab`."""
    tar = _cached_image_tar(lab)
    lab.put(tar, IMAGE_TAR_IN_LAB)
    try:
        changes = [arg for change in IMAGE_IMPORT_CHANGES for arg in ("--change", change)]
        lab.run_as(user, "podman", "import", "--quiet", *changes, IMAGE_TAR_IN_LAB, ref, timeout=300)
    finally:
        lab.run("rm", "-f", IMAGE_TAR_IN_LAB)


def _cached_image_tar(lab: Lab) -> Path:
    digest = hashlib.sha256()
    digest.update(f"{IMAGE_LAYOUT_VERSION}\0{rootfs_key(lab.release)}\0".encode())
    digest.update(GATEWAY_STUB.read_bytes())
    cache = cache_dir()
    final = cache / f"image-{digest.hexdigest()[:16]}.tar"
    if final.is_file():
        return final
    with _locked(cache / ".image.lock"):
        if final.is_file():
            return final
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=cache)
        try:
            with os.fdopen(fd, "wb") as fh:
                _write_image_tar(lab, fh)
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, final)
        except BaseException:
            os.unlink(tmp_name)
            raise
    return final


def _image_files(lab: Lab) -> dict[str, Path]:
    """Map image path -> host file: python, its libraries, the loader, the stdlib."""
    files: dict[str, Path] = {}
    python, stdlib_dir = f"/usr/bin/{lab.release.python}", f"/usr/lib/{lab.release.python}"
    stdlib = lab.host_path(stdlib_dir)
    extensions = sorted(str(PurePosixPath(stdlib_dir) / p.relative_to(stdlib)) for p in stdlib.rglob("*.so"))
    for path in (*_ldd(lab, [python, IMAGE_SHELL, *extensions]), python, IMAGE_SHELL):
        files[_usr_merged(path)] = _resolved_file(lab.root, path)
    for dirpath, dirnames, filenames in os.walk(stdlib):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not (here == stdlib and d in IMAGE_STDLIB_SKIP))
        for name in filenames:
            if ".opt-" in name:  # optimised byte code is never used (no -O)
                continue
            host = here / name
            image_path = str(PurePosixPath(stdlib_dir) / host.relative_to(stdlib))
            resolved = _resolve_in_root(lab.root, image_path, missing_ok=True)
            if resolved is not None:  # Debian's sitecustomize.py points into /etc: leave it out
                files[image_path] = resolved
    return files


def _ldd(lab: Lab, binaries: Sequence[str]) -> set[str]:
    """Absolute paths of the shared objects (and the loader) the binaries need."""
    out = lab.run("ldd", *binaries).stdout
    libs = set()
    for line in out.splitlines():
        line = line.strip()
        if "not found" in line:
            raise LabError(f"ldd inside the lab reports a missing library: {line}")
        path = line.split("=>", 1)[-1].strip().split(" (", 1)[0]
        if path.startswith("/") and not path.endswith(":"):
            libs.add(path)
    return libs


def _usr_merged(path: str) -> str:
    """Where `path` lives in the image: /lib/... -> /usr/lib/... (the image is usr-merged)."""
    parts = PurePosixPath(path).parts
    if len(parts) > 2 and parts[1] in _USR_MERGED:
        return str(PurePosixPath("/", _USR_MERGED[parts[1]], *parts[2:]))
    return path


def _resolved_file(root: Path, path: str) -> Path:
    resolved = _resolve_in_root(root, path)
    if resolved is None:
        raise LabError(f"{path} is not a file in {root}")
    return resolved


def _resolve_in_root(root: Path, path: str, *, missing_ok: bool = False) -> Path | None:
    """Follow symlinks of the lab's absolute `path` without leaving `root`; return the host file."""
    parts = list(PurePosixPath(path).parts[1:])
    current = PurePosixPath("/")
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        host = root.joinpath(*candidate.parts[1:])
        if host.is_symlink():
            hops += 1
            if hops > 40:
                raise LabError(f"too many symlinks resolving {path} in {root}")
            target = PurePosixPath(os.readlink(host))
            parts = [*target.parts[1:], *parts] if target.is_absolute() else [*target.parts, *parts]
            current = PurePosixPath("/") if target.is_absolute() else current
            continue
        current = candidate
    host = root.joinpath(*current.parts[1:])
    if host.is_file():
        return host
    if missing_ok:
        return None
    raise LabError(f"{path} is not a file in {root}")


def _write_image_tar(lab: Lab, fh: io.BufferedWriter) -> None:
    with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
        image = _ImageTar(tar)
        for name, target in sorted(_USR_MERGED.items()):
            image.symlink(name, target)
        image.directory("tmp", 0o1777)
        image.directory("home/node", 0o755, owner=1000)
        image.symlink("usr/bin/python3", lab.release.python)
        image.symlink("usr/bin/sh", "dash")
        image.data("etc/passwd", IMAGE_PASSWD.encode(), 0o644)
        image.data("etc/group", IMAGE_GROUP.encode(), 0o644)
        image.data("app/dist/index.js", IMAGE_INDEX_JS.encode(), 0o644)
        image.data("usr/local/bin/node", GATEWAY_STUB.read_bytes(), 0o755)
        for image_path, host in sorted(_image_files(lab).items()):
            image.file(image_path.lstrip("/"), host)


class _ImageTar:
    """Writes root-owned, reproducible entries; parent directories (0755) come first."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.dirs: set[str] = set()

    def _entry(self, name: str, kind: bytes, mode: int, owner: int = 0, mtime: int = 0) -> tarfile.TarInfo:
        parent = str(PurePosixPath(name).parent)
        if parent != "." and parent not in self.dirs:
            self.directory(parent, 0o755)
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid = info.gid = owner
        info.uname = info.gname = "root" if owner == 0 else ""
        info.mtime = mtime
        return info

    def directory(self, name: str, mode: int, owner: int = 0) -> None:
        info = self._entry(name, tarfile.DIRTYPE, mode, owner)
        self.dirs.add(name)
        self.tar.addfile(info)

    def symlink(self, name: str, target: str) -> None:
        info = self._entry(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def data(self, name: str, data: bytes, mode: int) -> None:
        info = self._entry(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def file(self, name: str, host: Path) -> None:
        """Add `host` dereferenced as `name`, keeping mode and mtime (pyc files check the mtime)."""
        stat = host.stat()
        info = self._entry(name, tarfile.REGTYPE, stat.st_mode & 0o7777, mtime=int(stat.st_mtime))
        info.size = stat.st_size
        with open(host, "rb") as src:
            self.tar.addfile(info, src)


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.lab", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    rootfs = verbs.add_parser("rootfs", help="build (or reuse) the cached lab root file systems and print their paths")
    rootfs.add_argument("releases", nargs="*", choices=sorted(RELEASES), default=["debian13"])
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("tests.lab: must run as root (mmdebstrap, systemd-nspawn)", file=sys.stderr)
        return 1
    try:
        if args.verb == "rootfs":
            for name in args.releases:
                print(ensure_rootfs(RELEASES[name], say=lambda line: print(f"tests.lab: {line}", flush=True)))
    except LabError as exc:
        print(f"tests.lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
