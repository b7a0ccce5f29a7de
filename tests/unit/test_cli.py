"""theiaosctl's parsing and output formatting, and the pure helpers behind its verbs."""

from __future__ import annotations

from pathlib import Path

import pytest

from theiaos_pkg import cli, container, doctor, podman, podstore, settings


def parse(*argv: str) -> object:
    return cli.parser().parse_args(list(argv))


def test_every_verb_parses_and_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for verb in [v.name for v in cli.VERBS]:
        with pytest.raises(SystemExit) as info:
            parse(verb, "--help")
        assert info.value.code == 0
        assert f"usage: theiaosctl {verb}" in capsys.readouterr().out


def test_arguments() -> None:
    a = parse("status", "--json")
    assert a.json is True and a.func is cli.cmd_status
    a = parse("logs", "-n", "5", "-f", "--since", "today")
    assert (a.lines, a.follow, a.since) == (5, True, "today")
    assert parse("setup", "--container").mode == "container"
    assert parse("setup").mode is None
    assert parse("launch", "setup").what == "setup" and parse("launch").what is None
    a = parse("token", "rotate", "--show")
    assert (a.action, a.show) == ("rotate", True)
    a = parse("image", "load", "-")
    assert (a.action, a.source) == ("load", "-")


GOOD = [("status",), ("status", "--json"), ("url",), ("start",), ("stop",), ("restart",),
        ("setup",), ("setup", "--container"), ("setup", "--user", "alice"), ("launch", "setup"),
        ("logs", "-n", "5", "-f"), ("token", "rotate", "--show"), ("image", "load", "-"),
        ("backup", "/root/b.tgz", "--with-image"), ("restore", "-"), ("doctor",)]


@pytest.mark.parametrize("argv", GOOD)
def test_the_one_verb_parser_parses_as_the_full_one(argv: tuple[str, ...]) -> None:
    """main builds only the named verb's parser, from the same table: same result."""
    assert vars(cli.parser(argv[0]).parse_args(list(argv))) == vars(parse(*argv))


def _quick_lines() -> list[list[str]]:
    """Every command line quick_parse may take: each verb without positional arguments,
    each subset of its flags in both orders, with and without --debug before it."""
    import itertools

    lines = []
    for v in cli.VERBS:
        flags = [f for f, _ in v.flags]
        for n in range(len(flags) + 1):
            for chosen in itertools.permutations(flags, n):
                for top in ([], ["--debug"]):
                    lines.append([*top, v.name, *chosen])
    return lines


@pytest.mark.parametrize("argv", _quick_lines(), ids=" ".join)
def test_the_fast_path_parses_as_argparse(argv: list[str]) -> None:
    quick = cli.quick_parse(argv)
    verb = next(v for v in cli.VERBS if v.name in argv)
    if verb.args is not None:
        assert quick is None, "a verb with more than flags goes through argparse"
    else:
        assert quick is not None and vars(quick) == vars(parse(*argv))


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["status", "--help"], ["status", "-h"], ["status", "--json=1"],
    ["status", "extra"], ["status", "--jso"], ["--version"], ["nosuchverb"], ["--debug"],
    ["status", "--debug"], ["logs"], ["url", "--json"]])
def test_the_fast_path_leaves_everything_else_to_argparse(argv: list[str]) -> None:
    assert cli.quick_parse(argv) is None


def test_every_verb_is_in_the_table_once() -> None:
    names = [v.name for v in cli.VERBS]
    assert len(names) == len(set(names)) and {"status", "backup", "restore", "url"} <= set(names)
    for verb in cli.VERBS:  # and the one-verb parser knows only it
        with pytest.raises(SystemExit):
            cli.parser(verb.name).parse_args(["url" if verb.name != "url" else "status"])


@pytest.mark.parametrize("argv", [
    ["setup", "--quadlet", "--container"],
    ["token", "print"],
    ["image", "push"],
    ["launch", "now"],
    ["logs", "-n", "many"],
    ["logs", "-n", "-5"],
    ["logs", "-n", "0"],
    [],
])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--version")
    assert capsys.readouterr().out.startswith("theiaosctl 0.")


def test_read_only_verbs() -> None:
    """Verbs that write nothing of the host's (dashboard asks the running gateway for a
    link: the gateway writes its own state); the account may run them too."""
    assert {"status", "url", "doctor", "image list", "dashboard"} == cli.READ_ONLY


def test_doctor_line_format() -> None:
    ok = doctor.Check("linger", True, "lingering is on", "never shown")
    bad = doctor.Check("subids", False, "no range", "sudo theiaosctl setup")
    assert ok.line() == "[ok] linger: lingering is on"
    assert bad.line() == "[FAIL] subids: no range\n       fix: sudo theiaosctl setup"


def test_manual_mode_runs_the_same_container_as_the_quadlet() -> None:
    s = settings.load(environ={"THEIAOS_PODMAN_GATEWAY_HOST_PORT": "28789"}, admin={}, chosen={})
    argv = container.run_argv(container.spec(s), 990, 991, secret=True)
    assert argv[:5] == ["podman", "run", "--replace", "--name", "theiaos"]
    assert "--userns=keep-id" in argv and argv[argv.index("--user") + 1] == "990:991"
    assert argv[argv.index("--secret") + 1] == \
        "theiaos-gateway-token,type=env,target=THEIAOS_GATEWAY_TOKEN"
    assert "--env-file" not in argv
    old = container.run_argv(container.spec(s), 990, 991, secret=False)
    assert old[old.index("--env-file") + 1] == "/home/theiaos/.theiaos/.env"
    assert "--secret" not in old
    assert "/home/theiaos/.theiaos:/home/node/.theiaos:Z" in argv
    assert "127.0.0.1:28789:18789" in argv and "--detach" in argv and "--pull=never" in argv
    assert "k8s-file" in argv
    assert argv[-7:] == ["node", "dist/index.js", "gateway", "--bind", "lan", "--port", "18789"]
    assert not any("TOKEN=" in a for a in argv)
    wizard = container.run_argv(container.spec(s), 990, 991, secret=True, onboard=True)
    assert wizard[-3:] == ["node", "dist/index.js", "onboard"]
    assert "-it" in wizard and "--publish" not in wizard and "BROWSER=echo" in wizard


def test_loaded_names() -> None:
    assert podman.loaded_names("Getting image source signatures\nLoaded image: "
                               "localhost/theiaos:local\n") == ["localhost/theiaos:local"]
    assert podman.loaded_names("Loaded image(s): a:1,b:2\n") == ["a:1", "b:2"]
    assert podman.loaded_names("nothing\n") == []


def test_choices_file(tmp_path: Path) -> None:
    f = tmp_path / "setup.env"
    assert settings.read_choices(f) == {}
    f.write_text(settings.format_choices({"THEIAOS_PODMAN_USER": "alice",
                                          "THEIAOS_PODMAN_QUADLET": "0"}))
    assert f.read_text() == "THEIAOS_PODMAN_QUADLET=0\nTHEIAOS_PODMAN_USER=alice\n"
    chosen = settings.read_choices(f)
    s = settings.load(environ={}, admin={"THEIAOS_PODMAN_QUADLET": "1"}, chosen=chosen)
    assert s.quadlet is False and s.user == "alice" and s.home == "/home/alice"
    assert settings.load(environ={"THEIAOS_PODMAN_QUADLET": "1"}, admin={},
                         chosen=chosen).quadlet
    f.write_text("EVIL=1\n")
    with pytest.raises(settings.SettingError, match="unexpected line"):
        settings.read_choices(f)


@pytest.mark.parametrize(("active", "sub", "healthy", "verdict"), [
    ("active", "running", True, "running"),
    ("active", "running", False, "not answering"),
    ("activating", "start", False, "starting"),
    ("activating", "auto-restart", False, "starting"),
    ("failed", "failed", False, "failed"),
    ("inactive", "dead", False, "stopped"),
])
def test_status_tells_running_from_active(active: str, sub: str, healthy: bool,
                                          verdict: str) -> None:
    from theiaos_pkg import status

    st = status.Status(installed=True, user="theiaos", uid=990, unit_active=active,
                       unit_sub=sub, healthy=healthy, failing_since="2026-11-30T01:00:00Z",
                       journal="line one\nline two" if active == "failed" else "")
    assert st.verdict == verdict
    text = status.format_text(st)
    assert f"  state:     {verdict}" in text
    if verdict == "not answering":
        assert "not answering since 2026-11-30T01:00:00Z" in text
    if verdict == "failed":
        assert "  last lines:\n    line one\n    line two" in text
    assert status.Status(installed=False, user="x", uid=None).verdict == "not installed"


def test_health_summary_finds_when_the_failing_began() -> None:
    log = [{"Start": "t1", "ExitCode": 0}, {"Start": "t2", "ExitCode": 1},
           {"Start": "t3", "ExitCode": 1}]
    assert podstore.health_summary({"Status": "unhealthy", "Log": log}) == ("unhealthy", "t2")
    assert podstore.health_summary({"Status": "healthy", "Log": log[:1]}) == ("healthy", None)
    assert podstore.health_summary(None) == ("starting", None)
