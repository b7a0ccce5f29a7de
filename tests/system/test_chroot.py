"""Installing into a chroot (image builds): no systemd running, so setup does the files,
skips the runtime steps, says so, and leaves lingering to take effect at first boot."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..lab import ensure_rootfs

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root"),
]


def test_install_into_a_chroot(tmp_path: Path) -> None:
    deb = os.environ.get("THEIAOS_DEB")
    if not deb:
        pytest.fail("THEIAOS_DEB must name the built .deb: run `make check`")
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(ensure_rootfs()), str(root)], check=True)
    try:
        shutil.copy(deb, root / "var/tmp/theiaos-podman.deb")
        proc = subprocess.run(
            ["chroot", str(root), "apt-get", "install", "-y", "/var/tmp/theiaos-podman.deb"],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
                 "LANG": "C.UTF-8"},
            capture_output=True, text=True, check=False, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert "theiaos-podman: service: skipped (systemd is not running" in out
        assert "Setup complete" not in out
        assert (root / "var/lib/systemd/linger/theiaos").is_file()
        assert (root / "home/theiaos/.config/containers/systemd/theiaos.container").is_file()
        assert "theiaos:" in (root / "etc/subuid").read_text()
    finally:
        shutil.rmtree(root)
