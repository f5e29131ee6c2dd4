"""FastVideo's result and event types: every field optional, legacy dict conversions, constructor arguments."""

from __future__ import annotations

import dataclasses

from fastvideo.api import (
    ContinuationState,
    GenerationResult,
    VideoEvent,
    VideoFinalEvent,
    VideoPartialEvent,
    VideoProgressEvent,
    VideoResult,
)

FASTVIDEO_FIELDS = ["prompt", "prompt_index", "samples", "frames", "audio", "audio_sample_rate", "size",
                    "generation_time", "logging_info", "trajectory", "trajectory_timesteps", "trajectory_decoded",
                    "video_path", "peak_memory_mb", "state", "extra"]


def test_generation_result_has_fastvideo_fields_all_optional_and_ours():
    assert VideoResult is GenerationResult
    result = GenerationResult()
    names = [f.name for f in dataclasses.fields(GenerationResult)]
    assert names[:len(FASTVIDEO_FIELDS)] == FASTVIDEO_FIELDS  # FastVideo's order, so positional use works too
    assert {"request_id", "metadata", "video_bytes"} <= set(names)
    assert all(getattr(result, n) is None for n in FASTVIDEO_FIELDS if n != "extra") and result.extra == {}
    assert GenerationResult("a cat", 0).prompt_index == 0


def test_from_legacy_result_and_back():
    state = ContinuationState(kind="wan.v1", payload={"x": 1})
    legacy = {"prompts": "a fox", "samples": "S", "frames": [1], "size": (480, 832, 81), "generation_time": 2.5,
              "e2e_latency": 3.0, "ltx2_audio_latents": None, "video_path": "/o.mp4", "peak_memory_mb": 10.0,
              "state": state}
    result = GenerationResult.from_legacy_result(legacy)
    assert result.prompt == "a fox" and result.samples == "S" and result.size == (480, 832, 81)
    assert result.state is state and result.extra == {"e2e_latency": 3.0, "ltx2_audio_latents": None}
    out = result.to_legacy_dict()
    assert out["prompts"] == "a fox" and out["e2e_latency"] == 3.0 and out["state"] is state
    assert "prompt_index" not in out and "prompt" not in out
    assert set(out) >= {"samples", "frames", "audio", "audio_sample_rate", "size", "generation_time", "logging_info",
                        "trajectory", "trajectory_timesteps", "trajectory_decoded", "video_path", "peak_memory_mb"}
    # "prompt" wins over "prompts"; prompt_index brings prompt back into the dict
    both = GenerationResult.from_legacy_result({"prompt": "p", "prompts": "q", "prompt_index": 2})
    assert both.prompt == "p" and both.to_legacy_dict()["prompt_index"] == 2 and both.to_legacy_dict()["prompt"] == "p"
    assert "state" not in GenerationResult().to_legacy_dict()


def test_events_take_fastvideo_constructor_arguments():
    progress = VideoProgressEvent(3, 50)
    assert (progress.step, progress.total_steps, progress.stage, progress.request_id) == (3, 50, "denoise", None)
    partial = VideoPartialEvent("frames", 0)
    assert partial.frames == "frames" and partial.index == 0
    result = GenerationResult(samples="tensor")
    final = VideoFinalEvent(b"mp4", None, "frames", {"generation_time": 1.0}, None, result)
    assert final.tensor == "tensor" and final.video_bytes == b"mp4" and final.result is result  # tensor from result
    assert VideoFinalEvent().metadata == {} and VideoFinalEvent().tensor is None
    ours = VideoProgressEvent(step=1, total_steps=2, request_id="r", elapsed_s=0.5)
    assert ours.request_id == "r" and ours.elapsed_s == 0.5
    assert all(isinstance(e, VideoEvent) for e in (progress, partial, final))
