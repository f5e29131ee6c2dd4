"""Wan2.2 TI2V through the engine core on the built-in tiny TI2V model: a text-only member and an image member in
one batch (a step holding per-token timesteps for every row) each equal their solo runs, the image member's
decoded latents carry its clean first frame, and a preview of the image member is decoded with that frame too.

Tolerance (fp32, CPU): latents within ``core_testing.LATENT_TOL`` (batched matmuls sum in another order).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from core_testing import LATENT_TOL, core_latents
from fastvideo.api import GenerationRequest, InputConfig, OutputConfig, SamplingConfig
from fastvideo.runtime.executor import WanBatchExecutor


@pytest.fixture(scope="module")
def ti2v_generator(fastvideo_cache: Any) -> Any:
    from fastvideo import VideoGenerator
    from fastvideo.engine.builtin_model import ensure_builtin_model

    generator = VideoGenerator.from_pretrained(str(ensure_builtin_model(fastvideo_cache, "fastvideo-tiny-ti2v")),
                                               device="cpu", dtype="fp32")
    yield generator
    generator.shutdown()


def _image() -> Any:
    from PIL import Image

    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 255, (48, 80, 3)).astype("uint8"))


def _request(seed: int, image: Any = None, preview: int | None = None) -> GenerationRequest:
    return GenerationRequest(prompt=f"a fox {seed}", inputs=InputConfig(pil_image=image),
                             sampling=SamplingConfig(width=64, height=64, num_frames=5, num_inference_steps=3,
                                                     guidance_scale=5.0, seed=seed),
                             output=OutputConfig(preview_interval_steps=preview))


class _Previews:
    """A PreviewSink that keeps every partial event."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, item: Any, step: int, total: int) -> None:
        pass

    def wants_partial(self, item: Any) -> bool:
        return True

    def partial(self, item: Any, event: Any) -> None:
        self.events.append(event)


def test_text_and_image_members_batch_together_exactly(ti2v_generator: Any) -> None:
    image = _image()
    requests = [_request(7), _request(8, image, preview=1)]
    executor = WanBatchExecutor(ti2v_generator)
    items = []
    for request in requests:
        req, resolved = ti2v_generator.resolve(request)
        assert resolved.workload == "ti2v"
        item = executor.make_item(req, resolved)
        executor.prepare(item)
        items.append(item)
    assert len({item.key for item in items}) == 1  # one bucket: the image does not split the batch
    calls: list[tuple[int, ...]] = []
    dit = ti2v_generator.pipeline.dit
    original = dit.embed

    def spy(latents: torch.Tensor, timestep: torch.Tensor, *rest: Any) -> Any:
        calls.append(tuple(timestep.shape))
        return original(latents, timestep, *rest)

    dit.embed = spy  # type: ignore[method-assign]
    sink = _Previews()
    try:
        dropped = executor.denoise(items, sink)
    finally:
        del dit.embed
    assert dropped == []
    tokens = 2 * 2 * 2  # 2 latent frames x (64 / 16 / 2)^2
    assert calls == [(4, tokens)] * 3  # cond + uncond rows of both members, per token at every step
    first = items[1].ctx.first_frame
    assert first is not None and items[0].ctx.first_frame is None
    torch.testing.assert_close(items[1].ctx.latents[:, :, :1], first, rtol=0, atol=0)
    for item, request in zip(items, requests):
        solo, _ = core_latents(ti2v_generator, request)
        err = (item.ctx.latents - solo).abs().max().item()
        assert err <= LATENT_TOL, f"{item.request_id}: batched vs solo {err:.2e}"
    # previews: the image member's, after steps 1 and 2 (not after the last), decoded with its clean first frame
    assert [e.step for e in sink.events] == [1, 2]
    assert all(e.frames.shape == (5, 64, 64, 3) for e in sink.events)


def test_graphs_capture_both_timestep_forms_and_replay_exactly(ti2v_generator: Any) -> None:
    """CUDA graphs (CPU stand-in backend): each declared bucket is captured with the plain and the per-token
    timestep, so text-only and image requests both replay, and equal their eager runs exactly."""
    from fastvideo.runtime.cuda_graphs import GraphBucket, GraphConfig, RecordingGraphBackend
    from fastvideo.runtime.executor import ExecutorConfig
    from fastvideo.runtime.worker import BatchWorker, WorkerConfig

    warm = GenerationRequest(prompt="warm", sampling=SamplingConfig(width=64, height=64, num_frames=5,
                                                                    num_inference_steps=1, guidance_scale=5.0,
                                                                    seed=0), output=OutputConfig(return_frames=False))
    graphs = ExecutorConfig(graphs=GraphConfig(enabled=True, buckets=(GraphBucket(width=64, height=64, num_frames=5,
                                                                                  cfg=True, batch_sizes=(1,)),)))
    worker = BatchWorker(ti2v_generator, WorkerConfig(warmup_request=warm, executor=graphs),
                         graph_backend=RecordingGraphBackend())
    worker.start()
    try:
        info = worker.warmup()
        assert info["graphs"] == ["64x64x5/initial/b1/cfg", "64x64x5/initial/b1/cfg/per-token"]
        runner = worker.executor.runner
        replays = runner.stats["replays"]
        replayed = [worker.generate(_request(9)), worker.generate(_request(9, _image()))]
        assert runner.stats["replays"] - replays == 6 and runner.stats["eager_calls"] == 0
    finally:
        worker.stop()
    for got, request in zip(replayed, (_request(9), _request(9, _image()))):
        assert np.array_equal(got.frames, ti2v_generator.generate(request).frames)  # replay == eager, exactly
