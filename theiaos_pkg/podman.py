"""Podman: which version is installed, what its Quadlet understands, images."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, BinaryIO, NamedTuple

from .errors import CommandError, TheiaosError
from .run import Identity, run, stream

Version = tuple[int, int, int]


class Features(NamedTuple):
    """What the installed Podman's Quadlet generator accepts (reference: key by version),
    and which cgroup controllers the host has (resource limits need them)."""

    version: Version
    controllers: frozenset[str] = frozenset()

    def at_least(self, major: int, minor: int) -> bool:
        return self.version[:2] >= (major, minor)

    @property
    def quadlet(self) -> bool:
        return self.at_least(4, 4)

    @property
    def userns_key(self) -> bool:
        """``UserNS=`` exists from 4.5; 4.4 has ``RemapUsers=`` instead."""
        return self.at_least(4, 5)

    @property
    def health(self) -> bool:
        """HealthCmd and HealthOnFailure exist from 4.5."""
        return self.at_least(4, 5)

    @property
    def pull_key(self) -> bool:
        return self.at_least(4, 6)

    @property
    def ready_check(self) -> bool:
        """The unit turns active only once the container's health check passes, checked
        by a process systemd runs and tracks (ExecStartPost, container.ready_argv):
        wherever the unit carries a health check, the plain unit (``--health-cmd``) and
        Quadlet from 4.5 (``HealthCmd=``). Not Quadlet's ``Notify=healthy`` (5.0): its
        READY=1 comes from a short-lived podman process, and systemd drops a message
        whose sender has exited before it is read (sd_notify(3), NotifyAccess=)."""
        return self.health or not self.quadlet

    @property
    def health_startup(self) -> bool:
        """HealthStartup* keys and ``--health-startup-*`` (4.5): a 1 s check until the
        gateway first answers, so health turns "healthy" within a second of it."""
        return self.at_least(4, 5)

    @property
    def tmpfs_key(self) -> bool:
        """Quadlet ``Tmpfs=`` exists from 4.5; 4.4 passes ``--tmpfs`` in PodmanArgs."""
        return self.at_least(4, 5)

    @property
    def hostname_key(self) -> bool:
        """Quadlet ``HostName=`` exists from 4.6; before, ``--hostname`` in PodmanArgs."""
        return self.at_least(4, 6)

    @property
    def stop_timeout_key(self) -> bool:
        """Quadlet ``StopTimeout=`` exists from 5.0; before, ``--stop-timeout`` in PodmanArgs."""
        return self.at_least(5, 0)

    @property
    def pids_key(self) -> bool:
        return self.at_least(4, 7)

    @property
    def memory_key(self) -> bool:
        return self.at_least(5, 5)

    @property
    def auto_update_key(self) -> bool:
        return self.at_least(4, 6)

    def limit(self, controller: str) -> bool:
        """Whether a limit through ``controller`` (memory, pids) can be applied here."""
        return controller in self.controllers

    @property
    def health_on_failure(self) -> bool:
        """``podman run --health-on-failure`` (the plain unit's flag) exists from 4.5."""
        return self.at_least(4, 5)

    @property
    def secret(self) -> bool:
        """The token as a Podman secret (Quadlet ``Secret=`` from 4.5; ``podman secret
        create --replace``, which keeps the swap atomic, from 4.7). Before that the
        token reaches the container through ``EnvironmentFile=``."""
        return self.at_least(4, 7)

    def label(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def unit_kind(self) -> str:
        """How the gateway runs under systemd: "quadlet" (4.4 and later), else "plain"
        (a user unit running `podman run` in the foreground)."""
        return "quadlet" if self.quadlet else "plain"


def parse_version(text: str) -> Version:
    """``podman version 5.4.2`` (or ``4.9.3-dev``) → (5, 4, 2)."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        raise TheiaosError(f"cannot read a Podman version from {text.strip()!r}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def controllers() -> frozenset[str]:
    """The host's cgroup v2 controllers (no memory or pids controller: no such limit can
    be set; a container asking for one fails to start)."""
    from . import files

    raw = files.read_bytes("/sys/fs/cgroup/cgroup.controllers", files.ROOT, files.SMALL)
    return frozenset(raw.decode("ascii", "replace").split()) if raw else frozenset()


def detect() -> Features:
    """The installed Podman's features; asks the package database when podman cannot
    run (a chroot without /proc during an image build)."""
    return _version()._replace(controllers=controllers())


PODMAN = "/usr/bin/podman"


def _version() -> Features:
    """The version of /usr/bin/podman, remembered (in the package's state) for as long as
    that file is the same file: a podman process costs tens of milliseconds."""
    from . import files, state

    st = files.lstat(PODMAN) if os.geteuid() == 0 else None
    key = f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}" if st else ""
    cached = (state.read(state.PODMAN_VERSION) or "").split() if key else []
    if len(cached) == 2 and cached[0] == key:
        return Features(parse_version(cached[1]))
    found = _ask_version()
    if key and st is not None:
        state.write(state.PODMAN_VERSION, f"{key} {found.label()}\n")
    return found


def _ask_version() -> Features:
    try:
        return Features(parse_version(run(["podman", "--version"]).stdout))
    except CommandError as first:
        for argv in (["dpkg-query", "-W", "-f=${Version}", "podman"],
                     ["rpm", "-q", "--qf", "%{VERSION}", "podman"]):
            try:
                proc = run(argv, check=False)
            except CommandError:
                continue
            if proc.returncode == 0 and proc.stdout.strip():
                return Features(parse_version(proc.stdout))
        raise first


def provide_hint(who: Identity, image: str) -> str:
    """The exact commands that put ``image`` into the service account's store."""
    return (
        f"the image {image} is not in {who.name}'s Podman store; provide it with\n"
        f"  sudo theiaosctl image build /path/to/theiaos   (or: image load FILE, image pull REF)\n"
        f"or with Podman itself, as {who.name}:\n"
        f"  sudo -u {who.name} -H podman build -t {image} /path/to/theiaos\n"
        f"  sudo -u {who.name} -H sh -c 'cd && podman load' < theiaos-image.tar\n"
        f"then: sudo theiaosctl start"
    )


def image_id(who: Identity, image: str) -> str | None:
    """The id of ``image`` in the account's store, None when absent (from Podman's own
    files when they can be read, else podman image inspect)."""
    from . import podstore

    answered, found = podstore.image_id(who, image)
    if answered:
        return found
    proc = run(["podman", "image", "inspect", "--format", "{{.Id}}", image],
               as_user=who, check=False)
    if proc.returncode != 0:
        if "image not known" in proc.stderr or "no such image" in proc.stderr.lower():
            return None
        raise CommandError(f"podman image inspect {image} (as {who.name}) failed: "
                           f"{proc.stderr.strip()}")
    return proc.stdout.strip() or None


def inspect_container(who: Identity, name: str) -> dict[str, Any] | None:
    """``podman container inspect`` of ``name``, None when there is no such container."""
    proc = run(["podman", "container", "inspect", name], as_user=who, check=False)
    if proc.returncode != 0:
        if "no such container" in proc.stderr.lower():
            return None
        raise CommandError(f"podman container inspect {name} (as {who.name}) failed: "
                           f"{proc.stderr.strip()}")
    data = json.loads(proc.stdout)
    return data[0] if data else None


def running_image(who: Identity, name: str) -> str | None:
    """The image id the container ``name`` was created from, None without a container."""
    from . import podstore

    answered, found = podstore.container_image(who, name)
    if answered:
        return found
    info = inspect_container(who, name)
    image = info.get("Image") if info else None
    return image if isinstance(image, str) else None


#: The gateway token as a Podman secret in the account's store (type=env), so that it
#: is in neither `podman inspect`, Podman's database nor any command line.
SECRET = "theiaos-gateway-token"
#: The secret carries the SHA-256 of its value as a label: setup compares it with
#: `.env` without ever reading the secret back.
SECRET_LABEL = "io.theiaos.token-sha256"


def secret_digest(who: Identity) -> str | None:
    """The token digest the account's secret was made with; None when it has none."""
    from . import podstore

    answered, found = podstore.secret_label(who, SECRET, SECRET_LABEL)
    if answered:
        return found
    proc = run(["podman", "secret", "inspect", "--format",
                f'{{{{index .Spec.Labels "{SECRET_LABEL}"}}}}', SECRET], as_user=who, check=False)
    if proc.returncode != 0:
        if "no such secret" in proc.stderr.lower():
            return None
        raise CommandError(f"podman secret inspect {SECRET} (as {who.name}) failed: "
                           f"{proc.stderr.strip()}")
    return proc.stdout.strip() or None


def put_secret(who: Identity, token: str, digest: str) -> None:
    """Create or replace the token secret; the value goes through a pipe, never argv."""
    run(["podman", "secret", "create", "--replace", "--label", f"{SECRET_LABEL}={digest}",
         SECRET, "-"], as_user=who, input=token)


def cgroups_version(who: Identity) -> str:
    return run(["podman", "info", "--format", "{{.Host.CgroupsVersion}}"],
               as_user=who).stdout.strip()


def build(who: Identity, image: str, context: str) -> None:
    """``podman build`` in the account's own store (never root's); Podman's progress is
    relayed as it comes."""
    if run(["test", "-r", f"{context}/Dockerfile"], as_user=who, check=False).returncode:
        raise TheiaosError(
            f"{who.name} cannot read {context}/Dockerfile",
            f"put the checkout where {who.name} can read it (for example a copy under "
            f"/var/tmp with chmod -R a+rX) and run the build again",
        )
    if stream(["podman", "build", "--format", "docker", "-t", image, context], as_user=who):
        raise CommandError(f"podman build -t {image} {context} (as {who.name}) failed")


def pull(who: Identity, ref: str, image: str) -> None:
    """``podman pull REF`` (any transport: registry, docker-archive:, oci-archive:, …),
    then tag what it pulled as the gateway's image."""
    proc = run(["podman", "pull", ref], as_user=who, timeout=None, relay=sys.stderr.buffer)
    lines = proc.stdout.split()
    if not lines:
        raise CommandError(f"podman pull {ref} (as {who.name}) printed no image id")
    if ref != image:
        run(["podman", "tag", lines[-1], image], as_user=who)


def loaded_names(output: str) -> list[str]:
    """The image names ``podman load`` reports ("Loaded image: a" or "Loaded image(s): a,b")."""
    names: list[str] = []
    for line in output.splitlines():
        if line.startswith("Loaded image"):
            names += [n.strip() for n in line.split(":", 1)[1].split(",") if n.strip()]
    return names


def load(who: Identity, archive: BinaryIO, image: str) -> list[str]:
    """``podman load`` of an archive root reads and pipes in (no temp file, and the
    account's process never holds root's descriptor); tags the first image it holds as
    ``image`` when the archive does not name it."""
    proc = run(["podman", "load"], as_user=who, feed=archive, timeout=None,
               relay=sys.stderr.buffer)  # Podman's progress, as it comes
    names = loaded_names(proc.stdout)
    if not names:
        raise CommandError(f"podman load (as {who.name}) loaded no image: {proc.stdout.strip()}")
    if image not in names:
        run(["podman", "tag", names[0], image], as_user=who)
    return names
