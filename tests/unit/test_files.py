from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from theiaos_pkg import files
from theiaos_pkg.errors import TheiaosError, UnsafePathError
from theiaos_pkg.files import Perm

from ..conftest import needs_root

ME = Perm(os.getuid(), os.getgid(), 0o600)


def test_write_is_atomic_with_mode_and_reports_change(tmp_path: Path) -> None:
    target = tmp_path / "f"
    assert files.write_bytes(str(target), b"one", ME)
    assert target.read_bytes() == b"one" and (target.stat().st_mode & 0o777) == 0o600
    inode = target.stat().st_ino
    assert not files.write_bytes(str(target), b"one", ME)
    assert target.stat().st_ino == inode
    assert files.write_bytes(str(target), b"two", ME)
    assert target.read_bytes() == b"two" and target.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no temp file left


def test_mode_drift_is_fixed_in_place(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"x")
    target.chmod(0o644)
    assert files.write_bytes(str(target), b"x", ME)
    assert (target.stat().st_mode & 0o777) == 0o600


@needs_root
def test_owner_is_set(tmp_path: Path) -> None:
    target = tmp_path / "f"
    files.write_bytes(str(target), b"x", Perm(4242, 4343, 0o640))
    st = target.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (4242, 4343, 0o640)


@needs_root
def test_symlink_planted_by_the_service_user_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 4242, 4242)
    link = home / ".theiaos"
    link.symlink_to(tmp_path)
    os.lchown(link, 4242, 4242)
    with pytest.raises(UnsafePathError, match="symlink not owned by root"):
        files.write_bytes(str(link / "victim"), b"pwned", ME)
    with pytest.raises(UnsafePathError, match="symlink not owned by root"):
        files.ensure_dir(str(link / "sub"), ME)
    with pytest.raises(UnsafePathError, match="symlink not owned by root"):
        files.read_bytes(str(link / "victim"), os.getuid())
    (home / "env").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symlink"):
        files.write_bytes(str(home / "env"), b"pwned", ME)
    with pytest.raises(UnsafePathError, match="symlink"):
        files.read_bytes(str(home / "env"), 4242)
    assert victim.read_text() == "root's file\n"


@needs_root
def test_root_owned_symlink_in_root_owned_dir_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "var" / "home"
    real.mkdir(parents=True)
    (tmp_path / "home").symlink_to("var/home")  # as /home -> var/home on Silverblue
    assert files.write_bytes(str(tmp_path / "home" / "f"), b"x", ME)
    assert (real / "f").read_bytes() == b"x"


def test_ensure_dir_creates_parents_with_their_perm(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    assert files.ensure_dir(str(target), Perm(os.getuid(), os.getgid(), 0o700),
                            parents=Perm(os.getuid(), os.getgid(), 0o755))
    assert (target.stat().st_mode & 0o777) == 0o700
    assert ((tmp_path / "a").stat().st_mode & 0o777) == 0o755
    assert not files.ensure_dir(str(target), Perm(os.getuid(), os.getgid(), 0o700))


def test_ensure_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(UnsafePathError, match="not a directory"):
        files.ensure_dir(str(tmp_path / "f"), ME)


def test_existing_parent_keeps_its_owner_and_mode(tmp_path: Path) -> None:
    parent = tmp_path / "etc"
    parent.mkdir(mode=0o755)
    files.ensure_dir(str(parent / "x"), Perm(os.getuid(), os.getgid(), 0o700),
                     parents=Perm(os.getuid(), os.getgid(), 0o700))
    assert (parent.stat().st_mode & 0o777) == 0o755


def test_read_and_remove(tmp_path: Path) -> None:
    assert files.read_bytes(str(tmp_path / "nope" / "f"), os.getuid()) is None
    assert not files.remove(str(tmp_path / "f"))
    (tmp_path / "f").write_bytes(b"x")
    assert files.read_bytes(str(tmp_path / "f"), os.getuid()) == b"x"
    assert files.remove(str(tmp_path / "f")) and not (tmp_path / "f").exists()


# --- what root refuses before it blocks, reads or gives away --------------------------


def _hangs(func: object, *args: object) -> bool:
    """Run func in a thread; True when it does not return within 3 s (it blocked)."""
    import threading

    done = threading.Event()

    def target() -> None:
        with contextlib.suppress(Exception):
            func(*args)  # type: ignore[operator]
        done.set()

    threading.Thread(target=target, daemon=True).start()
    return not done.wait(3)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / ".env"
    os.mkfifo(fifo)
    with pytest.raises(UnsafePathError, match=r"\.env is a FIFO \(named pipe\), not a regular"):
        files.read_bytes(str(fifo), os.getuid())
    with pytest.raises(UnsafePathError, match="is a FIFO"):
        files.write_bytes(str(fifo), b"x", ME)
    assert not _hangs(files.read_bytes, str(fifo), os.getuid())
    assert not _hangs(files.write_bytes, str(fifo), b"x", ME)


def test_a_device_a_socket_and_a_directory_in_place_of_a_file_are_refused(tmp_path: Path) -> None:
    import socket

    (tmp_path / "dir").mkdir()
    with pytest.raises(UnsafePathError, match="is a directory, not a regular file"):
        files.read_bytes(str(tmp_path / "dir"), os.getuid())
    with pytest.raises(UnsafePathError, match="is a directory; refusing to write"):
        files.write_bytes(str(tmp_path / "dir"), b"x", ME)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        with pytest.raises(UnsafePathError, match="is a socket"):
            files.read_bytes(str(tmp_path / "sock"), os.getuid())
    with pytest.raises(UnsafePathError, match="is a character device"):
        files.read_bytes("/dev/zero", 0)


def test_a_huge_sparse_file_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "theiaos.json"
    with open(big, "wb") as f:
        f.truncate(100 * 1024**3)  # 100 GB, no blocks
    with pytest.raises(UnsafePathError, match=r"is 107374182400 bytes, over the limit of 16777216"):
        files.read_bytes(str(big), os.getuid())


def test_a_hardlink_is_neither_read_nor_written_through(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root's secret\n")
    link = tmp_path / ".env"
    os.link(secret, link)
    with pytest.raises(UnsafePathError, match="has 2 hard links"):
        files.read_bytes(str(link), os.getuid())
    perm = Perm(os.getuid(), os.getgid(), 0o600)
    assert files.write_bytes(str(link), b"root's secret\n", Perm(os.getuid(), os.getgid(), 0o640))
    assert secret.read_text() == "root's secret\n" and (secret.stat().st_mode & 0o777) != 0o640
    assert secret.stat().st_ino != link.stat().st_ino  # replaced, not written through
    assert files.read_bytes(str(link), perm.uid) == b"root's secret\n"


@needs_root
def test_a_file_of_another_owner_is_not_read(tmp_path: Path) -> None:
    f = tmp_path / ".env"
    f.write_text("x")
    os.chown(f, 4242, 4242)
    with pytest.raises(UnsafePathError, match="belongs to uid 4242, not uid 990"):
        files.read_bytes(str(f), 990)
    # writing replaces it with a new inode of the right owner; the old one is not chowned
    old = f.stat().st_ino
    files.write_bytes(str(f), b"x", Perm(990, 990, 0o600))
    assert f.stat().st_ino != old and f.stat().st_uid == 990


@needs_root
def test_an_existing_directory_is_never_given_away(tmp_path: Path) -> None:
    system = tmp_path / "usr-local-bin"
    system.mkdir(mode=0o755)
    with pytest.raises(UnsafePathError, match="belongs to uid 0; refusing to give it to uid 990"):
        files.ensure_dir(str(system), Perm(990, 990, 0o700))
    st = system.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o755)
    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)
    assert files.ensure_dir(str(home / "sub"), Perm(990, 990, 0o700), adopt_below=str(home))
    assert (home / "sub").stat().st_uid == 990
    # new directories may be made for the account anywhere the walk allows
    assert files.ensure_dir(str(tmp_path / "new" / "dir"), Perm(990, 990, 0o700),
                            parents=Perm(990, 990, 0o700))


def test_a_killed_write_leaves_one_temporary_name_that_the_next_write_removes(
        tmp_path: Path) -> None:
    target = tmp_path / "theiaos.json"
    target.write_text("old")
    stale = tmp_path / ".#theiaos.json.tmp"
    stale.write_text("half")
    assert files.write_bytes(str(target), b"new", ME)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theiaos.json"]


def test_stat_chain_reports_the_first_missing_directory(tmp_path: Path) -> None:
    chain, missing = files.stat_chain(str(tmp_path / "a" / "b"))
    assert missing == str(tmp_path / "a")
    assert [p for p, _ in chain][-1] == str(tmp_path) and chain[0][0] == "/"
    chain, missing = files.stat_chain(str(tmp_path))
    assert missing is None


def test_the_operation_lock_waits_bounded_and_names_its_holder(tmp_path: Path) -> None:
    import subprocess
    import sys

    lock = str(tmp_path / "lock")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from theiaos_pkg import files\n"
         f"with files.operation_lock('theiaosctl setup', path={lock!r}):\n"
         "    print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        said: list[str] = []
        with pytest.raises(TheiaosError) as err, \
                files.operation_lock("token rotate", path=lock, timeout=0.5, say=said.append):
            pass
        assert f"PID {holder.pid} (theiaosctl setup)" in err.value.message
        assert "waited 0 s" in err.value.message or "waited 1 s" in err.value.message
        assert said and said[0].startswith(f"waiting for PID {holder.pid}")
    finally:
        holder.kill()
        holder.communicate()  # reaps it and closes its stdout pipe
    # the kernel freed it; and it is re-entrant
    with files.operation_lock("token rotate", path=lock, timeout=5), \
            files.operation_lock("nested", path=lock, timeout=0.1):
        pass
