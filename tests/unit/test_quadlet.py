"""Rendered Quadlet files per Podman version, against reviewed expected files.

Regenerate after an intended template change with
``THEIAOS_REGEN=1 make check PYTEST_ARGS=tests/unit/test_quadlet.py`` and review the diff.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from theiaos_pkg import quadlet, settings
from theiaos_pkg.podman import Features, parse_version

EXPECTED = Path(__file__).parent / "expected"
VERSIONS = {"4.4": (4, 4, 2), "4.5": (4, 5, 0), "4.9": (4, 9, 3), "5.4": (5, 4, 2)}
PLAIN = {"4.3": (4, 3, 1)}  # no Quadlet: the plain user unit
CUSTOM = {
    "THEIAOS_PODMAN_AUTO_UPDATE": "registry",
    "THEIAOS_PODMAN_START_TIMEOUT": "60",
    "THEIAOS_PODMAN_GATEWAY_HOST_PORT": "28789",
    "THEIAOS_PODMAN_BRIDGE_HOST_PORT": "28790",
    "THEIAOS_CONFIG_DIR": "/srv/theiaos/config",
    "THEIAOS_WORKSPACE_DIR": "/srv/theiaos/work",
    "THEIAOS_PODMAN_IMAGE": "ghcr.io/theia-black/theiaos:2026.11",
    "THEIAOS_PODMAN_PUBLISH_ADDRESS": "::1",
}


def variants() -> dict[str, str]:
    out = {}
    for label, version in VERSIONS.items():
        s = settings.load(environ={}, admin={}, chosen={})
        out[f"podman-{label}.container"] = quadlet.render(s, Features(version))
    custom = settings.load(environ=CUSTOM, admin={}, chosen={})
    limits = frozenset({"memory", "pids"})  # a host whose cgroups have both controllers
    out["custom-5.4.container"] = quadlet.render(custom, Features(VERSIONS["5.4"], limits))
    out["custom-5.5.container"] = quadlet.render(custom, Features((5, 5, 0), limits))
    out["custom-4.4.container"] = quadlet.render(custom, Features(VERSIONS["4.4"], limits))
    for label, version in PLAIN.items():
        s = settings.load(environ={}, admin={}, chosen={})
        out[f"podman-{label}.service"] = quadlet.render_unit(s, Features(version))
    out["custom-4.3.service"] = quadlet.render_unit(custom, Features(PLAIN["4.3"], limits))
    return out


@pytest.mark.parametrize("name", sorted(variants()))
def test_render_matches_expected(name: str) -> None:
    text = variants()[name]
    path = EXPECTED / name
    if os.environ.get("THEIAOS_REGEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_version_gates() -> None:
    v = variants()
    assert "RemapUsers=keep-id" in v["podman-4.4.container"]
    assert "UserNS" not in v["podman-4.4.container"]
    assert "HealthCmd" not in v["podman-4.4.container"]
    assert "Pull=" not in v["podman-4.5.container"]
    assert "UserNS=keep-id\nUser=%U:%G\n" in v["podman-5.4.container"]
    assert "Pull=never" in v["podman-4.9.container"]
    assert "Pull=" not in v["custom-5.4.container"]  # a registry image may be pulled
    assert "PublishPort=[::1]:28789:18789" in v["custom-5.4.container"]


def test_admin_edit_is_recognised() -> None:
    text = variants()["podman-5.4.container"]
    assert not quadlet.edited_by_admin(text)
    assert quadlet.edited_by_admin(text.replace("18789:18789", "8080:18789"))
    assert quadlet.edited_by_admin("[Container]\nImage=x\n")


def test_percent_is_escaped_and_newlines_refused() -> None:
    assert quadlet.escape("a%b") == "a%%b"
    with pytest.raises(ValueError):
        quadlet.escape("a\nb")


@pytest.mark.parametrize(("text", "version"), [
    ("podman version 5.4.2\n", (5, 4, 2)),
    ("podman version 4.9.3-dev", (4, 9, 3)),
    ("podman version 4.4", (4, 4, 0)),
    ("5.4.2+ds1-2", (5, 4, 2)),  # dpkg-query, when podman cannot run (chroot)
    ("1:4.9.3-0ubuntu1", (4, 9, 3)),
])
def test_parse_version(text: str, version: tuple[int, int, int]) -> None:
    assert parse_version(text) == version


def test_effective_port_of_an_edited_quadlet(tmp_path: Path) -> None:
    s = settings.load(environ={"THEIAOS_PODMAN_HOME": str(tmp_path)}, admin={}, chosen={})
    assert quadlet.effective(s, os.getuid()) == s  # no file
    path = Path(s.quadlet_path)
    path.parent.mkdir(parents=True)
    text = quadlet.render(s, Features(VERSIONS["5.4"]))
    path.write_text(text)
    assert quadlet.effective(s, os.getuid()) == s  # ours, unedited
    path.write_text(text.replace("127.0.0.1:18789:18789", "127.0.0.1:38789:18789"))
    assert quadlet.effective(s, os.getuid()).gateway_port == 38789
    path.write_text(text.replace("127.0.0.1:18789:18789", "8080:18789"))
    moved = quadlet.effective(s, os.getuid())
    assert (moved.gateway_port, moved.publish_address) == (8080, "0.0.0.0")


def test_our_unit_is_never_read_back_setup_records_where_it_publishes(tmp_path: Path) -> None:
    """start and status ask where the unit on disk publishes: from what setup recorded
    when it rendered it (settings.format_published), not parsed out of our own file."""
    from theiaos_pkg import state

    s = settings.load(environ={"THEIAOS_PODMAN_HOME": str(tmp_path)}, admin={}, chosen={})
    path = Path(s.quadlet_path)
    path.parent.mkdir(parents=True)
    path.write_text(quadlet.render(s, Features(VERSIONS["5.4"])))
    assert quadlet.effective(s, os.getuid(), on_disk=True) == s  # nothing recorded
    moved = s._replace(gateway_port=28789, publish_address="0.0.0.0")
    state.write(state.UNIT_SETTINGS, settings.format_published(moved))
    assert Path(state.path(state.UNIT_SETTINGS)).read_text() == \
        "THEIAOS_PODMAN_GATEWAY_HOST_PORT=28789\nTHEIAOS_PODMAN_PUBLISH_ADDRESS=0.0.0.0\n"
    assert quadlet.effective(s, os.getuid(), on_disk=True) == moved
    assert quadlet.effective(s, os.getuid()) == s  # setup renders from the settings
    path.unlink()
    assert quadlet.effective(s, os.getuid(), on_disk=True) == s  # manual mode: no unit
    path.write_text(quadlet.render(s, Features(VERSIONS["5.4"])))
    state.write(state.UNIT_SETTINGS, "THEIAOS_PODMAN_GATEWAY_HOST_PORT=80000\n")
    with pytest.raises(settings.SettingError, match="unexpected line"):
        quadlet.effective(s, os.getuid(), on_disk=True)


def test_one_stop_budget_and_one_host_name_in_every_rendering() -> None:
    """The container's stop timeout (the gateway's drain) and the unit's stop bound agree
    in the Quadlet, the plain unit and launch; the host name is the same in each (the
    gateway's owner lease keys on it)."""
    from theiaos_pkg import container

    v = variants()
    q, q44, plain = v["podman-5.4.container"], v["podman-4.4.container"], v["podman-4.3.service"]
    assert "\nHostName=theiaos\n" in q and "\nStopTimeout=330\n" in q
    assert "\nPodmanArgs=--hostname=theiaos\n" in q44 and "\nPodmanArgs=--stop-timeout=330\n" in q44
    for unit in (q, q44, plain):
        assert "\nTimeoutStopSec=360\n" in unit and "\nRestartPreventExitStatus=78\n" in unit
    assert "ExecStop=/usr/bin/podman stop --ignore -t 330 " in plain
    assert " --hostname theiaos " in plain and " --stop-timeout 330 " in plain
    lower = settings.load(environ={"THEIAOS_PODMAN_STOP_TIMEOUT": "45"}, admin={}, chosen={})
    q = quadlet.render(lower, Features(VERSIONS["5.4"]))
    assert "\nStopTimeout=45\n" in q and "\nTimeoutStopSec=75\n" in q
    launch = container.run_argv(container.spec(lower), 990, 990, secret=True)
    assert launch[launch.index("--stop-timeout") + 1] == "45"
    assert launch[launch.index("--hostname") + 1] == "theiaos"


@pytest.mark.parametrize(("name", "host"), [("theiaos", "theiaos"), ("my_gw.2", "my-gw-2"),
                                            ("_x_", "x"), ("a" * 80, "a" * 63)])
def test_the_host_name_is_the_container_name_as_a_host_name(name: str, host: str) -> None:
    from theiaos_pkg import container

    assert container.hostname(name) == host


def test_one_spec_three_renderings() -> None:
    """Quadlet, plain unit and `launch` publish, mount and run the same container."""
    from theiaos_pkg import container

    v = variants()
    plain = v["podman-4.3.service"]
    exec_start = next(ln for ln in plain.splitlines() if ln.startswith("ExecStart="))
    args = shlex.split(exec_start.removeprefix("ExecStart="))
    s = settings.load(environ={}, admin={}, chosen={})
    launch = container.run_argv(container.spec(s), 990, 990, secret=False)
    for flag in ("--publish", "--volume", "--env", "--env-file", "--hostname", "--stop-timeout"):
        assert [a for i, a in enumerate(args) if args[i - 1] == flag] == \
            [a for i, a in enumerate(launch) if launch[i - 1] == flag], flag
    assert args[-8:] == [launch[-8], *launch[-7:]]  # image and command
    assert "--user" in args and args[args.index("--user") + 1] == "%U:%G"
    assert "--health-on-failure" not in args  # 4.5 and later only
    assert "Type=exec" in plain and "WantedBy=default.target" in plain
    assert "ExecStartPre=/bin/rm -f %t/%N.cid" in plain and "-d" not in args


@pytest.mark.parametrize("arg", ["plain", "with space", 'quo"te', "back\\slash", "semi;colon",
                                 '["node", "-e", "x"]'])
def test_exec_quote_round_trips(arg: str) -> None:
    assert shlex.split(quadlet.exec_quote(arg)) == [arg]


def test_effective_port_of_a_plain_unit(tmp_path: Path) -> None:
    s = settings.load(environ={"THEIAOS_PODMAN_HOME": str(tmp_path)}, admin={}, chosen={})
    path = Path(s.plain_unit_path)
    path.parent.mkdir(parents=True)
    text = quadlet.render_unit(s, Features(PLAIN["4.3"]))
    path.write_text(text.replace("127.0.0.1:18789:18789", "127.0.0.1:38789:18789"))
    assert quadlet.effective(s, os.getuid()).gateway_port == 38789


def test_hardening_and_its_gates() -> None:
    v = variants()
    for name in ("podman-4.4.container", "podman-5.4.container", "custom-5.5.container"):
        assert "NoNewPrivileges=true\nDropCapability=all\nReadOnly=true\n" in v[name], name
    assert "PidsLimit" not in v["podman-5.4.container"]  # no pids controller on that host
    assert "PidsLimit=1024\nPodmanArgs=--memory=2g\n" in v["custom-5.4.container"]
    assert "PidsLimit=1024\nMemory=2g\n" in v["custom-5.5.container"]
    assert "PodmanArgs=--pids-limit=1024\nPodmanArgs=--memory=2g\n" in v["custom-4.4.container"]
    plain = v["custom-4.3.service"]
    assert "--cap-drop=all --security-opt=no-new-privileges --read-only --memory=2g " \
        "--pids-limit=1024" in plain
    # Readiness is a process systemd tracks, never Notify=healthy (a lost READY=1).
    # It gives up by itself at the start bound, stopping the container in order, before
    # systemd's TimeoutStartSec (a backstop: start bound + START_ROOM) would signal it.
    ready = ('ExecStartPost=/bin/sh -c "end=$$(( $$(date +%%s) + 120 )); until '
             '/usr/bin/timeout -k 2 8 /usr/bin/podman healthcheck run theiaos >/dev/null;')
    stop = "/usr/bin/podman stop -t 10 theiaos >/dev/null; exit 1; fi;"
    for name in ("podman-4.5.container", "podman-5.4.container", "podman-4.3.service"):
        assert ready in v[name] and stop in v[name] and "Notify" not in v[name], name
        assert "TimeoutStartSec=150\n" in v[name], name
    assert "ExecStartPost" not in v["podman-4.4.container"]  # no health check before 4.5
    assert "HealthStartupCmd" in v["podman-4.9.container"]
    assert "HealthStartup" not in v["podman-4.4.container"]
    assert "AutoUpdate=registry" in v["custom-5.4.container"]
    assert "AutoUpdate" not in v["custom-4.4.container"]  # 4.6 and later
    assert "TimeoutStartSec=90\n" in v["custom-5.4.container"]
    assert "+ 60 ));" in v["custom-5.4.container"]
    assert "TimeoutStartSec=60\n" in v["custom-4.4.container"]  # no check: the bound itself
    unsafe = settings.load(environ={"THEIAOS_PODMAN_READ_ONLY": "0"}, admin={}, chosen={})
    assert "ReadOnly" not in quadlet.render(unsafe, Features(VERSIONS["5.4"]))
