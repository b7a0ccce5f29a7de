"""A person chatting through the gateway, for the real-gateway tier: its provider set to
the tests' own model server (tests/modelserver.py) the way docs/podman.md tells an admin
to add one on the host, turns through the OpenAI-compatible API, and a turn kept in
flight while an operation runs (issue 25: no restart, upgrade or reboot loses a turn)."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..lab import Lab
from ..modelserver import ModelServer

#: How the gateway names its provider's model (docs/podman.md's example, our server's id).
PROVIDER = "local"
#: The turn kept in flight during an operation (issue 25: 30 s, the operation 5 s in).
TURN_SECONDS = 30.0
OPERATION_AT = 5.0
#: What the gateway logs when a start finds its predecessor's owner lease (a start refused).
LEASE_REFUSED = "Another Gateway owner lease is still active"


def provider_config(url: str, model: str) -> dict[str, Any]:
    """The keys docs/podman.md tells an admin to merge into theiaos.json."""
    return {
        "models": {"providers": {PROVIDER: {
            "baseUrl": url, "apiKey": "none", "api": "openai-completions",
            "request": {"allowPrivateNetwork": True},
            "models": [{"id": model, "name": model}],
        }}},
        "agents": {"defaults": {"model": {"primary": f"{PROVIDER}/{model}"}}},
        "gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": True}}}},
    }


def merge(into: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    for key, value in keys.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def configure_model(lab: Lab, config_file: str, model: ModelServer, user: str = "theiaos") -> None:
    """Merge the provider into the account's theiaos.json as the account would (its own
    file, replaced by rename, its owner and mode kept); the gateway reloads it."""
    acct = lab.account(user)
    path = lab.host_path(config_file)
    config = merge(json.loads(path.read_text()), provider_config(
        f"http://host.containers.internal:{model.port}/v1", model.model))
    tmp = path.with_name(path.name + ".edit")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.chown(tmp, acct.uid, acct.gid)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def chat(token: str, text: str, *, stream: bool = False, port: int = 18789,
         timeout: float = 120) -> tuple[int, str]:
    """One turn through POST /v1/chat/completions: (HTTP status, the answer's text, or
    the body when it is not a 200)."""
    body = {"model": "openclaw", "messages": [{"role": "user", "content": text}], "stream": stream}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        raw = resp.read().decode("utf-8", "replace")
    finally:
        conn.close()
    if resp.status != 200:
        return resp.status, raw
    if not stream:
        return 200, json.loads(raw)["choices"][0]["message"]["content"]
    parts = []
    for line in raw.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices", []):
                parts.append((choice.get("delta") or {}).get("content") or "")
    return 200, "".join(parts)


class Turn:
    """A turn in a thread of its own, so that an operation can run while it is in flight."""

    def __init__(self, token: str, text: str, timeout: float) -> None:
        self.text = text
        self.began = time.monotonic()
        self.took = 0.0
        self.outcome: tuple[int, str] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(token, timeout), daemon=True)
        self._thread.start()

    def _run(self, token: str, timeout: float) -> None:
        try:
            self.outcome = chat(token, self.text, timeout=timeout)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.error = exc
        self.took = time.monotonic() - self.began

    def result(self, timeout: float) -> tuple[int, str]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the turn {self.text!r} has no answer after {timeout:.0f} s")
        if self.error is not None:
            raise AssertionError(f"the turn {self.text!r} failed after {self.took:.1f} s: {self.error!r}")
        assert self.outcome is not None
        return self.outcome


def journal_since(lab: Lab, since: str) -> str:
    return lab.run("journalctl", "--since", since, "-o", "short-precise", "--no-pager",
                   check=False, timeout=60).stdout


def lab_now(lab: Lab) -> str:
    return lab.run("date", "+%Y-%m-%d %H:%M:%S").stdout.strip()


@contextmanager
def turn_in_flight(lab: Lab, model: ModelServer, token: str, what: str,
                   seconds: float = TURN_SECONDS, at: float = OPERATION_AT) -> Iterator[Turn]:
    """A turn the model takes ``seconds`` to answer, in flight when the body runs (``at``
    s after it began, once the model has it). Afterwards its answer must have reached
    the client, and no start of the gateway may have been refused over its lease."""
    since = lab_now(lab)
    marker = f"{what}-{secrets.token_hex(4)}"
    seen = len(model.requests)
    turn = Turn(token, f"a long turn [delay={seconds:g}] {marker}", timeout=seconds + 600)
    if not model.wait_for(lambda: any(marker in r.answer for r in model.requests[seen:]), timeout=90):
        raise AssertionError(f"the turn {marker} never reached the model:\n{journal_since(lab, since)[-4000:]}")
    time.sleep(max(0.0, at - (time.monotonic() - turn.began)))
    yield turn
    status, answer = turn.result(seconds + 600)
    assert status == 200 and marker in answer, (status, answer[-2000:])
    refused = [ln for ln in journal_since(lab, since).splitlines() if LEASE_REFUSED in ln]
    assert not refused, "\n".join(refused)
    print(f"{what}: the turn in flight answered after {turn.took:.1f} s")


def in_transcript(lab: Lab, config_dir: str, marker: str) -> bool:
    """Whether the gateway's session store (its agents' SQLite files under the config
    dir) holds ``marker``: the turn was recorded, whatever became of its process."""
    proc = lab.run("grep", "-rlF", marker, f"{config_dir}/agents", check=False, timeout=60)
    return proc.returncode == 0 and bool(proc.stdout.strip())


def turns_at_once(token: str, count: int, seconds: float, what: str) -> list[Turn]:
    return [Turn(token, f"{what} {n} [delay={seconds:g}] {what}-{n}-{secrets.token_hex(3)}",
                 timeout=seconds * count + 600) for n in range(count)]
