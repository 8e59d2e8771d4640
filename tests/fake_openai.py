"""A local OpenAI-compatible server for tests: ``POST /v1/chat/completions`` with scripted replies.

Threaded ``http.server`` on 127.0.0.1, random port. Queue responses with :meth:`FakeOpenAI.script`
(each request takes the next one; when none is left, :attr:`FakeOpenAI.default` answers). Every
request is recorded (path, headers, JSON body) so tests can assert what the SDK sent.

    with FakeOpenAI() as server:
        server.script(error(500), reply("hi"))
        ... base_url=server.url ...
        assert server.requests[0].body["max_tokens"] == 180
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: Any = None  # bytes -> sent as they are; anything else -> JSON; None -> a completion with ``content``
    content: str | None = "Hello from the fake model."
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a slow server)


def reply(content: str | None, *, delay: float = 0.0) -> Response:
    return Response(content=content, delay=delay)


def empty() -> Response:
    return Response(content="")


def error(
    status: int, message: str = "boom", *, code: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return Response(status=status, body=body, headers=headers or {})


def slow(seconds: float, content: str = "too late") -> Response:
    return Response(content=content, delay=seconds)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)


class FakeOpenAI:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[Recorded] = []
        self.default = Response()
        self._queue: deque[Response] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-openai", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, *responses: Response) -> None:
        with self._lock:
            self._queue.extend(responses)

    def _next(self) -> Response:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms delayed-ACK stall

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                fake._record(Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}}, {})
                    return
                resp = fake._next()
                if resp.delay and fake._closing.wait(resp.delay):
                    return
                payload = resp.body if resp.body is not None else _completion(resp.content, body)
                self._send(resp.status, payload, resp.headers)

            def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler


def _completion(content: str | None, request: Any) -> dict[str, Any]:
    model = request.get("model", "gpt-4o-mini") if isinstance(request, dict) else "gpt-4o-mini"
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server
