"""Podman's own files, read without starting podman (a podman command costs tens of
milliseconds; status and a setup that changes nothing ask several questions).

Only the default rootless storage is read (``~/.local/share/containers/storage`` with
the overlay driver, the run root under ``$XDG_RUNTIME_DIR``), and only through the file
door (regular files of the account, size-capped). Every function returns None when
the answer is not there to read (another storage configuration, a file missing or not
in the expected shape): the caller then asks podman. c/storage replaces these JSON
files atomically, so a read never sees half of one.
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import files
from .run import Identity

_ID = re.compile(rb"[0-9a-f]{64}\s*")


def _storage(who: Identity) -> str | None:
    """The account's graph root, when it is Podman's default (else None: ask podman)."""
    if files.lstat(f"{who.home}/.config/containers/storage.conf") is not None:
        return None
    system = files.read_bytes("/etc/containers/storage.conf", files.ROOT, files.SMALL) or b""
    if re.search(rb"^\s*(rootless_storage_path|driver\s*=\s*\"(?!overlay))", system, re.M):
        return None
    return f"{who.home}/.local/share/containers/storage"


def _json(path: str, who: Identity) -> Any:
    raw = files.read_bytes(path, who.uid, files.LARGE)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def image_id(who: Identity, image: str) -> tuple[bool, str | None]:
    """(answered, the id of ``image``): answered False when the store cannot be read."""
    root = _storage(who)
    images = _json(f"{root}/overlay-images/images.json", who) if root else None
    if not isinstance(images, list):
        return False, None
    for entry in images:
        if isinstance(entry, dict) and image in (entry.get("names") or []):
            return True, str(entry.get("id"))
    return True, None


def container_image(who: Identity, name: str) -> tuple[bool, str | None]:
    """(answered, the image id container ``name`` was made from). Containers run with
    --rm (the units') are in volatile-containers.json, the others in containers.json."""
    root = _storage(who)
    if root is None or files.lstat(f"{root}/overlay-containers") is None:
        return False, None
    containers = []
    for name_ in ("containers.json", "volatile-containers.json"):
        got = _json(f"{root}/overlay-containers/{name_}", who)
        if got is not None and not isinstance(got, list):
            return False, None
        containers += got or []
    for entry in containers:
        if isinstance(entry, dict) and name in (entry.get("names") or []):
            image = entry.get("image")
            return True, image if isinstance(image, str) else None
    return True, None


def secret_label(who: Identity, secret: str, label: str) -> tuple[bool, str | None]:
    """(answered, label ``label`` of the account's secret ``secret``)."""
    root = _storage(who)
    doc = _json(f"{root}/secrets/secrets.json", who) if root else None
    if not isinstance(doc, dict) or not isinstance(doc.get("secrets"), dict):
        return False, None
    for entry in doc["secrets"].values():
        if isinstance(entry, dict) and entry.get("name") == secret:
            labels = entry.get("labels") or {}
            value = labels.get(label) if isinstance(labels, dict) else None
            return True, value if isinstance(value, str) else None
    return True, None


def health_summary(health: dict[str, Any] | None) -> tuple[str, str | None]:
    """(status, since when it fails) of a container's health (podman inspect's
    State.Health, or the healthcheck.log file): "since" is the start of the first failed
    check of the current failing streak, None when the last check passed."""
    if not health:
        return "starting", None
    status = str(health.get("Status") or "starting")
    since = None
    for entry in reversed(health.get("Log") or []):
        if not isinstance(entry, dict) or entry.get("ExitCode") == 0:
            break
        since = str(entry.get("Start") or "") or since
    return status, since


def unit_state(who: Identity, unit_stem: str,
               image: str) -> tuple[str, str | None, str | None] | None:
    """(container health, image id, failing since) of the unit's container: its cidfile,
    the healthcheck log in the run root, the image list. None: ask podman."""
    cid = files.read_bytes(f"{who.runtime_dir}/{unit_stem}.cid", who.uid, files.SMALL)
    answered, image_id_ = image_id(who, image)
    if not cid or not answered or not _ID.fullmatch(cid):
        return None
    log = files.read_bytes(f"{who.runtime_dir}/containers/overlay-containers/"
                           f"{cid.decode().strip()}/healthcheck.log", who.uid)
    if log is None:
        return "starting", image_id_, None
    try:
        status, since = health_summary(json.loads(log))
    except ValueError:
        return None
    return status, image_id_, since
