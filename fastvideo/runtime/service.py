"""``VideoService``: the asynchronous job layer servers talk to (admission, queue, progress, cancel).

Contract (the seam between ``serving/`` and the runtime):
- ``submit(request) -> Job`` validates synchronously (``RequestError`` / ``ConfigError`` for bad
  input) and enqueues; when the queue already holds ``max_queue`` jobs it raises :class:`QueueFull`
  *before* any job exists (servers answer 429/503 with ``retry-after``).
- A :class:`Job` moves ``queued -> in_progress -> completed | failed | cancelled``; ``progress`` is
  0..100 and moves with every denoising step; ``subscribe()`` returns a queue that receives every
  later :class:`VideoProgressEvent` and then exactly one terminal item (a ``VideoFinalEvent`` or a
  :class:`JobFailed`); ``wait()`` awaits the end. ``cancel()`` drops a queued job or stops a running
  one at its next step.
- ``warmup()`` captures the declared CUDA graphs and runs the warmup request through the normal
  path for both branches (a first segment, then a continuation from its state) so the first user
  request pays no one-time cost; ``ready`` is true only after it. While it runs, ``submit`` raises
  :class:`ServiceNotReady` (``retry_after_s``) instead of queueing work beside graph capture: await
  ``warmup()`` (or watch ``ready``) before submitting. A service that is started and never warmed
  up takes jobs at once (eager, nothing captured). ``stop(graceful=True)`` stops
  admission, lets running and queued jobs finish within ``drain_timeout_s``, then cancels what is
  left (those jobs fail visibly with ``shutting down``). Job records expire ``job_ttl_s`` after they end.
- Jobs run through the runtime scheduler (:mod:`fastvideo.runtime.scheduler`) on a
  :class:`~fastvideo.runtime.worker.BatchWorker`: jobs that share a shape bucket run as one batched
  DiT forward (up to ``max_batch``), odd shapes are not starved (``max_bypass``). Jobs submitted
  in the same event-loop tick are handed to the batcher together (it is woken at the end of the tick).
- :class:`ServiceConfig` nests the configs below it and hands them down as they are:
  ``worker`` (a :class:`WorkerConfig` holding the :class:`SchedulerConfig`) goes to the BatchWorker,
  ``pool`` to the device pool. With ``pool.devices`` set the jobs run on a
  :class:`~fastvideo.runtime.device_pool.DevicePool` instead (one worker per device, the first over
  this service's generator, the others in their own processes; each worker batches what it is
  sent): ``start()`` begins the boots, ``warmup()`` waits for them (every worker warms up both
  branches), and until it returned ``submit`` raises :class:`ServiceNotReady`; ``max_queue`` bounds
  the jobs waiting over the whole pool; ``workers()`` reports each worker's status and counters; a job
  records the ``worker_id`` and ``device`` of the worker that started it. A
  pool whose workers all died refuses jobs with :class:`ServiceNotReady`.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastvideo.api import (ConfigError, FastVideoError, GenerationCancelled, GenerationRequest, RequestError,
                           VideoFinalEvent, VideoProgressEvent, VideoResult)
from fastvideo.runtime.device_pool import DevicePool
from fastvideo.runtime.generator import VideoGenerator
from fastvideo.runtime.pool import PoolConfig, PoolRequestFailed, WorkerInfo
from fastvideo.runtime.scheduler import QueueFull, WorkItem
from fastvideo.runtime.worker import BatchWorker, WorkerConfig

logger = logging.getLogger(__name__)

__all__ = ["Job", "JobFailed", "QueueFull", "ServiceConfig", "ServiceNotReady", "ServiceStopped", "VideoService"]

TERMINAL = ("completed", "failed", "cancelled")


class ServiceStopped(FastVideoError, RuntimeError):
    """The service is shutting down and accepts no new jobs."""


class ServiceNotReady(FastVideoError, RuntimeError):
    """The service is warming up; submit again once ``warmup()`` has returned (``retry_after_s``)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


@dataclass
class JobFailed:
    """Terminal item for a job that did not complete."""

    job_id: str
    status: str
    code: str
    message: str


@dataclass
class ServiceConfig:
    """Admission and lifecycle limits; the nested configs are passed down as they are (see module contract)."""

    #: How the generator is served: ``scheduler`` (max_queue, max_batch, max_bypass, retry_after_s), stage
    #: overlap, executor (CUDA streams, graphs), warmup request and timeout.
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    #: ``devices``: run the jobs on a pool, one worker per device (empty: on one in-process BatchWorker).
    pool: PoolConfig = field(default_factory=PoolConfig)
    #: Seconds a finished job's record (and its result) is kept for readers before it expires.
    job_ttl_s: float = 3600.0
    #: Seconds ``stop(graceful=True)`` waits for running and queued jobs before cancelling them.
    drain_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("job_ttl_s", "drain_timeout_s"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")


@dataclass
class Job:
    """One submitted generation and its live status."""

    id: str
    request: GenerationRequest
    total_steps: int
    status: str = "queued"
    progress: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    result: VideoResult | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: The pool worker that started the job and its device (None without a pool, or before it started).
    worker_id: str | None = None
    device: str | None = None
    _subscribers: list[asyncio.Queue] = field(default_factory=list, repr=False)
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _final: Any = field(default=None, repr=False)
    _cancel_hook: Callable[[], Any] | None = field(default=None, repr=False)

    @property
    def queue_time_s(self) -> float | None:
        return None if self.started_at is None else self.started_at - self.created_at

    def subscribe(self) -> asyncio.Queue:
        """A queue receiving every later progress event, then one terminal item."""
        queue: asyncio.Queue = asyncio.Queue()
        if self._final is not None:
            queue.put_nowait(self._final)
        else:
            self._subscribers.append(queue)
        return queue

    async def wait(self) -> "Job":
        await self._done.wait()
        return self

    def cancel(self) -> bool:
        """Request cancellation; True if the job had not ended yet."""
        if self.status in TERMINAL:
            return False
        self._cancel.set()
        if self._cancel_hook is not None:
            self._cancel_hook()
        return True

    def _publish(self, item: Any) -> None:
        for queue in self._subscribers:
            queue.put_nowait(item)

    def _finish(self, status: str, final: Any) -> None:
        self.status = status
        self.completed_at = time.time()
        self._final = final
        self._publish(final)
        self._subscribers.clear()
        self._done.set()


class _JobListener:
    """Dispatcher callbacks (worker threads) -> job updates on the service's event loop."""

    def __init__(self, service: "VideoService", job: Job, loop: asyncio.AbstractEventLoop) -> None:
        self.service, self.job, self.loop = service, job, loop

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def on_start(self, item: WorkItem | None, worker_id: str | None = None, device: str | None = None) -> None:
        self._post(self.service._on_start, self.job, worker_id, device)

    def on_step(self, item: WorkItem, step: int, total: int) -> None:
        job = self.job
        event = VideoProgressEvent(request_id=job.id, step=step, total_steps=total, stage="denoise",
                                   elapsed_s=time.time() - (job.started_at or job.created_at))
        self._post(self.service._on_progress, job, event)

    def on_done(self, item: WorkItem, result: VideoResult) -> None:
        self._post(self.service._on_done, self.job, result)

    def on_cancelled(self, item: WorkItem, reason: GenerationCancelled) -> None:
        code = "shutting_down" if reason.shutting_down else "cancelled"
        self._post(self.service._fail, self.job, "cancelled", code, str(reason))

    def on_failed(self, item: WorkItem, exc: BaseException) -> None:
        logger.error("job %s failed: %s: %s", self.job.id, type(exc).__name__, exc)
        self._post(self.service._fail, self.job, "failed", "generation_failed", f"{type(exc).__name__}: {exc}")


class VideoService:
    """Jobs over a BatchWorker (scheduler + executor) for one VideoGenerator (see module contract)."""

    def __init__(self, generator: VideoGenerator, config: ServiceConfig | None = None, *,
                 graph_backend: Any = None, stream_backend: Any = None) -> None:
        self.generator = generator
        self.config = config or ServiceConfig()
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.ready = False
        #: The engine jobs run on: a BatchWorker, or a DevicePool when ``config.pool.devices`` is set.
        self.worker: Any = None
        self._pool: DevicePool | None = None
        if self.config.pool.devices:  # built now, so devices that do not exist are refused before anything starts
            if graph_backend is not None or stream_backend is not None:
                raise ConfigError("pool.devices", "graph/stream backends are for a single in-process worker")
            self._pool = DevicePool(generator, self.config.pool, self.config.worker)
        self._backends = {"graph_backend": graph_backend, "stream_backend": stream_backend}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self._warming = False
        self._wake_pending = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.worker is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self.config.pool.devices:
            self.worker = self._pool or DevicePool(self.generator, self.config.pool, self.config.worker)
            self._pool = None
        else:
            self.worker = BatchWorker(self.generator, self.config.worker, name="fastvideo-service", **self._backends)
        self.worker.start()
        self._accepting = True

    @property
    def pooled(self) -> bool:
        """Whether jobs run on a device pool (``config.pool.devices``)."""
        return bool(self.config.pool.devices)

    def workers(self) -> list[WorkerInfo]:
        """Each pool worker's status and counters (empty without a pool, or before ``start``)."""
        return self.worker.info() if self.pooled and self.worker is not None else []

    async def warmup(self) -> None:
        """Capture declared graphs and run both branches once, then report ready."""
        if self.worker is None:
            await self.start()
        assert self.worker is not None
        self._warming = True
        try:
            info = await asyncio.to_thread(self.worker.warmup)
        finally:
            self._warming = False
        self.ready = True
        logger.info("warmup done in %.2fs; service ready (graphs: %s)", info["warmup_s"], info["graphs"] or "none")

    async def stop(self, graceful: bool = True) -> None:
        """Stop admission; drain (graceful) or cancel what is queued and running."""
        self._accepting = False
        self.ready = False
        worker = self.worker
        if worker is None:
            return
        pending = [j for j in self.jobs.values() if j.status not in TERMINAL]
        if graceful and pending:
            try:
                await asyncio.wait_for(asyncio.gather(*(j.wait() for j in pending)), self.config.drain_timeout_s)
            except asyncio.TimeoutError:
                logger.warning("drain timed out after %.0fs; cancelling %d jobs", self.config.drain_timeout_s,
                               sum(j.status not in TERMINAL for j in pending))
        for job in list(self.jobs.values()):
            if job.status not in TERMINAL:
                queued = job.status == "queued"
                job.cancel()
                if queued:
                    self._fail(job, "cancelled", "shutting_down", "the server is shutting down")
        running = [j for j in self.jobs.values() if j.status not in TERMINAL]
        if running:  # cancelled at their next step; a wedged worker must not hold the shutdown forever
            wait_s = self.config.pool.stop_timeout_s
            try:
                await asyncio.wait_for(asyncio.gather(*(j.wait() for j in running)), wait_s)
            except asyncio.TimeoutError:
                logger.warning("%d cancelled jobs did not stop within %.0fs (pool.stop_timeout_s); stopping the "
                               "worker anyway", sum(j.status not in TERMINAL for j in running), wait_s)
        await asyncio.to_thread(worker.stop)
        for job in running:
            if job.status not in TERMINAL:
                self._fail(job, "cancelled", "shutting_down", "the server shut down before this job stopped")
        self.worker = None

    # ------------------------------------------------------------------ jobs
    @property
    def queue_depth(self) -> int:
        return 0 if self.worker is None else self.worker.queue_depth

    @property
    def running(self) -> int:
        return 0 if self.worker is None else self.worker.running

    def submit(self, request: GenerationRequest | dict) -> Job:
        """Validate and enqueue (raises RequestError, ConfigError, QueueFull, ServiceNotReady, ServiceStopped)."""
        worker, loop = self.worker, self._loop
        if not self._accepting or worker is None or loop is None:
            raise ServiceStopped("the service is not accepting jobs (starting up or shutting down)")
        retry_after_s = self.config.worker.scheduler.retry_after_s
        if self._warming or (self.pooled and not worker.booted):
            raise ServiceNotReady("the service is warming up (capturing CUDA graphs and running each branch once); "
                                  "await service.warmup() or wait until service.ready, then submit", retry_after_s)
        req, resolved = self.generator.resolve(request)
        self._expire()
        assert req.request_id is not None
        existing = self.jobs.get(req.request_id)
        if existing is not None and existing.status not in TERMINAL:
            raise RequestError("request_id", f"{req.request_id!r} is already queued or running; use a new id")
        job = Job(id=req.request_id, request=req, total_steps=resolved.num_inference_steps)
        try:  # QueueFull propagates: no job exists
            worker.submit_resolved(req, resolved, listener=_JobListener(self, job, loop), need_bytes=True,
                                   notify=False, should_cancel=job._cancel.is_set)
        except PoolRequestFailed as exc:  # no live worker left in the pool
            raise ServiceNotReady(f"no worker can take the job: {exc}", retry_after_s) from exc
        job._cancel_hook = lambda: worker.cancel(job.id)
        self.jobs[job.id] = job
        if not self._wake_pending:  # wake the batcher once, at the end of this loop tick
            self._wake_pending = True
            loop.call_soon(self._wake)
        return job

    def _wake(self) -> None:
        self._wake_pending = False
        if self.worker is not None:
            self.worker.notify()

    def get(self, job_id: str) -> Job | None:
        self._expire()
        return self.jobs.get(job_id)

    def delete(self, job_id: str) -> bool:
        """Forget a job (cancelling it if it still runs)."""
        job = self.jobs.pop(job_id, None)
        if job is None:
            return False
        job.cancel()
        return True

    def _expire(self) -> None:
        now = time.time()
        for job_id in [i for i, j in self.jobs.items()
                       if j.completed_at is not None and now - j.completed_at > self.config.job_ttl_s]:
            del self.jobs[job_id]

    # ------------------------------------------------------------------ callbacks (event loop thread)
    def _fail(self, job: Job, status: str, code: str, message: str) -> None:
        if job.status in TERMINAL:
            return
        job.error_code, job.error_message = code, message
        job._finish(status, JobFailed(job_id=job.id, status=status, code=code, message=message))

    def _on_start(self, job: Job, worker_id: str | None = None, device: str | None = None) -> None:
        if job.status == "queued":
            job.status, job.started_at = "in_progress", time.time()
            job.worker_id, job.device = worker_id, device

    def _on_done(self, job: Job, result: VideoResult) -> None:
        if job.status in TERMINAL:
            return
        job.result = result
        job.progress = 100
        job._finish("completed", VideoFinalEvent(
            request_id=job.id, video_bytes=result.video_bytes, frames=result.frames,
            metadata=result.metadata, continuation_state=result.state, result=result))

    def _on_progress(self, job: Job, event: VideoProgressEvent) -> None:
        if job.status in TERMINAL:
            return
        job.progress = min(99, int(100 * event.step / max(event.total_steps, 1)))
        job._publish(event)
