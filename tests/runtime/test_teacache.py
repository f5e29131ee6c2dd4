"""TeaCache through the real executor on the built-in model (CPU, fp32): threshold 0 is the uncached video bit for
bit; a positive threshold skips steps, counts them (result metadata and generator counters) and stays close; a
batch mixing a TeaCache member and a plain one gives each its solo video; with CUDA graphs (the CPU
stand-in) computed steps replay the graph and skipped ones replay nothing.

The tiny model's random weights change the modulated input by ~100% a step, where Wan's fitted polynomial is
meaningless, so these requests use the identity polynomial (``teacache_coefficients: [1.0, 0.0]``).
"""

from __future__ import annotations

import numpy as np
import pytest

from core_testing import assert_same_video
from fastvideo.api import GenerationRequest, OutputConfig, RequestError, SamplingConfig
from fastvideo.engine.state_codec import decode_latent_state
from fastvideo.runtime.cuda_graphs import GraphBucket, GraphConfig, RecordingGraphBackend
from fastvideo.runtime.dispatcher import SyncListener
from fastvideo.runtime.executor import ExecutorConfig
from fastvideo.runtime.scheduler import SchedulerConfig
from fastvideo.runtime.worker import BatchWorker, WorkerConfig

WARM = GenerationRequest(prompt="warm", sampling=SamplingConfig(width=64, height=64, num_frames=5,
                                                                num_inference_steps=1, guidance_scale=5.0, seed=0),
                         output=OutputConfig(return_frames=False))


def request(seed: int, thresh: float | None = None, steps: int = 4) -> dict:
    req = {"prompt": "a red fox in snow", "sampling": {"width": 64, "height": 64, "num_frames": 5,
                                                       "num_inference_steps": steps, "guidance_scale": 5.0,
                                                       "seed": seed},
           "output": {"return_state": True}}
    if thresh is not None:
        req["runtime"] = {"enable_teacache": True, "teacache_thresh": thresh, "teacache_use_ret_steps": False,
                          "teacache_coefficients": [1.0, 0.0]}
    return req


def latents(result):
    tail, _ = decode_latent_state(result.state)
    return tail.float()


def test_threshold_zero_is_the_uncached_video_bit_for_bit(tiny_generator):
    plain = tiny_generator.generate(request(1))
    cached = tiny_generator.generate(request(1, thresh=0.0))
    assert cached.metadata["teacache"] == {"thresh": 0.0, "use_ret_steps": False, "skipped_steps": 0,
                                           "computed_steps": 4}
    assert np.array_equal(cached.frames, plain.frames)
    assert (latents(cached) == latents(plain)).all()
    assert "teacache" not in plain.metadata


def test_a_positive_threshold_skips_steps_counts_them_and_stays_close(tiny_generator):
    plain = tiny_generator.generate(request(2))
    before = tiny_generator.counters.teacache_steps_skipped
    cached = tiny_generator.generate(request(2, thresh=1.5))
    meta = cached.metadata["teacache"]
    # step 0 and the last always compute; steps 1 and 2 change the input by ~1.0 each: one skip, then a compute
    assert meta["skipped_steps"] >= 1 and meta["skipped_steps"] + meta["computed_steps"] == 4
    assert tiny_generator.counters.teacache_steps_skipped - before == meta["skipped_steps"]
    assert not np.array_equal(cached.frames, plain.frames)  # a skipped step really changed something
    ref = latents(plain)
    rel = ((latents(cached) - ref).abs().max() / ref.abs().max()).item()
    assert rel < 0.15, rel  # measured 0.03-0.04 (one skipped step of four, 64x64x9 and 64x64x5)


def test_a_mixed_batch_gives_each_member_its_solo_video(tiny_generator):
    reqs = [request(3, thresh=1.5), request(4)]
    worker = BatchWorker(tiny_generator, WorkerConfig(scheduler=SchedulerConfig(max_batch=2), warmup_request=WARM))
    worker.start()
    try:
        listeners = [SyncListener(), SyncListener()]
        for req, lis in zip(reqs, listeners):
            worker.submit(req, listener=lis, notify=False)
        worker.notify()
        results = [lis.wait(60) for lis in listeners]
    finally:
        worker.stop()
    assert [r.metadata["batch_size"] for r in results] == [2, 2]
    assert results[0].metadata["teacache"]["skipped_steps"] >= 1 and "teacache" not in results[1].metadata
    for req, result in zip(reqs, results):
        assert_same_video(result, tiny_generator.generate(req))


def test_with_cuda_graphs_a_computed_step_replays_and_a_skipped_one_replays_nothing(tiny_generator):
    """CPU stand-in graph backend: the captured step keeps its blocks' input/output, so a step where every row
    computes replays the graph (and TeaCache reads the residual there); a skipped step runs no graph."""
    bucket = GraphBucket(width=64, height=64, num_frames=5, cfg=True, batch_sizes=(1,))
    config = WorkerConfig(warmup_request=WARM, executor=ExecutorConfig(graphs=GraphConfig(enabled=True,
                                                                                          buckets=(bucket,))))
    worker = BatchWorker(tiny_generator, config, graph_backend=RecordingGraphBackend())
    worker.start()
    try:
        worker.warmup()
        runner = worker.executor.runner
        replays = runner.stats["replays"]
        plain = worker.generate(request(5))
        zero = worker.generate(request(5, thresh=0.0))
        assert runner.stats["replays"] - replays == 8 and runner.stats["eager_calls"] == 0  # 4 + 4 steps
        replays = runner.stats["replays"]
        cached = worker.generate(request(5, thresh=1.5))
        skipped = cached.metadata["teacache"]["skipped_steps"]
        assert skipped >= 1 and runner.stats["replays"] - replays == 4 - skipped
        worker.executor._split_steps = False  # as with torch.compile on: the graph holds no blocks' output
        with pytest.raises(RequestError) as info:
            worker.generate(request(6, thresh=0.1))
    finally:
        worker.stop()
    assert np.array_equal(zero.frames, plain.frames) and (latents(zero) == latents(plain)).all()
    eager = tiny_generator.generate(request(5, thresh=1.5))  # no graphs: the same decisions and video
    assert eager.metadata["teacache"] == cached.metadata["teacache"]
    assert np.array_equal(cached.frames, eager.frames)
    assert info.value.field == "runtime.enable_teacache" and "torch.compile" in str(info.value)


def test_image_to_video_teacache_threshold_zero_exact_and_skips(fastvideo_cache, tmp_path):
    """The I2V DiT step (image tokens packed after the text states) goes through the same split."""
    from PIL import Image

    from fastvideo import VideoGenerator

    path = str(tmp_path / "in.png")
    Image.new("RGB", (40, 40), (10, 120, 200)).save(path)
    generator = VideoGenerator.from_pretrained("fastvideo-tiny-i2v", device="cpu", dtype="fp32")
    try:
        def run(thresh: float | None):
            req = request(6, thresh, steps=4)
            req["sampling"].update(width=32, height=32)
            req["inputs"] = {"image_path": path}
            return generator.generate(req)

        plain, zero, cached = run(None), run(0.0), run(1.5)
    finally:
        generator.shutdown()
    assert np.array_equal(zero.frames, plain.frames) and zero.metadata["teacache"]["skipped_steps"] == 0
    assert cached.metadata["teacache"]["skipped_steps"] >= 1
    assert not np.array_equal(cached.frames, plain.frames)
