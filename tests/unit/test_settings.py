from __future__ import annotations

from pathlib import Path

import pytest

from theiaos_pkg import settings
from theiaos_pkg.errors import SettingError


def test_defaults() -> None:
    s = settings.load(environ={}, admin={}, chosen={})
    assert (s.user, s.home, s.config_dir) == ("theiaos", "/home/theiaos", "/home/theiaos/.theiaos")
    assert s.workspace_dir == "/home/theiaos/.theiaos/workspace"
    assert (s.image, s.container_name) == ("localhost/theiaos:local", "theiaos")
    assert (s.gateway_port, s.bridge_port, s.publish_address) == (18789, 18790, "127.0.0.1")
    assert s.gateway_bind == "lan" and s.quadlet is True
    assert s.quadlet_path == "/home/theiaos/.config/containers/systemd/theiaos.container"
    assert s.url == "http://127.0.0.1:18789/"


def test_derived_defaults_follow_their_source() -> None:
    s = settings.load(environ={"THEIAOS_CONFIG_DIR": "/srv/gw/"}, admin={}, chosen={})
    assert s.config_dir == "/srv/gw"
    assert s.workspace_dir == "/srv/gw/workspace"


def test_admin_file_is_parsed_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    f = tmp_path / "podman.env"
    f.write_text(
        "# comment\n"
        "THEIAOS_PODMAN_GATEWAY_HOST_PORT=28789\n"
        f"THEIAOS_WORKSPACE_DIR=$(touch {marker})\n"
    )
    admin = settings.read_admin_file(f)
    assert admin["THEIAOS_PODMAN_GATEWAY_HOST_PORT"] == "28789"
    assert not marker.exists()
    with pytest.raises(SettingError, match="THEIAOS_WORKSPACE_DIR"):
        settings.load(environ={}, admin=admin, chosen={})
    f.write_text(f'THEIAOS_PODMAN_IMAGE="localhost/x:1" ; touch {marker}\n')
    with pytest.raises(SettingError, match=f"{f} line 1: cannot parse"):
        settings.read_admin_file(f)
    assert not marker.exists()


@pytest.mark.parametrize(("text", "why"), [
    ("THEIAOS_PODMAN_GATEWAY_HOST_PORT 18795\n", "line 1: cannot parse"),
    ("# ok\nTHEIAOS_PODMAN_GATEWAY_HOST_PORT\n", "line 2: THEIAOS_PODMAN_GATEWAY_HOST_PORT has no value"),
    ("\n\nTHEIAOS_PODMAN_PORT=1\n", "line 3: unknown setting THEIAOS_PODMAN_PORT"),
])
def test_a_malformed_admin_line_is_an_error_naming_file_and_line(tmp_path: Path, text: str,
                                                                why: str) -> None:
    """Never a warning and the defaults: setup must not report success on settings the
    admin did not mean."""
    f = tmp_path / "podman.env"
    f.write_text(text)
    with pytest.raises(SettingError, match=f"{f} {why}"):
        settings.read_admin_file(f)


def test_sources_later_wins() -> None:
    admin = {"THEIAOS_PODMAN_GATEWAY_HOST_PORT": "28789",
             "THEIAOS_PODMAN_BRIDGE_HOST_PORT": "28790"}
    s = settings.load(environ={"THEIAOS_PODMAN_GATEWAY_HOST_PORT": "38789"}, admin=admin, chosen={})
    assert (s.gateway_port, s.bridge_port) == (38789, 28790)
    s = settings.load(environ={"THEIAOS_PODMAN_GATEWAY_HOST_PORT": "38789"}, admin=admin,
                      overrides={"THEIAOS_PODMAN_GATEWAY_HOST_PORT": "48789"})
    assert s.gateway_port == 48789


def test_missing_admin_file_is_empty(tmp_path: Path) -> None:
    assert settings.read_admin_file(tmp_path / "nope") == {}


def test_unknown_admin_key_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "podman.env"
    f.write_text("THEIAOS_PODMAN_GATEWAY_PORT=1\n")
    with pytest.raises(SettingError, match="unknown setting THEIAOS_PODMAN_GATEWAY_PORT"):
        settings.read_admin_file(f)


@pytest.mark.parametrize(("env", "value", "why"), [
    ("THEIAOS_PODMAN_GATEWAY_HOST_PORT", "0", "port"),
    ("THEIAOS_PODMAN_GATEWAY_HOST_PORT", "65536", "port"),
    ("THEIAOS_PODMAN_BRIDGE_HOST_PORT", "http", "port"),
    ("THEIAOS_CONFIG_DIR", "relative/dir", "absolute"),
    ("THEIAOS_WORKSPACE_DIR", "/srv/with space", "no spaces"),
    ("THEIAOS_CONFIG_DIR", "/srv/100%", "'%'"),
    ("THEIAOS_CONFIG_DIR", "/srv/a:b", "':'"),
    ("THEIAOS_PODMAN_HOME", "/home/x,y", "','"),
    ("THEIAOS_PODMAN_IMAGE", "docker://host/x:1", "transport"),
    ("THEIAOS_PODMAN_IMAGE", "docker-archive:/tmp/x.tar", "transport"),
    ("THEIAOS_PODMAN_IMAGE", "Upper/Case", "image reference"),
    ("THEIAOS_PODMAN_PUBLISH_ADDRESS", "fe80::1%eth0", "zone id"),
    ("THEIAOS_PODMAN_PUBLISH_ADDRESS", "224.0.0.1", "multicast"),
    ("THEIAOS_PODMAN_USER", "john.doe.", "user name"),
    ("THEIAOS_PODMAN_USER", "Bad User", "user name"),
    ("THEIAOS_PODMAN_CONTAINER", "-x", "container name"),
    ("THEIAOS_PODMAN_CONTAINER", "a/b", "container name"),
    ("THEIAOS_PODMAN_IMAGE", "x y", "image"),
    ("THEIAOS_PODMAN_PUBLISH_ADDRESS", "localhost", "IP address"),
    ("THEIAOS_GATEWAY_BIND", "everywhere", "one of"),
    ("THEIAOS_PODMAN_QUADLET", "maybe", "1 or 0"),
])
def test_bad_values_name_setting_and_value(env: str, value: str, why: str) -> None:
    with pytest.raises(SettingError) as info:
        settings.load(environ={env: value}, admin={}, chosen={})
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"{env}={value!r} (environment): ")
    assert why in first


def test_equal_ports_refused() -> None:
    with pytest.raises(SettingError, match="both 18789"):
        settings.load(environ={"THEIAOS_PODMAN_BRIDGE_HOST_PORT": "18789"}, admin={}, chosen={})


def test_ipv6_publish_address_url() -> None:
    s = settings.load(environ={"THEIAOS_PODMAN_PUBLISH_ADDRESS": "::1"}, admin={}, chosen={})
    assert s.url == "http://[::1]:18789/"


def test_env_file_template_lists_every_setting_with_default() -> None:
    text = settings.env_file_template()
    for s in settings.TABLE:
        assert f"#{s.env}=" in text
    assert "#THEIAOS_CONFIG_DIR=/home/theiaos/.theiaos\n" in text
    # The template parses back to "nothing set": everything is commented out.
    import io

    from dotenv import dotenv_values
    assert dotenv_values(stream=io.StringIO(text)) == {}


def test_shipped_conffile_is_the_template() -> None:
    shipped = Path(__file__).resolve().parents[2] / "defaults" / "podman.env"
    assert shipped.read_text() == settings.env_file_template(), \
        "regenerate: python3 -c 'from theiaos_pkg import settings; " \
        "print(settings.env_file_template(), end=\"\")' > defaults/podman.env"
    assert settings.read_admin_file(shipped) == {}


@pytest.mark.parametrize("value", [
    "127.0.0.1", "0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3", "224.0.0.1",
    "239.255.255.255", "240.0.0.1", "1.2.3.4.5", "::1", "::", "fe80::1%eth0", "1.2.3.\u00b2",
    "", "a.b.c.d", " 1.2.3.4", "1.2.3.4 ", "0.0.0.00", "ff02::1", "::ffff:1.2.3.4"])
def test_the_ipv4_fast_path_agrees_with_ipaddress(value: str) -> None:
    import ipaddress

    try:
        want = ipaddress.ip_address(value)
        expected = None if want.is_multicast or "%" in value else str(want)
    except ValueError:
        expected = None
    try:
        got: str | None = settings._address(value)
    except ValueError:
        got = None
    assert got == expected
