"""``fastvideo router-serve``: an HTTP + WebSocket proxy in front of several ``fastvideo serve`` replicas.

Contract:
- Replicas are probed every ``health_check.interval_s`` (GET ``health_check.path``, 200 = good);
  ``failure_threshold`` failed probes mark one unhealthy, ``recovery_threshold`` good ones bring it
  back; a refused connection while forwarding marks it unhealthy at once. Selection: the healthy
  primary, else the healthy replica with the fewest requests in flight (ties: config order).
- HTTP ``/v1/*``: a request that creates work (``POST``) goes to the selected replica; if that
  replica cannot be reached, or refuses before creating a job (429 queue full / 503 not ready or
  draining), the next healthy replica is tried (failover) - never after a job may exist. Job
  reads (``/v1/videos/{id}...``, ``/v1/images/{id}/content``) are sticky: they go to the replica
  that created the id (learned from replies; an unknown id is looked up on each healthy replica).
  ``GET /v1/videos`` merges the replicas' first pages (with ``after``: the page of the replica that
  owns that id). The client's ``Host`` is forwarded so replies' URLs point at the router; the
  request id travels as ``x-request-id``. No healthy replica: 503 envelope with ``retry-after``.
  A body past ``max_body_bytes`` (a ``Content-Length`` over it, or a chunked body as it streams in) is
  answered 413 ``request_too_large`` and never forwarded nor held whole; the API key (``api_key``) is
  compared in constant time.
- WebSocket ``/v1/stream``: a browser socket whose ``Origin`` is neither the router's own (the ``Host`` it was
  opened on) nor in ``allowed_origins`` is refused before accept (HTTP 403), by the same rule as a server's
  (:mod:`fastvideo.serving.ws_origin`); no ``Origin`` (not a browser) is not affected. The router does not
  forward ``Origin``, so this is the check that guards its replicas' streams. Then the router reads the client's
  first frame; a ``session_init_v2`` with a
  ``session_id`` the router has seen goes back to the replica that holds it (sticky continuation);
  otherwise the selected replica, failing over while the upstream connection cannot be opened.
  Frames are then relayed both ways unchanged (text and binary). If the replica dies mid-stream the
  client gets ``error{code:"worker_failed", retryable:true}`` and can resume from its
  ``continuation_state_snapshot`` on any replica.
- ``/health`` (router alive), ``/readyz`` (some replica healthy), ``/status`` (replica table),
  ``/metrics`` (router counters, private registry).
- Layout: :func:`build_router_app` only builds the :class:`RouterState` (kept on ``app.state.router``),
  adds the request-context middleware and includes the module-level ``router`` (an ``APIRouter``);
  every handler is a module-level function that receives the state through a FastAPI dependency
  (:func:`get_state` / :func:`get_ws_state`), so one process may hold several independent router apps.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass, field
from collections.abc import AsyncIterator
from typing import Any, Awaitable, Callable

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from starlette.websockets import WebSocketState

from fastvideo.serving.config import ReplicaEndpoint, RouterConfig
from fastvideo.serving.errors import error_body
from fastvideo.serving.observability import accept_request_id, printable, request_id_var
from fastvideo.serving.ws_origin import refuse_foreign_origin

logger = logging.getLogger(__name__)

HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "content-length", "content-encoding", "host"}
_ID_IN_PATH = re.compile(r"^/v1/(videos|images)/([A-Za-z0-9_\-]+)(/content)?$")
_ID_IN_URL = re.compile(r"/v1/(?:videos|images)/([A-Za-z0-9_\-]+)/content")
Probe = Callable[[str, float], Awaitable[bool]]


@dataclass
class Replica:
    endpoint: ReplicaEndpoint
    healthy: bool = False
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_ok_at: float | None = None
    last_error: str | None = None
    inflight: int = 0

    @property
    def url(self) -> str:
        return self.endpoint.url.rstrip("/")

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "name": self.endpoint.name, "primary": self.endpoint.primary, "healthy": self.healthy,
                "consecutive_failures": self.consecutive_failures, "last_ok_at": self.last_ok_at,
                "last_error": self.last_error, "inflight": self.inflight}


class ReplicaRegistry:
    """Health bookkeeping and selection (see module contract)."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.replicas = [Replica(e) for e in config.replicas]
        self.by_url = {r.url: r for r in self.replicas}

    def healthy(self) -> list[Replica]:
        return [r for r in self.replicas if r.healthy]

    def select(self, exclude: set[str] = frozenset()) -> Replica | None:  # type: ignore[assignment]
        options = [r for r in self.healthy() if r.url not in exclude]
        primary = next((r for r in options if r.endpoint.primary), None)
        if primary is not None:
            return primary
        return min(options, key=lambda r: (r.inflight, self.replicas.index(r)), default=None)

    def record(self, replica: Replica, ok: bool, error: str | None = None, *, hard: bool = False) -> None:
        hc = self.config.health_check
        if ok:
            replica.consecutive_failures = 0
            replica.consecutive_successes += 1
            replica.last_ok_at = time.time()
            replica.last_error = None
            if not replica.healthy and replica.consecutive_successes >= hc.recovery_threshold:
                replica.healthy = True
                logger.info("replica %s is healthy", replica.url)
        else:
            replica.consecutive_successes = 0
            replica.consecutive_failures += 1
            replica.last_error = error
            if replica.healthy and (hard or replica.consecutive_failures >= hc.failure_threshold):
                replica.healthy = False
                logger.warning("replica %s is unhealthy: %s", replica.url, error)


class StickyMap:
    """Job / session id -> replica url, for ``ttl_s``."""

    def __init__(self, ttl_s: float, max_items: int = 100_000) -> None:
        self.ttl_s, self.max_items = ttl_s, max_items
        self._items: dict[str, tuple[str, float]] = {}

    def put(self, key: str, url: str) -> None:
        if len(self._items) >= self.max_items:
            now = time.monotonic()
            self._items = {k: v for k, v in self._items.items() if v[1] > now}
            while len(self._items) >= self.max_items:
                self._items.pop(next(iter(self._items)))
        self._items[key] = (url, time.monotonic() + self.ttl_s)

    def get(self, key: str) -> str | None:
        item = self._items.get(key)
        if item is None or item[1] < time.monotonic():
            self._items.pop(key, None)
            return None
        return item[0]


@dataclass
class RouterState:
    config: RouterConfig
    registry: ReplicaRegistry
    sticky: StickyMap
    client: httpx.AsyncClient | None = None
    #: Replaces the HTTP health probe (tests); None: GET ``health_check.path`` on each replica.
    probe: Probe | None = None
    registry_metrics: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        r = self.registry_metrics
        self.requests = Counter("fastvideo_router_requests_total", "Proxied HTTP requests", ["status"], registry=r)
        self.failovers = Counter("fastvideo_router_failovers_total", "Requests retried on another replica",
                                 ["reason"], registry=r)
        self.ws_sessions = Counter("fastvideo_router_ws_sessions_total", "Proxied streaming sessions", ["outcome"],
                                   registry=r)
        healthy = Gauge("fastvideo_router_replica_healthy", "1 when the replica is healthy", ["replica"], registry=r)
        for replica in self.registry.replicas:
            healthy.labels(replica.url).set_function(_health_reader(replica))


def _health_reader(replica: Replica) -> Callable[[], float]:
    """The gauge value of ``replica``, read at scrape time: 1.0 while healthy, else 0.0."""
    return lambda: 1.0 if replica.healthy else 0.0


async def _default_probe(client: httpx.AsyncClient, url: str, timeout: float) -> bool:
    response = await client.get(url, timeout=timeout)
    return response.status_code == 200


async def run_health_checks(state: RouterState, stop: asyncio.Event, probe: Probe | None = None) -> None:
    """Probe every replica now and then every ``interval_s`` until ``stop`` is set."""
    hc = state.config.health_check

    async def one(replica: Replica) -> None:
        try:
            ok = await (probe(replica.url + hc.path, hc.timeout_s) if probe is not None
                        else _default_probe(state.client, replica.url + hc.path, hc.timeout_s))  # type: ignore[arg-type]
            state.registry.record(replica, ok, None if ok else "probe answered not ready")
        except Exception as exc:  # noqa: BLE001 - any probe failure counts
            state.registry.record(replica, False, f"{type(exc).__name__}: {exc}")

    while True:
        await asyncio.gather(*(one(r) for r in state.registry.replicas))
        try:
            await asyncio.wait_for(stop.wait(), hc.interval_s)
            return
        except asyncio.TimeoutError:
            continue


def _unavailable(message: str) -> JSONResponse:
    return JSONResponse(error_body(message, type="service_unavailable", code="no_healthy_replica"), status_code=503,
                        headers={"retry-after": "2"})


# ---------------------------------------------------------------------------- dependencies
def get_state(request: Request) -> RouterState:
    """The router's state (set by :func:`build_router_app`), for HTTP handlers."""
    return request.app.state.router


def get_ws_state(ws: WebSocket) -> RouterState:
    """The router's state, for the WebSocket handler."""
    return ws.app.state.router


# ---------------------------------------------------------------------------- proxy helpers
def forward_headers(request: Request) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
    headers["x-request-id"] = request_id_var.get()
    headers["x-forwarded-host"] = request.headers.get("host", "")
    return headers


def learn(state: RouterState, url: str, payload: bytes, content_type: str) -> None:
    """Remember which replica owns the job / image ids a reply names (sticky reads)."""
    if "json" not in content_type:
        return
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return
    items = data.get("data") if isinstance(data, dict) else None
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        state.sticky.put(data["id"], url)
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            if isinstance(item.get("id"), str):
                state.sticky.put(item["id"], url)
            match = _ID_IN_URL.search(str(item.get("url", "")))
            if match:
                state.sticky.put(match.group(1), url)


async def send_to(state: RouterState, replica: Replica, request: Request, body: bytes, *,
                  stream: bool = False) -> httpx.Response:
    assert state.client is not None
    target = replica.url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    # Keep the client's Host so the replica builds URLs (url_for) that point back at the router.
    headers = {**forward_headers(request), "host": request.headers.get("host", "")}
    replica.inflight += 1
    try:
        req = state.client.build_request(request.method, target, headers=headers, content=body)
        return await state.client.send(req, stream=stream)
    finally:
        replica.inflight -= 1


def to_response(resp: httpx.Response, content: bytes) -> Response:
    headers = {k: v for k, v in resp.headers.items()
               if k.lower() not in HOP_HEADERS and k.lower() != "x-request-id"}
    return Response(content, status_code=resp.status_code, headers=headers)


async def proxy_create(state: RouterState, request: Request, body: bytes) -> Response:
    """A request that creates work: the selected replica, failing over until a job may exist."""
    tried: set[str] = set()
    last: Response | None = None
    while True:
        replica = state.registry.select(tried)
        if replica is None:
            return last or _unavailable("no healthy replica is available")
        tried.add(replica.url)
        try:
            resp = await send_to(state, replica, request, body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            state.registry.record(replica, False, f"connect failed: {exc}", hard=True)
            state.failovers.labels("connect").inc()
            continue
        except httpx.HTTPError as exc:
            # The replica may have created a job: never replay the request elsewhere.
            state.registry.record(replica, False, f"{type(exc).__name__}: {exc}")
            return JSONResponse(error_body(f"replica {replica.url} failed while handling the request: "
                                           f"{type(exc).__name__}", type="server_error", code="replica_failed"),
                                status_code=502)
        content = resp.content
        if resp.status_code in (429, 503):
            state.failovers.labels(str(resp.status_code)).inc()
            last = to_response(resp, content)
            continue
        learn(state, replica.url, content, resp.headers.get("content-type", ""))
        return to_response(resp, content)


async def proxy_sticky(state: RouterState, request: Request, body: bytes, key: str, streaming: bool) -> Response:
    """A job read: the replica that owns ``key`` (or each healthy one until one knows it)."""
    owner = state.sticky.get(key)
    candidates = [state.registry.by_url[owner]] if owner in state.registry.by_url else state.registry.healthy()
    last: Response | None = None
    for replica in candidates:
        try:
            resp = await send_to(state, replica, request, body, stream=streaming)
        except httpx.HTTPError as exc:
            state.registry.record(replica, False, f"{type(exc).__name__}: {exc}",
                                  hard=isinstance(exc, httpx.ConnectError))
            last = JSONResponse(error_body(f"the replica holding {key!r} is unavailable",
                                           type="service_unavailable", code="replica_unavailable"),
                                status_code=503, headers={"retry-after": "2"})
            continue
        if resp.status_code == 404 and owner is None:
            await resp.aclose()
            last = None
            continue
        state.sticky.put(key, replica.url)
        if streaming and resp.status_code == 200:
            headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_HEADERS
                       and k.lower() != "x-request-id"}

            async def body_iter(r: httpx.Response = resp):
                try:
                    async for chunk in r.aiter_raw():
                        yield chunk
                finally:
                    await r.aclose()

            return StreamingResponse(body_iter(), status_code=resp.status_code, headers=headers)
        content = await resp.aread()
        await resp.aclose()
        return to_response(resp, content)
    if last is not None:
        return last
    return JSONResponse(error_body(f"no replica knows {key!r}", type="invalid_request_error", code="not_found"),
                        status_code=404)


async def proxy_list(state: RouterState, request: Request) -> Response:
    """``GET /v1/videos``: the replicas' first pages merged (with ``after``: the owner's page)."""
    after = request.query_params.get("after")
    if after:
        return await proxy_sticky(state, request, b"", after, False)
    pages = []
    for replica in state.registry.healthy():
        try:
            resp = await send_to(state, replica, request, b"")
        except httpx.HTTPError as exc:
            state.registry.record(replica, False, f"{type(exc).__name__}: {exc}")
            continue
        if resp.status_code != 200:
            return to_response(resp, resp.content)
        page = resp.json()
        for item in page.get("data", []):
            state.sticky.put(item["id"], replica.url)
        pages.append(page)
    if not pages:
        return _unavailable("no healthy replica is available")
    limit = int(request.query_params.get("limit", 20))
    reverse = request.query_params.get("order", "desc") == "desc"
    data = sorted((d for p in pages for d in p.get("data", [])), key=lambda d: d.get("created_at", 0),
                  reverse=reverse)
    has_more = any(p.get("has_more") for p in pages) or len(data) > limit
    data = data[:limit]
    return JSONResponse({"object": "list", "data": data, "has_more": has_more,
                         "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})


# ---------------------------------------------------------------------------- handlers
router = APIRouter()


@router.get("/health")
async def health(state: RouterState = Depends(get_state)) -> JSONResponse:
    return JSONResponse({"status": "ok", "healthy_replicas": len(state.registry.healthy())})


@router.get("/readyz")
async def readyz(state: RouterState = Depends(get_state)) -> JSONResponse:
    n = len(state.registry.healthy())
    return JSONResponse({"status": "ready" if n else "not_ready", "healthy_replicas": n},
                        status_code=200 if n else 503)


@router.get("/status")
async def status(state: RouterState = Depends(get_state)) -> JSONResponse:
    return JSONResponse({"replicas": [r.as_dict() for r in state.registry.replicas]})


@router.get("/metrics")
async def metrics(state: RouterState = Depends(get_state)) -> Response:
    return Response(generate_latest(state.registry_metrics), media_type=CONTENT_TYPE_LATEST)


@router.api_route("/v1/{path:path}", methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
async def proxy(request: Request, path: str, state: RouterState = Depends(get_state)) -> Response:
    body = await read_limited(request, state.config.max_body_bytes)
    if body is None:
        return JSONResponse(error_body(f"request body is larger than {state.config.max_body_bytes} bytes "
                                       "(max_body_bytes)", type="invalid_request_error", code="request_too_large"),
                            status_code=413)
    match = _ID_IN_PATH.match(request.url.path)
    if match and request.method in ("GET", "DELETE"):
        return await proxy_sticky(state, request, body, match.group(2), streaming=bool(match.group(3)))
    if request.url.path == "/v1/videos" and request.method == "GET":
        return await proxy_list(state, request)
    if request.method == "GET":
        replica = state.registry.select()
        if replica is None:
            return _unavailable("no healthy replica is available")
        try:
            resp = await send_to(state, replica, request, body)
        except httpx.HTTPError as exc:
            state.registry.record(replica, False, str(exc), hard=isinstance(exc, httpx.ConnectError))
            return _unavailable(f"replica {replica.url} is unavailable")
        return to_response(resp, resp.content)
    return await proxy_create(state, request, body)


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it passes ``limit`` bytes (whatever the transfer encoding)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@router.websocket("/v1/stream")
async def stream(ws: WebSocket, state: RouterState = Depends(get_ws_state)) -> None:
    await bridge_stream(ws, state)


async def request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """HTTP middleware: request id in and out, the API key on ``/v1/*``, 500 envelope, request counter."""
    state = get_state(request)
    request_id = accept_request_id(request.headers.get("x-request-id"))
    token = request_id_var.set(request_id)
    try:
        api_key = state.config.api_key
        if api_key and request.url.path.startswith("/v1/"):
            auth = request.headers.get("authorization", "")
            presented = auth.encode("latin-1", "replace")
            if not (presented[:7].lower() == b"bearer " and hmac.compare_digest(presented[7:].strip(),
                                                                                api_key.encode("utf-8"))):
                response: Response = JSONResponse(error_body("missing or wrong API key",
                                                             type="authentication_error",
                                                             code="invalid_api_key"), status_code=401)
                response.headers["x-request-id"] = request_id
                return response
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001
            logger.exception("router error on %s", printable(request.url.path))
            response = JSONResponse(error_body("router error", type="server_error", code="internal_error"),
                                    status_code=500)
        response.headers["x-request-id"] = request_id
        state.requests.labels(str(response.status_code)).inc()
        return response
    finally:
        request_id_var.reset(token)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the upstream HTTP client and run the health checks while the app serves."""
    state: RouterState = app.state.router
    config = state.config
    state.client = httpx.AsyncClient(timeout=httpx.Timeout(config.request_timeout_s, connect=5.0),
                                     limits=httpx.Limits(max_connections=512, max_keepalive_connections=64))
    stop = asyncio.Event()
    task = asyncio.create_task(run_health_checks(state, stop, state.probe), name="fastvideo-router-health")
    logger.info("router on http://%s:%d over %s", config.host, config.port, [r.url for r in state.registry.replicas])
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(BaseException):
            await task
        await state.client.aclose()


def build_router_app(config: RouterConfig, *, probe: Probe | None = None) -> FastAPI:
    """The router app (see module contract): its state, the middleware and the module's handlers."""
    config.validate()
    state = RouterState(config=config, registry=ReplicaRegistry(config), sticky=StickyMap(config.sticky_ttl_s),
                        probe=probe)
    app = FastAPI(title="FastVideo Router", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.router = state
    app.middleware("http")(request_context)
    app.include_router(router)
    return app


async def bridge_stream(ws: WebSocket, state: RouterState) -> None:
    """Relay one streaming session to a replica (see module contract)."""
    from websockets.asyncio.client import connect

    if await refuse_foreign_origin(ws, state.config.allowed_origins, "router /v1/stream", "allowed_origins"):
        state.ws_sessions.labels("origin_refused").inc()
        return
    await ws.accept()
    request_id_var.set(accept_request_id(ws.headers.get("x-request-id")))

    async def fail(code: str, message: str, close_code: int) -> None:
        with contextlib.suppress(Exception):
            await ws.send_text(json.dumps({"type": "error", "code": code, "message": message, "retryable": True}))
            await ws.close(close_code, code)

    try:
        first = await asyncio.wait_for(ws.receive(), 60.0)
    except asyncio.TimeoutError:
        await fail("session_timeout", "no session_init_v2 within 60s", 1000)
        return
    if first["type"] == "websocket.disconnect":
        return
    sticky_key = None
    if first.get("text"):
        with contextlib.suppress(ValueError, AttributeError):
            data = json.loads(first["text"])
            if (isinstance(data, dict) and data.get("type") == "session_init_v2"
                    and isinstance(data.get("session_id"), str)):
                sticky_key = data["session_id"]
    tried: set[str] = set()
    upstream = None
    replica = None
    owner = state.sticky.get(sticky_key) if sticky_key else None
    while upstream is None:
        if owner is not None and owner not in tried and state.registry.by_url[owner].healthy:
            replica = state.registry.by_url[owner]
        else:
            replica = state.registry.select(tried)
        if replica is None:
            state.ws_sessions.labels("no_replica").inc()
            await fail("gpu_unavailable", "router: no healthy replica is available", 1013)
            return
        tried.add(replica.url)
        ws_url = "ws" + replica.url[len("http"):] + "/v1/stream"
        headers = {"x-request-id": request_id_var.get()}
        if ws.headers.get("authorization"):
            headers["authorization"] = ws.headers["authorization"]
        query = ws.url.query
        try:
            upstream = await connect(ws_url + (f"?{query}" if query else ""), additional_headers=headers,
                                     max_size=None, open_timeout=5, ping_interval=20)
        except Exception as exc:  # noqa: BLE001 - connection refused / handshake failed: try the next replica
            state.registry.record(replica, False, f"ws connect failed: {exc}", hard=True)
            state.failovers.labels("ws_connect").inc()
    assert replica is not None
    replica.inflight += 1
    outcome = "completed"

    async def client_to_upstream() -> None:
        message = first
        while True:
            if message["type"] == "websocket.disconnect":
                await upstream.close()
                return
            if message.get("text") is not None:
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            message = await ws.receive()

    async def upstream_to_client() -> None:
        async for message in upstream:
            if isinstance(message, str):
                if '"ltx2_stream_start"' in message:
                    with contextlib.suppress(ValueError):
                        sid = json.loads(message).get("session_id")
                        if isinstance(sid, str):
                            state.sticky.put(sid, replica.url)
                await ws.send_text(message)
            else:
                await ws.send_bytes(message)

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
        if tasks[1] in done:
            close_code = getattr(upstream, "close_code", None)
            if close_code in (None, 1005, 1006, 1012, 1015):
                # No close frame, or the replica is restarting: the session is lost on that replica.
                outcome = "worker_failed"
                state.registry.record(replica, False, f"stream dropped (close {close_code})")
                await fail("worker_failed", f"replica {replica.url} dropped the stream (close {close_code}); "
                           "resume from your continuation_state snapshot", 1011)
                return
            if ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await ws.close(close_code, getattr(upstream, "close_reason", "") or "")
    finally:
        replica.inflight -= 1
        state.ws_sessions.labels(outcome).inc()
        with contextlib.suppress(Exception):
            await upstream.close()
