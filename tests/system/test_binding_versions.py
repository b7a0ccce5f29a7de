"""theiaos_pkg/binding.py with each target's own python3-pystemd (Debian 12: 0.11,
Debian 13: 0.13), in the lab's cached root file systems (chroot in a private mount
namespace; the cache itself is not written: the source is bind-mounted read-only)."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from tests import lab as labmod
from tests.unit.test_binding import PROBE, TOP


@pytest.mark.parametrize("release", [labmod.DEBIAN12, labmod.DEBIAN13], ids=lambda r: r.suite)
def test_the_binding_with_the_targets_pystemd(release: labmod.Release) -> None:
    root = labmod.ensure_rootfs(release)
    version = (root / "usr/lib/python3/dist-packages").glob("pystemd-*.egg-info")
    print(release.name, [p.name for p in version])
    script = (f"mount --bind -o ro {shlex.quote(str(TOP))} {shlex.quote(str(root))}/mnt && "
              f"exec chroot {shlex.quote(str(root))} /usr/bin/env -i PYTHONPATH=/mnt "
              f"/usr/bin/python3 -B -c {shlex.quote(PROBE.replace('CASE', '').replace('STAND_INS', 'None'))}")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          text=True, capture_output=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    got = json.loads(proc.stdout)
    assert got["changed"] == [] and not got["full"] and got["real_pprint"], got
    assert "pystemd.utils" not in got["added"] and "pprint" not in got["added"], got
    assert got["opened"] != "opened", got
