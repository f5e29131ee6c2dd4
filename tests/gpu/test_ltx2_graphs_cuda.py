"""LTX-2 under real CUDA graphs (``torch.cuda.CUDAGraph``): the built-in tiny LTX-2 in fp32 on the GPU.

- Executor: ``capture_declared`` captures the preset size for both branches, batch 1 and 2, each DiT call of a step
  (main CFG rows, STG, modality: 12 graphs); a batch of two text-to-video requests and then a batch of two
  continuations replay a graph for every call (no eager call), and their latents equal the eager executor's
  exactly (a replay runs the captured kernels on the same shapes and values).
- Config: ``engine.cuda_graphs`` alone on an LTX-2 model (the family no longer refuses it): the generator's engine
  core captures at start and ``generate`` replays (refused off CUDA, as for every model).

Skipped without CUDA unless rehearsed on the CPU (``FASTVIDEO_GPU_REHEARSAL=1``: the recording graph backend).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

STEPS = 2
PASSES = 3  # main, STG, modality: the tiny preset's guidance


@pytest.fixture(scope="module")
def ltx2_gpu_generator(gpu):
    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained("fastvideo-tiny-ltx2", device=str(gpu.device), dtype="fp32")
    yield generator
    generator.shutdown()


def _request(seed: int, state: dict | None = None) -> dict:
    req = {"prompt": "a fox runs through snow", "sampling": {"seed": seed, "num_inference_steps": STEPS},
           "output": {"save_video": False, "return_frames": True}}
    if state is not None:
        req["state"] = state
    return req


def _denoise(generator, executor, requests) -> list:
    items = []
    for request in requests:
        req, resolved = generator.resolve(request)
        item = executor.make_item(req, resolved, need_bytes=False)
        executor.prepare(item)
        items.append(item)
    assert executor.denoise(items, lambda *args: None) == []
    return items


def test_ltx2_cuda_graphs_replay_equals_eager_for_both_branches(gpu, ltx2_gpu_generator) -> None:
    from fastvideo.engine.models.ltx2.state import LTX2ContinuationState
    from fastvideo.runtime.cuda_graphs import GraphBucket, GraphConfig
    from fastvideo.runtime.executor import ExecutorConfig
    from fastvideo.runtime.ltx2_executor import LTX2BatchExecutor

    generator = ltx2_gpu_generator
    preset = generator.preset
    bucket = GraphBucket(width=preset.width, height=preset.height, num_frames=preset.num_frames, cfg=True,
                         batch_sizes=(1, 2))
    executor = LTX2BatchExecutor(generator, ExecutorConfig(graphs=GraphConfig(enabled=True, buckets=(bucket,))),
                                 graph_backend=gpu.graph_backend())
    labels = executor.capture_declared()
    runner = executor.runner
    assert len(labels) == 12 and runner.stats["capture_failures"] == 0, runner.failed
    eager = LTX2BatchExecutor(generator)
    frames = generator.pipeline.components.vae.temporal_compression_ratio + 1
    rng = np.random.default_rng(0)
    state = LTX2ContinuationState(video_frames=[rng.integers(0, 256, (preset.height, preset.width, 3),
                                                             dtype=np.uint8) for _ in range(frames)])
    wire = state.to_continuation_state().to_dict()
    for requests in ([_request(1), _request(2)], [_request(3, wire), _request(4, wire)]):
        replays = runner.stats["replays"]
        graphed = _denoise(generator, executor, requests)
        gpu.synchronize()
        assert runner.stats["replays"] - replays == STEPS * PASSES and runner.stats["eager_calls"] == 0
        reference = _denoise(generator, eager, requests)
        for g_item, e_item in zip(graphed, reference):
            assert torch.equal(g_item.ctx.state.latents, e_item.ctx.state.latents)
            assert torch.equal(g_item.ctx.state.audio_latents, e_item.ctx.state.audio_latents)


def test_ltx2_cuda_graphs_from_engine_config(gpu, ltx2_gpu_generator) -> None:
    from fastvideo import VideoGenerator
    from fastvideo.api import ConfigError

    config = {"model_path": "fastvideo-tiny-ltx2", "engine": {"device": str(gpu.device), "dtype": "fp32",
                                                              "cuda_graphs": {"enabled": True}}}
    if gpu.rehearsal:
        with pytest.raises(ConfigError, match="CUDA device"):
            VideoGenerator.from_config(config)
        return
    generator = VideoGenerator.from_config(config)
    try:
        got = generator.generate(_request(7))
        counters = generator.counters.snapshot()
        assert counters["graph_captures"] == 2 * PASSES  # both branches, batch 1, each call of a step
        assert counters["graph_replays"] == STEPS * PASSES
    finally:
        generator.shutdown()
    reference = ltx2_gpu_generator.generate(_request(7))
    np.testing.assert_array_equal(got.frames, reference.frames)
    np.testing.assert_allclose(got.audio, reference.audio, atol=1e-6, rtol=0)
