"""podstore's readers against files Podman 5.4 wrote in the lab (fixtures/podman-5.4),
laid out as Podman lays them out under a home and a runtime dir in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from theiaos_pkg import podstore
from theiaos_pkg.run import Identity

FIXTURES = Path(__file__).parent / "fixtures" / "podman-5.4"
IDS = json.loads((FIXTURES / "ids.json").read_text())
CID = (FIXTURES / "theiaos.cid").read_text().strip()


class _At(Identity):
    """The account with its runtime dir under tmp_path (Identity's is /run/user/UID)."""

    @property
    def runtime_dir(self) -> str:
        return f"{self.home}/run"


@pytest.fixture
def who(tmp_path: Path) -> Identity:
    system = Path("/etc/containers/storage.conf")
    if system.exists() and "rootless_storage_path" in system.read_text():
        pytest.skip("this machine moves rootless storage: podstore asks podman there")
    store = tmp_path / ".local/share/containers/storage"
    layout = {"images.json": "overlay-images", "containers.json": "overlay-containers",
              "volatile-containers.json": "overlay-containers", "secrets.json": "secrets"}
    for name, sub in layout.items():
        (store / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / name, store / sub / name)
    run = tmp_path / "run"
    (run / "containers/overlay-containers" / CID).mkdir(parents=True)
    shutil.copy(FIXTURES / "theiaos.cid", run / "theiaos.cid")
    shutil.copy(FIXTURES / "healthcheck.log", run / "containers/overlay-containers" / CID)
    return _At("theiaos", os.getuid(), os.getgid(), str(tmp_path))


def test_image_ids_by_name(who: Identity) -> None:
    assert podstore.image_id(who, "localhost/theiaos:local") == (True, IDS["image"])
    assert podstore.image_id(who, "localhost/theiaos:previous") == (True, IDS["image"])
    assert podstore.image_id(who, "localhost/nothing:here") == (True, None)


def test_containers_of_both_files(who: Identity) -> None:
    assert podstore.container_image(who, "theiaos") == (True, IDS["image"])  # --rm: volatile
    assert podstore.container_image(who, "other") == (True, IDS["image"])  # podman create
    assert podstore.container_image(who, "none") == (True, None)


def test_the_token_secrets_label(who: Identity) -> None:
    answered, label = podstore.secret_label(who, "theiaos-gateway-token", "io.theiaos.token-sha256")
    assert answered and label is not None and len(label) == 64
    assert podstore.secret_label(who, "theiaos-gateway-token", "other") == (True, None)
    assert podstore.secret_label(who, "no-such-secret", "x") == (True, None)


def test_the_units_container_from_its_cidfile_and_health_log(who: Identity) -> None:
    assert podstore.unit_state(who, "theiaos", "localhost/theiaos:local") == \
        ("healthy", IDS["image"], None)


def test_what_is_not_there_to_read_is_no_answer(who: Identity, tmp_path: Path) -> None:
    """The caller then asks podman: a missing, foreign or reshaped file is never read
    as an answer."""
    store = tmp_path / ".local/share/containers/storage"
    (tmp_path / "run/theiaos.cid").write_text("not a container id\n")
    assert podstore.unit_state(who, "theiaos", "localhost/theiaos:local") is None
    (store / "overlay-images/images.json").write_text('{"a": "dict, not a list"}')
    assert podstore.image_id(who, "localhost/theiaos:local") == (False, None)
    (store / "secrets/secrets.json").unlink()
    assert podstore.secret_label(who, "theiaos-gateway-token", "x") == (False, None)
    (tmp_path / ".config/containers").mkdir(parents=True)
    (tmp_path / ".config/containers/storage.conf").write_text("[storage]\n")
    assert podstore.container_image(who, "theiaos") == (False, None)  # its own storage
