"""An ``ltx2.v1`` continuation state sent to a Wan model is refused with a clear error, never run.

Drives the real generator (built-in tiny Wan model) directly and through the Dynamo handler with the
state in ``nvext.continuation_state``: a well-formed LTX-2 state (our encoder's, inline and by blob id)
gets a ``RequestError`` on ``state`` / a ``failed`` chunk saying a Wan model needs ``wan.v1``. And the
state itself round-trips through Dynamo's ``nvext.continuation_state`` (request in, response chunk out,
as JSON) with its frames and bf16 audio latents exact.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import numpy as np
import pytest
import torch

from fastvideo.api import ContinuationState, RequestError
from fastvideo.engine.models.ltx2.state import LTX2ContinuationState
from fastvideo.runtime.stores import InMemoryBlobStore
from fastvideo.serving.dynamo.handler import VideoGenerationHandler
from fastvideo.serving.dynamo.protocol import completed_response, to_generation_request

NEEDLE = "continuation state kind 'ltx2.v1' cannot continue a Wan model (needs 'wan.v1')"
SAMPLING = {"width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2, "guidance_scale": 1.0, "seed": 1}


def _ltx2_state(**kw: Any) -> dict[str, Any]:
    frames = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(2)]
    state = LTX2ContinuationState(segment_index=0, video_frames=frames, audio_sample_rate=24000,
                                  audio_latents=torch.zeros(1, 8, 4, 16, dtype=torch.bfloat16))
    return state.to_continuation_state(**kw).to_dict()


def test_generator_refuses_an_ltx2_state(tiny_generator):
    before = tiny_generator.counters.snapshot()["generations_started"]
    with pytest.raises(RequestError, match=re.escape(NEEDLE)) as info:
        tiny_generator.generate({"prompt": "a lake", "sampling": SAMPLING, "state": _ltx2_state()})
    assert info.value.field == "state"
    assert tiny_generator.counters.snapshot()["generations_started"] == before  # refused before any compute


def test_generator_with_a_blob_store_refuses_a_blob_backed_ltx2_state(tiny_generator):
    store = InMemoryBlobStore()
    saved = (tiny_generator.blob_store, tiny_generator.blob_threshold_bytes, tiny_generator.blob_ttl_s)
    tiny_generator.attach_blob_store(store, threshold_bytes=16)
    try:
        state = _ltx2_state(blob_store=store, inline_threshold_bytes=16)
        assert "blob_id" in state["payload"]["video"] and "blob_id" in state["payload"]["audio"]
        with pytest.raises(RequestError, match=re.escape(NEEDLE)):
            tiny_generator.generate({"prompt": "a lake", "sampling": SAMPLING, "state": state})
    finally:
        tiny_generator.attach_blob_store(saved[0], threshold_bytes=saved[1], ttl_s=saved[2])


def test_dynamo_handler_answers_failed_for_an_ltx2_state(tiny_generator, fake_context):
    handler = VideoGenerationHandler(tiny_generator, model_name="fastvideo-tiny")
    request = {"prompt": "a red fox in snow", "model": "fastvideo-tiny", "size": "64x64",
               "response_format": "b64_json",
               "nvext": {"num_frames": 5, "num_inference_steps": 2, "fps": 8, "seed": 3,
                         "continuation_state": _ltx2_state()}}

    async def run() -> list[dict[str, Any]]:
        return [chunk async for chunk in handler.generate(request, fake_context("ctx-ltx2"))]

    (chunk,) = asyncio.run(run())
    assert chunk["status"] == "failed" and chunk["data"] == []
    assert NEEDLE in chunk["error"], chunk["error"]


def test_ltx2_state_round_trips_through_dynamo_nvext():
    frames = [np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(2)]
    latents = torch.randn(1, 8, 6, 16).to(torch.bfloat16)
    state = LTX2ContinuationState(segment_index=2, video_frames=frames, audio_latents=latents,
                                  audio_sample_rate=24000, audio_conditioning_num_frames=3,
                                  video_position_offset_sec=0.125, metadata={"k": "v"})
    wire = json.loads(json.dumps({"prompt": "a fox", "model": "fastvideo-tiny",
                                  "nvext": {"continuation_state": state.to_continuation_state().to_dict()}}))
    parsed = to_generation_request(wire)
    assert parsed.return_state and parsed.request.state is not None and parsed.request.state.kind == "ltx2.v1"
    chunk = json.loads(json.dumps(completed_response("v", "m", output_format="mp4", url="u",
                                                     continuation_state=parsed.request.state)))
    back = LTX2ContinuationState.from_continuation_state(
        ContinuationState.from_dict(chunk["nvext"]["continuation_state"]))
    assert all(np.array_equal(a, b) for a, b in zip(frames, back.video_frames, strict=True))
    assert back.audio_latents.dtype == torch.bfloat16
    assert torch.equal(back.audio_latents.view(torch.int16), latents.view(torch.int16))
    assert (back.segment_index, back.audio_sample_rate, back.audio_conditioning_num_frames) == (2, 24000, 3)
    assert (back.video_position_offset_sec, back.metadata) == (0.125, {"k": "v"})
