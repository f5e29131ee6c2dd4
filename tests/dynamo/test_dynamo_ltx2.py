"""The Dynamo handler on the built-in tiny LTX-2 (``fastvideo-tiny-ltx2``): the same handler as Wan's, through the
same runtime core; ``b64_json`` and ``url`` outputs are MP4s with an AAC track of the video's duration, progress
chunks come once per step, a field LTX-2 refuses ends in one ``failed`` chunk naming it, and an ``ltx2.v1`` state
returned in ``nvext.continuation_state`` continues the video when sent back."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

import av
import pytest

from fastvideo.runtime.media import decode_mp4, decode_mp4_audio
from fastvideo.serving.dynamo.handler import VideoGenerationHandler
from fastvideo.serving.dynamo.media import MediaStore
from fastvideo.serving.dynamo.protocol import RequestDefaults


def _request(**fields: Any) -> dict[str, Any]:
    nvext = {"num_frames": 9, "num_inference_steps": 2, "fps": 24, "seed": 3, **fields.pop("nvext", {})}
    return {"prompt": "rain on a tin roof", "model": "fastvideo-tiny-ltx2", "size": "32x32",
            "response_format": "b64_json", "nvext": nvext, **fields}


def _collect(handler: VideoGenerationHandler, request: dict[str, Any], context: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        return [chunk async for chunk in handler.generate(request, context)]

    return asyncio.run(run())


def _check_mp4(data: bytes, rate: int) -> None:
    frames, fps = decode_mp4(data)
    assert frames.shape == (9, 32, 32, 3) and fps == 24
    audio, got_rate = decode_mp4_audio(data)
    assert got_rate == rate and audio.shape[0] == 2
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert float(stream.duration * stream.time_base) == pytest.approx(9 / 24, abs=1024 / rate + 1e-3)


def test_b64_and_url_outputs_carry_the_audio_track(ltx2_generator, fake_context, tmp_path: Path) -> None:
    handler = VideoGenerationHandler(ltx2_generator, model_name="fastvideo-tiny-ltx2",
                                     defaults=RequestDefaults(fps=24, response_format="b64_json"),
                                     media=MediaStore(f"file://{tmp_path / 'media'}"), worker_label="ltx2-worker")
    rate = ltx2_generator.pipeline.sample_rate
    chunks = _collect(handler, _request(stream=True), fake_context("ltx2-b64"))
    assert [c["status"] for c in chunks] == ["in_progress"] * 2 + ["completed"], chunks
    assert [c["progress"] for c in chunks] == [49, 99, 100]
    final = chunks[-1]
    assert final["status"] == "completed", final
    _check_mp4(base64.b64decode(final["data"][0]["b64_json"]), rate)

    (chunk,) = _collect(handler, _request(response_format="url"), fake_context("ltx2-url"))
    assert chunk["status"] == "completed", chunk
    url = chunk["data"][0]["url"]
    _check_mp4(Path(url.removeprefix("file://")).read_bytes(), rate)

    (failed,) = _collect(handler, _request(nvext={"guidance_scale_2": 3.0}), fake_context("ltx2-bad"))
    assert failed["status"] == "failed" and "nvext.guidance_scale_2" in failed["error"], failed
    (failed,) = _collect(handler, _request(nvext={"num_frames": 8}), fake_context("ltx2-frames"))
    assert failed["status"] == "failed" and "nvext.num_frames" in failed["error"] and "k*2+1" in failed["error"]


def test_nvext_continuation_state_round_trips_and_continues_the_video(ltx2_generator, fake_context) -> None:
    from fastvideo.api import ContinuationState
    from fastvideo.engine.models.ltx2.state import LTX2ContinuationState

    handler = VideoGenerationHandler(ltx2_generator, model_name="fastvideo-tiny-ltx2",
                                     defaults=RequestDefaults(fps=24, response_format="b64_json"))
    (first,) = _collect(handler, _request(extra_args={"media_passthrough": {"return_state": True}}),
                      fake_context("ltx2-seg0"))
    assert first["status"] == "completed", first.get("error")
    wire_state = first["nvext"]["continuation_state"]
    state = LTX2ContinuationState.from_continuation_state(ContinuationState.from_dict(wire_state))
    assert wire_state["kind"] == "ltx2.v1" and state.segment_index == 0 and state.video_frames

    (second,) = _collect(handler, _request(nvext={"continuation_state": wire_state}), fake_context("ltx2-seg1"))
    assert second["status"] == "completed", second
    _check_mp4(base64.b64decode(second["data"][0]["b64_json"]), ltx2_generator.pipeline.sample_rate)
    following = LTX2ContinuationState.from_continuation_state(
        ContinuationState.from_dict(second["nvext"]["continuation_state"]))
    assert following.segment_index == 1
    # The continued segment is a different video from a fresh one with the same seed: the state conditioned it.
    (fresh,) = _collect(handler, _request(), fake_context("ltx2-fresh"))
    assert second["data"][0]["b64_json"] != fresh["data"][0]["b64_json"]
