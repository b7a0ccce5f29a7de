"""The only door that writes files.

Every path is walked one component at a time with ``openat(O_NOFOLLOW)``, so root
never follows a symlink the service account could have planted. A symlink is
followed only when both it and the directory holding it belong to root (for
example ``/home -> var/home`` on image-based Fedora). Writes are atomic (temp file
in the same directory, fsync, rename) with explicit owner and mode, and happen only
when content, owner or mode differ, so callers learn whether anything changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator

from .errors import TheiaosError, UnsafePathError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 16


@dataclasses.dataclass(frozen=True)
class Perm:
    """Owner and mode a file or directory must have."""

    uid: int
    gid: int
    mode: int


def _split(path: str) -> list[str]:
    if not path.startswith("/"):
        raise UnsafePathError(f"{path}: not an absolute path")
    return [p for p in os.path.normpath(path).split("/") if p and p != "."]


@contextlib.contextmanager
def open_dir(path: str, create: Perm | None = None) -> Iterator[int]:
    """A descriptor of directory ``path``, reached without following unsafe symlinks.

    With ``create``, missing components are made with that owner and mode; existing
    ones are left as they are.
    """
    fd = _walk(path, create)
    try:
        yield fd
    finally:
        os.close(fd)


def _walk(path: str, create: Perm | None) -> int:
    parts = _split(path)
    done: list[str] = []
    fd = os.open("/", _DIR_FLAGS)
    hops = 0
    try:
        while parts:
            name = parts.pop(0)
            if name == "..":
                raise UnsafePathError(f"{path}: '..' after a symlink is not followed")
            here = "/" + "/".join(done + [name])
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if create is None:
                    raise
                os.mkdir(name, 0o700, dir_fd=fd)
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                _fix(fd, name, create)
            if stat.S_ISLNK(st.st_mode):
                parent = os.fstat(fd)
                if st.st_uid != 0 or parent.st_uid != 0 or parent.st_mode & 0o022:
                    raise UnsafePathError(
                        f"{here} is a symlink not owned by root; refusing to follow it",
                        f"replace {here} with a real directory",
                    )
                hops += 1
                if hops > _MAX_LINKS:
                    raise UnsafePathError(f"{path}: too many symlinks")
                target = os.readlink(name, dir_fd=fd)
                base = "/" + "/".join(done)
                parts = _split(os.path.join(base, target)) + parts
                os.close(fd)
                fd = os.open("/", _DIR_FLAGS)
                done = []
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePathError(f"{here} is not a directory")
            nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
            done.append(name)
        return fd
    except FileNotFoundError:
        os.close(fd)
        raise
    except OSError as exc:
        os.close(fd)
        raise TheiaosError(f"{path}: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise


def _fix(dir_fd: int, name: str, perm: Perm) -> None:
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        _fix_fd(fd, perm)
    finally:
        os.close(fd)


def _fix_fd(fd: int, perm: Perm) -> bool:
    st = os.fstat(fd)
    changed = False
    if (st.st_uid, st.st_gid) != (perm.uid, perm.gid):
        os.fchown(fd, perm.uid, perm.gid)
        changed = True
    if stat.S_IMODE(st.st_mode) != perm.mode:
        os.fchmod(fd, perm.mode)
        changed = True
    return changed


def ensure_dir(path: str, perm: Perm, parents: Perm | None = None) -> bool:
    """Make ``path`` a directory with ``perm``; missing parents get ``parents``.

    Returns True when anything was created or changed.
    """
    head, name = os.path.split(os.path.normpath(path))
    with open_dir(head, parents) as dfd:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            os.mkdir(name, 0o700, dir_fd=dfd)
            _fix(dfd, name, perm)
            return True
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(
                f"{path} exists and is not a directory", f"move {path} out of the way"
            )
        fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        try:
            return _fix_fd(fd, perm)
        finally:
            os.close(fd)


def read_bytes(path: str) -> bytes | None:
    """The content of regular file ``path``, or None when it does not exist."""
    head, name = os.path.split(os.path.normpath(path))
    try:
        with open_dir(head) as dfd:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UnsafePathError(
                        f"{path} is a symlink; refusing to follow it",
                        f"replace {path} with a regular file",
                    ) from None
                raise TheiaosError(f"{path}: {exc.strerror}") from None
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise UnsafePathError(f"{path} is not a regular file")
                return f.read()
    except FileNotFoundError:
        return None


def write_bytes(path: str, data: bytes, perm: Perm) -> bool:
    """Atomically make ``path`` hold ``data`` with ``perm``; False when it already did."""
    head, name = os.path.split(os.path.normpath(path))
    with open_dir(head) as dfd:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            fd = -1
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePathError(
                    f"{path} is a symlink; refusing to write through it",
                    f"remove {path}",
                ) from None
            raise
        if fd >= 0:
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                same = stat.S_ISREG(st.st_mode) and f.read() == data
                if same:
                    return _fix_fd(f.fileno(), perm)
        _replace(dfd, name, data, perm)
        return True


def _replace(dfd: int, name: str, data: bytes, perm: Perm) -> None:
    tmp = f".#{name}.{os.getpid()}.{time.monotonic_ns()}"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
        dir_fd=dfd,
    )
    try:
        os.fchown(fd, perm.uid, perm.gid)
        os.fchmod(fd, perm.mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fsync(dfd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dfd)
        raise


def remove(path: str) -> bool:
    """Remove file ``path`` (never following a symlink); False when it was not there."""
    head, name = os.path.split(os.path.normpath(path))
    try:
        with open_dir(head) as dfd:
            os.unlink(name, dir_fd=dfd)
            os.fsync(dfd)
            return True
    except FileNotFoundError:
        return False


# --- shadow's locks -----------------------------------------------------------------


@contextlib.contextmanager
def shadow_lock(etc: str, files: tuple[str, ...], timeout: float = 15.0) -> Iterator[None]:
    """Hold shadow's locks while ``files`` under ``etc`` are changed.

    The same locks useradd and usermod take: ``lckpwdf()`` (a write lock on
    ``.pwd.lock``) and, per file, ``FILE.lock`` created by link() holding our PID.
    """
    deadline = time.monotonic() + timeout
    with open_dir(etc) as dfd:
        pwd = os.open(".pwd.lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=dfd)
        held: list[str] = []
        try:
            _lock_fcntl(pwd, deadline, f"{etc}/.pwd.lock")
            for name in files:
                _lock_link(dfd, name, deadline, etc)
                held.append(name)
            yield
        finally:
            for name in held:
                os.unlink(f"{name}.lock", dir_fd=dfd)
            os.close(pwd)


def _lock_fcntl(fd: int, deadline: float, what: str) -> None:
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
        if time.monotonic() > deadline:
            raise TheiaosError(f"{what}: locked by another program (useradd, usermod, vipw?)")
        time.sleep(0.1)


def _lock_link(dfd: int, name: str, deadline: float, etc: str) -> None:
    pid = os.getpid()
    tmp = f"{name}.{pid}"
    lock = f"{name}.lock"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dfd)
    try:
        os.write(fd, f"{pid}\0".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        while True:
            try:
                os.link(tmp, lock, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                return
            except FileExistsError:
                if _stale(dfd, lock):
                    os.unlink(lock, dir_fd=dfd)
                    continue
            if time.monotonic() > deadline:
                raise TheiaosError(f"{etc}/{lock}: locked by another program")
            time.sleep(0.1)
    finally:
        os.unlink(tmp, dir_fd=dfd)


def _stale(dfd: int, lock: str) -> bool:
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        return False
    with os.fdopen(fd, "rb") as f:
        raw = f.read(32).split(b"\0")[0].strip()
    if not raw.isdigit():
        return False
    try:
        os.kill(int(raw), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
