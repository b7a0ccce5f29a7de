"""dashboard.host_link on what the gateway's `dashboard --json` prints: the link moved to
the host's published port, and anything else the container could print refused."""

from __future__ import annotations

import json

import pytest

from theiaos_pkg import dashboard, settings
from theiaos_pkg.errors import TheiaosError

#: As openclaw 2026.9.6 prints it in the container (its config's port, 18789).
LINK = ("http://127.0.0.1:18789/#bootstrapToken=AbC_123-xyz&bootstrapProfile=owner"
        "&gatewayUrl=ws%3A%2F%2F127.0.0.1%3A18789")


def _out(**fields: object) -> str:
    return json.dumps({"ok": True, "url": "http://127.0.0.1:18789/", "port": 18789,
                       "browserUrl": LINK, **fields}, indent=2) + "\n"


def _settings(**env: str) -> settings.Settings:
    return settings.load(environ=env, admin={}, chosen={})


def test_the_link_names_the_hosts_published_port() -> None:
    s = _settings(THEIAOS_PODMAN_GATEWAY_HOST_PORT="28789")
    assert dashboard.host_link(_out(), s) == \
        "http://127.0.0.1:28789/#bootstrapToken=AbC_123-xyz&bootstrapProfile=owner" \
        "&gatewayUrl=ws%3A%2F%2F127.0.0.1%3A28789"


@pytest.mark.parametrize(("address", "host"), [("::1", "[::1]"), ("0.0.0.0", "127.0.0.1"),
                                               ("192.0.2.7", "192.0.2.7")])
def test_the_link_names_the_published_address(address: str, host: str) -> None:
    s = _settings(THEIAOS_PODMAN_PUBLISH_ADDRESS=address)
    assert dashboard.host_link(_out(), s).startswith(f"http://{host}:18789/#bootstrapToken=")


def test_noise_around_the_json_is_ignored() -> None:
    assert "bootstrapProfile=owner" in dashboard.host_link("[plugins] loaded\n" + _out(), _settings())


def test_the_pages_websocket_follows_the_link() -> None:
    s = _settings(THEIAOS_PODMAN_PUBLISH_ADDRESS="::1", THEIAOS_PODMAN_GATEWAY_HOST_PORT="28789")
    assert dashboard.host_link(_out(), s).endswith("&gatewayUrl=ws%3A%2F%2F%5B%3A%3A1%5D%3A28789")


@pytest.mark.parametrize(("output", "says"), [
    (json.dumps({"ok": False, "reason": "Gateway not reachable\x1b]0;x\x07"}),
     r"could not make a sign-in link: Gateway not reachable\\x1b\]0;x\\x07"),
    ("not json at all", "is not JSON"),
    ("[" * 100000 + "{", "longer than"),
    (_out(browserUrl="http://evil.example:18789/#bootstrapToken=x"), "not one for its own port"),
    (_out(browserUrl="http://127.0.0.1:22/#bootstrapToken=x"), "not one for its own port"),
    (_out(browserUrl="file:///etc/shadow#bootstrapToken=x"), "not one for its own port"),
    (_out(browserUrl="http://127.0.0.1:18789/#token=the-shared-one"), "not one for its own port"),
    (_out(browserUrl="http://127.0.0.1:18789/#bootstrapToken=x\x1b[2J"), "is not a link"),
    (_out(browserUrl=["a list"]), "is not a link"),
])
def test_what_the_container_prints_is_checked(output: str, says: str) -> None:
    with pytest.raises(TheiaosError, match=says):
        dashboard.host_link(output, _settings())


def test_a_pairing_request_id_is_checked_before_it_reaches_the_container() -> None:
    assert dashboard.devices_argv("approve", "f3b1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d") == \
        ["node", "dist/index.js", "devices", "approve", "f3b1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d"]
    assert dashboard.devices_argv("list") == ["node", "dist/index.js", "devices", "list"]
    for bad in (None, "", "--latest", "x; rm -rf /", "a" * 200, "id\x1b[2J"):
        with pytest.raises(TheiaosError, match="not a pairing request id"):
            dashboard.devices_argv("approve", bad)
