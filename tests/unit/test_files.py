from __future__ import annotations

import os
from pathlib import Path

import pytest

from theiaos_pkg import files
from theiaos_pkg.errors import UnsafePathError
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
        files.read_bytes(str(link / "victim"))
    (home / "env").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symlink"):
        files.write_bytes(str(home / "env"), b"pwned", ME)
    with pytest.raises(UnsafePathError, match="symlink"):
        files.read_bytes(str(home / "env"))
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
    assert files.read_bytes(str(tmp_path / "nope" / "f")) is None
    assert not files.remove(str(tmp_path / "f"))
    (tmp_path / "f").write_bytes(b"x")
    assert files.read_bytes(str(tmp_path / "f")) == b"x"
    assert files.remove(str(tmp_path / "f")) and not (tmp_path / "f").exists()
