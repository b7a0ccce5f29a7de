"""dashboard.host_link on what the gateway's `dashboard --json` prints: the link moved to
the host's published port, and anything else the container could print refused."""

from __future__ import annotations

import json

import pytest

from theiaos_pkg import dashboard, settings
from theiaos_pkg.errors import TheiaosError

LINK = "http://127.0.0.1:18789/#bootstrapToken=AbC_123-xyz&bootstrapProfile=owner"


def _out(**fields: object) -> str:
    return json.dumps({"ok": True, "url": "http://127.0.0.1:18789/", "port": 18789,
                       "browserUrl": LINK, **fields}, indent=2) + "\n"


def _settings(**env: str) -> settings.Settings:
    return settings.load(environ=env, admin={}, chosen={})


def test_the_link_names_the_hosts_published_port() -> None:
    s = _settings(THEIAOS_PODMAN_GATEWAY_HOST_PORT="28789")
    assert dashboard.host_link(_out(), s) == \
        "http://127.0.0.1:28789/#bootstrapToken=AbC_123-xyz&bootstrapProfile=owner"


@pytest.mark.parametrize(("address", "host"), [("::1", "[::1]"), ("0.0.0.0", "127.0.0.1"),
                                               ("192.0.2.7", "192.0.2.7")])
def test_the_link_names_the_published_address(address: str, host: str) -> None:
    s = _settings(THEIAOS_PODMAN_PUBLISH_ADDRESS=address)
    assert dashboard.host_link(_out(), s).startswith(f"http://{host}:18789/#bootstrapToken=")


def test_noise_around_the_json_is_ignored() -> None:
    assert dashboard.host_link("[plugins] loaded\n" + _out(), _settings()).endswith("owner")


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
