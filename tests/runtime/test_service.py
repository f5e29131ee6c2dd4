"""VideoService: admission control, progress, cancellation, drain on stop, warmup readiness."""

from __future__ import annotations

import asyncio
import threading

import pytest

from fastvideo.api import GenerationRequest, RequestError, SamplingConfig, VideoFinalEvent, VideoProgressEvent
from fastvideo.runtime.scheduler import SchedulerConfig
from fastvideo.runtime.service import JobFailed, QueueFull, ServiceConfig, ServiceStopped, VideoService
from fastvideo.runtime.worker import WorkerConfig

REQ = {"prompt": "a fox", "sampling": {"width": 32, "height": 32, "num_frames": 1, "num_inference_steps": 3,
                                      "seed": 1}}


def run(coro):
    return asyncio.run(coro)


def test_job_lifecycle_and_progress(tiny_generator):
    async def main():
        service = VideoService(tiny_generator)
        await service.start()
        job = service.submit(REQ)
        assert job.status == "queued" and job.progress == 0
        events = job.subscribe()
        seen = []
        while True:
            item = await events.get()
            seen.append(item)
            if not isinstance(item, VideoProgressEvent):
                break
        await service.stop()
        return job, seen

    job, seen = run(main())
    assert [e.step for e in seen[:-1]] == [1, 2, 3]
    assert isinstance(seen[-1], VideoFinalEvent) and seen[-1].video_bytes[4:8] == b"ftyp"
    assert job.status == "completed" and job.progress == 100 and job.queue_time_s is not None


def test_queue_full_rejects_before_creating_a_job(tiny_generator):
    async def main():
        config = ServiceConfig(WorkerConfig(SchedulerConfig(max_queue=2, retry_after_s=7)))
        service = VideoService(tiny_generator, config)
        await service.start()
        jobs = [service.submit(REQ) for _ in range(2)]  # the worker has not picked anything yet
        with pytest.raises(QueueFull) as err:
            service.submit(REQ)
        assert err.value.retry_after_s == 7 and len(service.jobs) == 2
        with pytest.raises(RequestError):
            service.submit({"prompt": "x", "sampling": {"width": 30}})
        await asyncio.gather(*(j.wait() for j in jobs))
        await service.stop()
        with pytest.raises(ServiceStopped):
            service.submit(REQ)
        return jobs

    assert [j.status for j in run(main())] == ["completed", "completed"]


def test_cancel_queued_and_running(tiny_generator):
    async def main():
        service = VideoService(tiny_generator)
        await service.start()
        slow = service.submit({**REQ, "sampling": {**REQ["sampling"], "num_inference_steps": 50}})
        queued = service.submit(REQ)
        events = slow.subscribe()
        first = await events.get()  # running now
        assert isinstance(first, VideoProgressEvent)
        assert queued.cancel() and slow.cancel()
        await asyncio.gather(slow.wait(), queued.wait())
        terminal = await events.get()
        while isinstance(terminal, VideoProgressEvent):
            terminal = await events.get()
        await service.stop()
        return slow, queued, terminal

    slow, queued, terminal = run(main())
    assert slow.status == "cancelled" and queued.status == "cancelled"
    assert isinstance(terminal, JobFailed) and terminal.code == "cancelled"


def test_warmup_sets_ready_and_graceful_stop_drains(tiny_generator):
    async def main():
        service = VideoService(tiny_generator)
        await service.start()
        assert not service.ready
        await service.warmup()
        assert service.ready
        jobs = [service.submit(REQ) for _ in range(2)]
        await service.stop(graceful=True)
        return service, jobs

    service, jobs = run(main())
    assert not service.ready and all(j.status == "completed" for j in jobs)


def test_warmup_runs_both_branches_before_ready(tiny_generator):
    """Warmup runs a first segment, then a continuation from its state, and only then reports ready;
    a warmup whose continuation branch fails leaves the service not ready."""
    seen: list[tuple[str, bool, bool]] = []

    async def main(fail_continuation: bool):
        warm = GenerationRequest(prompt="warm", sampling=SamplingConfig(width=32, height=32, num_frames=1,
                                                                        num_inference_steps=1, seed=0))
        service = VideoService(tiny_generator, ServiceConfig(WorkerConfig(warmup_request=warm)))
        await service.start()
        worker = service.worker
        prepare = worker.executor.prepare

        def spy(item):
            seen.append((item.key.branch, item.payload.request.state is not None, worker.ready or service.ready))
            if fail_continuation and item.key.branch == "continuation":
                raise RuntimeError("continuation warmup broke")
            prepare(item)

        worker.executor.prepare = spy
        try:
            await service.warmup()
        finally:
            ready = service.ready
            await service.stop(graceful=False)
        return ready

    assert run(main(fail_continuation=False)) is True
    assert seen == [("initial", False, False), ("continuation", True, False)]
    seen.clear()
    with pytest.raises(RuntimeError, match="continuation warmup broke"):
        run(main(fail_continuation=True))
    assert seen == [("initial", False, False), ("continuation", True, False)]


def test_submit_during_warmup_is_refused_clearly(tiny_generator):
    """No job is queued beside graph capture: while warmup runs, submit raises ServiceNotReady (with a
    retry hint); once warmup returned, the same request is accepted."""
    from fastvideo.runtime.service import ServiceNotReady

    async def main():
        service = VideoService(tiny_generator, ServiceConfig(WorkerConfig(SchedulerConfig(retry_after_s=3))))
        await service.start()
        worker = service.worker
        release = threading.Event()
        warming = threading.Event()
        original = worker.warmup

        def slow_warmup():
            warming.set()
            release.wait(30)
            return original()

        worker.warmup = slow_warmup
        task = asyncio.create_task(service.warmup())
        await asyncio.to_thread(warming.wait, 30)
        with pytest.raises(ServiceNotReady, match="warming up") as info:
            service.submit(REQ)
        assert info.value.retry_after_s == 3 and not service.jobs
        release.set()
        await task
        assert service.ready
        job = service.submit(REQ)
        await job.wait()
        await service.stop()
        return job

    assert run(main()).status == "completed"


def test_stop_is_bounded_when_a_worker_never_reports_a_cancellation(tiny_generator):
    """A wedged worker (a hung device) never answers the cancel: stop() waits pool.stop_timeout_s, stops the worker
    anyway and fails the job visibly (shutting_down) instead of hanging the shutdown forever."""
    from fastvideo.runtime.pool import PoolConfig

    class WedgedWorker:
        queue_depth = running = 0
        booted = True

        def __init__(self) -> None:
            self.stopped = False

        def submit_resolved(self, *args, **kwargs) -> None:
            pass  # accepted, never started, never finished

        def cancel(self, job_id: str) -> bool:
            return True  # acknowledged, never delivered

        def notify(self) -> None:
            pass

        def stop(self) -> None:
            self.stopped = True

    async def main():
        service = VideoService(tiny_generator, ServiceConfig(pool=PoolConfig(stop_timeout_s=0.3)))
        await service.start()
        real = service.worker
        wedged = service.worker = WedgedWorker()
        try:
            job = service.submit(REQ)
            job.status = "in_progress"  # as if the worker had started it
            started = asyncio.get_running_loop().time()
            await asyncio.wait_for(service.stop(graceful=False), 30)
            return job, wedged, asyncio.get_running_loop().time() - started
        finally:
            real.stop()

    job, wedged, took = run(main())
    assert wedged.stopped and job.status == "cancelled" and job.error_code == "shutting_down"
    assert took < 10
