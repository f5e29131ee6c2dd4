"""VideoGenerator on the built-in tiny model: results, determinism, MP4 output, async events, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np
import pytest

from fastvideo import VideoGenerator
from fastvideo.api import (
    GenerationRequest,
    GeneratorConfig,
    OutputConfig,
    RequestError,
    SamplingConfig,
    VideoFinalEvent,
    VideoProgressEvent,
    parse_config,
)
from fastvideo.runtime import generator as generator_module
from fastvideo.runtime.media import decode_mp4

SMALL = {"width": 64, "height": 32, "num_frames": 5, "num_inference_steps": 2}


def small_request(**sampling) -> GenerationRequest:
    return GenerationRequest(prompt="a red fox running through snow",
                             sampling=SamplingConfig(**{**SMALL, "seed": 11, **sampling}))


def test_generate_returns_frames_and_metadata(tiny_generator):
    result = tiny_generator.generate(small_request())
    assert result.frames.shape == (5, 32, 64, 3) and result.frames.dtype == np.uint8
    assert result.video_path is None and result.video_bytes is None
    assert isinstance(result.generation_time, float) and result.generation_time > 0
    timings = result.metadata["timings"]
    assert set(timings) >= {"text_encode_s", "denoise_s", "decode_s"}
    assert all(v >= 0 for v in timings.values())
    assert result.metadata["seed"] == 11 and result.metadata["num_frames"] == 5
    assert result.metadata["inference_time_s"] == pytest.approx(result.generation_time)


def test_same_seed_same_video_other_seed_differs(tiny_generator):
    a = tiny_generator.generate(small_request(seed=5)).frames
    b = tiny_generator.generate(small_request(seed=5)).frames
    c = tiny_generator.generate(small_request(seed=6)).frames
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_mapping_request_and_trimmed_frame_count(tiny_generator):
    result = tiny_generator.generate({"prompt": "rain", "sampling": {**SMALL, "num_frames": 6, "seed": 1}})
    assert result.frames.shape[0] == 6  # 9 generated (next 4k+1), trimmed to what was asked
    assert result.metadata["generated_frames"] == 9


@pytest.mark.parametrize("as_folder", [False, True])
def test_save_video_writes_playable_h264(tiny_generator, tmp_path, as_folder):
    target = tmp_path / "out" if as_folder else tmp_path / "clip.mp4"
    req = small_request(fps=12)
    req.output = OutputConfig(save_video=True, return_frames=True, output_path=str(target))
    result = tiny_generator.generate(req)
    path = Path(result.video_path)
    assert path.exists() and (path.parent == target if as_folder else path == target)
    assert path.name.endswith(".mp4") and not list(path.parent.glob("*.part"))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
    frames, fps = decode_mp4(path.read_bytes())
    assert frames.shape == (5, 32, 64, 3) and fps == 12
    # lossy codec and 4:2:0 chroma on a noise-like random-weight video: compare luma by correlation
    luma = lambda f: (f.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).ravel()  # noqa: E731
    assert np.corrcoef(luma(frames), luma(result.frames))[0, 1] > 0.9


def test_failed_encode_leaves_nothing_at_output(tiny_generator, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(generator_module, "encode_mp4", broken)
    req = small_request()
    req.output = OutputConfig(save_video=True, output_path=str(tmp_path / "v.mp4"))
    with pytest.raises(RuntimeError, match="encoder exploded"):
        tiny_generator.generate(req)
    assert list(tmp_path.iterdir()) == []


def test_generate_async_event_order(tiny_generator):
    async def collect():
        return [event async for event in tiny_generator.generate_async(small_request(num_inference_steps=3))]

    events = asyncio.run(collect())
    progress = [e for e in events if isinstance(e, VideoProgressEvent)]
    finals = [e for e in events if isinstance(e, VideoFinalEvent)]
    assert [e.step for e in progress] == [1, 2, 3] and {e.total_steps for e in progress} == {3}
    assert len(finals) == 1 and events[-1] is finals[0] and len(events) == 4
    assert len({e.request_id for e in events}) == 1
    frames, _ = decode_mp4(finals[0].video_bytes)
    assert frames.shape == (5, 32, 64, 3)
    assert finals[0].metadata["num_inference_steps"] == 3 and finals[0].result is not None


def test_generate_async_close_cancels(tiny_generator):
    before = tiny_generator.counters.snapshot()["generations_cancelled"]

    async def first_only():
        agen = tiny_generator.generate_async(small_request(num_inference_steps=6))
        first = await agen.__anext__()
        await agen.aclose()
        return first

    first = asyncio.run(first_only())
    assert isinstance(first, VideoProgressEvent) and first.step == 1
    for _ in range(200):  # the worker thread stops at its next step
        if tiny_generator.counters.snapshot()["generations_cancelled"] > before:
            break
        asyncio.run(asyncio.sleep(0.05))
    assert tiny_generator.counters.snapshot()["generations_cancelled"] == before + 1


def test_health_check_request(tiny_generator):
    req = VideoGenerator.default_health_check_request()
    s = req.sampling
    assert (s.width, s.height, s.num_frames, s.num_inference_steps) == (256, 256, 8, 1)
    assert req.output.save_video is False
    from fastvideo.api import config_to_dict
    assert parse_config(GenerationRequest, config_to_dict(req)) == req
    result = tiny_generator.generate(req)
    assert result.video_path is None and result.frames is None
    assert result.metadata["num_frames"] == 8


@pytest.mark.parametrize("sampling,field,hint", [
    ({"width": 250}, "sampling.width", "use 240 or 256"),
    ({"height": 8}, "sampling.height", "too small"),
    ({"num_frames": 0}, "sampling.num_frames", "valid counts are 1..129"),
    ({"num_frames": 100000}, "sampling.num_frames", "4k+1"),
    ({"num_inference_steps": 0}, "sampling.num_inference_steps", "1..1000"),
    ({"guidance_scale": -1.0}, "sampling.guidance_scale", "0..50"),
    ({"width": 4096}, "sampling.width", "exceeds"),
])
def test_bad_sampling_rejected(tiny_generator, sampling, field, hint):
    with pytest.raises(RequestError) as err:
        tiny_generator.generate(small_request(**sampling))
    assert err.value.field == field and hint in str(err.value)


def test_bad_requests_rejected(tiny_generator):
    with pytest.raises(RequestError, match="prompt"):
        tiny_generator.generate({"prompt": "   "})
    with pytest.raises(RequestError, match="text-to-video"):
        tiny_generator.generate({"prompt": "x", "inputs": {"image_path": "/tmp/a.png"}})


def test_from_pretrained_forms(tiny_model_dir):
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        VideoGenerator.from_pretrained(str(tiny_model_dir), warp_speed=True)
    with pytest.raises(ValueError, match="unknown preset 'wan9'"):
        VideoGenerator.from_pretrained(str(tiny_model_dir), preset="wan9", device="cpu")
    cfg = GeneratorConfig(model_path=str(tiny_model_dir))
    cfg.engine.device = "cpu"
    for gen in (VideoGenerator.from_config(cfg), VideoGenerator.from_pretrained(config=cfg),
                VideoGenerator.from_pretrained({"model_path": str(tiny_model_dir), "engine": {"device": "cpu"}})):
        assert gen.preset.name == "fastvideo-tiny" and gen.counters.model_loads == 1
        gen.shutdown()
        gen.shutdown()  # idempotent
        with pytest.raises(RuntimeError, match="shut down"):
            gen.generate(small_request())


def test_builtin_model_when_no_path(tiny_model_dir):
    gen = VideoGenerator.from_pretrained(device="cpu")  # uses FASTVIDEO_CACHE_DIR set by conftest
    try:
        assert gen.model_path == tiny_model_dir
    finally:
        gen.shutdown()


def test_generate_runs_through_the_engine_core(tiny_generator):
    """One road: generate and generate_async are clients of the generator's engine core (a BatchWorker), whose
    executor counts every generation; a batch of one, and a failure inside the core reaches the caller typed."""
    from fastvideo.runtime.worker import BatchWorker

    before = tiny_generator.counters.snapshot()
    result = tiny_generator.generate(small_request(seed=11))
    after = tiny_generator.counters.snapshot()
    assert after["generations_started"] - before["generations_started"] == 1
    assert after["generations_completed"] - before["generations_completed"] == 1
    core = tiny_generator.engine_core()
    assert isinstance(core, BatchWorker) and core is tiny_generator.engine_core()
    assert core.executor.graphs is tiny_generator.graph_config()  # engine.cuda_graphs reaches every core
    assert result.metadata["batch_size"] == 1 and result.metadata["queue_s"] >= 0

    async def collect():
        return [e async for e in tiny_generator.generate_async(small_request(seed=11, num_inference_steps=2))]

    events = asyncio.run(collect())
    assert np.array_equal(events[-1].frames, tiny_generator.generate(small_request(seed=11,
                                                                                   num_inference_steps=2)).frames)
    assert tiny_generator.counters.snapshot()["generations_completed"] - after["generations_completed"] == 2


def test_steps_are_reported_to_on_step(tiny_generator):
    seen = []
    tiny_generator.generate(small_request(num_inference_steps=3),
                            on_step=lambda step, total: seen.append((step, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_a_shut_down_generator_refuses_typed(tiny_model_dir):
    from fastvideo.api import FastVideoError
    from fastvideo.runtime.generator import GeneratorClosed

    gen = VideoGenerator.from_pretrained(str(tiny_model_dir), device="cpu")
    gen.generate(small_request())
    core = gen.engine_core()
    gen.shutdown()
    assert not core.dispatcher.started  # the core's threads were stopped
    with pytest.raises(GeneratorClosed, match="shut down") as err:
        gen.generate(small_request())
    assert isinstance(err.value, FastVideoError)


def test_a_request_id_already_in_flight_is_refused_not_lost(tiny_generator):
    """Two direct calls with the same explicit request id at once: the second is refused on ``request_id``
    (the core keeps one item per id), and the first completes."""
    import threading

    started, release = threading.Event(), threading.Event()
    results = []

    def slow_step(step, total):
        started.set()
        release.wait(30)

    from dataclasses import replace

    worker = threading.Thread(target=lambda: results.append(tiny_generator.generate(
        replace(small_request(num_inference_steps=2), request_id="dup-1"), on_step=slow_step)))
    worker.start()
    try:
        assert started.wait(30)
        with pytest.raises(RequestError, match="already queued or running") as err:
            tiny_generator.generate(replace(small_request(), request_id="dup-1"))
        assert err.value.field == "request_id"
    finally:
        release.set()
        worker.join(60)
    assert len(results) == 1 and results[0].request_id == "dup-1"


def test_cuda_graphs_config_is_checked_when_the_generator_loads(tiny_model_dir, tiny_generator):
    """engine.cuda_graphs works (captured by the engine core; GPU suite) or is refused naming the field."""
    from fastvideo.api import ConfigError, CudaGraphsConfig
    from fastvideo.runtime.generator import _graph_config

    with pytest.raises(ConfigError) as err:
        VideoGenerator.from_pretrained({"model_path": str(tiny_model_dir), "engine": {
            "device": "cpu", "cuda_graphs": {"enabled": True}}})
    assert err.value.path == "engine.cuda_graphs.enabled" and "CUDA device" in str(err.value)

    assert _graph_config(CudaGraphsConfig(), tiny_generator).enabled is False
    preset = tiny_generator.preset
    default = _graph_config(CudaGraphsConfig(enabled=True, batch_sizes=[1, 2]), tiny_generator)
    assert default.enabled and [(b.width, b.height, b.num_frames, b.cfg, b.batch_sizes) for b in default.buckets] == \
        [(preset.width, preset.height, preset.num_frames, True, (1, 2))]
    both = _graph_config(CudaGraphsConfig(enabled=True, sizes=["64x32x5"], cfg="both"), tiny_generator)
    assert [(b.width, b.height, b.cfg) for b in both.buckets] == [(64, 32, True), (64, 32, False)]
    for cfg, path, hint in [(CudaGraphsConfig(enabled=True, sizes=["64x32"]), "engine.cuda_graphs.sizes[0]",
                             "WIDTHxHEIGHTxFRAMES"),
                            (CudaGraphsConfig(enabled=True, sizes=["64x64x5", "250x256x5"]),
                             "engine.cuda_graphs.sizes[1]", "not a size this model serves"),
                            (CudaGraphsConfig(enabled=True, batch_sizes=[0]), "engine.cuda_graphs.batch_sizes",
                             ">= 1")]:
        with pytest.raises(ConfigError) as err:
            _graph_config(cfg, tiny_generator)
        assert err.value.path == path and hint in str(err.value)
