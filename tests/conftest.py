"""Shared fixtures: a throw-away /etc and settings that point into tmp_path."""

from __future__ import annotations

import os
import shutil
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
def etc(tmp_path: Path) -> Path:
    """A minimal /etc under tmp_path that useradd --prefix can work in."""
    d = tmp_path / "root" / "etc"
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
    (tmp_path / "root" / "home").mkdir()
    return d


@pytest.fixture
def conf(tmp_path: Path) -> settings.Settings:
    """Settings whose every path is below tmp_path/root (the fixture etc's root)."""
    home = tmp_path / "root" / "home" / "theiaos"
    return settings.load(environ={"THEIAOS_PODMAN_HOME": str(home)}, admin={}, chosen={})


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, useradd)")
needs_useradd = pytest.mark.skipif(shutil.which("useradd") is None, reason="no useradd")
