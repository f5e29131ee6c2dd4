"""Contract: a Dynamo-style handler built only on public ``fastvideo`` / ``fastvideo.api`` symbols.

Mirrors the shape of Dynamo's video backend: NvCreateVideoRequest dict -> GenerationRequest ->
VideoGenerator -> NvVideosResponse chunk (b64_json), with continuation state round-tripped through
``nvext``. If a refactor forces the adapter to reach into a private module, this test fails.
"""

from __future__ import annotations

import ast
import asyncio
import base64
from pathlib import Path
from typing import Any

from fastvideo import VideoGenerator
from fastvideo.api import (
    ContinuationState,
    GenerationRequest,
    InputConfig,
    OutputConfig,
    SamplingConfig,
    VideoFinalEvent,
    VideoProgressEvent,
    config_to_dict,
)

PUBLIC_MODULES = {"fastvideo", "fastvideo.api"}


class _FakeContext:
    def __init__(self) -> None:
        self.stopped = False

    def is_stopped(self) -> bool:
        return self.stopped


def _parse_size(size: str | None) -> tuple[int | None, int | None]:
    if not size:
        return None, None
    width, height = size.lower().split("x")
    return int(width), int(height)


def nv_request_to_generation_request(request: dict[str, Any]) -> GenerationRequest:
    """Dynamo's request shape -> FastVideo's typed request, public symbols only."""
    nvext = request.get("nvext") or {}
    width, height = _parse_size(request.get("size"))
    fps = nvext.get("fps") or 24
    num_frames = nvext.get("num_frames") or (request.get("seconds") or 4) * fps
    state = nvext.get("continuation_state")
    if isinstance(state, dict):
        state = ContinuationState(kind=state["kind"], payload=state["payload"])
    return GenerationRequest(
        prompt=request["prompt"], negative_prompt=nvext.get("negative_prompt"),
        inputs=InputConfig(image_path=request.get("input_reference")),
        sampling=SamplingConfig(width=width, height=height, num_frames=num_frames, fps=fps,
                                num_inference_steps=nvext.get("num_inference_steps", 50),
                                guidance_scale=nvext.get("guidance_scale", 1.0), seed=nvext.get("seed", 1024),
                                true_cfg_scale=nvext.get("true_cfg_scale")),
        output=OutputConfig(save_video=False, return_frames=False), state=state)


class StreamingHandler:
    """The post-7.10 handler: forwards progress, then one final chunk."""

    def __init__(self, generator: VideoGenerator) -> None:
        self.generator = generator

    async def generate(self, request: dict[str, Any], context: _FakeContext):
        req = nv_request_to_generation_request(request)
        async for event in self.generator.generate_async(req):
            if isinstance(event, VideoProgressEvent):
                yield {"status": "in_progress", "progress": event.step / event.total_steps}
            elif isinstance(event, VideoFinalEvent):
                yield {"status": "completed", "model": request["model"],
                       "data": [{"b64_json": base64.b64encode(event.video_bytes).decode()}],
                       "inference_time_s": event.metadata.get("inference_time_s")}


class _MockStateHandler:
    """Echoes the request's continuation state back under nvext (the disaggregation slot)."""

    async def generate(self, request: dict[str, Any], context: _FakeContext):
        req = nv_request_to_generation_request(request)
        state = req.state
        yield {"data": [{"b64_json": "abc"}],
               "nvext": {"continuation_state": None if state is None else config_to_dict(state)}}


def _dynamo_request(**nvext: Any) -> dict[str, Any]:
    return {"prompt": "a red fox", "model": "fastvideo-tiny", "size": "64x32", "seconds": 1,
            "response_format": "b64_json", "nvext": {"fps": 5, "num_inference_steps": 2, "seed": 3, **nvext}}


def test_request_translation():
    req = nv_request_to_generation_request(_dynamo_request(num_frames=9, guidance_scale=4.0,
                                                           negative_prompt="blur"))
    assert (req.sampling.width, req.sampling.height, req.sampling.num_frames) == (64, 32, 9)
    assert req.sampling.guidance_scale == 4.0 and req.negative_prompt == "blur"
    assert nv_request_to_generation_request(_dynamo_request()).sampling.num_frames == 5  # seconds * fps


def test_streaming_handler_with_real_generator(tiny_generator):
    async def run():
        return [chunk async for chunk in StreamingHandler(tiny_generator).generate(_dynamo_request(),
                                                                                     _FakeContext())]

    chunks = asyncio.run(run())
    assert [c["status"] for c in chunks] == ["in_progress", "in_progress", "completed"]
    video = base64.b64decode(chunks[-1]["data"][0]["b64_json"])
    assert video[4:8] == b"ftyp"
    assert chunks[-1]["inference_time_s"] > 0


def test_health_payload_from_public_api():
    req = VideoGenerator.default_health_check_request()
    payload = {"prompt": req.prompt or "test", "size": f"{req.sampling.width}x{req.sampling.height}",
               "response_format": "b64_json",
               "nvext": {"fps": req.sampling.fps, "num_frames": req.sampling.num_frames,
                         "num_inference_steps": req.sampling.num_inference_steps,
                         "guidance_scale": req.sampling.guidance_scale}}
    back = nv_request_to_generation_request({**payload, "model": "m"})
    assert (back.sampling.width, back.sampling.height, back.sampling.num_frames) == (256, 256, 8)


def test_handler_serializes_state_back_to_nvext():
    state_in = {"kind": "ltx2.v1", "payload": {"schema_version": 1, "segment_index": 4}}

    async def run():
        async for chunk in _MockStateHandler().generate(_dynamo_request(continuation_state=state_in), _FakeContext()):
            return chunk
        raise AssertionError("no chunk emitted")

    chunk = asyncio.run(run())
    assert chunk["nvext"]["continuation_state"]["kind"] == "ltx2.v1"
    assert chunk["nvext"]["continuation_state"]["payload"]["segment_index"] == 4


def test_adapter_imports_only_public_surface():
    tree = ast.parse(Path(__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    ours = {m for m in imported if m.split(".")[0] == "fastvideo"}
    assert ours and ours <= PUBLIC_MODULES, f"private imports: {sorted(ours - PUBLIC_MODULES)}"
