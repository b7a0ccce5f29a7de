"""Debian's package tester (piuparts) on the built .deb: install and purge, and the
upgrade from the last release, in a Debian 13 chroot whose base holds the
dependencies (tests/piuparts.sh). The kept user data (the account, its subids and
/home/theiaos) is the only allowed leftover."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import lab_only

pytestmark = [*lab_only, pytest.mark.skipif(shutil.which("piuparts", path="/usr/sbin:/usr/bin")
                                            is None, reason="piuparts not installed (make deps)")]

SCRIPT = Path(__file__).resolve().parent.parent / "piuparts.sh"


def test_piuparts_install_purge_and_upgrade_from_the_release() -> None:
    new, old = os.environ.get("THEIAOS_DEB"), os.environ.get("THEIAOS_RELEASE_DEB")
    if not new or not old:
        pytest.fail("THEIAOS_DEB and THEIAOS_RELEASE_DEB must be set: run `make check`")
    proc = subprocess.run(["sh", str(SCRIPT), new, old], capture_output=True, text=True,
                          timeout=1200, check=False,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "PASS: Installation and purging test." in out, out
    assert "PASS: Installation, upgrade and purging tests." in out, out
    assert "FAIL" not in out, out
