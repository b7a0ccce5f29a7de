"""Shared fixtures: a throw-away /etc and settings that point into tmp_path."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from theiaos_pkg import settings

LOGIN_DEFS = """\
# a trimmed login.defs
UID_MIN                  1000
SYS_UID_MAX               999
SUB_UID_MIN		   100000
SUB_UID_MAX		600100000
SUB_GID_MIN		   100000
SUB_GID_MAX		600100000
"""


@pytest.fixture
def world() -> Iterator[Path]:
    """A directory every account can enter (0755 below the sticky /var/tmp), for files
    an account must reach: pytest's own tmp_path sits below a 0700 directory."""
    top = Path(tempfile.mkdtemp(prefix="theiaos-test-", dir="/var/tmp"))
    top.chmod(0o755)
    yield top
    shutil.rmtree(top)


@pytest.fixture
def etc(world: Path) -> Path:
    """A minimal /etc under a world-enterable root that useradd --prefix can work in."""
    d = world / "root" / "etc"
    d.mkdir(parents=True)
    for name, text in {
        "passwd": "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
        "group": "root:x:0:\nalice:x:1000:\n",
        "shadow": "root:*:19000:0:99999:7:::\nalice:*:19000:0:99999:7:::\n",
        "gshadow": "root:*::\nalice:!::\n",
        "login.defs": LOGIN_DEFS,
        "subuid": "alice:100000:65536\n",
        "subgid": "alice:100000:65536\n",
    }.items():
        (d / name).write_text(text)
    for secret in ("shadow", "gshadow"):
        os.chmod(d / secret, 0o640)
    (world / "root" / "home").mkdir()
    return d


@pytest.fixture
def conf(world: Path) -> settings.Settings:
    """Settings whose every path is below world/root (the fixture etc's root)."""
    home = world / "root" / "home" / "theiaos"
    return settings.load(environ={"THEIAOS_PODMAN_HOME": str(home)}, admin={}, chosen={})


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, useradd)")
needs_useradd = pytest.mark.skipif(shutil.which("useradd") is None, reason="no useradd")


@pytest.fixture(autouse=True)
def package_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package's own state (/var/lib/theiaos-podman) in a temporary directory: no
    test writes the build machine's."""
    from theiaos_pkg import state

    d = tmp_path / "var-lib-theiaos-podman"
    monkeypatch.setattr(state, "DIR", d)
    return d
