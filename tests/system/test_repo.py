"""`make repo`'s signed repositories, as a host uses them (issue 17): the key and the
.sources / .repo file installed, then `apt install theiaos-podman` and `dnf install
theiaos-podman` by name with signature checking on, an upgrade to the newer build from
the same repository, and a tampered Release, repomd.xml or package refused. One lab
(tests run in order): apt first, purged, then dnf."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..lab import Lab, build_test_image
from .conftest import lab_only, port_free
from .test_lifecycle_deb import Box
from .test_lifecycle_rpm import lab_provides

pytestmark = lab_only

IN_LAB = "/var/tmp/theiaos-repo"  # make repo's REPO_URL (file:///var/tmp/theiaos-repo)
BUILT = os.environ.get("THEIAOS_RPM", "x-0-1.").rsplit("-", 2)[-2]
#: apt-get update of our source alone (the lab's archive lists stay as they are)
APT_UPDATE = ("apt-get", "update", "-o", "Dir::Etc::SourceList=/dev/null",
              "-o", "APT::Get::List-Cleanup=0")


class Host(Box):

    def run(self, *argv: str, ok: bool | None = True) -> str:
        """``ok``: the exit status must be 0 (True), not 0 (False), either (None)."""
        proc = self.lab.run(*argv, check=False, timeout=600,
                            env={"DEBIAN_FRONTEND": "noninteractive"})
        out = proc.stdout + proc.stderr
        assert ok is None or (proc.returncode == 0) == ok, f"exit {proc.returncode}:\n{out}"
        return out

    def version(self, query: tuple[str, ...]) -> str:
        return self.lab.run(*query, check=False).stdout.strip()



@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    repo = os.environ.get("THEIAOS_REPO")
    if not repo:
        pytest.fail("THEIAOS_REPO must name make repo's output: run `make check`")
    assert port_free(18789), "127.0.0.1:18789 is busy on the host (the lab shares it)"
    with Lab(tmp_path_factory.mktemp("repo")) as lab:
        shutil.copytree(repo, lab.host_path(IN_LAB))
        lab.host_path("/etc/rpm").mkdir(exist_ok=True)  # as test_lifecycle_rpm (lab only)
        lab.host_path("/etc/rpm/macros").write_text("%__transaction_unshare %{nil}\n")
        yield Host(lab)


def _tamper(path: Path) -> bytes:
    """Change one byte of ``path``; its old content (to put back)."""
    old = path.read_bytes()
    i = len(old) // 2
    path.write_bytes(old[:i] + bytes([old[i] ^ 0x20]) + old[i + 1:])
    return old


# --- apt ---------------------------------------------------------------------------------

DPKG_VERSION = ("dpkg-query", "-W", "-f=${Version}", "theiaos-podman")


def test_apt_installs_theiaos_podman_by_name_from_the_signed_repository(host: Host) -> None:
    host.run("install", "-m", "0644", f"{IN_LAB}/theiaos-podman.asc", "/usr/share/keyrings/")
    host.run("install", "-m", "0644", f"{IN_LAB}/theiaos-podman.sources", "/etc/apt/sources.list.d/")
    out = host.run(*APT_UPDATE)
    assert "not signed" not in out and "NO_PUBKEY" not in out, out
    policy = host.run("apt-cache", "policy", "theiaos-podman")
    assert f"{BUILT}-2" in policy and f"file:{IN_LAB}/apt ./ Packages" in policy, policy
    out = host.run("apt-get", "-y", "install", f"theiaos-podman={BUILT}-1")
    assert host.version(DPKG_VERSION) == f"{BUILT}-1", out
    build_test_image(host.lab, "theiaos")
    host.run("theiaosctl", "start")
    assert host.up()


def test_apt_upgrade_takes_the_newer_build(host: Host) -> None:
    out = host.run("apt-get", "-y", "upgrade")
    assert host.version(DPKG_VERSION) == f"{BUILT}-2", out
    assert "Configuration file" not in out and "service: unchanged" in out, out
    assert host.up()


def test_apt_refuses_a_tampered_release_file(host: Host) -> None:
    inrelease = host.lab.host_path(f"{IN_LAB}/apt/InRelease")
    lines = inrelease.read_text().splitlines(keepends=True)
    at = next(i for i, ln in enumerate(lines) if ln.startswith("Date:"))
    old = inrelease.read_bytes()
    inrelease.write_text("".join([*lines[:at], "Date: Thu, 01 Jan 2037 00:00:00 UTC\n",
                                  *lines[at + 1:]]))
    try:
        # apt refuses the index (keeps the one it had, warns) and exits 0 nonetheless
        out = host.run(*APT_UPDATE, ok=None)
        assert "The repository is not updated and the previous index files will be used" in out
        assert "manipulated" in out or "BADSIG" in out or "signatures were invalid" in out, out
    finally:
        inrelease.write_bytes(old)
    host.run(*APT_UPDATE)


def test_apt_refuses_a_tampered_package(host: Host) -> None:
    deb = host.lab.host_path(f"{IN_LAB}/apt/theiaos-podman_{BUILT}-2_all.deb")
    old = _tamper(deb)
    try:
        out = host.run("apt-get", "-y", "install", "--reinstall", "theiaos-podman", ok=False)
        assert "Hash Sum mismatch" in out or "hashes" in out.lower(), out
    finally:
        deb.write_bytes(old)
    assert host.version(DPKG_VERSION) == f"{BUILT}-2" and host.up()
    host.run("apt-get", "-y", "purge", "theiaos-podman")
    host.run("rm", "/etc/apt/sources.list.d/theiaos-podman.sources")


# --- dnf ---------------------------------------------------------------------------------

RPM_VERSION = ("rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}", "theiaos-podman")


def _dnf(host: Host, *args: str, ok: bool = True) -> str:
    return host.run("dnf", "-y", "--releasever=13", "--setopt=reposdir=/etc/yum.repos.d",
                    *args, ok=ok)


def test_dnf_installs_theiaos_podman_by_name_with_gpgcheck(host: Host, tmp_path: Path) -> None:
    # Lab only: the Debian packages the rpm depends on, as virtual provides (unsigned,
    # a repository of their own); ours stays signed and checked.
    provides = host.lab.host_path("/var/tmp/lab-provides")
    provides.mkdir()
    shutil.copy(lab_provides(tmp_path / "rpmbuild"), provides)
    subprocess.run(["createrepo_c", "--quiet", str(provides)], check=True)
    host.lab.host_path("/etc/yum.repos.d").mkdir(exist_ok=True)
    host.lab.host_path("/etc/yum.repos.d/lab-provides.repo").write_text(
        "[lab-provides]\nname=lab only\nbaseurl=file:///var/tmp/lab-provides\ngpgcheck=0\n")
    host.run("install", "-D", "-m", "0644", f"{IN_LAB}/theiaos-podman.asc",
             "/etc/pki/rpm-gpg/RPM-GPG-KEY-theiaos-podman")
    host.run("install", "-m", "0644", f"{IN_LAB}/theiaos-podman.repo", "/etc/yum.repos.d/")
    repo = host.lab.host_path("/etc/yum.repos.d/theiaos-podman.repo").read_text()
    assert "gpgcheck=1" in repo and "repo_gpgcheck=1" in repo
    out = _dnf(host, "install", f"theiaos-podman-{BUILT}-1")
    assert host.version(RPM_VERSION) == f"{BUILT}-1", out
    assert "theiaos-podman" in host.run("rpm", "-q", "gpg-pubkey", "--qf", "%{SUMMARY}\n")
    host.run("theiaosctl", "start")
    assert host.up()


def test_dnf_upgrade_takes_the_newer_build(host: Host) -> None:
    out = _dnf(host, "upgrade", "theiaos-podman")
    assert host.version(RPM_VERSION) == f"{BUILT}-2", out
    assert "service: unchanged" in out and host.up(), out


def test_dnf_refuses_tampered_metadata(host: Host) -> None:
    repomd = host.lab.host_path(f"{IN_LAB}/dnf/repodata/repomd.xml")
    old = repomd.read_bytes()
    repomd.write_bytes(old.replace(b"</repomd>", b"<!-- changed --></repomd>"))
    try:
        out = _dnf(host, "--refresh", "reinstall", "theiaos-podman", ok=False)
        assert "signature" in out.lower() or "gpg" in out.lower(), out
    finally:
        repomd.write_bytes(old)


def test_dnf_refuses_an_unsigned_package(host: Host, tmp_path: Path) -> None:
    """A repository whose metadata is signed but whose package is not (swapped for the
    unsigned build of the same version, metadata regenerated and signed again)."""
    unsigned = os.environ.get("THEIAOS_RPM_NEXT") or ""
    if not unsigned:
        pytest.fail("THEIAOS_RPM_NEXT must name the unsigned second build: run `make check`")
    dnf = host.lab.host_path(f"{IN_LAB}/dnf")
    saved = tmp_path / "dnf"
    shutil.copytree(dnf, saved)
    try:
        shutil.copy(unsigned, dnf / Path(unsigned).name)
        subprocess.run(["createrepo_c", "--quiet", "--update", str(dnf)], check=True)
        gnupg = os.environ.get("THEIAOS_REPO_GNUPGHOME", "")
        subprocess.run(["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase",
                        "", "--detach-sign", "--armor", "-o", str(dnf / "repodata/repomd.xml.asc"),
                        str(dnf / "repodata/repomd.xml")], check=True, env={**os.environ,
                                                                           "GNUPGHOME": gnupg})
        out = _dnf(host, "--refresh", "reinstall", "theiaos-podman", ok=False)
        assert "not signed" in out or "signature" in out.lower(), out
    finally:
        shutil.rmtree(dnf)
        shutil.copytree(saved, dnf)
    assert host.version(RPM_VERSION) == f"{BUILT}-2" and host.up()
