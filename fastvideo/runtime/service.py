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
- ``warmup()`` runs the generator's health-check request so the first user request pays no
  one-time cost; ``ready`` is true only after it. ``stop(graceful=True)`` stops admission, lets
  running and queued jobs finish within ``drain_timeout_s``, then cancels what is left (those jobs
  fail visibly with ``shutting down``). Job records expire ``job_ttl_s`` after they end.
- This implementation runs one job at a time on a worker thread per service (the generator is not
  re-entrant); batching across requests belongs to the scheduler that replaces the worker loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fastvideo.api import GenerationRequest, VideoFinalEvent, VideoProgressEvent, VideoResult
from fastvideo.engine.pipeline import GenerationCancelled
from fastvideo.runtime.generator import VideoGenerator

logger = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "cancelled")


class QueueFull(RuntimeError):
    """The service cannot take another job now; retry after ``retry_after_s`` seconds."""

    def __init__(self, depth: int, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"the queue is full ({depth} jobs waiting); retry in {retry_after_s}s")


class ServiceStopped(RuntimeError):
    """The service is shutting down and accepts no new jobs."""


@dataclass
class JobFailed:
    """Terminal item for a job that did not complete."""

    job_id: str
    status: str
    code: str
    message: str


@dataclass
class ServiceConfig:
    """Admission and lifecycle limits."""

    max_queue: int = 16
    retry_after_s: int = 5
    job_ttl_s: float = 3600.0
    drain_timeout_s: float = 60.0


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
    _subscribers: list[asyncio.Queue] = field(default_factory=list, repr=False)
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _final: Any = field(default=None, repr=False)

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


class VideoService:
    """Queue + worker over one VideoGenerator (see module contract)."""

    def __init__(self, generator: VideoGenerator, config: ServiceConfig | None = None) -> None:
        self.generator = generator
        self.config = config or ServiceConfig()
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.ready = False
        self._queue: asyncio.Queue[Job] | None = None
        self._worker: asyncio.Task | None = None
        self._accepting = False
        self._running: Job | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._worker is not None:
            return
        self._queue = asyncio.Queue()
        self._accepting = True
        self._worker = asyncio.create_task(self._work(), name="fastvideo-service-worker")

    async def warmup(self) -> None:
        """Run the health-check request once, then report ready."""
        t0 = time.perf_counter()
        request = self.generator.default_health_check_request()
        await asyncio.to_thread(self.generator.generate, request)
        self.ready = True
        logger.info("warmup done in %.2fs; service ready", time.perf_counter() - t0)

    async def stop(self, graceful: bool = True) -> None:
        """Stop admission; drain (graceful) or cancel what is queued and running."""
        self._accepting = False
        self.ready = False
        if self._worker is None:
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
                job.cancel()
                if job.status == "queued":
                    self._fail(job, "cancelled", "shutting_down", "the server is shutting down")
        if self._running is not None:
            await self._running.wait()
        self._worker.cancel()
        try:
            await self._worker
        except asyncio.CancelledError:
            pass
        self._worker = None

    # ------------------------------------------------------------------ jobs
    @property
    def queue_depth(self) -> int:
        return sum(1 for j in self.jobs.values() if j.status == "queued")

    @property
    def running(self) -> int:
        return 0 if self._running is None else 1

    def submit(self, request: GenerationRequest | dict) -> Job:
        """Validate and enqueue (raises RequestError, ConfigError, QueueFull, ServiceStopped)."""
        if not self._accepting or self._queue is None:
            raise ServiceStopped("the service is not accepting jobs (starting up or shutting down)")
        req, resolved = self.generator.resolve(request)
        self._expire()
        depth = self.queue_depth
        if depth >= self.config.max_queue:
            raise QueueFull(depth, self.config.retry_after_s)
        assert req.request_id is not None
        job = Job(id=req.request_id, request=req, total_steps=resolved.num_inference_steps)
        job._resolved = resolved  # type: ignore[attr-defined]
        self.jobs[job.id] = job
        self._queue.put_nowait(job)
        return job

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

    def _fail(self, job: Job, status: str, code: str, message: str) -> None:
        job.error_code, job.error_message = code, message
        job._finish(status, JobFailed(job_id=job.id, status=status, code=code, message=message))

    async def _work(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            if job.status != "queued":
                continue
            if job._cancel.is_set():
                self._fail(job, "cancelled", "cancelled", "the job was cancelled before it started")
                continue
            self._running = job
            job.status, job.started_at = "in_progress", time.time()

            def on_step(step: int, total: int, job: Job = job) -> None:
                event = VideoProgressEvent(request_id=job.id, step=step, total_steps=total, stage="denoise",
                                           elapsed_s=time.time() - (job.started_at or job.created_at))
                loop.call_soon_threadsafe(self._on_progress, job, event)

            try:
                output = await asyncio.to_thread(self.generator.run_resolved, job.request, job._resolved,  # type: ignore[attr-defined]
                                                 on_step=on_step, should_cancel=job._cancel.is_set, need_bytes=True)
            except GenerationCancelled:
                self._fail(job, "cancelled", "cancelled", "the job was cancelled")
            except Exception as exc:  # noqa: BLE001 - every failure is reported on the job
                logger.exception("job %s failed", job.id)
                self._fail(job, "failed", "generation_failed", f"{type(exc).__name__}: {exc}")
            else:
                job.result = output.result
                job.progress = 100
                result = output.result
                job._finish("completed", VideoFinalEvent(
                    request_id=job.id, video_bytes=result.video_bytes, frames=result.frames,
                    metadata=result.metadata, continuation_state=result.state, result=result))
            finally:
                self._running = None

    def _on_progress(self, job: Job, event: VideoProgressEvent) -> None:
        if job.status in TERMINAL:
            return
        job.progress = min(99, int(100 * event.step / max(event.total_steps, 1)))
        job._publish(event)
