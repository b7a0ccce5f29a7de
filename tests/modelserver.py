"""A small OpenAI-compatible model server that the test suite owns.

The gateway under test talks to a model over the OpenAI chat API. The tests need a model
that answers at once, predictably and offline, that can be made slow on purpose (to test
timeouts, aborts and restarts while a request is in flight), and that records what it was
asked. This is that model, standard library only so that it runs anywhere the suite does.

In-process use (pytest)::

    with ModelServer() as model:
        ...  # point the client at model.url ("http://127.0.0.1:PORT/v1")
        assert model.answers() == ["theiaos-test answer: hello"]

By hand::

    python3 -m tests.modelserver --host 127.0.0.1 --port 8000 --delay 1.5

The answer to a chat request is ``"theiaos-test answer: "`` followed by the last user
message's text (whitespace collapsed, its last 200 characters). Before it answers, the
server waits its ``delay`` (settable at any time), or N seconds when the last user message
contains ``[delay=N]``; stopping the server ends every wait at once.
"""

from __future__ import annotations

import argparse
import json
import re
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, cast

ANSWER_PREFIX = "theiaos-test answer: "
#: The last characters of the user's message quoted in the answer: its end, since the
#: gateway puts its own context before what the person typed.
MAX_QUOTED = 200
MAX_BODY = 4 * 1024 * 1024  # a request body larger than this is refused (413)
OWNER = "theiaos-tests"
DELAY_MARK = re.compile(r"\[delay=(\d+(?:\.\d*)?|\.\d+)\]")
POLL = 0.05  # seconds between looks at a waiting client's socket (did it go away?)


@dataclass
class ChatRequest:
    """One chat request as the server saw it, so a test can ask what the gateway sent
    and what became of it. Times are time.monotonic() values (durations, not dates)."""

    started: float
    body: dict[str, Any]
    stream: bool
    answer: str
    delay: float
    finished: float | None = None
    aborted: bool = False  # the client went away before the answer was out
    completed: bool = False  # the whole answer was written (False too when stop() cut it)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its ModelServer and keeps handler errors off stderr
    (a test that wants them reads ModelServer.errors)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: ModelServer, address: tuple[str, int]) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None:
            self.owner._note_error(exc)
        if self.owner.verbose:
            super().handle_error(request, client_address)


class _ClientGone(Exception):
    """The client closed its end: the rest of the answer has nobody to go to."""


class _Stopping(Exception):
    """The server is being stopped: drop the request rather than hold stop() up."""


class _Handler(BaseHTTPRequestHandler):
    """One connection, one request: HTTP/1.1 but always ``Connection: close``, so a
    streamed answer needs neither Content-Length nor chunked encoding."""

    protocol_version = "HTTP/1.1"
    server_version = "theiaos-modelserver/1"
    timeout = 10  # a client that stalls mid-request does not hold a thread for ever

    @property
    def owner(self) -> ModelServer:
        return cast(_Server, self.server).owner

    def log_message(self, format: str, *args: Any) -> None:
        if self.owner.verbose:
            super().log_message(format, *args)

    # -- routing -------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        model = self.owner.model
        if path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [_model_object(model)]})
        elif path == f"/v1/models/{model}":
            self._send_json(200, _model_object(model))
        elif path == "/v1/chat/completions":
            self._send_error(405, "Use POST for /v1/chat/completions", "method_not_allowed")
        else:
            self._send_error(404, f"Unknown path: {self.path}", "unknown_url")

    def do_POST(self) -> None:
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != "/v1/chat/completions":
            if path.startswith("/v1/models"):
                self._send_error(405, f"Use GET for {path}", "method_not_allowed")
            else:
                self._send_error(404, f"Unknown path: {self.path}", "unknown_url")
            return
        body = self._read_json()
        if body is None:
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self._send_error(400, "'messages' must be a non-empty array", "invalid_value")
            return
        self._chat(body, messages)

    # -- the chat answer -----------------------------------------------------------------

    def _chat(self, body: dict[str, Any], messages: list[Any]) -> None:
        owner = self.owner
        quoted = _last_user_text(messages)
        mark = DELAY_MARK.search(quoted)
        record = ChatRequest(
            started=time.monotonic(),
            body=body,
            stream=body.get("stream") is True,
            answer=ANSWER_PREFIX + quoted[-MAX_QUOTED:],
            delay=float(mark.group(1)) if mark else owner.delay,
        )
        owner._record(record)
        try:
            self._wait(record.delay)
            if record.stream:
                options = body.get("stream_options")
                usage = isinstance(options, dict) and options.get("include_usage") is True
                self._stream(record, messages, usage)
            else:
                self._send_json(200, _completion(owner.model, record.answer, messages), record)
        except (_ClientGone, ConnectionError):
            record.aborted, record.completed = True, False
            self.close_connection = True
        except _Stopping:
            self.close_connection = True
        finally:
            if record.finished is None:
                record.finished = time.monotonic()

    @staticmethod
    def _done(record: ChatRequest) -> None:
        """Mark the record answered just before the last write: a client that has read its
        answer then finds it in answers() (marked after, it could look too soon). A last
        write that fails turns it back into aborted."""
        record.completed = True
        record.finished = time.monotonic()

    def _wait(self, seconds: float) -> None:
        """Wait, but look at the socket every POLL: a client that gave up is recorded as
        such at once (not only when the answer fails to go out), and stop() ends it."""
        end = time.monotonic() + seconds
        stopping = self.owner._stopping
        while True:
            left = end - time.monotonic()
            if stopping.wait(max(0.0, min(POLL, left))):
                raise _Stopping
            if self._client_gone():
                raise _ClientGone
            if left <= POLL:
                return

    def _client_gone(self) -> bool:
        """True when the peer closed or reset (readable with nothing to read). The client
        sends nothing more after its request, so readable means end of file or reset."""
        sock = cast(socket.socket, self.connection)
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (ConnectionError, OSError):
            return True

    def _stream(self, record: ChatRequest, messages: list[Any], usage: bool) -> None:
        owner = self.owner
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            event: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": owner.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if usage:
                event["usage"] = None
            return event

        events = [chunk({"role": "assistant"}, None)]
        events += [chunk({"content": piece}, None) for piece in _pieces(record.answer, 3)]
        events.append(chunk({}, "stop"))
        if usage:
            last = chunk({}, None)
            last["choices"], last["usage"] = [], _usage(messages, record.answer)
            events.append(last)
        for n, event in enumerate(events):
            if n and owner.chunk_delay > 0:
                self._wait(owner.chunk_delay)
            self._event(json.dumps(event))
        self._done(record)
        self._event("[DONE]")

    def _event(self, data: str) -> None:
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()

    # -- plumbing ------------------------------------------------------------------------

    def _authorized(self) -> bool:
        key = self.owner.api_key
        if key is None or self.headers.get("Authorization", "") == f"Bearer {key}":
            return True
        self._send_error(401, "Incorrect or missing API key", "invalid_api_key")
        return False

    def _read_json(self) -> dict[str, Any] | None:
        """The request body as a JSON object, or None once an error has been sent."""
        if self.headers.get("Transfer-Encoding"):
            self._send_error(411, "Send the body with a Content-Length", "length_required")
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            self._send_error(400, "Bad Content-Length", "invalid_request")
            return None
        if length > MAX_BODY:
            self._send_error(413, f"Request body over {MAX_BODY} bytes", "request_too_large")
            return None
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._send_error(400, f"Invalid JSON body: {exc}", "invalid_json")
            return None
        if not isinstance(body, dict):
            self._send_error(400, "The body must be a JSON object", "invalid_json")
            return None
        return body

    def _send_json(self, status: int, obj: dict[str, Any], record: ChatRequest | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if record is not None:
            self._done(record)
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, status: int, message: str, code: str) -> None:
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        try:
            self._send_json(status, {"error": error})
        except ConnectionError:
            self.close_connection = True


def _model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": OWNER}


def _text(content: Any) -> str:
    """A message's text: content is a string, or a list of parts of which the
    ``{"type": "text", "text": ...}`` ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


#: How the gateway (openclaw) marks a user message of its own: context it appends after
#: what the person typed, not the person's words.
GATEWAY_CONTEXT = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>"


#: Paragraphs the gateway wraps around what the person typed: its runtime details and
#: the conversation's metadata (a fenced JSON block after a "Conversation info" line).
_FENCED = re.compile(r"```.*?```", re.S)
_WRAPPING = ("Runtime:", "Conversation info", "\u27e6openclaw:ctx\u27e7")


def _last_user_text(messages: list[Any]) -> str:
    """What the person said last: the last user message that is not the gateway's own
    context, without the paragraphs the gateway wraps around it (fenced metadata, its
    runtime details), whitespace collapsed."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            text = _text(message.get("content")).strip()
            if text.startswith(GATEWAY_CONTEXT):
                continue
            kept = [para for para in _FENCED.sub("", text).split("\n\n")
                    if para.strip() and not any(w in para for w in _WRAPPING)]
            return " ".join(" ".join(kept).split())
    return ""


def _usage(messages: list[Any], answer: str) -> dict[str, int]:
    """Token counts are words: small, deterministic, and enough for a client's accounting."""
    prompt = sum(len(_text(m.get("content")).split()) for m in messages if isinstance(m, dict))
    completion = len(answer.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(model: str, answer: str, messages: list[Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(messages, answer),
    }


def _pieces(text: str, n: int) -> list[str]:
    """text cut into n pieces or fewer (none empty), so a stream has more than one delta."""
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)]


class ModelServer:
    """The model, served from a daemon thread; a context manager (start on enter, stop on
    exit). ``delay`` and ``chunk_delay`` may be changed while it runs."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "theiaos-test",
        delay: float = 0.0,
        *,
        api_key: str | None = None,
        verbose: bool = False,
        chunk_delay: float = 0.0,
    ) -> None:
        self.host = host
        self.model = model
        self.delay = delay
        self.api_key = api_key
        self.verbose = verbose
        self.chunk_delay = chunk_delay  # seconds between a streamed answer's events
        self.requests: list[ChatRequest] = []
        self.errors: list[BaseException] = []  # exceptions that escaped a handler
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> ModelServer:
        """Bind (port 0: a free port, read it from .port) and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("ModelServer already started")
        self._stopping.clear()
        self._server = _Server(self, (self.host, self._port))
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL},
            name=f"modelserver:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving; every wait and stream ends early, so this takes at most about
        ``timeout`` seconds even with requests in flight. Safe to call twice."""
        self._stopping.set()
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        deadline = time.monotonic() + timeout
        server.shutdown()
        server.server_close()
        thread.join(max(0.0, deadline - time.monotonic()))
        while self.in_flight() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._server = None
        self._thread = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None and not self._port:
            raise RuntimeError("ModelServer not started: the port is chosen on start()")
        return self._port

    @property
    def url(self) -> str:
        """The OpenAI base URL (what a client's base_url wants), ending in /v1."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    # -- what was asked --------------------------------------------------------------------

    def answers(self) -> list[str]:
        """The answers written out in full, oldest first."""
        with self._lock:
            return [r.answer for r in self.requests if r.completed]

    def in_flight(self) -> int:
        """Chat requests still waiting out their delay or streaming."""
        with self._lock:
            return sum(1 for r in self.requests if r.finished is None)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 2.0, interval: float = 0.01) -> bool:
        """Poll predicate until it holds (True) or timeout passes (False): the server's
        threads change its state, and a test must not sleep a fixed guess."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def _record(self, record: ChatRequest) -> None:
        with self._lock:
            self.requests.append(record)

    def _note_error(self, exc: BaseException) -> None:
        with self._lock:
            self.errors.append(exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m tests.modelserver", description="The test suite's OpenAI-compatible model."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each answer")
    parser.add_argument("--model", default="theiaos-test")
    parser.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)
    done = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_term)
    server = ModelServer(args.host, args.port, args.model, args.delay, api_key=args.api_key, verbose=args.verbose)
    with server:
        print(f"theiaos test model {args.model} at {server.url}", flush=True)
        try:
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
