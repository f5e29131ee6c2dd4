"""The Dynamo endpoint handler: ``async generate(request, context)`` over ``VideoGenerator``.

Contract:
- ``generate`` takes one ``NvCreateVideoRequest`` dict and a Dynamo ``Context`` (anything with
  ``id()``, ``is_stopped()``, ``is_killed()`` and optionally ``async_killed_or_stopped()``) and
  yields ``NvVideosResponse`` dicts:
  * without ``stream: true``: exactly ONE chunk (Dynamo's frontend folds the reply's top-level
    fields from the first chunk), ``status: "completed"`` with ``data[0] = {output_format,
    b64_json | url}`` and ``inference_time_s``, or ``status: "failed"`` with ``error``;
  * with ``stream: true``: one ``in_progress`` chunk per denoising step, then that final chunk.
- Every failure ends the reply with a ``failed`` chunk whose ``error`` names the field and the fix
  (bad size, missing prompt, too many frames -> ``RequestError``); nothing hangs.
- Dynamo's health canary (a request marked ``_HEALTH_CHECK: true``, see :mod:`.health`) is answered
  at once, without waiting for the worker: one ``completed`` chunk with no data when the
  :class:`~.health.HealthMonitor` sees no problem, else an exception (:class:`HealthCheckFailed`),
  which Dynamo counts as a failed canary. When no generation succeeded for a while the canary also
  starts a background probe that runs the payload like a request (at most one at a time).
- Generation is one-in-flight per device (an ``asyncio.Semaphore`` of ``concurrency``: 1 for one
  ``VideoGenerator``, the number of devices for a :class:`fastvideo.DevicePool`, which routes each
  request to a free worker; both offer ``generate_async``).
  When the context is stopped or killed (client gone, Dynamo cancel), the wait for the lock or
  for the next event is abandoned and ``generate_async``'s iterator is closed, which cancels the
  generation at its next denoising step. Closing this generator (Dynamo dropping the stream, from
  any thread) does the same: the work runs in a task that is cancelled thread-safely.
- Imports only public ``fastvideo`` / ``fastvideo.api`` symbols and the standard library.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Protocol

from fastvideo.api import ConfigError, FastVideoError, RequestError, VideoFinalEvent, VideoProgressEvent
from fastvideo.serving.dynamo.health import HealthMonitor, HealthPolicy, is_health_check
from fastvideo.serving.dynamo.media import MediaStore
from fastvideo.serving.dynamo.protocol import (
    ParsedVideoRequest,
    RequestDefaults,
    completed_response,
    failed_response,
    progress_response,
    safe_id,
    to_generation_request,
)

if TYPE_CHECKING:  # pragma: no cover - importing VideoGenerator imports torch
    from fastvideo import DevicePool, VideoGenerator

logger = logging.getLogger(__name__)

#: How often a context without ``async_killed_or_stopped`` is polled for cancellation.
POLL_INTERVAL_S = 0.1


class RequestContext(Protocol):
    """The part of ``dynamo.runtime.Context`` the handler uses."""

    def id(self) -> str: ...

    def is_stopped(self) -> bool: ...

    def is_killed(self) -> bool: ...


class Cancelled(FastVideoError):
    """The request's context was stopped or killed while it waited or ran."""


class HealthCheckFailed(FastVideoError, RuntimeError):
    """Raised to Dynamo's canary: the worker is unhealthy (the message says why)."""


def _context_id(context: Any) -> str:
    try:
        value = context.id() if context is not None else None
    except Exception:  # noqa: BLE001 - a context without an id still gets an answer
        value = None
    return str(value) if value else uuid.uuid4().hex


def _is_stopped(context: Any) -> bool:
    for name in ("is_stopped", "is_killed"):
        probe = getattr(context, name, None)
        if probe is not None and probe():
            return True
    return False


async def _wait_stopped(context: Any) -> None:
    """Return when Dynamo stops or kills the request."""
    waiter = getattr(context, "async_killed_or_stopped", None)
    if waiter is not None:
        try:
            await waiter()
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - fall back to polling rather than cancel the request
            logger.debug("context.async_killed_or_stopped() failed; polling instead", exc_info=True)
    while not _is_stopped(context):
        await asyncio.sleep(POLL_INTERVAL_S)


async def _race(awaitable: Awaitable[Any], stop: asyncio.Future[Any]) -> Any:
    """Await ``awaitable`` unless ``stop`` finishes first (then cancel it and raise Cancelled)."""
    task = asyncio.ensure_future(awaitable)
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task  # let it unwind (an async generator it drives can then be closed)
        raise
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise Cancelled()


async def _acquire(lock: asyncio.Lock | asyncio.Semaphore, stop: asyncio.Future[Any]) -> None:
    """Take ``lock`` unless ``stop`` finishes first (Cancelled); never leaks the lock."""
    task = asyncio.ensure_future(lock.acquire())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        if not task.cancel() and not task.cancelled() and task.exception() is None:
            lock.release()  # it was granted just before we were interrupted
        raise
    if task.done():
        task.result()
        return
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    if not task.cancelled() and task.exception() is None:
        lock.release()
    raise Cancelled()


_END = object()


class VideoGenerationHandler:
    """Serves one ``VideoGenerator`` on one Dynamo endpoint (see module contract)."""

    def __init__(self, generator: VideoGenerator | DevicePool, *, model_name: str, concurrency: int = 1,
                 defaults: RequestDefaults | None = None,
                 media: MediaStore | None = None, worker_label: str | None = None,
                 health_payload: dict[str, Any] | None = None, health_policy: HealthPolicy | None = None) -> None:
        self.generator = generator
        #: Dynamo's canary payload: what the background probe runs (None: canaries never probe).
        self.health_payload = health_payload
        self.health = HealthMonitor(health_policy)
        self._probe_task: asyncio.Task[None] | None = None
        self.probes = 0
        self.health_checks = 0
        self.model_name = model_name
        self.defaults = defaults or RequestDefaults()
        self.media = media
        self.worker_label = worker_label or f"pid={os.getpid()}"
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._lock = asyncio.Semaphore(concurrency)  # held while a generation runs (one per device)
        self._waiting = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        """Dynamo's handler entry point: yields NvVideosResponse chunks (see module contract).

        The work runs in its own task that feeds a queue; this generator only relays chunks. So when
        Dynamo drops the stream (the generator is closed, possibly from a runtime thread without an
        event loop), cleanup is a thread-safe ``task.cancel`` and never an ``await`` in a finally.
        """
        if is_health_check(request):
            yield self._answer_canary(request, context)
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        task = loop.create_task(self._produce(request, context, queue))
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                yield item
        finally:
            if not task.done():
                loop.call_soon_threadsafe(task.cancel)

    async def _produce(self, request: Any, context: Any, queue: asyncio.Queue[Any]) -> None:
        response_id = f"video-{safe_id(_context_id(context))}"
        model = request.get("model") if isinstance(request, dict) and isinstance(request.get("model"), str) else ""
        model = model or self.model_name
        stop = asyncio.ensure_future(_wait_stopped(context))
        try:
            await self._serve(request, response_id, model, stop, queue.put_nowait)
        except asyncio.CancelledError:
            self.cancelled += 1
            logger.info("worker %s: request %s dropped by Dynamo (stream closed)", self.worker_label, response_id)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a failed chunk, never a hang
            self.failed += 1
            logger.exception("worker %s: request %s failed", self.worker_label, response_id)
            queue.put_nowait(failed_response(response_id, model, f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            stop.cancel()
            queue.put_nowait(_END)

    async def _serve(self, request: Any, response_id: str, model: str, stop: asyncio.Future[Any],
                     emit: Callable[[dict[str, Any]], None]) -> None:
        try:
            parsed = to_generation_request(request, self.defaults, request_id=response_id)
        except (RequestError, ConfigError) as exc:
            self.failed += 1
            logger.info("worker %s rejected request %s: %s", self.worker_label, response_id, exc)
            emit(failed_response(response_id, model, f"invalid request: {exc}"))
            return
        model = parsed.model or model
        s = parsed.request.sampling
        level = logging.INFO
        self._waiting += 1
        queued_at = time.perf_counter()
        try:
            await _acquire(self._lock, stop)
            if stop.done():  # stopped in the same instant the worker came free: still never started
                self._lock.release()
                raise Cancelled()
        except Cancelled:
            self.cancelled += 1
            logger.info("worker %s: request %s cancelled while queued", self.worker_label, response_id)
            emit(failed_response(response_id, model, "cancelled: the request was stopped before it started"))
            return
        finally:
            self._waiting -= 1
        try:
            logger.log(level, "worker %s started request %s (size=%sx%s frames=%s steps=%s stream=%s format=%s, "
                       "queued %.2fs, %d waiting)", self.worker_label, response_id, s.width, s.height, s.num_frames,
                       s.num_inference_steps, parsed.stream, parsed.response_format,
                       time.perf_counter() - queued_at, self._waiting)
            token = self.health.generation_started()
            ok = False
            try:
                ok = await self._generate_locked(parsed, response_id, model, stop, emit, token, level)
            finally:
                self.health.generation_finished(ok, token)
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ health canary
    def _answer_canary(self, request: dict[str, Any], context: Any) -> dict[str, Any]:
        """Dynamo's canary: report the monitor's verdict now (never wait for the worker)."""
        self.health_checks += 1
        model = request.get("model") if isinstance(request.get("model"), str) else self.model_name
        if self.health.needs_probe() and self.health_payload is not None and (
                self._probe_task is None or self._probe_task.done()):
            self._probe_task = asyncio.get_running_loop().create_task(self._probe())
        problem = self.health.problem()
        if problem is not None:
            logger.warning("worker %s fails Dynamo's health check: %s", self.worker_label, problem)
            raise HealthCheckFailed(f"worker {self.worker_label} is unhealthy: {problem}")
        chunk = _canary_chunk(f"health-{safe_id(_context_id(context))}", model or self.model_name)
        logger.debug("worker %s answered Dynamo's health check", self.worker_label)
        return chunk

    async def _probe(self) -> None:
        """Run the health payload like a request (in the background); a failure marks the worker unhealthy."""
        self.probes += 1
        response_id = f"health-probe-{self.probes}"
        try:
            assert self.health_payload is not None
            parsed = to_generation_request(self.health_payload, self.defaults, request_id=response_id)
        except (RequestError, ConfigError) as exc:
            self.health.probe_failed(f"the health-check payload is not a valid request: {exc}")
            return
        chunks: list[dict[str, Any]] = []
        never = asyncio.get_running_loop().create_future()  # the probe has no client that could stop it
        try:
            await _acquire(self._lock, never)
            try:
                token = self.health.generation_started()
                ok = False
                try:
                    ok = await self._generate_locked(parsed, response_id, parsed.model or self.model_name, never,
                                                     chunks.append, token, logging.DEBUG, counted=False)
                finally:
                    self.health.generation_finished(ok, token)
            finally:
                self._lock.release()
        except Exception as exc:  # noqa: BLE001 - any failure of the probe is the verdict
            logger.exception("worker %s: health probe failed", self.worker_label)
            self.health.probe_failed(f"{type(exc).__name__}: {exc}")
            return
        finally:
            never.cancel()
        final = chunks[-1] if chunks else {}
        if final.get("status") != "completed":
            self.health.probe_failed(str(final.get("error") or "the probe produced no video"))

    async def _generate_locked(self, parsed: ParsedVideoRequest, response_id: str, model: str,
                               stop: asyncio.Future[Any], emit: Callable[[dict[str, Any]], None], token: int,
                               level: int = logging.INFO, counted: bool = True) -> bool:
        """Run one generation holding the worker; emits its chunks; True when it completed.

        ``counted=False`` (the health probe) leaves the request counters alone."""
        started = time.perf_counter()
        events = self.generator.generate_async(parsed.request)
        try:
            final: VideoFinalEvent | None = None
            while final is None:
                try:
                    event = await _race(events.__anext__(), stop)
                except StopAsyncIteration:
                    break
                self.health.progressed(token)
                if isinstance(event, VideoProgressEvent):
                    if parsed.stream and event.total_steps > 0:
                        emit(progress_response(response_id, model, step=event.step, total_steps=event.total_steps))
                elif isinstance(event, VideoFinalEvent):
                    final = event
            if final is None or not final.video_bytes:
                raise RuntimeError("the generator finished without a video")
            chunk = await self._final_chunk(parsed, response_id, model, final, time.perf_counter() - started)
        except Cancelled:
            self.cancelled += int(counted)
            logger.info("worker %s: request %s cancelled after %.2fs", self.worker_label, response_id,
                        time.perf_counter() - started)
            emit(failed_response(response_id, model, "cancelled: the request was stopped by the client or Dynamo"))
            return False
        except (RequestError, ConfigError) as exc:
            self.failed += int(counted)
            named = parsed.translated.relabel(exc) if isinstance(exc, RequestError) else exc
            logger.info("worker %s rejected request %s: %s", self.worker_label, response_id, named)
            emit(failed_response(response_id, model, f"invalid request: {named}"))
            return False
        finally:
            # Closing the iterator cancels a generation still running at its next denoising step.
            try:
                await events.aclose()  # type: ignore[attr-defined]
            except RuntimeError as exc:  # pragma: no cover - defensive: iterator still running
                logger.debug("closing the generation iterator of %s failed: %s", response_id, exc)
        self.completed += int(counted)
        logger.log(level, "worker %s finished request %s in %.2fs", self.worker_label, response_id,
                   chunk.get("inference_time_s") or 0.0)
        emit(chunk)
        return True

    async def _final_chunk(self, parsed: ParsedVideoRequest, response_id: str, model: str, final: VideoFinalEvent,
                           elapsed: float) -> dict[str, Any]:
        assert final.video_bytes is not None
        metadata = final.metadata or {}
        inference_time = metadata.get("inference_time_s")
        inference_time = float(inference_time) if isinstance(inference_time, (int, float)) else elapsed
        fps = metadata.get("fps") if isinstance(metadata.get("fps"), int) else None
        state = final.continuation_state if parsed.return_state else None
        if parsed.response_format == "url":
            if self.media is None:
                raise RuntimeError("response_format 'url' needs --media-output-fs-url on the worker")
            url = await self.media.put(f"{response_id}.mp4", final.video_bytes)
            return completed_response(response_id, model, output_format=parsed.output_format, url=url, fps=fps,
                                      inference_time_s=inference_time, continuation_state=state)
        b64 = await asyncio.to_thread(lambda: base64.b64encode(final.video_bytes or b"").decode("ascii"))
        return completed_response(response_id, model, output_format=parsed.output_format, b64_json=b64, fps=fps,
                                  inference_time_s=inference_time, continuation_state=state)


def _canary_chunk(response_id: str, model: str) -> dict[str, Any]:
    """The healthy answer to Dynamo's canary: an ``NvVideosResponse`` with no video."""
    return {"id": response_id, "object": "video", "model": model, "status": "completed", "progress": 100,
            "created": int(time.time()), "data": []}
