from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from theiaos_pkg import gateway, settings
from theiaos_pkg.errors import ConfigError

HEX64 = re.compile(r"THEIAOS_GATEWAY_TOKEN=[0-9a-f]{64}\n")


def test_new_tokens_differ() -> None:
    assert gateway.new_token() != gateway.new_token()
    assert re.fullmatch(r"[0-9a-f]{64}", gateway.new_token())


def test_config_seeded() -> None:
    cfg = gateway.merged_config(None, 18789)
    assert cfg == {"gateway": {"mode": "local", "controlUi": {
        "allowedOrigins": ["http://127.0.0.1:18789", "http://localhost:18789"]}}}


def test_config_merge_keeps_admin_keys() -> None:
    have = {"gateway": {"mode": "remote", "controlUi": {"allowedOrigins": ["https://gw.example"]},
                        "auth": {"token": "x"}}, "agents": {"a": 1}}
    assert gateway.merged_config(have, 28789) == have
    assert gateway.merged_config({"agents": {}}, 18789)["agents"] == {}


def test_origins_we_seeded_follow_the_port() -> None:
    old = gateway.merged_config(None, 18789)
    assert gateway.merged_config(old, 28789)["gateway"]["controlUi"]["allowedOrigins"] == \
        ["http://127.0.0.1:28789", "http://localhost:28789"]


def test_bad_json_reported() -> None:
    with pytest.raises(ConfigError, match=r"not valid JSON \(line 1, column 13"):
        gateway.parse_config(b'{"gateway": }', "/x/theiaos.json")
    with pytest.raises(ConfigError, match="not a JSON object"):
        gateway.parse_config(b"[]", "/x/theiaos.json")
    with pytest.raises(ConfigError, match="'gateway' is not an object"):
        gateway.merged_config({"gateway": 1}, 1)


def _conf(tmp_path: Path) -> settings.Settings:
    return settings.load(environ={"THEIAOS_PODMAN_HOME": str(tmp_path / "home")}, admin={},
                         chosen={})


def _ensure(s: settings.Settings) -> list[str]:
    uid, gid = os.getuid(), os.getgid()
    return gateway.apply(s, gateway.plan(s, uid), uid, gid)


def test_plan_and_apply_create_modes_and_twice_is_no_change(tmp_path: Path) -> None:
    s = _conf(tmp_path)
    Path(s.home).mkdir()
    planned = gateway.plan(s, os.getuid())
    assert planned.changed == (s.env_file, s.config_file)
    assert not Path(s.config_dir).exists()  # planning writes nothing
    changed = gateway.apply(s, planned, os.getuid(), os.getgid())
    assert changed == [s.config_dir, s.env_file, s.config_file, s.workspace_dir]
    for path, mode in ((s.config_dir, 0o700), (s.env_file, 0o600), (s.config_file, 0o600),
                       (s.workspace_dir, 0o700)):
        assert (os.stat(path).st_mode & 0o777) == mode, path
    assert HEX64.fullmatch(Path(s.env_file).read_text())
    assert json.loads(Path(s.config_file).read_text())["gateway"]["mode"] == "local"
    assert gateway.plan(s, os.getuid()).changed == ()
    assert _ensure(s) == []


def test_admin_files_are_kept(tmp_path: Path) -> None:
    s = _conf(tmp_path)
    Path(s.config_dir).mkdir(parents=True)
    Path(s.env_file).write_text("GROQ_API_KEY='g h'\nTHEIAOS_GATEWAY_TOKEN=mine\n")
    custom = '{"gateway": {"mode": "local", "controlUi": {"allowedOrigins": []}}, "x": 1}'
    Path(s.config_file).write_text(custom)
    _ensure(s)
    assert Path(s.env_file).read_text() == "GROQ_API_KEY='g h'\nTHEIAOS_GATEWAY_TOKEN=mine\n"
    assert Path(s.config_file).read_text() == custom  # nothing to add: not even reformatted
    assert gateway.read_token(s, os.getuid()) == "mine"


def test_bad_json_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    s = _conf(tmp_path)
    Path(s.config_dir).mkdir(parents=True)
    Path(s.config_file).write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        gateway.plan(s, os.getuid())
    assert Path(s.config_file).read_text() == "{oops" and not Path(s.env_file).exists()


def test_rotated_keeps_every_other_line(tmp_path: Path) -> None:
    s = _conf(tmp_path)
    Path(s.config_dir).mkdir(parents=True)
    Path(s.env_file).write_text("A=1\nTHEIAOS_GATEWAY_TOKEN=old\n# note\n")
    data, token = gateway.rotated(s, os.getuid())
    assert data.decode() == f"A=1\nTHEIAOS_GATEWAY_TOKEN={token}\n# note\n" and token != "old"
