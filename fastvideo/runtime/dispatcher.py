"""The dispatch loop: drives a :class:`Scheduler` and a :class:`BatchExecutor` on worker threads.

Contract:
- Device-agnostic orchestration; every tensor lives behind the :class:`BatchExecutor` protocol
  (``prepare`` = text encoding and noise for one item, ``denoise`` = the batched sampler loop,
  ``finish`` = VAE decode and result building for one item), so the loop is tested with a fake.
- ``overlap=False`` (the default on CPU): one thread runs ``prepare -> denoise -> finish`` for each
  batch, in order. ``overlap=True`` (the default on CUDA): three threads, so the text encoding of
  queued requests (``prepare``, run ahead in arrival order) and the decode of a finished batch
  (``finish``) proceed while the next batch denoises; the executor puts each stage on its own CUDA
  stream and orders them with events. A batch never waits on an item it picked whose encoding has
  not started: the denoise thread prepares such an item itself. The finish queue is bounded
  (backpressure: denoise never runs more than ``finish_backlog`` batches ahead of decode).
- Every item gets exactly one terminal callback on its listener: ``on_done(item, result)``,
  ``on_cancelled(item, reason)`` (a :class:`GenerationCancelled`: cancelled while queued, at a step
  boundary while running, or by a shutdown, ``reason.shutting_down``) or
  ``on_failed(item, exc)``; before that, ``on_start(item)`` once when its batch is picked and
  ``on_step(item, step, total)`` after every denoising step. Listener exceptions are logged, never
  allowed to kill the loop.
- Previews: the executor's ``denoise`` gets a :class:`StepSink` (callable as ``on_step``, plus
  ``wants_partial(item)`` / ``partial(item, event)``). A listener that defines the optional
  ``on_partial(item, event)`` receives the previews its request asks for
  (``output.preview_interval_steps``); for any other listener ``wants_partial`` is false and the
  executor decodes none.
- :meth:`stop` closes the scheduler, reports every still-queued item cancelled (``shutting down``)
  and joins the threads after the running batch ends.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fastvideo.api.errors import GenerationCancelled
from fastvideo.api.results import VideoFinalEvent, VideoPartialEvent, VideoProgressEvent, VideoResult
from fastvideo.runtime.scheduler import Scheduler, WorkItem

logger = logging.getLogger(__name__)

StepFn = Callable[[WorkItem, int, int], None]


@runtime_checkable
class PreviewSink(Protocol):
    """Where an executor delivers a request's previews (the dispatcher's :class:`StepSink` is one)."""

    def wants_partial(self, item: WorkItem) -> bool:
        """Whether anyone takes ``item``'s previews (else the executor decodes none)."""
        ...

    def partial(self, item: WorkItem, event: Any) -> None: ...


class StepSink:
    """What the dispatcher hands ``BatchExecutor.denoise``: ``sink(item, step, total)`` reports a step to
    the item's listener; ``wants_partial`` / ``partial`` deliver previews to its optional ``on_partial``."""

    def __init__(self, dispatcher: "Dispatcher") -> None:
        self._dispatcher = dispatcher

    def __call__(self, item: WorkItem, step: int, total: int) -> None:
        self._dispatcher._call(item, "on_step", step, total)

    def wants_partial(self, item: WorkItem) -> bool:
        return callable(getattr(item.listener, "on_partial", None))

    def partial(self, item: WorkItem, event: Any) -> None:
        self._dispatcher._call(item, "on_partial", event)


class BatchExecutor(Protocol):
    """Device work for the dispatcher (see :mod:`fastvideo.runtime.executor`)."""

    def prepare(self, item: WorkItem) -> None: ...

    def denoise(self, batch: list[WorkItem], on_step: StepFn) -> list[tuple[WorkItem, BaseException]]:
        """Run the batch, calling ``on_step(item, step, total)`` after every step (the dispatcher passes a
        :class:`StepSink`, which is also a :class:`PreviewSink`); return the members dropped on the way
        (cancelled or failed) with why."""
        ...

    def finish(self, item: WorkItem) -> Any: ...

    def release(self, item: WorkItem) -> None:
        """Drop the item's device buffers (called once per item, whatever its outcome)."""
        ...


class WorkListener(Protocol):
    def on_start(self, item: WorkItem) -> None: ...

    def on_step(self, item: WorkItem, step: int, total: int) -> None: ...

    def on_done(self, item: WorkItem, result: Any) -> None: ...

    def on_cancelled(self, item: WorkItem, reason: GenerationCancelled) -> None: ...

    def on_failed(self, item: WorkItem, exc: BaseException) -> None: ...


@dataclass
class _Prep:
    claimed: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class AsyncListener:
    """A listener an asyncio caller iterates (``generate_async`` of a VideoGenerator or a DevicePool): callbacks
    from worker threads become events on the caller's loop; :meth:`events` yields progress (and preview) events,
    then the final event, or raises the failure."""

    def __init__(self, loop: asyncio.AbstractEventLoop, request_id: str, *, previews: bool = True) -> None:
        self.loop, self.request_id = loop, request_id
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.started = time.perf_counter()
        if previews:  # the denoise stage decodes previews only for listeners that take them
            self.on_partial = self._on_partial

    def _put(self, kind: str, value: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def on_start(self, item: Any, worker_id: str | None = None, device: str | None = None) -> None:
        pass

    def on_step(self, item: Any, step: int, total: int) -> None:
        self._put("event", VideoProgressEvent(request_id=self.request_id, step=step, total_steps=total,
                                              stage="denoise", elapsed_s=time.perf_counter() - self.started))

    def _on_partial(self, item: Any, event: VideoPartialEvent) -> None:
        self._put("event", event)

    def on_done(self, item: Any, result: VideoResult) -> None:
        self._put("done", result)

    def on_cancelled(self, item: Any, reason: GenerationCancelled) -> None:
        self._put("error", reason)

    def on_failed(self, item: Any, exc: BaseException) -> None:
        self._put("error", exc)

    async def events(self) -> AsyncIterator[Any]:
        """Progress and preview events as they come, then the :class:`VideoFinalEvent`; raises a failure."""
        while True:
            kind, value = await self.queue.get()
            if kind == "event":
                yield value
            elif kind == "done":
                yield VideoFinalEvent(request_id=self.request_id, video_bytes=value.video_bytes, frames=value.frames,
                                      metadata=value.metadata, continuation_state=value.state, result=value)
                return
            else:
                raise value


@dataclass
class SyncListener:
    """A listener that a blocking caller waits on (warmup, tests, benchmarks)."""

    on_step_cb: StepFn | None = None
    result: Any = None
    error: BaseException | None = None
    cancelled: str | None = None
    cancel_reason: GenerationCancelled | None = None
    steps: list[tuple[int, int]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def on_start(self, item: WorkItem) -> None:
        pass

    def on_step(self, item: WorkItem, step: int, total: int) -> None:
        self.steps.append((step, total))
        if self.on_step_cb is not None:
            self.on_step_cb(item, step, total)

    def on_done(self, item: WorkItem, result: Any) -> None:
        self.result = result
        self.done.set()

    def on_cancelled(self, item: WorkItem, reason: GenerationCancelled) -> None:
        self.cancelled = str(reason)
        self.cancel_reason = reason
        self.done.set()

    def on_failed(self, item: WorkItem, exc: BaseException) -> None:
        self.error = exc
        self.done.set()

    def wait(self, timeout: float | None = None) -> Any:
        """The result, or raise the failure (:class:`GenerationCancelled` for a cancellation)."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"no result within {timeout}s")
        if self.error is not None:
            raise self.error
        if self.cancel_reason is not None:
            raise self.cancel_reason
        return self.result


_STOP = object()


class Dispatcher:
    """Worker threads that move items from the scheduler through the executor (see module contract)."""

    def __init__(self, scheduler: Scheduler, executor: BatchExecutor, *, overlap: bool = False,
                 finish_backlog: int = 2, name: str = "fastvideo") -> None:
        self.scheduler = scheduler
        self.executor = executor
        self.overlap = overlap
        self.name = name
        self._prep: dict[str, _Prep] = {}
        self._prep_lock = threading.Lock()
        self._prep_queue: queue.Queue[Any] = queue.Queue()
        self._finish_queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, finish_backlog))
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._threads:
            return
        targets = [("denoise", self._denoise_loop)]
        if self.overlap:
            targets += [("prepare", self._prepare_loop), ("finish", self._finish_loop)]
        for stage, target in targets:
            thread = threading.Thread(target=target, name=f"{self.name}-{stage}", daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def stop(self, timeout: float | None = None) -> None:
        """Close admission, cancel what is queued, let the running batch end, join the threads."""
        self._stopping.set()
        self.scheduler.close()
        for item in self.scheduler.drain_queue():
            self._release(item)
            self._call(item, "on_cancelled", GenerationCancelled("the server is shutting down", shutting_down=True))
        if self.overlap:
            self._prep_queue.put(_STOP)
        for thread in self._threads:
            if thread.name.endswith("-finish"):
                continue
            thread.join(timeout)
        if self.overlap:
            self._finish_queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    # ------------------------------------------------------------------ submission
    def submit(self, item: WorkItem, *, notify: bool = True, force: bool = False) -> None:
        """Admit ``item`` (QueueFull propagates) and, with overlap, queue its text encoding."""
        self.scheduler.admit(item, notify=notify, force=force)
        if self.overlap:
            self._prep_queue.put(item)

    def cancel(self, request_id: str) -> str:
        """Cancel a queued (reported now) or running (stops at its next step) item."""
        where, item = self.scheduler.cancel(request_id)
        if where == "queued" and item is not None:
            self._release(item)
            self._call(item, "on_cancelled", GenerationCancelled("the job was cancelled before it started"))
        return where

    def run_sync(self, item: WorkItem, timeout: float | None = None, *, force: bool = True) -> Any:
        """Submit with a :class:`SyncListener` and block for the result (warmup, tools)."""
        listener = item.listener if isinstance(item.listener, SyncListener) else SyncListener()
        item.listener = listener
        self.submit(item, force=force)
        return listener.wait(timeout)

    # ------------------------------------------------------------------ helpers
    def _call(self, item: WorkItem, method: str, *args: Any) -> None:
        listener = item.listener
        if listener is None:
            return
        try:
            getattr(listener, method)(item, *args)
        except Exception:  # noqa: BLE001 - a listener bug must not kill the loop
            logger.exception("listener %s failed for %s", method, item.request_id)

    def _release(self, item: WorkItem) -> None:
        with self._prep_lock:
            self._prep.pop(item.request_id, None)
        try:
            self.executor.release(item)
        except Exception:  # noqa: BLE001
            logger.exception("release failed for %s", item.request_id)

    def _end(self, item: WorkItem, exc: BaseException | None = None, result: Any = None) -> None:
        self.scheduler.finish(item)
        self._release(item)
        if exc is None:
            self._call(item, "on_done", result)
        elif item.is_cancelled():
            self._call(item, "on_cancelled", GenerationCancelled("the job was cancelled"))
        else:
            self._call(item, "on_failed", exc)

    def _claim(self, item: WorkItem) -> tuple[_Prep, bool]:
        with self._prep_lock:
            prep = self._prep.setdefault(item.request_id, _Prep())
            mine = not prep.claimed
            prep.claimed = True
            return prep, mine

    def _prepare(self, item: WorkItem, prep: _Prep) -> None:
        try:
            self.executor.prepare(item)
        except BaseException as exc:  # noqa: BLE001 - reported on the item
            prep.error = exc
        finally:
            prep.done.set()

    def _ensure_prepared(self, item: WorkItem) -> BaseException | None:
        prep, mine = self._claim(item)
        if mine:
            self._prepare(item, prep)
        else:
            prep.done.wait()
        return prep.error

    # ------------------------------------------------------------------ loops
    def _prepare_loop(self) -> None:
        while True:
            item = self._prep_queue.get()
            if item is _STOP:
                return
            if item.is_cancelled() or self._stopping.is_set():
                continue
            prep, mine = self._claim(item)
            if mine:
                self._prepare(item, prep)

    def _denoise_loop(self) -> None:
        while True:
            if not self.scheduler.wait_for_work():
                return
            batch, dropped = self.scheduler.next_batch()
            for item in dropped:
                self._release(item)
                self._call(item, "on_cancelled", GenerationCancelled("the job was cancelled before it started"))
            if not batch:
                continue
            try:
                self._run_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - the loop survives any batch failure
                logger.exception("batch %s failed", [i.request_id for i in batch])
                for item in batch:
                    self._end(item, exc)

    def _run_batch(self, batch: list[WorkItem]) -> None:
        ready = []
        for item in batch:
            self._call(item, "on_start")
        for item in batch:
            if item.is_cancelled():
                self._end(item, RuntimeError("cancelled"))
                continue
            error = self._ensure_prepared(item)
            if error is not None:
                self._end(item, error)
            else:
                ready.append(item)
        if not ready:
            return
        logger.debug("dispatching batch of %d: %s", len(ready), ready[0].key.describe())
        try:
            dropped = self.executor.denoise(ready, StepSink(self))
        except BaseException as exc:  # noqa: BLE001
            for item in ready:
                self._end(item, exc)
            return
        gone = {id(item) for item, _ in dropped}
        for item, reason in dropped:
            self._end(item, reason)
        survivors = [item for item in ready if id(item) not in gone]
        if self.overlap:
            self._finish_queue.put(survivors)
        else:
            self._finish_batch(survivors)

    def _finish_batch(self, items: list[WorkItem]) -> None:
        for item in items:
            try:
                result = self.executor.finish(item)
            except BaseException as exc:  # noqa: BLE001
                if not item.is_cancelled():
                    logger.exception("finishing %s failed", item.request_id)
                self._end(item, exc)
            else:
                self._end(item, None, result)

    def _finish_loop(self) -> None:
        while True:
            items = self._finish_queue.get()
            if items is _STOP:
                return
            self._finish_batch(items)
