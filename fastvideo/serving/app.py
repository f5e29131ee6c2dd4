"""The ``fastvideo serve`` FastAPI app: OpenAI HTTP, ``/v1/stream``, operations endpoints, browser page.

Contract:
- :func:`build_app(config, generator)` wraps an already loaded :class:`VideoGenerator` in a
  :class:`VideoService` (the runtime seam; its :class:`ServiceConfig` nests the config's ``queue`` and
  ``pool`` sections as they are, see :func:`service_config`; with ``pool.devices`` the service runs a
  device pool whose first worker is ``generator``, and ``/readyz`` lists the workers with their
  counters) and mounts every route. Its lifespan starts the
  service, then warms it up in the background (``config.server.warmup``): ``/health`` (liveness)
  is 200 as soon as the process serves, ``/readyz`` is 200 only once warmup is done (503 before,
  with the phase, and 503 again while draining). At startup the lifespan proves ``server.output_dir``
  writable (else ``ConfigError`` naming it: the server does not start) and restores the job records a
  previous process left in its index (see :mod:`fastvideo.serving.video_store`). The operator's
  ``default_request`` values are checked against the model once here (:func:`check_request_defaults`,
  a ConfigError naming ``default_request.<field>``) and are the model defaults the HTTP API reports.
- ``streaming.prompt`` / ``streaming.safety`` (when enabled) build one
  :class:`fastvideo.serving.prompting.SessionPrompting` (``ServerState.prompting``, its counters in the
  server's ``/metrics``); with the enhancer it is every session's prompt source, and
  ``POST /v1/prompts/reload`` re-reads its system prompt files (404 without an enhancer, 409 when the
  folder is gone: the prompts in use are kept).
- Draining (``app.state.drain()``, a task; :func:`fastvideo.serving.server.run_server` starts it on the
  first SIGTERM/SIGINT *before* uvicorn stops listening, and the lifespan's shutdown awaits it otherwise)
  refuses new work (503 ``shutting_down``) while reads keep answering (job status, lists, content,
  ``/health``, ``/readyz`` = 503 with phase ``draining``), lets running and queued jobs finish within
  ``server.drain_timeout_s`` then fails the rest visibly (``shutting_down``) and writes the outputs of
  jobs that finished. The lifespan's shutdown then stops the expiry reaper and closes the index.
  The generator is shut down by whoever created it (``run_server``), not by the app.
- Every HTTP request passes :class:`fastvideo.serving.middleware.RequestContextMiddleware` (outermost:
  request id, API key, body limit, last-resort 500s, HTTP metrics; see that module).
- ``/openapi.json`` describes what the server does: request bodies of the POST routes, the OpenAI error
  envelope (400, never FastAPI's 422), ``video/mp4`` / ``image/png`` downloads
  (:func:`fastvideo.serving.openai_protocol.describe_errors`).
- ``GET /`` serves the MSE player page from ``fastvideo/serving/static/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response

from fastvideo.api import ConfigError, GenerationRequest, RequestError
from fastvideo.runtime.generator import VideoGenerator
from fastvideo.runtime.service import ServiceConfig, VideoService
from fastvideo.runtime.stores import SessionStore, StoreConfig, open_stores
from fastvideo.runtime.worker import WorkerConfig
from fastvideo.serving.app_state import ServerState
from fastvideo.serving.config import ServeConfig, StateConfig, apply_request_defaults, request_defaults
from fastvideo.serving.errors import APIError, install_error_handlers
from fastvideo.serving.metrics import ServingMetrics
from fastvideo.serving.middleware import RequestContextMiddleware
from fastvideo.serving.openai_protocol import describe_errors
from fastvideo.serving.openai_routes import router as openai_router
from fastvideo.serving.prompt_source import attach_prompt_source
from fastvideo.serving.prompting import SessionPrompting, StreamPromptSource
from fastvideo.serving.request_mapping import ModelDefaults
from fastvideo.serving.session import SessionManager
from fastvideo.serving.stream_routes import register_stream_routes
from fastvideo.serving.video_store import VideoStore

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
def model_defaults(generator: VideoGenerator, served_name: str | None,
                   request: Mapping[str, Any] | None = None) -> ModelDefaults:
    """The served model's defaults: the operator's ``default_request`` values (``request``, by dotted path), else
    the preset's."""
    preset, request = generator.preset, request or {}
    width, height, frames, fps = (request.get(f"sampling.{name}", getattr(preset, name))
                                  for name in ("width", "height", "num_frames", "fps"))
    return ModelDefaults(name=served_name or preset.name, width=width, height=height, num_frames=frames, fps=fps,
                         max_frames=preset.max_frames)


def check_request_defaults(generator: VideoGenerator, config: ServeConfig) -> dict[str, Any]:
    """The operator's ``default_request`` values, checked against the served model once (a value it cannot run is
    a ConfigError naming ``default_request.<field>``, not a 400 on every request that leaves it unset)."""
    defaults = request_defaults(config)
    try:
        generator.resolve(apply_request_defaults(GenerationRequest(prompt="default request check",
                                                                   inputs=generator.probe_inputs()), defaults))
    except RequestError as exc:
        raise ConfigError(f"default_request.{exc.field}", exc.reason) from exc
    return defaults


def attach_state_store(generator: VideoGenerator, state: StateConfig) -> None:
    """Keep large continuation tensors in the configured store (nothing to do for ``memory://``)."""
    if state.url in ("memory://", "memory", ""):
        return
    stores = open_stores(StoreConfig(url=state.url, blob_threshold_bytes=state.blob_threshold_bytes,
                                     blob_ttl_s=state.blob_ttl_s))
    generator.attach_blob_store(stores.blobs, threshold_bytes=state.blob_threshold_bytes, ttl_s=state.blob_ttl_s)
    logger.info("continuation state tensors above %d bytes go to %s", state.blob_threshold_bytes, state.url)


def stream_session_store(state: StateConfig) -> SessionStore:
    """Where ``/v1/stream`` sessions are kept between segments and across restarts: in this process for
    ``memory://``, else in ``state.url``'s Redis under ``fastvideo:stream:`` (so another process resumes them)."""
    stores = open_stores(StoreConfig(url=state.url, key_prefix="fastvideo:stream:"))
    return stores.sessions


def service_config(config: ServeConfig) -> ServiceConfig:
    """The runtime config of the server's VideoService: the ``queue`` (scheduler) and ``pool`` sections as they
    are, the job record TTL and drain timeout from ``server``."""
    return ServiceConfig(worker=WorkerConfig(scheduler=config.queue), pool=config.pool,
                         job_ttl_s=config.server.job_ttl_s, drain_timeout_s=config.server.drain_timeout_s)


def build_app(config: ServeConfig, generator: VideoGenerator) -> FastAPI:
    """The server app over ``generator`` (see module contract)."""
    srv = config.server
    if generator.graph_config().enabled and not srv.warmup:
        raise ConfigError("server.warmup", "CUDA graphs (engine.cuda_graphs) are captured at warmup, which is off: "
                                           "drop --no-warmup / server.warmup=false, or drop --cuda-graphs")
    service = VideoService(generator, service_config(config))
    attach_state_store(generator, config.state)
    holder: dict[str, ServerState] = {}
    metrics = ServingMetrics(queue_depth=lambda: service.queue_depth, running=lambda: service.running,
                             ready=lambda: 1.0 if holder and holder["s"].ready else 0.0)
    defaults = model_defaults(generator, srv.served_model_name, check_request_defaults(generator, config))
    ids = {defaults.name, generator.preset.name, str(generator.model_path), Path(generator.model_path).name}
    state = ServerState(config=config, service=service, store=VideoStore(service, metrics, srv.output_dir,
                                                                         srv.output_ttl_s),
                        metrics=metrics, defaults=defaults, model_ids=frozenset(ids),
                        sessions=SessionManager(config.streaming.max_sessions,
                                                config.streaming.max_sessions_per_client,
                                                segment_cap=config.streaming.generation_segment_cap,
                                                max_segments=config.streaming.max_segments,
                                                idle_timeout_s=config.streaming.idle_timeout_s,
                                                handshake_timeout_s=config.streaming.handshake_timeout_s,
                                                store=stream_session_store(config.state)))
    holder["s"] = state
    if config.streaming.prompt.enabled or config.streaming.safety.enabled:
        state.prompting = SessionPrompting.from_config(config.streaming, registry=metrics.registry)
        if state.prompting.enhancer is not None:
            attach_prompt_source(state, StreamPromptSource(state.prompting))
    stop = asyncio.Event()

    async def warm() -> None:
        if not srv.warmup:
            state.phase = "ready"
            return
        state.phase = "warming"
        t0 = time.perf_counter()
        try:
            await service.warmup()
        except Exception:  # noqa: BLE001 - a failed warmup keeps /readyz at 503 and says why in the log
            logger.exception("warmup failed; the server stays not ready")
            state.phase = "warmup_failed"
            return
        state.warmup_s = time.perf_counter() - t0
        if state.phase == "warming":
            state.phase = "ready"

    drain_task: list[asyncio.Task] = []

    async def _drain() -> None:
        state.phase = "draining"
        state.store.shutting_down = True
        logger.info("shutting down: draining %d queued and %d running jobs (up to %.0fs)", service.queue_depth,
                    service.running, srv.drain_timeout_s)
        if warm_tasks and not warm_tasks[0].done():
            with contextlib.suppress(BaseException):
                await warm_tasks[0]
        await service.stop(graceful=True)
        await state.store.close()

    def drain() -> asyncio.Task:
        """Start draining (once); the task ends when every job has ended and its output is written."""
        if not drain_task:
            drain_task.append(asyncio.create_task(_drain(), name="fastvideo-drain"))
        return drain_task[0]

    warm_tasks: list[asyncio.Task] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        restored = await asyncio.to_thread(state.store.open)
        if restored:
            logger.info("restored %d job records from %s", restored, srv.output_dir)
        removed = await asyncio.to_thread(state.store.sweep_files, None, state.store.owned_files())
        if removed:
            logger.info("removed %d orphaned or temporary files from %s", removed, srv.output_dir)
        await service.start()
        warm_tasks.append(asyncio.create_task(warm(), name="fastvideo-warmup"))
        reaper = asyncio.create_task(state.store.run_reaper(stop), name="fastvideo-reaper")
        logger.info("serving %s on http://%s:%d (queue %d, sessions %d)", defaults.name, srv.host, srv.port,
                    config.queue.max_queue, config.streaming.max_sessions)
        try:
            yield
        finally:
            await drain()
            stop.set()
            with contextlib.suppress(BaseException):
                await reaper
            state.store.close_index()
            with contextlib.suppress(Exception):
                state.sessions.store.close()  # the stream session store's connections (Redis)
            state.phase = "stopped"
            logger.info("shutdown complete")

    app = FastAPI(title="FastVideo Engine", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:  # the 400 error envelope instead of FastAPI's 422 (see openai_protocol)
        if app.openapi_schema is None:
            app.openapi_schema = describe_errors(base_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.server = state
    app.state.drain = drain
    install_error_handlers(app)
    app.include_router(openai_router)
    register_stream_routes(app, state)

    @app.get("/health")
    @app.get("/healthz")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "phase": state.phase,
                             "uptime_s": round(time.time() - state.started_at, 3)})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        body: dict[str, Any] = {
                "status": "ready" if state.ready else "not_ready", "phase": state.phase, "model": defaults.name,
                "queue_depth": service.queue_depth, "running": service.running,
                "max_queue": config.queue.max_queue, "sessions": len(state.sessions),
                "max_sessions": config.streaming.max_sessions, "warmup_s": state.warmup_s}
        ready = state.ready
        if service.pooled:  # one entry per device worker; ready only while one of them is
            workers = service.workers()
            ready = ready and any(w.status == "ready" for w in workers)
            body["status"] = "ready" if ready else "not_ready"
            body["workers"] = [{"worker_id": w.worker_id, "status": w.status, "device": w.device, "pid": w.pid,
                                "load": w.load, "completed": w.completed, "failed": w.failed, "error": w.error}
                               for w in workers]
        headers = {} if ready else {"retry-after": str(config.queue.retry_after_s)}
        return JSONResponse(body, status_code=200 if ready else 503, headers=headers)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

    @app.post("/v1/prompts/reload", responses={409: {"description": "streaming.prompt.system_prompt_dir is gone: "
                                                                    "the system prompts in use are kept"}})
    async def reload_prompts() -> JSONResponse:
        """Re-read the prompt enhancer's system prompt files (``streaming.prompt.system_prompt_dir``)."""
        if state.prompting is None or state.prompting.enhancer is None:
            raise APIError(404, "the prompt enhancer is not enabled on this server (streaming.prompt.enabled)",
                           code="enhancer_not_configured")
        try:
            state.prompting.reload_system_prompts()
        except ConfigError as exc:  # the folder vanished: the prompts in use are kept
            raise APIError(409, f"streaming.prompt.{exc}; the system prompts in use are kept",
                           param="streaming.prompt.system_prompt_dir", code="reload_failed") from exc
        return JSONResponse({"reloaded": True, "system_prompt_dir": config.streaming.prompt.system_prompt_dir})

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "index.html").read_text())

    # Added last = outermost of the user middleware: it wraps every route and exception handler.
    app.add_middleware(RequestContextMiddleware, api_key=srv.api_key, max_body_bytes=srv.max_body_bytes,
                       metrics=metrics)
    return app
