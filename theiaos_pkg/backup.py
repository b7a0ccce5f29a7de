"""`theiaosctl backup` and `restore`: the gateway's state in one archive.

The archive (tar, gzip) holds a manifest (``theiaos-backup.json``: format, package
version, date, account, image and its id, and the SHA-256, kind and mode of every
entry), the config directory (``.env`` with the token, ``theiaos.json``, the gateway's
state) under ``config/``, a workspace outside it under ``workspace/``, the settings that
shaped them under ``settings/`` and, with ``--with-image``, ``image.tar``.

Backup stops a running gateway for the copy (its files are then consistent) and starts
it again. Root reads the account's tree through the file door: regular files of the
account with one link, directories and symlinks; anything else is left out and said.

Restore checks everything before it changes anything: the manifest and every checksum,
and it refuses absolute paths, ``..``, entries below a link of the archive, devices,
FIFOs, hardlinks and entries of another owner (a link itself may point anywhere: it is
recreated as a link, which root never follows). It then stops the gateway, unpacks next
to the config directory, swaps the two in one step (renameat2 RENAME_EXCHANGE: killed
at any moment, the old state or the new one is in place, never a mix), puts the
settings back, runs setup and waits until the gateway answers. Owners become the
account's; SELinux labels are set again by Podman (``:Z``) when the container starts.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import posixpath
import stat
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any, cast

from . import __version__, container, files, podman, runtime, settings, state
from .account import Account
from .errors import TheiaosError
from .files import Perm
from .settings import Settings

FORMAT = 1
MANIFEST = "theiaos-backup.json"
#: The biggest single file a backup takes (a workspace may hold large files).
FILE_LIMIT = 4 * 1024**3
Report = Callable[[str], None]


class BackupError(TheiaosError):
    """An archive that cannot be restored, or a backup that cannot be written."""


def _trees(s: Settings) -> list[tuple[str, str]]:
    """(archive prefix, host directory): the config dir, and the workspace when it is
    not inside it."""
    out = [("config", s.config_dir)]
    if not (s.workspace_dir + "/").startswith(s.config_dir + "/"):
        out.append(("workspace", s.workspace_dir))
    return out


def _chunks(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, 1 << 20):
        yield chunk


def _settings_texts() -> dict[str, bytes]:
    out = {}
    for name, path in (("podman.env", str(settings.ADMIN_FILE)),
                       ("setup.env", str(state.path(state.CHOICES)))):
        raw = files.read_bytes(path, files.ROOT, files.SMALL)
        if raw is not None:
            out[name] = raw
    return out


# --- backup ------------------------------------------------------------------------------


def backup(s: Settings, acct: Account, dest: str, with_image: bool, report: Report) -> None:
    """Write the archive to ``dest`` (a path, written 0600 and atomically, or - for
    standard output)."""
    if dest == "-" and sys.stdout.isatty():
        raise BackupError("backup - writes the archive to standard output, which is a terminal",
                          "sudo theiaosctl backup FILE, or: sudo theiaosctl backup - > FILE")
    rt = runtime.of(s, acct)
    was_running = rt.running()
    if was_running:
        report("stopping the gateway for a consistent copy")
        rt.stop(report)
    try:
        with tempfile.TemporaryDirectory(prefix="theiaos-backup-") as tmp:
            image_tar = _save_image(s, acct, tmp) if with_image else None
            if dest == "-":
                _write(s, acct, sys.stdout.buffer, image_tar, report)
                sys.stdout.buffer.flush()
            else:
                path = os.path.abspath(dest)
                spool = os.path.join(tmp, "archive")
                with open(spool, "wb") as out:
                    _write(s, acct, out, image_tar, report)
                with open(spool, "rb") as src:
                    files.write_stream(path, _chunks(src.fileno()), Perm(0, 0, 0o600))
                report(f"backup written to {path} (mode 0600)")
    finally:
        if was_running:
            rt.start(lambda line: None)
            report("the gateway answers again")


def _save_image(s: Settings, acct: Account, tmp: str) -> str:
    """``podman save`` of the gateway's image, piped to root (no file of the account's)."""
    from .run import stream

    path = os.path.join(tmp, "image.tar")
    with open(path, "wb") as out:
        if stream(["podman", "save", s.image], as_user=acct.identity(), out=out):
            raise BackupError(f"podman save {s.image} (as {acct.name}) failed")
    return path


def _write(s: Settings, acct: Account, out: IO[bytes], image_tar: str | None,
           report: Report) -> None:
    entries: dict[str, dict[str, Any]] = {}
    with tarfile.open(fileobj=out, mode="w|gz", format=tarfile.PAX_FORMAT) as tar:
        for prefix, top in _trees(s):
            _add_dir_entry(tar, entries, prefix, 0o700, acct)
            for rel, st in files.tree(top):
                _add(tar, entries, f"{prefix}/{rel}", f"{top}/{rel}", st, acct, report)
        for name, raw in _settings_texts().items():
            _add_bytes(tar, entries, f"settings/{name}", raw, 0o644, acct)
        if image_tar:
            with open(image_tar, "rb") as f:
                info = _info("image.tar", tarfile.REGTYPE, 0o600, acct)
                info.size = os.fstat(f.fileno()).st_size
                digest = hashlib.sha256()
                tar.addfile(info, cast("IO[bytes]", _Hashing(f, digest)))
                entries["image.tar"] = {"kind": "file", "mode": 0o600, "sha256": digest.hexdigest()}
        manifest = {
            "format": FORMAT, "package": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "user": acct.name, "uid": acct.uid, "image": s.image,
            "image_id": podman.image_id(acct.identity(), s.image),
            "config_dir": s.config_dir, "workspace_dir": s.workspace_dir, "entries": entries,
        }
        raw = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        _add_bytes(tar, {}, MANIFEST, raw, 0o600, acct)
    report(f"backed up {len(entries)} entries (manifest, checksums: {MANIFEST})")


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through (tarfile reads the data once)."""

    def __init__(self, src: IO[bytes], digest: Any) -> None:
        self.src, self.digest = src, digest

    def read(self, size: int = -1) -> bytes:
        chunk = self.src.read(size)
        self.digest.update(chunk)
        return chunk


def _info(name: str, kind: bytes, mode: int, acct: Account) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, mode
    info.uid = info.gid = acct.uid
    info.uname = info.gname = acct.name
    info.mtime = 0
    return info


def _add_dir_entry(tar: tarfile.TarFile, entries: dict[str, Any], name: str, mode: int,
                   acct: Account) -> None:
    tar.addfile(_info(name, tarfile.DIRTYPE, mode, acct))
    entries[name] = {"kind": "dir", "mode": mode}


def _add_bytes(tar: tarfile.TarFile, entries: dict[str, Any], name: str, raw: bytes,
               mode: int, acct: Account) -> None:
    info = _info(name, tarfile.REGTYPE, mode, acct)
    info.size = len(raw)
    tar.addfile(info, io.BytesIO(raw))
    if entries is not None:
        entries[name] = {"kind": "file", "mode": mode, "sha256": hashlib.sha256(raw).hexdigest()}


def _add(tar: tarfile.TarFile, entries: dict[str, Any], name: str, path: str,
         st: os.stat_result, acct: Account, report: Report) -> None:
    mode = stat.S_IMODE(st.st_mode) & 0o777
    if stat.S_ISDIR(st.st_mode):
        _add_dir_entry(tar, entries, name, mode, acct)
    elif stat.S_ISLNK(st.st_mode):
        info = _info(name, tarfile.SYMTYPE, 0o777, acct)
        info.linkname = os.readlink(path)
        tar.addfile(info)
        entries[name] = {"kind": "symlink", "target": info.linkname}
    elif stat.S_ISREG(st.st_mode) and st.st_uid == acct.uid and st.st_nlink == 1:
        with files.open_read(path, acct.uid, FILE_LIMIT) as fd:
            if fd is None:
                return  # gone meanwhile
            info = _info(name, tarfile.REGTYPE, mode, acct)
            info.size = os.fstat(fd).st_size
            digest = hashlib.sha256()
            with os.fdopen(os.dup(fd), "rb") as f:
                tar.addfile(info, cast("IO[bytes]", _Hashing(f, digest)))
            entries[name] = {"kind": "file", "mode": mode, "sha256": digest.hexdigest()}
    else:
        report(f"left out {path}: {files.kind(st.st_mode)}"
               + ("" if not stat.S_ISREG(st.st_mode) else
                  f" of uid {st.st_uid} with {st.st_nlink} link(s)"))


# --- restore -----------------------------------------------------------------------------


def _bad(why: str) -> BackupError:
    return BackupError(f"refusing the archive: {why}", "restore from a backup made by "
                       "`theiaosctl backup`, unchanged")


_PREFIXES = ("config", "workspace", "settings")


def check_archive(tar: tarfile.TarFile) -> dict[str, Any]:
    """Every member and checksum against the manifest; the manifest. Reads, never writes."""
    members = {m.name: m for m in tar.getmembers()}
    if MANIFEST not in members:
        raise _bad(f"no {MANIFEST} in it")
    raw = tar.extractfile(members[MANIFEST])
    try:
        manifest = json.loads(raw.read(files.LARGE) if raw else b"")
    except ValueError:
        raise _bad(f"{MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _bad(f"unknown format {manifest.get('format') if isinstance(manifest, dict) else '?'}")
    entries = manifest.get("entries")
    if not isinstance(entries, dict):
        raise _bad("the manifest lists no entries")
    links = {name for name, m in members.items() if m.issym()}
    for name, m in members.items():
        _check_member(name, m, manifest, entries)
        parts = name.split("/")
        if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
            raise _bad(f"{name!r}: below a link of the archive")
    for name, entry in entries.items():
        if name not in members:
            raise _bad(f"{name} is in the manifest but not in the archive")
        if entry.get("kind") == "file":
            data = tar.extractfile(members[name])
            digest = hashlib.sha256()
            while data is not None and (chunk := data.read(1 << 20)):
                digest.update(chunk)
            if digest.hexdigest() != entry.get("sha256"):
                raise _bad(f"{name}: checksum does not match the manifest")
    return manifest


def _check_member(name: str, m: tarfile.TarInfo, manifest: dict[str, Any],
                  entries: dict[str, Any]) -> None:
    norm = posixpath.normpath(name)
    if name.startswith("/") or norm != name or norm.split("/")[0] == "..":
        raise _bad(f"{name!r}: an absolute path or one with '..'")
    if name != MANIFEST and name != "image.tar" and norm.split("/")[0] not in _PREFIXES:
        raise _bad(f"{name!r}: not a part of a backup")
    if not (m.isreg() or m.isdir() or m.issym()):
        raise _bad(f"{name!r}: a {'hardlink' if m.islnk() else 'device, FIFO or socket'}")
    if m.uid != manifest.get("uid") or m.gid != manifest.get("uid"):
        raise _bad(f"{name!r}: owned by uid {m.uid}/gid {m.gid}, not the account's "
                   f"{manifest.get('uid')}")
    # A link may point anywhere (the gateway links its plugin skills into the image's
    # /app): restore recreates it as a link and the file door never follows one. What
    # no member may do is lie below a link (check_archive).
    if name != MANIFEST and name not in entries:
        raise _bad(f"{name!r} is not in the manifest")


def restore(s: Settings, source: str, report: Report) -> None:
    """Check the archive, then put its state and settings back, run setup and wait until
    the gateway answers (onto a host where the package was just installed, typically)."""
    from . import account, configure

    with tempfile.TemporaryDirectory(prefix="theiaos-restore-") as tmp:
        path = _spool(source, tmp)
        try:
            tar = tarfile.open(path, "r:gz")  # noqa: SIM115 (closed by the with below)
        except (OSError, tarfile.TarError) as exc:
            raise _bad(f"not a gzip-compressed tar archive ({exc})") from None
        with tar:
            manifest = check_archive(tar)
            report(f"archive checked: {len(manifest['entries'])} entries, made "
                   f"{manifest.get('created')} by theiaos-podman {manifest.get('package')}")
            admin = _member_text(tar, "settings/podman.env")
            choices = _member_text(tar, "settings/setup.env")
            new = settings.load(admin=settings.parse_admin(admin) if admin is not None else None,
                                chosen=settings.parse_choices(choices) if choices is not None else None)
            acct = account.lookup("/etc", new.user)
            if acct is None:
                raise BackupError(f"the archive is {new.user}'s; there is no account {new.user}",
                                  "install the package first (it creates the account), then "
                                  "restore")
            configure.preflight(new, "/etc", podman.detect())  # refuses: nothing changed yet
            _apply(new, acct, tar, manifest, report)
        if admin is not None:
            files.write_bytes(str(settings.ADMIN_FILE), admin.encode(), Perm(0, 0, 0o644))
        if choices is not None:
            state.write(state.CHOICES, choices)
    configure.configure(settings.load(), report=report)


def _spool(source: str, tmp: str) -> str:
    """The archive as a file of root's (standard input is read to the end first)."""
    if source != "-":
        return os.path.abspath(source)
    if sys.stdin.isatty():
        raise BackupError("restore - reads the archive from standard input, which is a terminal",
                          "sudo theiaosctl restore FILE, or: ... | sudo theiaosctl restore -")
    path = os.path.join(tmp, "archive")
    with open(path, "wb") as out:
        while chunk := sys.stdin.buffer.read(1 << 20):
            out.write(chunk)
    return path


def _member_text(tar: tarfile.TarFile, name: str) -> str | None:
    try:
        f = tar.extractfile(name)
    except KeyError:
        return None
    return f.read(files.SMALL).decode("utf-8") if f else None


def _apply(s: Settings, acct: Account, tar: tarfile.TarFile, manifest: dict[str, Any],
           report: Report) -> None:
    """Stop the gateway, unpack next to each tree, swap in one step, remove the old."""
    from . import service

    if service.manager_running(acct):
        service.stop(acct, container.stop_bound(s.stop_timeout))
    if "image.tar" in manifest["entries"]:
        data = tar.extractfile("image.tar")
        assert data is not None
        podman.load(acct.identity(), data, s.image)  # type: ignore[arg-type]
        report(f"image {s.image} loaded")
    mine = Perm(acct.uid, acct.gid, 0o700)
    for prefix, top in _trees(s):
        staging = f"{top}.restoring"
        files.remove_tree(staging)  # left by an interrupted restore
        files.ensure_dir(staging, mine, parents=mine, adopt_below=s.home)
        for m in tar.getmembers():
            if not m.name.startswith(prefix + "/"):
                continue
            rel = m.name[len(prefix) + 1:]
            _extract(tar, m, f"{staging}/{rel}", acct, s.home)
        if files.lstat(top) is None:
            files.ensure_dir(top, mine, parents=mine, adopt_below=s.home)
        files.exchange(staging, top)
        files.remove_tree(staging)  # now the state before the restore
        report(f"restored {top}")


def _extract(tar: tarfile.TarFile, m: tarfile.TarInfo, dest: str, acct: Account,
             home: str) -> None:
    mode = m.mode & 0o777
    if m.isdir():
        files.ensure_dir(dest, Perm(acct.uid, acct.gid, mode or 0o700), adopt_below=home)
    elif m.issym():
        files.symlink(dest, m.linkname, Perm(acct.uid, acct.gid, 0o777))
    else:
        data = tar.extractfile(m)
        assert data is not None
        files.write_stream(dest, iter(lambda: data.read(1 << 20), b""),
                           Perm(acct.uid, acct.gid, mode))
