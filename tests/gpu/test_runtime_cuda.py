"""The runtime on the GPU: CUDA graphs for both branches and the stream executor, against eager.

On the built-in model in float32 (TF32 off), so the comparisons can be tight:
- CUDA graphs: warmup captures the declared bucket for the initial and the continuation branch (batch 1
  and 2), then every denoising step of a first segment and of its continuation replays a graph (exact
  counters) and the videos equal the eager generator's (frames within 1 uint8 level, tail latents 1e-4).
- Streams: a worker with encode / denoise / decode on separate threads and CUDA streams batches three
  same-shape requests into one DiT forward; each result equals the unbatched eager one (same bounds: a
  batched matmul may sum in another order).
- TeaCache with CUDA graphs: computed steps replay the graph (the residual read from the blocks' input/output the
  graph keeps), skipped steps replay nothing; threshold 0 equals the plain graph run, 1.5 the eager TeaCache run.
"""

from __future__ import annotations

import asyncio

from core_testing import assert_same_video, video_request
from fastvideo.api import GenerationRequest, OutputConfig, SamplingConfig
from fastvideo.runtime.cuda_graphs import GraphBucket, GraphConfig
from fastvideo.runtime.executor import ExecutorConfig
from fastvideo.runtime.scheduler import SchedulerConfig
from fastvideo.runtime.service import ServiceConfig, VideoService
from fastvideo.runtime.worker import BatchWorker, WorkerConfig

WARM = GenerationRequest(prompt="warm",
                         sampling=SamplingConfig(width=64, height=64, num_frames=5, num_inference_steps=1,
                                                 guidance_scale=4.0, seed=0),
                         output=OutputConfig(return_frames=False))


def request(seed: int, prompt: str = "waves on a beach", state=None, **sampling) -> dict:
    return video_request(seed, prompt, state, **{"guidance_scale": 4.0, **sampling})


def test_cuda_graphs_for_both_branches_equal_eager(gpu, gpu_generator) -> None:
    counters = gpu_generator.counters
    before = counters.snapshot()
    bucket = GraphBucket(width=64, height=64, num_frames=5, cfg=True, batch_sizes=(1, 2))
    config = WorkerConfig(warmup_request=WARM, executor=ExecutorConfig(graphs=GraphConfig(enabled=True,
                                                                                           buckets=(bucket,))))
    worker = BatchWorker(gpu_generator, config, graph_backend=gpu.graph_backend())
    worker.start()
    try:
        info = worker.warmup()
        runner = worker.executor.runner
        assert info["graphs"] == ["64x64x5/initial/b1/cfg", "64x64x5/initial/b2/cfg",
                                  "64x64x5/continuation/b1/cfg", "64x64x5/continuation/b2/cfg"]
        assert counters.graph_captures - before["graph_captures"] == 4 and runner.stats["capture_failures"] == 0
        replays = counters.graph_replays
        first = worker.generate(request(7))
        second = worker.generate(request(8, state=first.state))
        assert second.metadata["branch"] == "continuation"
        assert counters.graph_replays - replays == 6 and runner.stats["eager_calls"] == 0  # 3 steps x 2 segments
    finally:
        worker.stop()
    eager_first = gpu_generator.generate(request(7))
    eager_second = gpu_generator.generate(request(8, state=eager_first.state))
    assert_same_video(first, eager_first)
    assert_same_video(second, eager_second)


def test_stream_executor_batched_equals_unbatched(gpu, gpu_generator) -> None:
    reqs = [request(1), request(2, "a cat on a roof", guidance_scale=3.0), request(3, "rain", shift=5.0)]

    async def main():
        service = VideoService(gpu_generator, ServiceConfig(WorkerConfig(
            SchedulerConfig(max_batch=3), overlap=True, warmup_request=WARM)))
        await service.start()
        await service.warmup()
        assert service.worker.executor.streams.enabled == (gpu.device.type == "cuda")
        jobs = [service.submit(r) for r in reqs]  # one loop tick: one batch of three
        await asyncio.gather(*(j.wait() for j in jobs))
        await service.stop()
        return jobs

    jobs = asyncio.run(main())
    assert all(j.status == "completed" for j in jobs), [(j.status, j.error_message) for j in jobs]
    assert [j.result.metadata["batch_size"] for j in jobs] == [3, 3, 3]
    for job, req in zip(jobs, reqs):
        assert_same_video(job.result, gpu_generator.generate(req))


def test_cuda_graphs_from_engine_config_in_the_generators_core(gpu, gpu_generator, tiny_model_dir) -> None:
    """``engine.cuda_graphs`` alone (no worker wiring by hand): the generator's engine core captures the declared
    size for both branches when it starts, and direct ``generate`` calls replay them (refused off CUDA)."""
    import pytest

    from fastvideo import VideoGenerator
    from fastvideo.api import ConfigError

    config = {"model_path": str(tiny_model_dir), "engine": {
        "device": str(gpu.device), "dtype": "fp32", "cuda_graphs": {"enabled": True, "sizes": ["64x64x5"]}}}
    if gpu.rehearsal:
        with pytest.raises(ConfigError, match="engine.cuda_graphs.enabled"):
            VideoGenerator.from_pretrained(config)
        return
    generator = VideoGenerator.from_pretrained(config)
    try:
        got = generator.generate(request(7))
        counters = generator.counters.snapshot()
        assert counters["graph_captures"] == 2 and counters["graph_replays"] == 3  # both branches; 3 steps
    finally:
        generator.shutdown()
    assert_same_video(got, gpu_generator.generate(request(7)))


def test_teacache_with_cuda_graphs_equals_eager(gpu, gpu_generator) -> None:
    """TeaCache under real CUDA graphs: a computed step replays the graph and reads the residual from the blocks'
    input/output the graph keeps (rewritten at every replay); a skipped step replays nothing. Threshold 0 equals the
    plain graph run; threshold 1.5 (identity polynomial) skips and equals the eager TeaCache run."""
    def cached(seed: int, thresh: float | None) -> dict:
        req = request(seed, num_inference_steps=4)
        if thresh is not None:
            req["runtime"] = {"enable_teacache": True, "teacache_thresh": thresh, "teacache_use_ret_steps": False,
                              "teacache_coefficients": [1.0, 0.0]}
        return req

    bucket = GraphBucket(width=64, height=64, num_frames=5, cfg=True, batch_sizes=(1,))
    config = WorkerConfig(warmup_request=WARM, executor=ExecutorConfig(graphs=GraphConfig(enabled=True,
                                                                                           buckets=(bucket,))))
    worker = BatchWorker(gpu_generator, config, graph_backend=gpu.graph_backend())
    worker.start()
    try:
        worker.warmup()
        runner = worker.executor.runner
        plain = worker.generate(cached(7, None))
        replays = runner.stats["replays"]
        zero = worker.generate(cached(7, 0.0))
        assert runner.stats["replays"] - replays == 4
        replays = runner.stats["replays"]
        skipping = worker.generate(cached(7, 1.5))
        skipped = skipping.metadata["teacache"]["skipped_steps"]
        assert skipped >= 1 and runner.stats["replays"] - replays == 4 - skipped and runner.stats["eager_calls"] == 0
    finally:
        worker.stop()
    assert_same_video(zero, plain)
    eager = gpu_generator.generate(cached(7, 1.5))
    assert eager.metadata["teacache"] == skipping.metadata["teacache"]
    assert_same_video(skipping, eager)
