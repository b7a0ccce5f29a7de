from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from theiaos_pkg import gateway, settings
from theiaos_pkg.errors import ConfigError

HEX64 = re.compile(r"THEIAOS_GATEWAY_TOKEN=[0-9a-f]{64}\n")


def test_token_added_when_missing_and_other_lines_kept() -> None:
    text = "# keys\nGROQ_API_KEY=abc\nOLLAMA_API_KEY='x y'"
    out = gateway.with_token(text)
    assert out.startswith(text + "\n")
    assert HEX64.fullmatch(out[len(text) + 1:])


def test_empty_token_replaced_in_place() -> None:
    out = gateway.with_token("A=1\nTHEIAOS_GATEWAY_TOKEN=\nB=2\n", lambda: "t" * 64)
    assert out == f"A=1\nTHEIAOS_GATEWAY_TOKEN={'t' * 64}\nB=2\n"
    out = gateway.with_token('export THEIAOS_GATEWAY_TOKEN=""\n', lambda: "n")
    assert out == "THEIAOS_GATEWAY_TOKEN=n\n"


def test_existing_token_kept() -> None:
    text = "THEIAOS_GATEWAY_TOKEN=keepme\nX=1\n"
    assert gateway.with_token(text) == text
    assert gateway.token_of(text) == "keepme"


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
    return settings.load(environ={"THEIAOS_PODMAN_HOME": str(tmp_path / "home")}, admin={}, chosen={})


def test_ensure_creates_modes_and_twice_is_no_change(tmp_path: Path) -> None:
    s = _conf(tmp_path)
    uid, gid = os.getuid(), os.getgid()
    changed = gateway.ensure(s, uid, gid)
    assert changed == [s.config_dir, s.env_file, s.config_file, s.workspace_dir]
    for path, mode in ((s.config_dir, 0o700), (s.env_file, 0o600), (s.config_file, 0o600),
                       (s.workspace_dir, 0o700)):
        assert (os.stat(path).st_mode & 0o777) == mode, path
    assert HEX64.fullmatch(Path(s.env_file).read_text())
    assert json.loads(Path(s.config_file).read_text())["gateway"]["mode"] == "local"
    assert gateway.ensure(s, uid, gid) == []


def test_ensure_preserves_admin_files(tmp_path: Path) -> None:
    s = _conf(tmp_path)
    Path(s.config_dir).mkdir(parents=True)
    Path(s.env_file).write_text("GROQ_API_KEY=g\nTHEIAOS_GATEWAY_TOKEN=mine\n")
    custom = '{"gateway": {"mode": "local", "controlUi": {"allowedOrigins": []}}, "x": 1}'
    Path(s.config_file).write_text(custom)
    gateway.ensure(s, os.getuid(), os.getgid())
    assert Path(s.env_file).read_text() == "GROQ_API_KEY=g\nTHEIAOS_GATEWAY_TOKEN=mine\n"
    assert Path(s.config_file).read_text() == custom  # nothing to add: not even reformatted


def test_ensure_refuses_to_replace_bad_json(tmp_path: Path) -> None:
    s = _conf(tmp_path)
    Path(s.config_dir).mkdir(parents=True)
    Path(s.config_file).write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        gateway.ensure(s, os.getuid(), os.getgid())
    assert Path(s.config_file).read_text() == "{oops"
