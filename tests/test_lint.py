"""Linters as tests: ruff, mypy (strict), shellcheck, lintian on the built .deb."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    for candidate in (BIN / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail(f"{name} is not installed: run `make deps`")


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, cwd=TOP, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout}{proc.stderr}"


def test_ruff() -> None:
    _run(_tool("ruff"), "check", "theiaos_pkg", "tests")


def test_mypy_strict() -> None:
    _run(_tool("mypy"))


def test_shellcheck_maintainer_scripts_and_shims() -> None:
    scripts = sorted(str(p) for p in (TOP / "debian").glob("theiaos-podman.*")
                     if p.read_text().startswith("#!/bin/sh"))
    assert len(scripts) == 3
    shims = [str(TOP / "setup-podman.sh"), str(TOP / "scripts" / "run-theiaos-podman.sh"),
             str(TOP / "scripts" / "make-repo.sh")]
    _run(_tool("shellcheck"), *scripts, *shims)
    _run(_tool("shellcheck"), "--shell=bash", str(TOP / "completions" / "theiaosctl"))


def test_lintian_reports_no_errors() -> None:
    deb = os.environ.get("THEIAOS_DEB")
    if not deb:
        pytest.skip("THEIAOS_DEB not set (make check builds the .deb and sets it)")
    proc = subprocess.run([_tool("lintian"), "--no-tag-display-limit", deb],
                          capture_output=True, text=True, check=False)
    errors = [ln for ln in proc.stdout.splitlines() if ln.startswith("E:")]
    assert not errors, proc.stdout
    assert proc.returncode in (0, 1), proc.stderr  # 1: warnings only (E: lines checked above)


def test_rpmlint_reports_no_errors() -> None:
    rpm = os.environ.get("THEIAOS_RPM")
    if not rpm:
        pytest.skip("THEIAOS_RPM not set (make check builds the .rpm and sets it)")
    proc = subprocess.run([_tool("rpmlint"), "-c", str(TOP / "rpm" / "rpmlint.toml"), rpm,
                           str(TOP / "rpm" / "theiaos-podman.spec")],
                          capture_output=True, text=True, check=False)
    assert " 0 errors" in proc.stdout, proc.stdout + proc.stderr


def test_spec_version_is_the_package_version() -> None:
    from theiaos_pkg import __version__

    spec = (TOP / "rpm" / "theiaos-podman.spec").read_text()
    assert f"\nVersion:        {__version__}\n" in spec


def test_spec_parses_as_fedora_would() -> None:
    """The Fedora branch cannot be built here (no pyproject macros); rpmspec at least
    parses it with Fedora's conditionals on."""
    proc = subprocess.run(
        [_tool("rpmspec"), "-P", "--define", "fedora 41",
         str(TOP / "rpm" / "theiaos-podman.spec")],
        capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "%pyproject_install" in proc.stdout and "dist-packages" not in proc.stdout
