"""LTX-2 served by the one runtime core: ``VideoGenerator`` on the built-in tiny LTX-2 (``fastvideo-tiny-ltx2``).

The family registry picks the ``ltx2`` loader and ``LTX2BatchExecutor``; a generation through the engine core
equals ``load_ltx2_pipeline(folder).generate(...)`` (frames and waveform, same seed; that pipeline's parity with
diffusers' ``LTX2Pipeline`` is tests/engine/test_ltx2_pipeline.py); a returned ``ltx2.v1`` state continues the video
(the continuation branch equals the engine's ``LTX2Request.continuation`` run); progress comes once per step (sync
and async); the result carries the waveform and the MP4 an AAC track of the video's duration; ``fastvideo
generate`` writes such an MP4;
fields LTX-2 cannot honour (Wan-only, not yet supported) and config it cannot honour are refused by name; a batch
of two steps together and equals each solo run (within the batched kernels' rounding).
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import av
import numpy as np
import pytest

from fastvideo.api import ConfigError, RequestError, VideoFinalEvent, VideoProgressEvent
from fastvideo.runtime.media import decode_mp4, decode_mp4_audio

PROMPT = "a fox runs through snow"
STEPS = 2  # the tiny preset's 4 steps cost twice as long and test nothing more


def _request(**sampling: object) -> dict:
    return {"prompt": PROMPT, "sampling": {"seed": 7, "num_inference_steps": STEPS, **sampling},
            "output": {"save_video": False, "return_frames": True}}


def test_registry_picks_the_ltx2_loader_and_executor(ltx2_generator) -> None:
    from fastvideo.engine.models.ltx2.served import LTX2ServedPipeline
    from fastvideo.runtime.ltx2_executor import LTX2BatchExecutor

    assert ltx2_generator.family.name == "ltx2"
    assert isinstance(ltx2_generator.pipeline, LTX2ServedPipeline)
    assert isinstance(ltx2_generator.engine_core().executor, LTX2BatchExecutor)
    assert ltx2_generator.served_branches == ("initial", "continuation")
    assert ltx2_generator.preset.name == "fastvideo-tiny-ltx2"


def test_generate_equals_the_ltx2_pipeline_and_reports_every_step(ltx2_generator) -> None:
    from fastvideo.engine.models.ltx2 import load_ltx2_pipeline

    steps: list[tuple[int, int]] = []
    result = ltx2_generator.generate(_request(), on_step=lambda step, total: steps.append((step, total)))
    assert steps == [(1, STEPS), (2, STEPS)]
    preset = ltx2_generator.preset
    reference = load_ltx2_pipeline(ltx2_generator.model_path, max_sequence_length=preset.text_length)
    frames, waveform, rate = reference.generate(PROMPT, negative_prompt=preset.negative_prompt, width=preset.width,
                                                height=preset.height, num_frames=preset.num_frames, fps=preset.fps,
                                                steps=STEPS, seed=7, guidance=ltx2_generator.pipeline.guidance)
    assert result.frames.shape == frames.shape == (preset.num_frames, preset.height, preset.width, 3)
    assert np.abs(result.frames.astype(np.int16) - frames.astype(np.int16)).max() <= 1
    assert result.audio_sample_rate == rate
    assert result.audio.shape == tuple(waveform.shape) and result.audio.shape[0] == 2
    np.testing.assert_allclose(result.audio, waveform.numpy(), atol=1e-5, rtol=0)
    assert float(np.abs(result.audio).max()) > 0  # a real (random-weight) waveform, not silence
    meta = result.metadata
    assert meta["audio_sample_rate"] == rate and meta["num_inference_steps"] == STEPS and meta["seed"] == 7
    assert ltx2_generator.counters.snapshot()["generations_completed"] >= 1


def test_generate_async_yields_one_progress_event_per_step_then_an_mp4_with_audio(ltx2_generator) -> None:
    async def run() -> list:
        return [event async for event in ltx2_generator.generate_async(_request(seed=11))]

    events = asyncio.run(run())
    progress = [e for e in events if isinstance(e, VideoProgressEvent)]
    assert [e.step for e in progress] == [1, 2] and isinstance(events[-1], VideoFinalEvent)
    result = events[-1].result
    data = result.video_bytes
    frames, fps = decode_mp4(data)
    assert frames.shape[0] == ltx2_generator.preset.num_frames and fps == ltx2_generator.preset.fps
    audio, rate = decode_mp4_audio(data)
    assert rate == result.audio_sample_rate and audio.shape[0] == 2
    with av.open(io.BytesIO(data)) as container:
        video_stream, audio_stream = container.streams.video[0], container.streams.audio[0]
        assert audio_stream.codec_context.name == "aac"
        video_s = float(video_stream.duration * video_stream.time_base)
        audio_s = float(audio_stream.duration * audio_stream.time_base)
    expected = ltx2_generator.preset.num_frames / ltx2_generator.preset.fps
    assert video_s == pytest.approx(expected, abs=1e-3)
    assert audio_s == pytest.approx(expected, abs=1024 / rate + 1e-3)  # within one AAC frame


def test_saved_mp4_has_an_audio_stream(ltx2_generator, tmp_path: Path) -> None:
    target = tmp_path / "fox.mp4"
    result = ltx2_generator.generate({**_request(), "output": {"save_video": True, "output_path": str(target)}})
    assert result.video_path == str(target)
    audio, rate = decode_mp4_audio(target.read_bytes())
    assert rate == result.audio_sample_rate and audio.shape[0] == 2 and audio.shape[1] > 0


@pytest.mark.parametrize("request_fields, field", [
    ({"sampling": {"shift": 5.0}}, "sampling.shift"),
    ({"sampling": {"sampler": "unipc"}}, "sampling.sampler"),
    ({"runtime": {"enable_teacache": True}}, "runtime.enable_teacache"),
    ({"state": {"kind": "wan.v1", "payload": {"schema_version": 1}}}, "state"),
    ({"sampling": {"continuation_strength": 0.5}}, "sampling.continuation_strength"),
    ({"output": {"preview_interval_steps": 1}}, "output.preview_interval_steps"),
    ({"inputs": {"last_image": "cat.png"}}, "inputs.last_image"),
    ({"sampling": {"num_frames": 8}}, "sampling.num_frames"),
    ({"sampling": {"width": 48}}, "sampling.width"),
    ({"sampling": {"guidance_scale_2": 2.0}}, "sampling.guidance_scale_2"),
    ({"sampling": {"num_inference_steps": 1}}, "sampling.num_inference_steps"),  # shift_terminal needs 2+
])
def test_fields_ltx2_cannot_honour_are_refused_by_name(ltx2_generator, request_fields: dict, field: str) -> None:
    with pytest.raises(RequestError) as info:
        ltx2_generator.generate({"prompt": PROMPT, **request_fields})
    assert info.value.field == field


def test_config_ltx2_cannot_honour_is_refused_by_name_before_loading(fastvideo_cache: Path,
                                                                     ltx2_generator) -> None:
    from fastvideo import VideoGenerator

    with pytest.raises(ConfigError) as info:  # (engine.compile and the other offloads: test_ltx2_options.py)
        VideoGenerator.from_config({"model_path": "fastvideo-tiny-ltx2", "engine": {"device": "cpu",
                                    "offload": {"dit": True}}})
    assert info.value.path == "engine.offload.dit" and "LTX-2" in info.value.message
    with pytest.raises(ConfigError) as info:
        VideoGenerator.from_config({"model_path": "fastvideo-tiny-ltx2", "engine": {"device": "cpu"},
                                    "pipeline": {"preset": "wan2.1-t2v-1.3b"}})
    assert info.value.path == "pipeline.preset"
    with pytest.raises(ConfigError, match="is a ltx2 preset"):  # and the reverse: a Wan folder refuses LTX-2 presets
        VideoGenerator.from_config({"model_path": "fastvideo-tiny", "engine": {"device": "cpu"},
                                    "pipeline": {"preset": "ltx2_base"}})
    # LTX-2 serves LoRA (merging, switching, lora_path at load: tests/runtime/test_ltx2_lora_runtime.py); a file that
    # does not exist is refused naming the field, and the generator keeps its weights unmerged
    missing = fastvideo_cache / "no-such-lora.safetensors"
    with pytest.raises(ConfigError) as info:
        ltx2_generator.set_lora_adapter("style", str(missing))
    assert info.value.path == "lora_path" and "does not exist" in info.value.message
    assert ltx2_generator.lora.merged is None


def test_cuda_graphs_without_a_graph_backend_run_the_dit_eagerly(ltx2_generator) -> None:
    """The executor takes a graph config (captured graphs: tests/runtime/test_ltx2_graphs.py); on the CPU with no
    graph backend given it has no runner, captures nothing and the DiT runs eagerly."""
    from fastvideo.runtime.cuda_graphs import GraphBucket, GraphConfig
    from fastvideo.runtime.executor import ExecutorConfig
    from fastvideo.runtime.ltx2_executor import LTX2BatchExecutor

    graphs = GraphConfig(enabled=True, buckets=(GraphBucket(width=32, height=32, num_frames=9, cfg=True,
                                                            batch_sizes=(1,)),))
    executor = LTX2BatchExecutor(ltx2_generator, ExecutorConfig(graphs=graphs))
    assert executor.runner is None and executor.capture_declared() == []


def test_fastvideo_generate_writes_an_mp4_with_audio(fastvideo_cache: Path, tmp_path: Path,
                                                     ltx2_generator) -> None:
    from fastvideo.serving.cli import main

    target = tmp_path / "x.mp4"
    code = main(["generate", "--model", "fastvideo-tiny-ltx2", "--device", "cpu", "--dtype", "fp32", "--prompt",
                 PROMPT, "--steps", str(STEPS), "--seed", "7", "--output", str(target)])
    assert code == 0
    frames, _ = decode_mp4(target.read_bytes())
    audio, rate = decode_mp4_audio(target.read_bytes())
    assert frames.shape[0] == ltx2_generator.preset.num_frames and rate == ltx2_generator.pipeline.sample_rate
    assert audio.shape[0] == 2


def test_closing_the_event_stream_cancels_at_the_next_step(ltx2_generator) -> None:
    import time

    before = ltx2_generator.counters.snapshot().get("generations_cancelled", 0)

    async def run() -> list:
        events = ltx2_generator.generate_async(_request(num_inference_steps=4, seed=13))
        first = await events.__anext__()
        await events.aclose()
        return [first]

    (first,) = asyncio.run(run())
    assert isinstance(first, VideoProgressEvent) and first.step == 1
    deadline = time.monotonic() + 60
    while ltx2_generator.counters.snapshot().get("generations_cancelled", 0) == before:
        assert time.monotonic() < deadline, "the generation was not cancelled"
        time.sleep(0.05)
    # the core goes on serving
    assert ltx2_generator.generate(_request(seed=14)).frames.shape[0] == ltx2_generator.preset.num_frames


def test_a_batch_of_two_steps_together_and_each_equals_its_solo_run(ltx2_generator) -> None:
    """The executor given a two-request batch (what the scheduler may form for one shape) runs both in one DiT call
    per guidance pass, step by step; each result equals that request run alone within the float rounding of the
    batched kernels (frames within one level, waveform <= 1e-5: measured and justified in
    tests/runtime/test_ltx2_batching.py), and progress is per member, in batch order."""
    from fastvideo.runtime.ltx2_executor import LTX2BatchExecutor

    executor = LTX2BatchExecutor(ltx2_generator)
    items = []
    for seed in (21, 22):
        req, resolved = ltx2_generator.resolve(_request(seed=seed))
        item = executor.make_item(req, resolved, need_bytes=False)
        executor.prepare(item)
        items.append(item)
    assert items[0].key == items[1].key
    calls: list[tuple[str, int]] = []
    dropped = executor.denoise(items, lambda item, step, total: calls.append((item.request_id, step)))
    assert dropped == []
    ids = [item.request_id for item in items]
    assert calls == [(ids[0], 1), (ids[1], 1), (ids[0], 2), (ids[1], 2)]
    batched = [executor.finish(item) for item in items]
    for item, result, seed in zip(items, batched, (21, 22)):
        executor.release(item)
        solo = ltx2_generator.generate(_request(seed=seed))
        assert result.metadata["batch_size"] == 2
        assert np.abs(result.frames.astype(np.int16) - solo.frames.astype(np.int16)).max() <= 1
        np.testing.assert_allclose(result.audio, solo.audio, atol=1e-5, rtol=0)


def test_a_returned_state_continues_the_video_as_the_engine_does(ltx2_generator) -> None:
    from dataclasses import replace

    from fastvideo.engine.models.ltx2.state import LTX2ContinuationState

    request = {**_request(seed=31), "output": {"save_video": False, "return_frames": True, "return_state": True}}
    first = ltx2_generator.generate(request)
    assert first.state.kind == "ltx2.v1" and first.metadata["branch"] == "initial"
    wire = first.state.to_dict()  # JSON-safe, as it crosses every edge
    second = ltx2_generator.generate({**request, "sampling": {**request["sampling"], "seed": 32}, "state": wire})
    assert second.metadata["branch"] == "continuation" and second.metadata["segment_index"] == 1
    assert LTX2ContinuationState.from_continuation_state(second.state).segment_index == 1
    state = LTX2ContinuationState.from_continuation_state(first.state)
    assert state.video_frames is not None and np.array_equal(state.video_frames[-1], first.frames[-1])
    pipe = ltx2_generator.pipeline
    req, resolved = ltx2_generator.resolve({**request, "sampling": {**request["sampling"], "seed": 32}})
    out = pipe.components.run(replace(pipe.to_request(req, resolved), continuation=state))
    np.testing.assert_array_equal(second.frames, out.frames)
    np.testing.assert_allclose(second.audio, out.waveform.numpy(), atol=1e-6, rtol=0)
    free = ltx2_generator.generate({**_request(seed=32)})
    assert np.abs(free.frames.astype(np.int16) - second.frames.astype(np.int16)).max() > 0  # the state conditions
    with pytest.raises(RequestError) as info:  # the state's size must be the request's
        ltx2_generator.generate({**request, "sampling": {**request["sampling"], "width": 64}, "state": wire})
    assert info.value.field == "state"
    shifted = replace(state, video_position_offset_sec=0.5).to_continuation_state().to_dict()
    with pytest.raises(RequestError, match="video_position_offset_sec") as info:
        ltx2_generator.generate({**request, "state": shifted})
    assert info.value.field == "state"
