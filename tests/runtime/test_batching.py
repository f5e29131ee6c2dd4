"""Batched execution on the built-in model: same frames as unbatched for the same seeds, per-member cancel,
the service wired through the scheduler, and the stage/stream ordering with a CPU stand-in stream backend.

Tolerance (fp32, CPU): ``core_testing.assert_same_video`` (frames within 1 uint8 level, tail latents 1e-4).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from core_testing import assert_same_video, video_request
from fastvideo.api import GenerationRequest, OutputConfig, SamplingConfig, VideoFinalEvent
from fastvideo.runtime.dispatcher import SyncListener
from fastvideo.runtime.executor import ExecutorConfig
from fastvideo.runtime.scheduler import SchedulerConfig
from fastvideo.runtime.service import ServiceConfig, VideoService
from fastvideo.runtime.worker import BatchWorker, WorkerConfig

WARM = GenerationRequest(prompt="warm", sampling=SamplingConfig(width=32, height=32, num_frames=1,
                                                                num_inference_steps=1, guidance_scale=1.0, seed=0),
                         output=OutputConfig(return_frames=False))


def test_service_batches_a_bucket_and_matches_unbatched(tiny_generator):
    reqs = [video_request(1), video_request(2, "a cat on a roof", guidance_scale=3.0),
            video_request(3, "rain", shift=5.0), video_request(4, width=96)]  # the last one is another bucket

    async def main():
        config = ServiceConfig(WorkerConfig(SchedulerConfig(max_batch=3), warmup_request=WARM))
        service = VideoService(tiny_generator, config)
        await service.start()
        await service.warmup()
        jobs = [service.submit(r) for r in reqs]  # one loop tick: the batcher sees all four together
        await asyncio.gather(*(j.wait() for j in jobs))
        await service.stop()
        return jobs

    jobs = asyncio.run(main())
    assert [j.status for j in jobs] == ["completed"] * 4
    assert [j.result.metadata["batch_size"] for j in jobs] == [3, 3, 3, 1]
    assert all(isinstance(j._final, VideoFinalEvent) and j._final.video_bytes[4:8] == b"ftyp" for j in jobs)
    for job, req in zip(jobs, reqs):
        assert_same_video(job.result, tiny_generator.generate(req))


def test_continuation_segments_batch_together(tiny_generator):
    firsts = [tiny_generator.generate(video_request(seed)) for seed in (11, 12)]
    worker = BatchWorker(tiny_generator, WorkerConfig(scheduler=SchedulerConfig(max_batch=2), warmup_request=WARM))
    worker.start()
    try:
        listeners = [SyncListener(), SyncListener()]
        for seed, first, lis in zip((21, 22), firsts, listeners):
            worker.submit(video_request(seed, state=first.state), listener=lis, notify=False)
        worker.notify()
        results = [lis.wait(60) for lis in listeners]
    finally:
        worker.stop()
    assert [r.metadata["batch_size"] for r in results] == [2, 2]
    assert all(r.metadata["branch"] == "continuation" for r in results)
    for seed, first, result in zip((21, 22), firsts, results):
        assert_same_video(result, tiny_generator.generate(video_request(seed, state=first.state)))


def test_cancelling_one_member_leaves_the_others_exact(tiny_generator):
    worker = BatchWorker(tiny_generator, WorkerConfig(scheduler=SchedulerConfig(max_batch=3), warmup_request=WARM))

    class CancelAtFirstStep(SyncListener):
        def on_step(self, item, step, total):
            super().on_step(item, step, total)
            if step == 1:
                worker.cancel(item.request_id)  # lands before step 2: deterministic

    worker.start()
    try:
        keep_a, victim, keep_b = SyncListener(), CancelAtFirstStep(), SyncListener()
        for seed, lis in ((31, keep_a), (32, victim), (33, keep_b)):
            worker.submit(video_request(seed), listener=lis, notify=False)
        worker.notify()
        a, b = keep_a.wait(60), keep_b.wait(60)
        assert victim.done.wait(60) and victim.cancelled and victim.steps == [(1, 3)]
    finally:
        worker.stop()
    assert a.metadata["batch_size"] == 3 and keep_a.steps == [(1, 3), (2, 3), (3, 3)]
    assert_same_video(a, tiny_generator.generate(video_request(31)))
    assert_same_video(b, tiny_generator.generate(video_request(33)))


# ------------------------------------------------------------------------------------ stream stand-in
class FakeEvent:
    def __init__(self, log):
        self.log, self.stream = log, None

    def record(self, stream):
        self.stream = stream
        self.log.append(("record", stream.name, id(self)))


class FakeStream:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def wait_event(self, event):
        self.log.append(("wait", self.name, id(event), event.stream.name))

    def synchronize(self):
        self.log.append(("sync", self.name))


class FakeStreamBackend:
    """Same methods as the CUDA stream backend; records the order of stream operations."""

    def __init__(self):
        self.log: list[tuple] = []
        self.local = threading.local()
        self._names = iter(["encode", "denoise", "decode"])
        self.lock = threading.Lock()

    def new_stream(self):
        return FakeStream(next(self._names), self.log)

    @contextlib.contextmanager
    def use(self, stream):
        previous = getattr(self.local, "current", None)
        self.local.current = stream.name
        try:
            yield
        finally:
            self.local.current = previous

    def current(self):
        return getattr(self.local, "current", None)

    def new_event(self):
        return FakeEvent(self.log)

    def handoff(self, tensor, stream):
        self.log.append(("handoff", stream.name))


def test_stages_run_on_their_streams_in_event_order(tiny_generator, monkeypatch):
    backend = FakeStreamBackend()
    pipe = tiny_generator.pipeline
    seen: list[tuple[str, str | None]] = []
    for name in ("encode_prompts", "decode"):
        original = getattr(pipe, name)

        def wrapper(*args, _name=name, _original=original, **kwargs):
            seen.append((_name, backend.current()))
            return _original(*args, **kwargs)

        monkeypatch.setattr(pipe, name, wrapper)
    config = WorkerConfig(overlap=True, executor=ExecutorConfig(streams=True), warmup_request=WARM,
                          scheduler=SchedulerConfig(max_batch=1))
    worker = BatchWorker(tiny_generator, config, stream_backend=backend)
    original_step = worker.executor._eager_step
    monkeypatch.setattr(worker.executor, "_eager_step",
                        lambda *a: (seen.append(("dit", backend.current())), original_step(*a))[1])
    worker.start()
    try:
        listeners = [SyncListener() for _ in range(3)]
        for seed, lis in zip((41, 42, 43), listeners):
            worker.submit(video_request(seed, num_inference_steps=2), listener=lis)
        results = [lis.wait(60) for lis in listeners]
    finally:
        worker.stop()
    assert {stage for stage, _ in seen} == {"encode_prompts", "dit", "decode"}
    assert all(stream == {"encode_prompts": "encode", "dit": "denoise", "decode": "decode"}[stage]
               for stage, stream in seen)
    recorded = {entry[2]: (entry[1], i) for i, entry in enumerate(backend.log) if entry[0] == "record"}
    waits = [(i, e) for i, e in enumerate(backend.log) if e[0] == "wait"]
    assert len(waits) == 6  # each request: denoise waits for its encode event, decode for its denoise event
    for i, (_, stream, event_id, source) in waits:
        assert recorded[event_id][1] < i  # recorded before it is waited on
        assert (source, stream) in {("encode", "denoise"), ("denoise", "decode")}
    for seed, result in zip((41, 42, 43), results):
        assert_same_video(result, tiny_generator.generate(video_request(seed, num_inference_steps=2)))


def test_queue_full_still_decided_before_a_job_exists_with_batching(tiny_generator):
    async def main():
        config = ServiceConfig(WorkerConfig(SchedulerConfig(max_queue=2, max_batch=2), warmup_request=WARM))
        service = VideoService(tiny_generator, config)
        await service.start()
        jobs = [service.submit(video_request(s)) for s in (1, 2)]
        from fastvideo.runtime.service import QueueFull

        with pytest.raises(QueueFull):
            service.submit(video_request(3))
        assert len(service.jobs) == 2 and service.queue_depth == 2
        await asyncio.gather(*(j.wait() for j in jobs))
        await service.stop()
        return jobs

    jobs = asyncio.run(main())
    assert [j.result.metadata["batch_size"] for j in jobs] == [2, 2]
