#!/usr/bin/python3 -I
"""Runs INSIDE the lab (tests only): a fingerprint of everything setup may touch, to
prove that a refusal left the host exactly as it was.

Prints JSON: for each path under the roots, its kind, owner, group, mode, mtime and
(for regular files) a SHA-256; symlinks with their target. Podman's own storage and
runtime files are left out (Podman updates them itself when asked anything). Never
opens anything but regular files, so a planted FIFO cannot block it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys

ROOTS = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/subuid",
         "/etc/subgid", "/etc/theiaos", "/var/lib/theiaos-podman", "/var/lib/systemd/linger",
         "/home", "/usr/local", "/srv", "/root", "/tmp", "/var/tmp")
SKIP = ("/.local/share/containers", "/.cache", "/var/tmp/theiaos-", "/var/tmp/.theiaos-lab-put",
        "/tmp/podman", "/tmp/.theiaos-")


def entry(path: str) -> list[object]:
    st = os.lstat(path)
    out: list[object] = [stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid,
                         stat.S_IMODE(st.st_mode), st.st_nlink]
    if stat.S_ISREG(st.st_mode):
        out.append(st.st_mtime_ns)
        if st.st_size <= 16 * 1024 * 1024:
            with open(path, "rb") as f:
                out.append(hashlib.sha256(f.read()).hexdigest())
        else:
            out.append(f"size {st.st_size}")
    elif stat.S_ISLNK(st.st_mode):
        out.append(os.readlink(path))
    return out


def walk(root: str, found: dict[str, list[object]]) -> None:
    if any(s in root for s in SKIP) or not os.path.lexists(root):
        return
    found[root] = entry(root)
    if os.path.isdir(root) and not os.path.islink(root):
        for name in sorted(os.listdir(root)):
            walk(os.path.join(root, name), found)


def main() -> int:
    found: dict[str, list[object]] = {}
    for root in sys.argv[1:] or ROOTS:
        walk(root, found)
    json.dump(found, sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
