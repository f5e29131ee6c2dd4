"""Image-to-video through the Dynamo handler: ``input_reference`` (a path the worker can read) becomes
``inputs.image_path`` on the built-in tiny I2V model; an I2V request without one fails naming the field."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

import av

from fastvideo.serving.dynamo.handler import VideoGenerationHandler
from fastvideo.serving.dynamo.media import MediaStore
from fastvideo.serving.dynamo.protocol import RequestDefaults


def _collect(handler: VideoGenerationHandler, request: dict[str, Any], context: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        return [chunk async for chunk in handler.generate(request, context)]

    return asyncio.run(run())


def test_input_reference_gives_image_to_video(i2v_generator, tmp_path: Path, fake_context):
    from PIL import Image

    handler = VideoGenerationHandler(i2v_generator, model_name="fastvideo-tiny-i2v",
                                     defaults=RequestDefaults(fps=16, response_format="b64_json"),
                                     media=MediaStore(f"file://{tmp_path / 'media'}"), worker_label="test-worker")
    image = tmp_path / "in.png"
    Image.new("RGB", (48, 40), (30, 160, 60)).save(image)
    request = {"prompt": "a cat", "model": "fastvideo-tiny-i2v", "size": "64x64", "response_format": "b64_json",
               "input_reference": str(image), "nvext": {"num_frames": 5, "num_inference_steps": 2, "seed": 3}}
    (chunk,) = _collect(handler, request, fake_context("ctx-i2v"))
    assert chunk["status"] == "completed", chunk
    (item,) = chunk["data"]
    with av.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 5
    request.pop("input_reference")
    (failed,) = _collect(handler, request, fake_context("ctx-no-image"))
    assert failed["status"] == "failed" and "input_reference" in str(failed["error"]), failed
