"""The only door that writes files, and that reads what another account controls.

Every path is walked one component at a time with ``openat(O_NOFOLLOW)``, so root
never follows a symlink the service account could have planted. A symlink is
followed only when both it and the directory holding it belong to root (for
example ``/home -> var/home`` on image-based Fedora).

Root refuses before it blocks or gives anything away:

- a file is read only when ``lstat`` says it is a regular file owned by the expected
  uid, with one link and under a stated size cap; it is then opened with
  ``O_NONBLOCK|O_NOFOLLOW`` and checked again on the descriptor. A FIFO, device,
  socket, hardlink or huge sparse file is refused with one line naming what it is.
- writes are atomic (temp file in the same directory, fsync, rename) with explicit
  owner and mode; an existing inode is only touched when it already belongs to that
  owner with one link, otherwise it is replaced, never chowned.
- an existing directory is given to an account only below ``adopt_below`` (the
  account's home) or when the account owns it already.

Also here: shadow's locks and the package's own operation lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from .errors import TheiaosError, UnsafePathError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_MAX_LINKS = 16

#: Size caps of what root reads (a sparse 100 GB file is refused, not read).
SMALL = 64 * 1024           # .env, /etc/theiaos/podman.env, the package's state files
LARGE = 16 * 1024 * 1024    # theiaos.json, /etc/passwd, /etc/group, subuid, Podman's files
ROOT = 0


class Perm(NamedTuple):
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


def _walk(path: str, create: Perm | None,
          seen: list[tuple[str, os.stat_result]] | None = None) -> int:
    parts = _split(path)
    done: list[str] = []
    fd = os.open("/", _DIR_FLAGS)
    hops = 0
    try:
        if seen is not None:
            seen.append(("/", os.fstat(fd)))
        while parts:
            name = parts.pop(0)
            if name == "..":
                raise UnsafePathError(f"{path}: '..' after a symlink is not followed")
            here = "/" + "/".join(done + [name])
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if create is None:
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), here) \
                        from None
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
            if seen is not None:
                seen.append(("/" + "/".join(done), os.fstat(fd)))
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


def _below(path: str, top: str | None) -> bool:
    if top is None:
        return False
    path, top = os.path.normpath(path), os.path.normpath(top)
    return path == top or path.startswith(top.rstrip("/") + "/")


def ensure_dir(path: str, perm: Perm, parents: Perm | None = None,
               adopt_below: str | None = None) -> bool:
    """Make ``path`` a directory with ``perm``; missing parents get ``parents``.

    An existing directory owned by someone else is given to ``perm.uid`` only when it
    lies below ``adopt_below`` (the account's own home) or ``perm`` is root's: any
    other directory (``/usr/local/bin``…) is refused, never given away.
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
            raise UnsafePathError(f"{path} exists and is {kind(st.st_mode)}, not a directory",
                                  f"move {path} out of the way")
        if st.st_uid != perm.uid and perm.uid != ROOT and not _below(path, adopt_below):
            raise UnsafePathError(
                f"{path} exists and belongs to uid {st.st_uid}; refusing to give it to "
                f"uid {perm.uid}",
                "choose a directory that does not exist yet (setup creates it) or one "
                "the account owns already",
            )
        fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        try:
            return _fix_fd(fd, perm)
        finally:
            os.close(fd)


def stat_chain(path: str) -> tuple[list[tuple[str, os.stat_result]], str | None]:
    """The directories from / down to ``path`` as the walk reaches them (root-owned
    symlinks followed, others refused), and the first missing one (None when ``path``
    exists). What is not there yet, setup creates; what is there decides who can reach it.
    """
    seen: list[tuple[str, os.stat_result]] = []
    try:
        os.close(_walk(path, None, seen))
    except FileNotFoundError as exc:
        return seen, str(exc.filename or path)
    return seen, None


_KINDS = ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISREG, "a regular file"))


def kind(mode: int) -> str:
    """What a file is, in words."""
    return next((word for test, word in _KINDS if test(mode)), "an unknown kind of file")


def check_regular(path: str, st: os.stat_result, owner: int, limit: int) -> None:
    """Refuse anything but a regular file owned by ``owner``, with one link, at most
    ``limit`` bytes: one line naming the path, what it is, and the fix."""
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(f"{path} is {kind(st.st_mode)}, not a regular file",
                              f"move it aside (sudo mv {path} {path}.bad) and run setup again")
    if st.st_nlink != 1:
        raise UnsafePathError(f"{path} has {st.st_nlink} hard links; refusing to use it as root",
                              f"replace it with a copy of its own: sudo cp --remove-destination "
                              f"{path} {path}.copy && sudo mv {path}.copy {path}")
    if st.st_uid != owner:
        raise UnsafePathError(f"{path} belongs to uid {st.st_uid}, not uid {owner}",
                              f"if it is the right file: sudo chown {owner} {path}; "
                              "otherwise remove it")
    if st.st_size > limit:
        raise UnsafePathError(f"{path} is {st.st_size} bytes, over the limit of {limit}",
                              f"move it aside (sudo mv {path} {path}.bad) and run setup again")


def _open_checked(dfd: int, name: str, path: str, owner: int, limit: int) -> int | None:
    """A read descriptor of a file that passed check_regular before and after open;
    None when it does not exist. Nothing but a regular file is ever opened."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    check_regular(path, st, owner, limit)
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TheiaosError(f"{path}: {exc.strerror}") from None
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise UnsafePathError(f"{path} was replaced while being opened",
                                  "run the command again")
        check_regular(path, now, owner, limit)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_fd(fd: int, path: str, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise UnsafePathError(f"{path} grew over the limit of {limit} bytes while being read",
                                  f"move it aside (sudo mv {path} {path}.bad)")
        chunks.append(chunk)


def read_bytes(path: str, owner: int, limit: int = LARGE) -> bytes | None:
    """The content of ``path``, a regular file of ``owner`` with one link and at most
    ``limit`` bytes (check_regular); None when it does not exist."""
    head, name = os.path.split(os.path.normpath(path))
    try:
        with open_dir(head) as dfd:
            fd = _open_checked(dfd, name, path, owner, limit)
            if fd is None:
                return None
            try:
                return _read_fd(fd, path, limit)
            finally:
                os.close(fd)
    except FileNotFoundError:
        return None


def lstat(path: str) -> os.stat_result | None:
    """``lstat`` of ``path`` reached by the safe walk; None when it does not exist."""
    head, name = os.path.split(os.path.normpath(path))
    try:
        with open_dir(head) as dfd:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def write_bytes(path: str, data: bytes, perm: Perm) -> bool:
    """Atomically make ``path`` hold ``data`` with ``perm``; False when it already did.

    The existing inode is kept (and its mode fixed) only when it is a regular file of
    ``perm.uid`` with one link and the same content; anything else regular is replaced
    by rename, so nothing is written or chowned through a hardlink. A symlink, FIFO,
    device or directory in the way is refused.
    """
    head, name = os.path.split(os.path.normpath(path))
    with open_dir(head) as dfd:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        _drop_stale(dfd, name)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{path} is {kind(st.st_mode)}; refusing to write it",
                                  f"remove it (sudo mv {path} {path}.bad) and run setup again")
        if st is not None and st.st_nlink == 1 and st.st_uid == perm.uid \
                and st.st_size == len(data):
            fd = _open_checked(dfd, name, path, perm.uid, len(data))
            if fd is not None:
                try:
                    if _read_fd(fd, path, len(data)) == data:
                        return _fix_fd(fd, perm)
                finally:
                    os.close(fd)
        _replace(dfd, name, data, perm)
        return True


def _tmp_name(name: str) -> str:
    """The one temporary name a file is written under before its rename. Fixed, so that
    a write killed half-way leaves at most this file, which the next write removes
    (writers hold the package's lock, so there is never a second one at work)."""
    return f".#{name}.tmp"


def _drop_stale(dfd: int, name: str) -> None:
    try:
        os.unlink(_tmp_name(name), dir_fd=dfd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise UnsafePathError(f"{_tmp_name(name)} next to {name} is a directory",
                              "remove it") from None


def _replace(dfd: int, name: str, data: bytes | Iterable[bytes], perm: Perm) -> None:
    tmp = _tmp_name(name)
    _drop_stale(dfd, name)
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
        dir_fd=dfd,
    )
    try:
        os.fchown(fd, perm.uid, perm.gid)
        os.fchmod(fd, perm.mode)
        for chunk in ((data,) if isinstance(data, bytes) else data):
            view = memoryview(chunk)
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


def write_stream(path: str, chunks: Iterable[bytes], perm: Perm) -> None:
    """Atomically make ``path`` hold what ``chunks`` yield (large files: a backup, a
    restored workspace file), with ``perm``; nothing is written through a link."""
    head, name = os.path.split(os.path.normpath(path))
    with open_dir(head) as dfd:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{path} is {kind(st.st_mode)}; refusing to write it",
                                  f"move it aside (sudo mv {path} {path}.bad)")
        _replace(dfd, name, chunks, perm)


@contextlib.contextmanager
def open_read(path: str, owner: int, limit: int) -> Iterator[int | None]:
    """A read descriptor of ``path`` that passed check_regular (None when missing), for
    reading more than fits in memory."""
    head, name = os.path.split(os.path.normpath(path))
    try:
        with open_dir(head) as dfd:
            fd = _open_checked(dfd, name, path, owner, limit)
    except FileNotFoundError:
        fd = None
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def tree(path: str) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below directory ``path`` (relative name, lstat), directories before
    what they hold, in name order, reached through descriptors: no symlink is followed,
    and nothing is opened but directories."""
    with open_dir(path) as top:
        yield from _tree(top, "")


def _tree(dfd: int, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
    for name in sorted(os.listdir(dfd)):
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        rel = f"{prefix}{name}"
        yield rel, st
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            try:
                yield from _tree(sub, rel + "/")
            finally:
                os.close(sub)


def remove_tree(path: str) -> bool:
    """rm -r ``path`` through descriptors (never following a symlink); False when absent."""
    head, name = os.path.split(os.path.normpath(path))
    try:
        with open_dir(head) as dfd:
            _rmtree_at(dfd, name)
            return True
    except FileNotFoundError:
        return False


def _rmtree_at(dfd: int, name: str) -> None:
    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dfd)
        return
    sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    try:
        for entry in os.listdir(sub):
            _rmtree_at(sub, entry)
    finally:
        os.close(sub)
    os.rmdir(name, dir_fd=dfd)


_RENAME_EXCHANGE = 2


def exchange(a: str, b: str) -> None:
    """Swap two directories of one parent in one step (renameat2 RENAME_EXCHANGE): a
    restore killed at any moment leaves either the old or the new state in place."""
    import ctypes

    head, name_a = os.path.split(os.path.normpath(a))
    head_b, name_b = os.path.split(os.path.normpath(b))
    if head != head_b:
        raise TheiaosError(f"{a} and {b} are not in one directory")
    libc = ctypes.CDLL(None, use_errno=True)
    with open_dir(head) as dfd:
        if libc.renameat2(dfd, name_a.encode(), dfd, name_b.encode(), _RENAME_EXCHANGE) != 0:
            err = ctypes.get_errno()
            raise TheiaosError(f"swapping {a} and {b}: {os.strerror(err)}")
        os.fsync(dfd)


def symlink(path: str, target: str, perm: Perm) -> bool:
    """Make ``path`` a symlink to ``target`` owned by ``perm``'s owner; False when it
    already was. Anything else there (a file, another link) is replaced by rename."""
    head, name = os.path.split(os.path.normpath(path))
    with open_dir(head) as dfd:
        try:
            if os.readlink(name, dir_fd=dfd) == target:
                return False
        except (FileNotFoundError, OSError):
            pass
        tmp = _tmp_name(name)
        _drop_stale(dfd, name)
        os.symlink(target, tmp, dir_fd=dfd)
        os.chown(tmp, perm.uid, perm.gid, dir_fd=dfd, follow_symlinks=False)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        return True


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
    except IsADirectoryError:
        raise UnsafePathError(f"{path} is a directory; refusing to remove it",
                              "look at it and remove it yourself if it is not needed") from None


def remove_empty_dir(path: str) -> bool:
    """rmdir ``path`` when it exists and is empty; True when it was removed."""
    head, name = os.path.split(os.path.normpath(path))
    try:
        with open_dir(head) as dfd:
            os.rmdir(name, dir_fd=dfd)
            return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            return False
        raise TheiaosError(f"rmdir {path}: {exc.strerror}") from None


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


# --- the package's own lock ------------------------------------------------------------

#: One lock serialises setup, the maintainer scripts, start/stop/restart, token rotate
#: and image changes. In /run: root's, on tmpfs, and released by the kernel when its
#: holder dies (flock), so a killed run never leaves it behind.
LOCK_PATH = "/run/theiaos-podman.lock"
#: How long a second caller waits for the first (then it says who holds the lock).
LOCK_TIMEOUT = 180.0

_held: dict[str, int] = {}


@contextlib.contextmanager
def operation_lock(what: str, path: str = LOCK_PATH, timeout: float = LOCK_TIMEOUT,
                   say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the package's lock while ``what`` runs (re-entrant within one process)."""
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    head, name = os.path.split(path)
    with open_dir(head) as dfd:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC, 0o600, dir_fd=dfd)
    try:
        check_regular(path, os.fstat(fd), ROOT, SMALL)
        _flock(fd, path, timeout, say)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} ({what}), since {time.strftime('%H:%M:%S')}\n"
                  .encode(), 0)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def _flock(fd: int, path: str, timeout: float, say: Callable[[str], None] | None) -> None:
    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
        if time.monotonic() > deadline:
            raise TheiaosError(
                f"another theiaos-podman operation holds {path}: {holder}; "
                f"waited {timeout:.0f} s",
                "let it finish, then run the command again",
            )
        if say is not None and not told:
            say(f"waiting for {holder} to finish (at most {timeout:.0f} s)")
            told = True
        time.sleep(0.2)
