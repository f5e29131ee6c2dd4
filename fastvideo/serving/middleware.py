"""The outermost HTTP layer of ``fastvideo serve``: one pure-ASGI middleware over every route.

Contract:
- :class:`RequestContextMiddleware` (pure ASGI, outermost): every HTTP response carries
  ``x-request-id`` (the client's when sane, else a new one) - error and 500 responses included;
  the id is in every log line of the request; ``/v1/*`` requires ``Authorization: Bearer`` when
  an API key is configured (401 envelope otherwise); bodies over ``max_body_bytes`` get 413; an
  unexpected exception becomes a 500 envelope and the server keeps serving. Requests are counted
  in ``/metrics`` by route template.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from fastvideo.serving.errors import error_body
from fastvideo.serving.metrics import ServingMetrics
from fastvideo.serving.observability import accept_request_id, request_id_var

logger = logging.getLogger(__name__)


class RequestContextMiddleware:
    """Request id, auth, body limit, last-resort 500s and HTTP metrics (see module contract)."""

    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int, metrics: ServingMetrics) -> None:
        self.app, self.api_key, self.max_body_bytes, self.metrics = app, api_key, max_body_bytes, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                request_id_var.set(accept_request_id(_header(scope, b"x-request-id")))
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(_header(scope, b"x-request-id"))
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"], status_holder["started"] = message["status"], True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        async def reply(status: int, body: dict, headers: dict[str, str] | None = None) -> None:
            payload = json.dumps(body).encode()
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            hdrs += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
            await send_with_id({"type": "http.response.start", "status": status, "headers": hdrs})
            await send({"type": "http.response.body", "body": payload})

        path = scope.get("path", "")
        try:
            if self.api_key and path.startswith("/v1/") and not _authorized(scope, self.api_key):
                await reply(401, error_body("missing or wrong API key (send Authorization: Bearer <key>)",
                                            type="authentication_error", code="invalid_api_key"),
                            {"www-authenticate": "Bearer"})
                return
            length = _header(scope, b"content-length")
            if length and length.isdigit() and int(length) > self.max_body_bytes:
                await reply(413, error_body(f"request body is larger than {self.max_body_bytes} bytes",
                                            type="invalid_request_error", code="request_too_large"))
                return
            await self.app(scope, receive, send_with_id)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: answer, log, keep serving
            logger.exception("unhandled error on %s %s: %s", scope.get("method"), path, exc)
            if not status_holder["started"]:
                await reply(500, error_body("internal server error", type="server_error", code="internal_error"))
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or ("unmatched" if status_holder["status"] == 404 else path)
            method = scope.get("method", "GET")
            self.metrics.http_requests.labels(method, template, str(status_holder["status"])).inc()
            self.metrics.http_latency.labels(method, template).observe(time.perf_counter() - started)
            level = logging.DEBUG if method == "GET" and status_holder["status"] < 400 else logging.INFO
            logger.log(level, "%s %s -> %d in %.1fms", method, path, status_holder["status"],
                       1000 * (time.perf_counter() - started))
            request_id_var.reset(token)


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _authorized(scope: dict, api_key: str) -> bool:
    auth = _header(scope, b"authorization") or ""
    return auth.lower().startswith("bearer ") and auth[7:].strip() == api_key
