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
- Generation is one-in-flight per worker (an ``asyncio.Lock``; the generator runs one at a time).
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

from fastvideo.api import ConfigError, RequestError, VideoFinalEvent, VideoProgressEvent
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
    from fastvideo import VideoGenerator

logger = logging.getLogger(__name__)

#: How often a context without ``async_killed_or_stopped`` is polled for cancellation.
POLL_INTERVAL_S = 0.1


class RequestContext(Protocol):
    """The part of ``dynamo.runtime.Context`` the handler uses."""

    def id(self) -> str: ...

    def is_stopped(self) -> bool: ...

    def is_killed(self) -> bool: ...


class Cancelled(Exception):
    """The request's context was stopped or killed while it waited or ran."""


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


async def _acquire(lock: asyncio.Lock, stop: asyncio.Future[Any]) -> None:
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

    def __init__(self, generator: VideoGenerator, *, model_name: str, defaults: RequestDefaults | None = None,
                 media: MediaStore | None = None, worker_label: str | None = None,
                 health_payload: dict[str, Any] | None = None) -> None:
        self.generator = generator
        #: Requests equal to this (Dynamo's canary) are logged at DEBUG instead of INFO.
        self.health_payload = health_payload
        self.model_name = model_name
        self.defaults = defaults or RequestDefaults()
        self.media = media
        self.worker_label = worker_label or f"pid={os.getpid()}"
        self._lock = asyncio.Lock()
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
        level = logging.DEBUG if self.health_payload is not None and request == self.health_payload else logging.INFO
        self._waiting += 1
        queued_at = time.perf_counter()
        try:
            await _acquire(self._lock, stop)
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
            await self._generate_locked(parsed, response_id, model, stop, emit, level)
        finally:
            self._lock.release()

    async def _generate_locked(self, parsed: ParsedVideoRequest, response_id: str, model: str,
                               stop: asyncio.Future[Any], emit: Callable[[dict[str, Any]], None],
                               level: int = logging.INFO) -> None:
        started = time.perf_counter()
        events = self.generator.generate_async(parsed.request)
        try:
            final: VideoFinalEvent | None = None
            while final is None:
                try:
                    event = await _race(events.__anext__(), stop)
                except StopAsyncIteration:
                    break
                if isinstance(event, VideoProgressEvent):
                    if parsed.stream and event.total_steps > 0:
                        emit(progress_response(response_id, model, step=event.step, total_steps=event.total_steps))
                elif isinstance(event, VideoFinalEvent):
                    final = event
            if final is None or not final.video_bytes:
                raise RuntimeError("the generator finished without a video")
            chunk = await self._final_chunk(parsed, response_id, model, final, time.perf_counter() - started)
        except Cancelled:
            self.cancelled += 1
            logger.info("worker %s: request %s cancelled after %.2fs", self.worker_label, response_id,
                        time.perf_counter() - started)
            emit(failed_response(response_id, model, "cancelled: the request was stopped by the client or Dynamo"))
            return
        except (RequestError, ConfigError) as exc:
            self.failed += 1
            logger.info("worker %s rejected request %s: %s", self.worker_label, response_id, exc)
            emit(failed_response(response_id, model, f"invalid request: {exc}"))
            return
        finally:
            # Closing the iterator cancels a generation still running at its next denoising step.
            try:
                await events.aclose()  # type: ignore[attr-defined]
            except RuntimeError as exc:  # pragma: no cover - defensive: iterator still running
                logger.debug("closing the generation iterator of %s failed: %s", response_id, exc)
        self.completed += 1
        logger.log(level, "worker %s finished request %s in %.2fs", self.worker_label, response_id,
                   chunk.get("inference_time_s") or 0.0)
        emit(chunk)

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
