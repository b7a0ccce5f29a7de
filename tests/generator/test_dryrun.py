"""Every rendered Quadlet variant through the real generator (Debian 13's quadlet)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ..unit.test_quadlet import variants

pytestmark = pytest.mark.generator


@pytest.fixture(scope="module")
def quadlet_bin() -> str:
    if os.geteuid() != 0:
        pytest.skip("building the lab root file system (for its quadlet binary) needs root")
    from ..lab import ensure_rootfs

    path = ensure_rootfs() / "usr/libexec/podman/quadlet"
    assert path.is_file(), f"{path} missing: is podman in the lab's package list?"
    return str(path)


def dryrun(quadlet_bin: str, tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "theiaos.container").write_text(text)
    env = dict(os.environ, QUADLET_UNIT_DIRS=str(tmp_path))
    return subprocess.run([quadlet_bin, "-dryrun", "-user"], env=env, text=True,
                          capture_output=True, check=False, timeout=60)


# Quadlet variants the generator here (Debian 13's Podman 5.4) knows; newer keys
# (Memory= from 5.5) are for newer generators.
GENERATOR = (5, 4)


def _known(name: str) -> bool:
    if not name.endswith(".container"):
        return False
    major, minor = name.split("-")[1].removesuffix(".container").split(".")
    return (int(major), int(minor)) <= GENERATOR


@pytest.mark.parametrize("name", sorted(n for n in variants() if _known(n)))
def test_variant_is_accepted(quadlet_bin: str, tmp_path: Path, name: str) -> None:
    proc = dryrun(quadlet_bin, tmp_path, variants()[name])
    assert proc.returncode == 0, proc.stderr
    assert "---theiaos.service---" in proc.stdout
    start = next(ln for ln in proc.stdout.splitlines() if ln.startswith("ExecStart="))
    assert "--user %U:%G --userns keep-id" in start
    if name.startswith(("podman-4.4", "podman-4.5", "custom-4.4")):  # no `secret create --replace`
        assert "--env-file " in start and "THEIAOS_GATEWAY_TOKEN" not in start
    else:  # the token as a Podman secret, by name: no value on the command line
        assert "--secret theiaos-gateway-token,type=env,target=THEIAOS_GATEWAY_TOKEN" in start
        assert "--env-file" not in start
    assert ":/home/node/.theiaos:Z" in start
    assert "WantedBy=default.target" in proc.stdout
    if "4.4" not in name:
        assert "--health-on-failure kill" in start
        # Ready when conmon (long-lived, in the unit) has started the container and the
        # tracked ExecStartPost has seen the health check pass; never --sdnotify=healthy.
        assert "--sdnotify=conmon" in start and "healthy" not in start.split("--health")[0]
        assert "Type=notify\n" in proc.stdout and "NotifyAccess=all\n" in proc.stdout
        # The start-post loop (with its own deadline) and its backstop reach the unit
        # as written: Quadlet passes [Service] through, systemd unescapes $$ and %%.
        text = variants()[name]
        post = next(ln for ln in text.splitlines() if ln.startswith("ExecStartPost="))
        assert "/usr/bin/podman stop -t 10 theiaos" in post
        assert f"\n{post}\n" in proc.stdout
        backstop = next(ln for ln in text.splitlines() if ln.startswith("TimeoutStartSec="))
        assert f"\n{backstop}\n" in proc.stdout


def test_generator_rejects_an_unknown_key(quadlet_bin: str, tmp_path: Path) -> None:
    text = variants()["podman-5.4.container"].replace("[Container]\n",
                                                      "[Container]\nNoSuchKey=1\n")
    proc = dryrun(quadlet_bin, tmp_path, text)
    assert proc.returncode != 0
    assert "unsupported key 'NoSuchKey'" in proc.stderr
