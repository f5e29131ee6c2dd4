"""The outermost HTTP layer of ``fastvideo serve``: one pure-ASGI middleware over every route.

Contract:
- :class:`RequestContextMiddleware` (pure ASGI, outermost): every HTTP response carries
  ``x-request-id`` (the client's when sane, else a new one) - error and 500 responses included;
  the id is in every log line of the request; ``/v1/*`` requires ``Authorization: Bearer`` when
  an API key is configured (401 envelope otherwise; the key is compared in constant time,
  ``hmac.compare_digest``); an unexpected exception becomes a 500 envelope and the server keeps serving.
- Body limit: a body past ``max_body_bytes`` gets a 413 envelope (``request_too_large``) whatever its
  transfer encoding: a ``Content-Length`` over the limit is refused before anything is read, and every body
  (chunked ones too) is counted as it streams in, so the route reading it stops at the limit
  (:class:`~fastvideo.serving.errors.BodyTooLarge`) and the rest is never read or held.
- Metrics: requests are counted in ``/metrics`` by method (one of :data:`METHODS`, else ``other``), route
  template (``/v1/videos/{video_id}``; resolved here from the app's routes, so a 401 answered before
  routing is labelled too; ``unmatched`` when no route matches) and status: the label set is bounded
  whatever paths clients send. The one log line per request names the raw path with control characters
  escaped (:func:`~fastvideo.serving.observability.printable`).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

from starlette.routing import Match

from fastvideo.serving.errors import BodyTooLarge, error_body
from fastvideo.serving.metrics import ServingMetrics
from fastvideo.serving.observability import accept_request_id, printable, request_id_var

logger = logging.getLogger(__name__)

#: HTTP methods that get their own metrics label; any other is counted as ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestContextMiddleware:
    """Request id, auth, body limit, last-resort 500s and HTTP metrics (see module contract)."""

    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int, metrics: ServingMetrics) -> None:
        self.app, self.api_key, self.max_body_bytes, self.metrics = app, api_key, max_body_bytes, metrics
        self._routes: list[Any] | None = None  # the app's routes, read on the first request (all exist by then)

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
        received = 0

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"], status_holder["started"] = message["status"], True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message  # type: ignore[no-any-return]

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
                too_large = BodyTooLarge(self.max_body_bytes)
                await reply(413, too_large.body())
                return
            await self.app(scope, counted_receive, send_with_id)
        except BodyTooLarge as exc:  # raised where no exception handler answered it (e.g. a streaming read)
            if not status_holder["started"]:
                await reply(413, exc.body())
        except Exception as exc:  # noqa: BLE001 - the last line of defence: answer, log, keep serving
            logger.exception("unhandled error on %s %s: %s", scope.get("method"), printable(path), exc)
            if not status_holder["started"]:
                await reply(500, error_body("internal server error", type="server_error", code="internal_error"))
        finally:
            method = scope.get("method", "GET")
            label = method if method in METHODS else "other"
            if self._routes is None:
                self._routes = flat_routes(getattr(getattr(scope.get("app"), "router", None), "routes", None))
            template = route_template(scope, self._routes)
            self.metrics.http_requests.labels(label, template, str(status_holder["status"])).inc()
            self.metrics.http_latency.labels(label, template).observe(time.perf_counter() - started)
            level = logging.DEBUG if method == "GET" and status_holder["status"] < 400 else logging.INFO
            logger.log(level, "%s %s -> %d in %.1fms", printable(method, 16), printable(path),
                       status_holder["status"], 1000 * (time.perf_counter() - started))
            request_id_var.reset(token)


def route_template(scope: dict, routes: list[Any]) -> str:
    """The path template of the route in ``routes`` that ``scope`` matches (``/v1/videos/{video_id}``), else
    ``unmatched``. A route matching the path but not the method (a 405) counts as matched."""
    partial: str | None = None
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(route.path)
        if match == Match.PARTIAL and partial is None:
            partial = str(route.path)
    return partial or "unmatched"


def flat_routes(routes: Any) -> list[Any]:
    """The app's routes with a path, included routers opened (FastAPI keeps an included router as one entry)."""
    out: list[Any] = []
    for route in routes or ():
        if isinstance(getattr(route, "path", None), str):
            out.append(route)
        else:
            out.extend(flat_routes(getattr(getattr(route, "original_router", None), "routes", None)))
    return out


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _authorized(scope: dict, api_key: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <api_key>`` (constant-time comparison)."""
    auth = (_header(scope, b"authorization") or "").encode("latin-1")
    return auth[:7].lower() == b"bearer " and hmac.compare_digest(auth[7:].strip(), api_key.encode("utf-8"))
