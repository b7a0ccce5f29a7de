"""The suite's own model server (tests/modelserver.py), over real HTTP on 127.0.0.1: the
gateway tests lean on its answers, its delays and its records, so each is pinned here."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.modelserver import ModelServer

TOP = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer() as model:
        yield model
    assert model.errors == []  # nothing escaped a handler


def _request(
    model: ModelServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", model.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def _chat_body(text: Any, stream: bool = False, **extra: Any) -> bytes:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
    return json.dumps({"model": "theiaos-test", "messages": messages, "stream": stream, **extra}).encode()


def _chat(model: ModelServer, text: Any, **extra: Any) -> dict[str, Any]:
    response, data = _request(model, "POST", "/v1/chat/completions", _chat_body(text, **extra))
    assert response.status == 200, data
    result: dict[str, Any] = json.loads(data)
    return result


def _events(data: bytes) -> list[str]:
    """The data: payloads of an SSE body, in order."""
    blocks = [b for b in data.decode().split("\n\n") if b]
    assert all(b.startswith("data: ") for b in blocks), blocks
    return [b[len("data: ") :] for b in blocks]


def _stream(model: ModelServer, text: str, **extra: Any) -> tuple[http.client.HTTPResponse, list[str]]:
    response, data = _request(model, "POST", "/v1/chat/completions", _chat_body(text, stream=True, **extra))
    assert response.status == 200, data
    return response, _events(data)


def test_models_lists_the_one_model(server: ModelServer) -> None:
    response, data = _request(server, "GET", "/v1/models")
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(data) == {
        "object": "list",
        "data": [{"id": "theiaos-test", "object": "model", "created": 0, "owned_by": "theiaos-tests"}],
    }
    assert server.url == f"http://127.0.0.1:{server.port}/v1"


def test_answer_quotes_the_last_user_message(server: ModelServer) -> None:
    result = _chat(server, "  hello \n\t world  ", temperature=0.2, tools=[], unknown_field={"x": 1})
    assert result["object"] == "chat.completion"
    assert result["model"] == "theiaos-test"
    assert result["id"].startswith("chatcmpl-")
    assert isinstance(result["created"], int)
    (choice,) = result["choices"]
    assert choice["message"] == {"role": "assistant", "content": "theiaos-test answer: hello world"}
    assert choice["finish_reason"] == "stop"
    usage = result["usage"]
    assert all(isinstance(usage[k], int) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_answer_reads_text_parts_and_keeps_the_last_200_characters(server: ModelServer) -> None:
    parts = [
        {"type": "text", "text": "look at"},
        {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "this"},
    ]
    assert _chat(server, parts)["choices"][0]["message"]["content"] == "theiaos-test answer: look at this"
    long = "word " * 100
    content = _chat(server, long)["choices"][0]["message"]["content"]
    assert content == "theiaos-test answer: " + " ".join(long.split())[-200:]


def test_stream_reassembles_to_the_same_answer(server: ModelServer) -> None:
    plain = _chat(server, "stream me please")["choices"][0]["message"]["content"]
    response, events = _stream(server, "stream me please")
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    assert len([p for p in pieces if p]) >= 2  # streamed, not one lump
    assert "".join(pieces) == plain
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)


def test_stream_ends_with_usage_when_asked(server: ModelServer) -> None:
    _, events = _stream(server, "count me", stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"] == []
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]
    assert json.loads(events[-3])["choices"][0]["finish_reason"] == "stop"


def test_delay_and_its_per_request_override(server: ModelServer) -> None:
    server.delay = 0.5
    t0 = time.monotonic()
    _chat(server, "slow")
    assert time.monotonic() - t0 >= 0.5
    server.delay = 1.5
    t0 = time.monotonic()
    _chat(server, "quicker [delay=0.3] than the server's")
    took = time.monotonic() - t0
    assert 0.3 <= took < 1.0
    assert [r.delay for r in server.requests] == [0.5, 0.3]


def test_requests_are_recorded(server: ModelServer) -> None:
    _chat(server, "one")
    _stream(server, "two")
    assert server.wait_for(lambda: server.in_flight() == 0)
    first, second = server.requests
    assert (first.stream, second.stream) == (False, True)
    assert first.body["messages"][-1] == {"role": "user", "content": "one"}
    assert second.answer == "theiaos-test answer: two"
    for record in (first, second):
        assert record.finished is not None and record.finished >= record.started
        assert record.completed and not record.aborted
    assert server.answers() == ["theiaos-test answer: one", "theiaos-test answer: two"]


def test_client_that_leaves_mid_delay_is_recorded_and_the_server_goes_on(server: ModelServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", body=_chat_body("never mind [delay=5]"))
    assert server.wait_for(lambda: server.in_flight() == 1)
    conn.close()
    assert server.wait_for(lambda: server.requests[0].finished is not None, timeout=1)
    record = server.requests[0]
    assert record.aborted and not record.completed
    assert server.answers() == []
    assert _chat(server, "still there?")["choices"][0]["message"]["content"] == "theiaos-test answer: still there?"
    assert server.answers() == ["theiaos-test answer: still there?"]


def test_client_that_leaves_mid_stream_is_recorded(server: ModelServer) -> None:
    server.chunk_delay = 0.2
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", body=_chat_body("a long story", stream=True))
    response = conn.getresponse()
    assert response.readline().startswith(b"data: ")
    conn.close()
    response.close()
    assert server.wait_for(lambda: server.requests[0].finished is not None, timeout=1.5)
    assert server.requests[0].aborted
    server.chunk_delay = 0
    assert _stream(server, "next")[1][-1] == "[DONE]"


def test_stop_ends_a_long_delay_at_once() -> None:
    model = ModelServer(delay=30).start()
    failures: list[BaseException] = []

    def ask() -> None:
        try:
            _chat(model, "wait for it")
        except (OSError, http.client.HTTPException) as exc:  # the expected end: no answer
            failures.append(exc)

    client = threading.Thread(target=ask, daemon=True)
    client.start()
    assert model.wait_for(lambda: model.in_flight() == 1)
    t0 = time.monotonic()
    model.stop()
    assert time.monotonic() - t0 < 2
    client.join(2)
    assert not client.is_alive()
    assert len(failures) == 1
    assert model.in_flight() == 0
    assert not model.requests[0].completed
    model.stop()  # twice is fine


def test_bad_json_is_400(server: ModelServer) -> None:
    response, data = _request(server, "POST", "/v1/chat/completions", b"{not json")
    assert response.status == 400
    error = json.loads(data)["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    response, data = _request(server, "POST", "/v1/chat/completions", b'{"model": "x"}')
    assert response.status == 400  # no messages
    assert server.requests == []


def test_unknown_path_is_404(server: ModelServer) -> None:
    for method, path in (("GET", "/v2/models"), ("POST", "/v1/completions")):
        response, data = _request(server, method, path, b"{}" if method == "POST" else None)
        assert response.status == 404
        assert json.loads(data)["error"]["type"] == "invalid_request_error"


def test_oversized_body_is_413(server: ModelServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.putrequest("POST", "/v1/chat/completions")
        conn.putheader("Content-Length", str(5 * 1024 * 1024))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert "error" in json.loads(response.read())
    finally:
        conn.close()


def test_api_key_is_required_when_set() -> None:
    with ModelServer(api_key="sekrit") as model:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekrit"}):
            response, data = _request(model, "GET", "/v1/models", headers=headers)
            assert response.status == 401
            assert json.loads(data)["error"]["type"] == "invalid_request_error"
        response, _ = _request(model, "GET", "/v1/models", headers={"Authorization": "Bearer sekrit"})
        assert response.status == 200
        response, _ = _request(
            model, "POST", "/v1/chat/completions", _chat_body("hi"), headers={"Authorization": "Bearer sekrit"}
        )
        assert response.status == 200


def test_runs_by_hand_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.modelserver", "--host", "127.0.0.1", "--port", "0", "--delay", "0"],
        cwd=TOP,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TOP)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split()[-1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/v1/models")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=2) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_answer_quotes_the_person_not_the_gateways_context(server: ModelServer) -> None:
    """As the gateway sends a turn: the person's words (with a time stamp) in one user
    message, runtime details after a blank line, and its own context appended last."""
    messages = [
        {"role": "system", "content": "You are a personal assistant."},
        {"role": "user", "content": "[Mon 2026-12-07 23:48 UTC] hello [delay=0.2] marker-q\n\n"
                                    "Runtime: agent=main | session=x"},
        {"role": "user", "content": [{"type": "text", "text": "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>\n"
                                      "Conversation data\n<<<END_OPENCLAW_INTERNAL_CONTEXT>>>"}]},
    ]
    began = time.monotonic()
    response, data = _request(server, "POST", "/v1/chat/completions",
                              json.dumps({"model": "m", "messages": messages}).encode())
    assert response.status == 200 and time.monotonic() - began >= 0.2
    assert json.loads(data)["choices"][0]["message"]["content"] == \
        "theiaos-test answer: [Mon 2026-12-07 23:48 UTC] hello [delay=0.2] marker-q"


def test_the_dashboards_wrapping_is_not_quoted(server: ModelServer) -> None:
    """As the gateway sends a dashboard turn: its conversation metadata first (a fenced
    JSON block with a context marker), then the person's words, then runtime details."""
    text = ("[Tue 2026-12-08 00:30 UTC] Conversation info: \u27e6openclaw:ctx\u27e7\n```json\n"
            "{\"channel\": \"webchat\",\n\n \"x\": 1}\n```\n\nhello from a browser m-1\n\n"
            "Runtime: agent=main | channel=webchat")
    assert _chat(server, text)["choices"][0]["message"]["content"] == \
        "theiaos-test answer: hello from a browser m-1"
