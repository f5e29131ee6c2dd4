"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 for the prompt enhancer's tests.

``ChatStub`` runs a stdlib ``ThreadingHTTPServer`` on a free port; ``POST /v1/chat/completions`` answers
with the next scripted step, then with ``default`` once the script is used up. Steps:
``("ok", text)`` a well-formed reply whose ``choices[0].message.content`` is ``text``;
``("status", code)`` that HTTP status with a JSON error body; ``("sleep", seconds)`` no answer for that long
(a timeout for the client), then a well-formed reply; ``("raw", body)`` HTTP 200 with ``body`` as is
(malformed replies). Every request's JSON body and headers are kept in ``requests``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def reply(content: str, model: str = "stub-model") -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class ChatStub:
    def __init__(self, script: list[tuple[str, Any]] | None = None, default: tuple[str, Any] = ("ok", "stub answer")):
        self.script = list(script or [])
        self.default = default
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with stub._lock:
                    stub.requests.append(body)
                    stub.headers.append({k.lower(): v for k, v in self.headers.items()})
                    kind, value = stub.script.pop(0) if stub.script else stub.default
                if self.path != "/v1/chat/completions":
                    kind, value = "status", 404
                if kind == "sleep":
                    time.sleep(value)
                    kind, value = "ok", "too late"
                if kind == "ok":
                    self._send(200, json.dumps(reply(value, body.get("model", ""))).encode())
                elif kind == "status":
                    self._send(value, json.dumps({"error": {"message": f"scripted {value}", "code": value}}).encode())
                else:
                    self._send(200, value.encode() if isinstance(value, str) else value)

            def _send(self, status: int, data: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ChatStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """The base URL of a 127.0.0.1 port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
