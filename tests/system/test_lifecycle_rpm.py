"""The package lifecycle with dnf, from a local repository made with createrepo_c, in
one booted lab (the tests run in order and share it): install, reinstall, upgrade,
erase, install again, power cycle. The same hooks as the .deb, driven by $1."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..lab import Lab, build_test_image
from .conftest import HOME, http_get, lab_only, port_free
from .test_lifecycle_deb import ADMIN, EDIT, QUADLET, Box

pytestmark = lab_only

REPO_IN_LAB = "/var/tmp/repo"
PROVIDES_SPEC = Path(__file__).resolve().parent.parent / "rpm" / "lab-provides.spec"


def lab_provides(top: Path) -> Path:
    """The rpm (built under ``top``) that tells rpm's database what dpkg installed in the
    lab (tests/rpm/lab-provides.spec)."""
    subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {top}", str(PROVIDES_SPEC)],
                   check=True, capture_output=True, text=True)
    return next((top / "RPMS" / "noarch").glob("*.rpm"))


class DnfBox(Box):
    def dnf(self, *args: str) -> str:
        proc = self.lab.run(
            "dnf", "-y", "--setopt=reposdir=/nonexistent",
            f"--repofrompath=lab,file://{REPO_IN_LAB}", "--setopt=lab.gpgcheck=0",
            "--releasever=13", *args, check=False, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        return out

    def version(self) -> str:
        return self.lab.run("rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}", "theiaos-podman",
                            check=False).stdout


def _lab_repo(tmp: Path) -> Path:
    """Our two builds plus the lab's virtual provides, indexed with createrepo_c."""
    repo = os.environ.get("THEIAOS_REPO")
    if not repo:
        pytest.fail("THEIAOS_REPO must name the dnf repository: run `make check`")
    out = tmp / "repo"
    shutil.copytree(Path(repo) / "dnf", out)  # make repo's signed dnf repository
    shutil.copy(lab_provides(tmp / "rpmbuild"), out)
    subprocess.run(["createrepo_c", "--quiet", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnfBox]:
    repo = _lab_repo(tmp_path_factory.mktemp("repo"))
    assert port_free(18789), "127.0.0.1:18789 is busy on the host (the lab shares it)"
    with Lab(tmp_path_factory.mktemp("lifecycle-rpm")) as lab:
        shutil.copytree(repo, lab.host_path(REPO_IN_LAB))
        # Lab only: Debian's rpm runs scriptlets in a private namespace (tmpfs over /tmp
        # and /home, no network), meant for building chroots; Fedora's rpm does not, and
        # there the scriptlets must reach /home, /run/user and 127.0.0.1 like ours do.
        lab.host_path("/etc/rpm").mkdir(exist_ok=True)
        lab.host_path("/etc/rpm/macros").write_text("%__transaction_unshare %{nil}\n")
        yield DnfBox(lab)


RELEASE = os.environ.get("THEIAOS_RELEASE", "")
# dist/theiaos-podman-VERSION-1.noarch.rpm: the version just built
BUILT = os.environ.get("THEIAOS_RPM", "x-0-1.").rsplit("-", 2)[-2]


def test_install_the_last_release(box: DnfBox) -> None:
    """The lifecycle starts from real old code: the last released .rpm, as built then."""
    out = box.dnf("install", f"theiaos-podman-{RELEASE}-1")
    assert "theiaos-podman: image: missing" in out, out
    build_test_image(box.lab, "theiaos")
    box.lab.run("theiaosctl", "start", timeout=400)
    assert box.up() and box.linger() and box.version() == f"{RELEASE}-1"
    box.token = box.lab.run("theiaosctl", "token", "show").stdout.strip()
    box.cid = box.container_id()
    assert len(box.subid_lines()) == 2


def test_reinstall_restarts_nothing(box: DnfBox) -> None:
    out = box.dnf("reinstall", "theiaos-podman")
    assert "theiaos-podman: service: unchanged" in out, out
    assert box.container_id() == box.cid and box.up()


def _leftovers(box: DnfBox) -> list[str]:
    return box.lab.run("sh", "-c", "ls /etc/theiaos").stdout.split()


def test_upgrade_from_the_release_keeps_everything(box: DnfBox) -> None:
    """... and the admin's settings file, which 0.2.0 shipped as %config: no .rpmnew,
    no .rpmsave, not a byte changed."""
    box.lab.run("sh", "-c", f"printf '{EDIT}' >> {ADMIN}")
    edited = box.read(ADMIN)
    out = box.dnf("install", f"theiaos-podman-{BUILT}-1")
    assert box.read(ADMIN) == edited and _leftovers(box) == ["podman.env"], out
    assert "HealthStartPeriod=100s" in box.read(QUADLET)
    assert "remove:" not in out  # the old %preun saw $1=1: nothing torn down
    assert "theiaos-podman: quadlet: changed" in out and "service: restarted" in out, out
    assert box.version() == f"{BUILT}-1"
    assert box.up() and box.linger() and http_get("/", box.token) == 200
    assert box.lab.run("theiaosctl", "token", "show").stdout.strip() == box.token
    box.cid = box.container_id()


def test_upgrade_that_changes_nothing_restarts_nothing(box: DnfBox) -> None:
    out = box.dnf("upgrade", "theiaos-podman")
    assert "theiaos-podman: service: unchanged" in out, out
    assert box.version() == f"{BUILT}-2"
    assert box.container_id() == box.cid and box.up() and box.linger()
    assert box.lab.run("theiaosctl", "token", "show").stdout.strip() == box.token


def test_erase_stops_and_cleans_up(box: DnfBox) -> None:
    box.lab.run("sh", "-c", f"printf '# theirs\\n{EDIT}' > {ADMIN}")
    listed = box.lab.run("rpm", "-ql", "theiaos-podman").stdout.split()
    shipped = [p for p in listed if box.lab.run("test", "-d", p, check=False).returncode
               and p != ADMIN]
    out = box.dnf("remove", "theiaos-podman")
    assert "remove: removed " + QUADLET in out, out
    assert "kept, as user data: the theiaos account" in out
    assert not box.up() and not box.linger()
    assert box.lab.run("sh", "-c", "ls /etc/systemd/system/ | grep '^user@'",
                       check=False).stdout == ""
    # rpm has no purge: the admin's settings stay (rm -r /etc/theiaos deletes them)
    assert box.read(ADMIN) == f"# theirs\n{EDIT}" and _leftovers(box) == ["podman.env"]
    for gone in (QUADLET, "/var/lib/theiaos-podman", "/usr/bin/theiaosctl",
                 "/usr/lib/python3/dist-packages/theiaos_pkg", f"{HOME}/run-theiaos-podman.sh",
                 *shipped):
        assert not box.exists(gone), gone
    assert box.exists(f"{HOME}/.theiaos/.env") and len(box.subid_lines()) == 2


def test_install_again_reuses_account_token_and_subids(box: DnfBox) -> None:
    out = box.dnf("install", "theiaos-podman")
    assert "account: unchanged" in out and "subids: unchanged" in out, out
    assert "settings-file: unchanged" in out and box.read(ADMIN) == f"# theirs\n{EDIT}"
    assert _leftovers(box) == ["podman.env"]
    assert "Setup complete" in out and box.up()
    assert box.lab.run("theiaosctl", "token", "show").stdout.strip() == box.token
    assert len(box.subid_lines()) == 2


def test_gateway_survives_a_power_cycle(box: DnfBox) -> None:
    box.survives_power_cycle()


def test_the_rpm_declares_the_account_in_sysusers_d(box: DnfBox) -> None:
    """The rpm ships the sysusers.d file (rpm >= 4.19 creates the user from it; the hook
    applies it with systemd-sysusers: tests/system/test_package.py and test_debian12.py
    check a fresh install), and the account there is what it declares."""
    conf = "/usr/lib/sysusers.d/theiaos-podman.conf"
    assert conf in box.lab.run("rpm", "-ql", "theiaos-podman").stdout.split()
    proc = box.lab.run("systemd-sysusers", "--dry-run", conf)
    assert "Creating" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
