"""The last released packages, for the upgrade tests: as built then, or rebuilt from
the repository's own history when they are not at hand.

    python3 -m tests.releases DIR

The file `releases` (repository root) records each released version and the commit its
packages were built from. DIR (the Makefile passes ../shared/releases) holds them as
built then: DIR/VERSION/theiaos-podman_VERSION-1_all.deb and the .rpm. When the newest
version there is missing (a plain `git clone`), its commit is exported with `git
archive` and built with its own Makefile (`make deb rpm`), and the two packages are
cached beside the lab's root file systems. Prints the folder that holds them (the last
line of output) and says which it used. Standard library only; runs as root.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .lab import _locked, cache_dir

REPO = Path(__file__).resolve().parent.parent
_LINE = re.compile(r"(\d+\.\d+\.\d+)\s+([0-9a-f]{40})")


def recorded(text: str) -> dict[str, str]:
    """version -> commit from the `releases` file's text (comments and blank lines
    skipped); a line of any other shape is an error naming it."""
    found: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = _LINE.fullmatch(line)
        if not m:
            raise SystemExit(f"releases:{n}: expected 'VERSION COMMIT' (40 hex digits), got {line!r}")
        found[m[1]] = m[2]
    if not found:
        raise SystemExit("releases: no released version recorded")
    return found


def newest(versions: dict[str, str]) -> str:
    return max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))


def files(version: str) -> tuple[str, str]:
    return f"theiaos-podman_{version}-1_all.deb", f"theiaos-podman-{version}-1.noarch.rpm"


def complete(folder: Path, version: str) -> bool:
    return all((folder / version / name).is_file() for name in files(version))


def rebuild(version: str, commit: str, dest: Path) -> None:
    """Build ``version``'s .deb and .rpm from ``commit`` into dest/VERSION."""
    have = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"],
                          capture_output=True, check=False)
    if have.returncode != 0:
        raise SystemExit(f"releases: commit {commit[:12]} of {version} is not in this clone "
                         "(a shallow clone?): git fetch --unshallow, or set RELEASES=DIR")
    with tempfile.TemporaryDirectory(prefix=f"theiaos-release-{version}-", dir="/var/tmp") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        print(f"releases: building {version} from {commit[:12]} (git archive, then its make deb rpm)",
              flush=True)
        archive = subprocess.Popen(["git", "-C", str(REPO), "archive", commit],
                                   stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(src)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit(f"releases: git archive {commit[:12]} failed")
        log = Path(tmp) / "build.log"
        with log.open("w") as out:
            proc = subprocess.run(["make", "-C", str(src), "deb", "rpm"], stdout=out,
                                  stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"releases: building {version} failed:\n"
                             + "\n".join(log.read_text().splitlines()[-30:]))
        staged = dest / f".{version}.new"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        for name in files(version):
            shutil.copy2(src / "dist" / name, staged / name)
        shutil.rmtree(dest / version, ignore_errors=True)
        os.replace(staged, dest / version)  # complete or absent, never half there


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    shared = Path(argv[0])
    versions = recorded((REPO / "releases").read_text())
    version = newest(versions)
    if shared.is_dir():
        extra = [v for v in os.listdir(shared) if re.fullmatch(r"\d+\.\d+\.\d+", v)
                 and v not in versions]
        if extra:
            raise SystemExit(f"releases: {shared} holds {', '.join(sorted(extra))}, which the "
                             "file `releases` does not record: add VERSION COMMIT there")
    if complete(shared, version):
        print(f"releases: upgrading from {version} as released ({shared})", file=sys.stderr)
        print(shared)
        return 0
    cached = cache_dir() / "releases"
    cached.mkdir(parents=True, exist_ok=True)
    with _locked(cached / ".lock"):
        if not complete(cached, version):
            rebuild(version, versions[version], cached)
    print(f"releases: upgrading from {version} rebuilt from {versions[version][:12]} "
          f"({shared} does not hold it; cached in {cached})", file=sys.stderr)
    print(cached)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
