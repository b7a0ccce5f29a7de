"""The package's own state under /var/lib/theiaos-podman (root's; removed on purge).

- ``setup.env``: what `theiaosctl setup --user/--quadlet/--container` chose.
- ``linger-enabled-by-package``: this package turned lingering on (remove turns it off).
- ``linger-dir-created-by-package``: it created /var/lib/systemd/linger (purge removes
  it again when empty).
- ``restart-pending``: a change the running gateway has not picked up yet. It is
  written *before* the write that causes it (a unit, config, token or secret change)
  and removed only once the gateway answers on the new state, so a run killed at any
  point leaves the decision behind and the next run (setup, start, restart, the next
  postinst) finishes it.
"""

from __future__ import annotations

import os

from . import files
from .files import Perm

#: Where the state lives, removed on purge (tests point it into a temporary directory).
DIR = "/var/lib/theiaos-podman"
LINGER_MARKER = "linger-enabled-by-package"
LINGER_DIR_MARKER = "linger-dir-created-by-package"
PENDING = "restart-pending"
AUTO_UPDATE_MARKER = "auto-update-enabled-by-package"
UNIT_RENDER = "unit-rendered"  # quadlet.render_key of the unit on disk, and its digest
UNIT_SETTINGS = "unit-settings"  # where that unit publishes (settings.format_published)
PODMAN_VERSION = "podman-version"  # the version of /usr/bin/podman, by its inode and mtime
CHOICES = "setup.env"
_MINE = Perm(0, 0, 0o644)


def path(name: str) -> str:
    return os.path.join(DIR, name)


def write(name: str, text: str) -> bool:
    files.ensure_dir(os.fspath(DIR), Perm(0, 0, 0o755), parents=Perm(0, 0, 0o755))
    return files.write_bytes(path(name), text.encode(), _MINE)


def read(name: str) -> str | None:
    raw = files.read_bytes(path(name), files.ROOT, files.SMALL)
    return raw.decode("utf-8", "replace") if raw is not None else None


def clear(name: str) -> bool:
    return files.remove(path(name))


def pending() -> str | None:
    """Why a restart is still owed to the gateway, or None."""
    text = read(PENDING)
    return (text.strip() or "an earlier change") if text is not None else None


def mark_pending(why: str) -> None:
    """Record that the gateway must be reloaded and restarted (before causing it).
    Only root keeps this record (the account's own `launch` replaces its container
    at once, so it has nothing to remember)."""
    if os.geteuid() != 0:
        return
    old = pending()
    if old is None or why not in old:
        write(PENDING, f"{old}; {why}\n" if old else f"{why}\n")


def clear_pending() -> None:
    if os.geteuid() == 0:
        clear(PENDING)
