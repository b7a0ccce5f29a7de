"""Podman: which version is installed, what its Quadlet understands, images."""

from __future__ import annotations

import dataclasses
import re

from .errors import CommandError, TheiaosError
from .run import Identity, run

Version = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class Features:
    """What the installed Podman's Quadlet generator accepts (reference: key by version)."""

    version: Version

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

    def label(self) -> str:
        return ".".join(map(str, self.version))


def parse_version(text: str) -> Version:
    """``podman version 5.4.2`` (or ``4.9.3-dev``) → (5, 4, 2)."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        raise TheiaosError(f"cannot read a Podman version from {text.strip()!r}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def detect() -> Features:
    """The installed Podman's features; asks the package database when podman cannot
    run (a chroot without /proc during an image build)."""
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


def image_exists(who: Identity, image: str) -> bool:
    proc = run(["podman", "image", "exists", image], as_user=who, check=False)
    if proc.returncode in (0, 1):
        return proc.returncode == 0
    raise CommandError(
        f"podman image exists {image} (as {who.name}) failed: "
        f"{(proc.stderr or '').strip() or proc.returncode}"
    )


def provide_hint(who: Identity, image: str) -> str:
    """The exact commands that put ``image`` into the service account's store."""
    return (
        f"the image {image} is not in {who.name}'s Podman store; provide it as {who.name}, "
        f"either\n"
        f"  sudo -u {who.name} -H sh -c 'cd && podman load' < theiaos-image.tar\n"
        f"or, from a TheiaOS checkout readable by {who.name}:\n"
        f"  sudo -u {who.name} -H podman build -t {image} /path/to/theiaos\n"
        f"then: sudo theiaosctl start"
    )
