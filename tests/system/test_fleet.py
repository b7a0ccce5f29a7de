"""A fleet of three (issue 17): contrib/ansible/site.yml, run by ansible-core from
Debian's archive (ansible.builtin only: the system's collections are not looked at),
against three labs booted at once, each reached over ssh on its own loopback port and
given its own gateway port by the playbook's preseeded /etc/theiaos/podman.env.

The signed apt and dnf repositories (scripts/make-repo.sh, the build's key) are served
over HTTP from the build machine; two hosts take the apt branch of the playbook, the
third its dnf branch (rpm_key, yum_repository, dnf with gpgcheck and repo_gpgcheck).
First they hold build -1: the playbook installs it on every host
and writes one report; a rerun changes nothing. Then build -2 is published: the same
playbook rolls it out, every gateway answers again with its token and its port, and a
rerun changes nothing again."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

import pytest

from ..lab import CONTAINER_PATH, IMAGE_IMPORT_CHANGES, IMAGE_REF, Lab, _cached_image_tar
from .conftest import SHUTDOWN_BOUND, http_get, lab_only, port_free
from .test_lifecycle_rpm import lab_provides

pytestmark = lab_only

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "contrib" / "ansible" / "site.yml"
MAKE_REPO = ROOT / "scripts" / "make-repo.sh"
#: (ssh, gateway, bridge) ports per host on the build machine's loopback; none is 18789,
#: the other lab tests' port.
PORTS = ((22431, 18801, 18802), (22432, 18811, 18812), (22433, 18821, 18822))
#: The hosts the playbook drives with dnf (its Fedora/RHEL branch: rpm_key,
#: yum_repository, dnf): a Debian lab with dnf and rpm, as test_lifecycle_rpm uses.
DNF_HOSTS = {"fleet3"}
BUILT = os.environ.get("THEIAOS_DEB", "x_0-1_").rsplit("_", 2)[-2].rsplit("-", 1)[0]
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


class Host(NamedTuple):
    name: str
    lab: Lab
    ssh: int
    port: int
    bridge: int
    dnf: bool

    def token(self) -> str:
        return self.lab.run("theiaosctl", "token", "show").stdout.strip()

    def answers(self, token: str) -> bool:
        try:
            return http_get("/", token, port=self.port) == 200 and http_get("/", "wrong", port=self.port) == 401
        except OSError:
            return False


class Fleet(NamedTuple):
    hosts: tuple[Host, ...]
    repo: Path
    inventory: Path
    report: Path
    env: dict[str, str]

    def publish(self, *builds: str) -> None:
        """The repository holds the .deb and .rpm of ``builds`` ("" for the first build,
        "NEXT" for the next) and nothing else, signed with the build's key."""
        env = {"PATH": CONTAINER_PATH, "GNUPGHOME": self.env["THEIAOS_REPO_GNUPGHOME"]}
        debs = [os.environ[f"THEIAOS_DEB{'_' + b if b else ''}"] for b in builds]
        rpms = [os.environ[f"THEIAOS_RPM{'_' + b if b else ''}"] for b in builds]
        subprocess.run(["sh", str(MAKE_REPO), str(self.repo), "http://unused", *debs, "--", *rpms],
                       env=env, check=True, capture_output=True, text=True)

    def play(self) -> dict[str, int]:
        """Run the playbook once; each host's `changed` count (every host ok, none failed)."""
        proc = subprocess.run(["ansible-playbook", "-i", str(self.inventory), str(PLAYBOOK)],
                              env=self.env, capture_output=True, text=True, timeout=900)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        recap = {m[1]: (int(m[3]), int(m[4]), int(m[5])) for m in RECAP.finditer(proc.stdout)}
        assert sorted(recap) == sorted(h.name for h in self.hosts), out
        assert all(unreachable == failed == 0 for _c, unreachable, failed in recap.values()), out
        return {name: changed for name, (changed, _u, _f) in recap.items()}


def _serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, threading.Thread]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
        pass


def _as_a_dnf_host(lab: Lab, provides: Path) -> None:
    """Lab only: what a Fedora/RHEL host has and this Debian lab with dnf lacks. rpm's
    database knows the lab's Debian packages (virtual provides); rpm runs scriptlets
    as Fedora's does, not in Debian's private namespace (test_lifecycle_rpm); dnf finds
    /etc/yum.repos.d and a release version (Fedora's fedora-release gives both)."""
    lab.put(provides, "/var/tmp/lab-provides.rpm")
    lab.run("rpm", "-i", "/var/tmp/lab-provides.rpm")
    lab.run("sh", "-c", "mkdir -p /etc/rpm /etc/yum.repos.d /etc/dnf/vars "
            "&& echo '%__transaction_unshare %{nil}' > /etc/rpm/macros "
            "&& echo 13 > /etc/dnf/vars/releasever")


def _image_archive(lab: Lab, dest: Path) -> None:
    """The stand-in gateway image as `podman save` writes it (what an operator copies to
    hosts that do not pull), made with root's Podman in one lab."""
    lab.put(_cached_image_tar(lab), "/var/tmp/image-rootfs.tar")
    changes = [arg for change in IMAGE_IMPORT_CHANGES for arg in ("--change", change)]
    lab.run("podman", "import", "--quiet", *changes, "/var/tmp/image-rootfs.tar", IMAGE_REF, timeout=300)
    lab.run("podman", "save", "--quiet", "-o", "/var/tmp/image.tar", IMAGE_REF, timeout=300)
    shutil.copyfile(lab.host_path("/var/tmp/image.tar"), dest)
    lab.run("sh", "-c", "podman rmi --all --force >/dev/null && rm /var/tmp/image.tar /var/tmp/image-rootfs.tar")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    need = ("THEIAOS_DEB", "THEIAOS_DEB_NEXT", "THEIAOS_RPM", "THEIAOS_RPM_NEXT", "THEIAOS_REPO_GNUPGHOME")
    if not all(os.environ.get(v) for v in need):
        pytest.fail(f"{', '.join(need)} must be set: run `make check`")
    if shutil.which("ansible-playbook", path=CONTAINER_PATH) is None:
        pytest.fail("ansible-playbook not found: make deps installs Debian's ansible-core")
    busy = [p for ports in PORTS for p in ports if not port_free(p)]
    assert not busy, f"ports {busy} are busy on the host (the labs share its network)"
    work = tmp_path_factory.mktemp("fleet")
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    provides = lab_provides(work / "rpmbuild")
    with ExitStack() as stack:
        hosts = []
        for i, (ssh, port, bridge) in enumerate(PORTS, 1):
            lab = stack.enter_context(Lab(work / f"lab{i}"))
            lab.serve_ssh(ssh, (work / "id_ed25519.pub").read_text())
            name = f"fleet{i}"
            if name in DNF_HOSTS:
                _as_a_dnf_host(lab, provides)
            hosts.append(Host(name, lab, ssh, port, bridge, name in DNF_HOSTS))
        known = "".join(subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(h.ssh), "127.0.0.1"],
                                       capture_output=True, text=True, check=True).stdout for h in hosts)
        assert known.count("ssh-ed25519") == len(hosts), known
        (work / "known_hosts").write_text(known)
        _image_archive(hosts[0].lab, work / "gateway-image.tar")
        repo = work / "repo"
        server, thread = _serve(repo)
        stack.callback(thread.join, 10)
        stack.callback(server.shutdown)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        lines = ["[gateways]"]
        for h in hosts:
            settings = {"THEIAOS_PODMAN_GATEWAY_HOST_PORT": h.port, "THEIAOS_PODMAN_BRIDGE_HOST_PORT": h.bridge,
                        "THEIAOS_PODMAN_IMAGE": IMAGE_REF}
            lines.append(f"{h.name} ansible_host=127.0.0.1 ansible_port={h.ssh} "
                         f"theiaos_settings='{json.dumps(settings)}'"
                         + (" theiaos_package_manager=dnf" if h.dnf else ""))
        lines += ["", "[gateways:vars]", "ansible_user=root", "ansible_python_interpreter=/usr/bin/python3",
                  f"ansible_ssh_private_key_file={key}",
                  f"ansible_ssh_common_args='-o UserKnownHostsFile={work / 'known_hosts'} -o IdentitiesOnly=yes'",
                  f"theiaos_repo_url={url}", f"theiaos_repo_key={repo / 'theiaos-podman.asc'}",
                  f"theiaos_image_archive={work / 'gateway-image.tar'}",
                  f"theiaos_report={work / 'report.json'}"]
        inventory = work / "inventory.ini"
        inventory.write_text("\n".join(lines) + "\n")
        home = work / "ansible-home"
        home.mkdir()
        env = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "HOME": str(home), "ANSIBLE_HOME": str(home),
               "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_FORKS": "3", "ANSIBLE_PIPELINING": "1",
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False",
               "ANSIBLE_COLLECTIONS_PATH": str(home / "collections"),
               "THEIAOS_REPO_GNUPGHOME": os.environ["THEIAOS_REPO_GNUPGHOME"]}
        yield Fleet(tuple(hosts), repo, inventory, work / "report.json", env)
        server.shutdown()
        # All three power off at once, each within the bound: each lab has a cgroup tree of
        # its own (tests/lab.py), so no lab's shutdown waits for another's processes.
        took: dict[str, float] = {}

        def power_off(h: Host) -> None:
            h.lab.stop()  # the guest's shutdown is timed; removing its tree on the host is not
            took[h.name] = round(h.lab.last_poweroff, 1)

        stoppers = [threading.Thread(target=power_off, args=(h,)) for h in hosts]
        for s in stoppers:
            s.start()
        for s in stoppers:
            s.join()
        print(f"fleet: power-off took {took} s")
        assert all(t < SHUTDOWN_BOUND for t in took.values()), (
            f"fleet: power-off took {took} s (bound {SHUTDOWN_BOUND:.0f} s)")


def _report(fleet: Fleet) -> dict[str, dict[str, object]]:
    report: dict[str, dict[str, object]] = json.loads(fleet.report.read_text())
    assert sorted(report) == sorted(h.name for h in fleet.hosts)
    return report


def test_the_playbook_installs_three_hosts_by_name_each_on_its_own_port(fleet: Fleet) -> None:
    fleet.publish("")
    changed = fleet.play()
    assert all(n > 0 for n in changed.values()), changed
    report = _report(fleet)
    text = fleet.report.read_text()
    for h in fleet.hosts:
        token = h.token()
        assert h.answers(token), f"{h.name}: no answer on 127.0.0.1:{h.port}"
        assert token not in text, "the report holds a token"
        entry = report[h.name]
        status = entry["status"]
        assert isinstance(status, dict)
        assert entry["package"] == f"{BUILT}-1"
        assert status["healthy"] is True and status["unit_active"] == "active"
        assert status["url"] == f"http://127.0.0.1:{h.port}/", status
        if h.dnf:  # installed by dnf from the signed repository, not by dpkg
            rpm = h.lab.run("rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}", "theiaos-podman").stdout
            assert rpm == f"{BUILT}-1", rpm
            assert h.lab.run("dpkg", "-s", "theiaos-podman", check=False).returncode != 0
            repo = h.lab.host_path("/etc/yum.repos.d/theiaos-podman.repo").read_text()
            assert "gpgcheck = 1" in repo and "repo_gpgcheck = 1" in repo, repo
        # the admin's file is the playbook's, untouched by the package's setup
        env = h.lab.host_path("/etc/theiaos/podman.env").read_text()
        assert f"THEIAOS_PODMAN_GATEWAY_HOST_PORT={h.port}\n" in env


def test_a_rerun_changes_nothing(fleet: Fleet) -> None:
    before = fleet.report.read_bytes()
    assert fleet.play() == {h.name: 0 for h in fleet.hosts}
    assert fleet.report.read_bytes() == before


def test_the_same_playbook_rolls_a_new_version_out(fleet: Fleet) -> None:
    tokens = {h.name: h.token() for h in fleet.hosts}
    fleet.publish("", "NEXT")
    changed = fleet.play()
    assert all(n > 0 for n in changed.values()), changed
    report = _report(fleet)
    for h in fleet.hosts:
        assert report[h.name]["package"] == f"{BUILT}-2"
        assert h.token() == tokens[h.name], f"{h.name}: the upgrade changed the token"
        assert h.answers(tokens[h.name]), f"{h.name}: no answer on 127.0.0.1:{h.port} after the upgrade"
        repos = "/etc/yum.repos.d/" if h.dnf else "/etc/apt/sources.list.d/"
        out = h.lab.run("sh", "-c", f"ls /etc/theiaos/ {repos}").stdout
        assert not re.search(r"\.(dpkg-|rpmnew|rpmsave)", out), out
    # and then nothing is left to do
    assert fleet.play() == {h.name: 0 for h in fleet.hosts}
