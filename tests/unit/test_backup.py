"""backup's archive check (pure, on real archives under tmp_path): every hostile form of
archive is refused before anything is written; a good one passes."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from theiaos_pkg import backup

UID = 990


def _archive(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]],
             manifest: dict[str, object] | None = None, listed: bool = True) -> tarfile.TarFile:
    entries = {}
    for info, data in members:
        kind = "dir" if info.isdir() else "symlink" if info.issym() else "file"
        entries[info.name] = {"kind": kind, "mode": info.mode,
                              **({"sha256": hashlib.sha256(data).hexdigest()} if kind == "file"
                                 else {})}
    doc = {"format": 1, "uid": UID, "entries": entries if listed else {}, **(manifest or {})}
    path = tmp_path / "b.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
        raw = json.dumps(doc).encode()
        m = _info(backup.MANIFEST, tarfile.REGTYPE, len(raw))
        tar.addfile(m, io.BytesIO(raw))
    return tarfile.open(path, "r:gz")


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, uid: int = UID,
          link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.uid, info.gid, info.mode = kind, size, uid, uid, 0o600
    info.linkname = link
    return info


GOOD = [(_info("config", tarfile.DIRTYPE), b""),
        (_info("config/.env", size=5), b"T=abc"),
        (_info("config/link", tarfile.SYMTYPE, link="workspace/x"), b"")]


def test_a_good_archive_passes(tmp_path: Path) -> None:
    with _archive(tmp_path, GOOD) as tar:
        assert backup.check_archive(tar)["uid"] == UID


@pytest.mark.parametrize(("member", "why"), [
    (_info("/etc/passwd", size=1), "an absolute path"),
    (_info("config/../../etc/passwd", size=1), "with '..'"),
    (_info("etc/passwd", size=1), "not a part of a backup"),
    (_info("config/dev", tarfile.CHRTYPE), "device, FIFO or socket"),
    (_info("config/fifo", tarfile.FIFOTYPE), "device, FIFO or socket"),
    (_info("config/hard", tarfile.LNKTYPE, link="config/.env"), "a hardlink"),
    (_info("config/link/x", size=1), "below a link of the archive"),
    (_info("config/foreign", size=1, uid=0), "owned by uid 0/gid 0, not the account's 990"),
])
def test_a_hostile_member_is_refused(tmp_path: Path, member: tarfile.TarInfo, why: str) -> None:
    data = b"x" * member.size
    with _archive(tmp_path, [*GOOD, (member, data)]) as tar, \
            pytest.raises(backup.BackupError, match="refusing the archive") as err:
        backup.check_archive(tar)
    assert why in err.value.message


@pytest.mark.parametrize("link", ["/app/dist/extensions/browser/skills/x", "../../etc/shadow"])
def test_a_link_may_point_anywhere(tmp_path: Path, link: str) -> None:
    """The real gateway links its plugin skills into the image's /app: restored as links,
    never followed by root (the file door walks with O_NOFOLLOW)."""
    member = _info("config/plugin-skills/x", tarfile.SYMTYPE, link=link)
    with _archive(tmp_path, [*GOOD, (member, b"")]) as tar:
        assert "config/plugin-skills/x" in backup.check_archive(tar)["entries"]


def test_a_checksum_that_does_not_match_is_refused(tmp_path: Path) -> None:
    with _archive(tmp_path, GOOD, {"entries": {
            "config": {"kind": "dir"}, "config/link": {"kind": "symlink"},
            "config/.env": {"kind": "file", "sha256": "0" * 64}}}) as tar, \
            pytest.raises(backup.BackupError, match="checksum does not match"):
        backup.check_archive(tar)


def test_a_member_the_manifest_does_not_list_is_refused(tmp_path: Path) -> None:
    with _archive(tmp_path, GOOD, listed=False) as tar, \
            pytest.raises(backup.BackupError, match="is not in the manifest"):
        backup.check_archive(tar)


def test_no_manifest_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(_info("config", tarfile.DIRTYPE))
    with tarfile.open(path, "r:gz") as tar, \
            pytest.raises(backup.BackupError, match="no theiaos-backup.json"):
        backup.check_archive(tar)
