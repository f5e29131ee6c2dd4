"""The Dynamo handler on the built-in tiny model with Dynamo-shaped requests and a fake context.

No Dynamo runtime is needed: this drives ``VideoGenerationHandler.generate(request, context)`` the
way Dynamo's endpoint does and checks the chunks (one for non-stream, progress + final for stream,
``failed`` with a clear error for bad input), cancellation, and one-in-flight serialization.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path
from typing import Any

import av
import pytest

from fastvideo.serving.dynamo.handler import VideoGenerationHandler
from fastvideo.serving.dynamo.health import default_health_check_payload, health_check_payload
from fastvideo.serving.dynamo.media import MediaStore
from fastvideo.serving.dynamo.protocol import RequestDefaults

SMALL = {"num_frames": 5, "num_inference_steps": 2, "fps": 8, "seed": 3}


def _request(**fields: Any) -> dict[str, Any]:
    nvext = {**SMALL, **fields.pop("nvext", {})}
    return {"prompt": "a red fox in snow", "model": "fastvideo-tiny", "size": "64x64",
            "response_format": "b64_json", "nvext": nvext, **fields}


def _collect(handler: VideoGenerationHandler, request: dict[str, Any], context: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        return [chunk async for chunk in handler.generate(request, context)]

    return asyncio.run(run())


def _decode(data: bytes) -> tuple[int, int, int]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return frames, stream.codec_context.width, stream.codec_context.height


@pytest.fixture
def handler(tiny_generator, tmp_path: Path) -> VideoGenerationHandler:
    return VideoGenerationHandler(tiny_generator, model_name="fastvideo-tiny",
                                  defaults=RequestDefaults(fps=16, response_format="url"),
                                  media=MediaStore(f"file://{tmp_path / 'media'}"), worker_label="test-worker")


def test_non_stream_b64_is_exactly_one_playable_chunk(handler, fake_context):
    chunks = _collect(handler, _request(), fake_context("ctx-b64"))
    assert len(chunks) == 1
    chunk = chunks[0]
    assert (chunk["id"], chunk["object"], chunk["status"], chunk["progress"]) == ("video-ctx-b64", "video",
                                                                                   "completed", 100)
    assert chunk["model"] == "fastvideo-tiny" and isinstance(chunk["created"], int)
    assert chunk["inference_time_s"] > 0 and chunk.get("error") is None
    (item,) = chunk["data"]
    assert item["output_format"] == "mp4" and "url" not in item
    assert _decode(base64.b64decode(item["b64_json"])) == (5, 64, 64)


def test_url_writes_the_mp4_through_fsspec(handler, fake_context, tmp_path: Path):
    (chunk,) = _collect(handler, _request(response_format="url"), fake_context("ctx-url"))
    url = chunk["data"][0]["url"]
    assert url == f"file://{tmp_path / 'media' / 'video-ctx-url.mp4'}"
    assert _decode(Path(url[len("file://"):]).read_bytes()) == (5, 64, 64)


def test_default_response_format_is_url(handler, fake_context):
    request = _request()
    del request["response_format"]
    (chunk,) = _collect(handler, request, fake_context("ctx-default"))
    assert chunk["status"] == "completed" and "url" in chunk["data"][0]


def test_stream_yields_progress_per_step_then_the_final(handler, fake_context):
    chunks = _collect(handler, _request(stream=True, nvext={"num_inference_steps": 3}), fake_context("ctx-s"))
    assert [c["status"] for c in chunks] == ["in_progress"] * 3 + ["completed"]
    progress = [c["progress"] for c in chunks]
    assert progress == sorted(progress) and progress[-1] == 100 and progress[-2] < 100
    assert all(c["id"] == "video-ctx-s" and c["data"] == [] for c in chunks[:-1])


@pytest.mark.parametrize("request_fields,needle", [
    ({"prompt": ""}, "prompt: is required"),
    ({"size": "big"}, "size:"),
    ({"size": "65x64"}, "sampling.width: 65 is not a multiple of 16"),
    ({"nvext": {"num_frames": 100000}}, "sampling.num_frames: 100000 frames cannot be generated"),
    ({"extra_args": {"media_passthrough": {"checkpoint": "x"}}}, "unknown request field(s) ['checkpoint']"),
    ({"input_reference": "/tmp/ref.png"}, "inputs.image_path"),
    ({"response_format": "gif"}, "response_format"),
])
def test_bad_requests_end_with_one_failed_chunk(handler, fake_context, request_fields, needle):
    chunks = _collect(handler, _request(**request_fields), fake_context("ctx-bad"))
    assert len(chunks) == 1
    chunk = chunks[0]
    assert chunk["status"] == "failed" and chunk["data"] == [] and chunk["id"] == "video-ctx-bad"
    assert needle in chunk["error"], chunk["error"]


def test_failures_are_counted_and_the_worker_keeps_serving(handler, fake_context):
    _collect(handler, _request(size="nope"), fake_context("a"))
    (ok,) = _collect(handler, _request(), fake_context("b"))
    assert ok["status"] == "completed" and handler.failed == 1 and handler.completed == 1


@pytest.mark.parametrize("with_async_wait", [True, False])
def test_context_stop_cancels_a_running_generation(handler, fake_context, with_async_wait):
    context = fake_context("ctx-cancel", with_async_wait=with_async_wait)

    async def run() -> tuple[list[dict[str, Any]], float]:
        chunks = []
        started = time.perf_counter()
        async for chunk in handler.generate(_request(stream=True, nvext={"num_inference_steps": 400}), context):
            chunks.append(chunk)
            if len(chunks) == 1:
                context.stop()
        return chunks, time.perf_counter() - started

    chunks, elapsed = asyncio.run(run())
    assert chunks[-1]["status"] == "failed" and "cancelled" in chunks[-1]["error"]
    assert all(c["status"] == "in_progress" for c in chunks[:-1]) and len(chunks) < 400
    assert handler.cancelled == 1 and elapsed < 30
    (after,) = _collect(handler, _request(), fake_context("ctx-after"))  # the worker is free again
    assert after["status"] == "completed"


def test_closing_the_stream_cancels_the_generation(handler, fake_context):
    async def run() -> float:
        stream = handler.generate(_request(stream=True, nvext={"num_inference_steps": 400}), fake_context("c"))
        first = await stream.__anext__()
        assert first["status"] == "in_progress"
        started = time.perf_counter()
        await stream.aclose()  # what Dynamo does when it drops the response stream
        # The next request gets the (one-in-flight) worker promptly: the first generation stopped.
        chunks = [c async for c in handler.generate(_request(), fake_context("d"))]
        assert chunks[-1]["status"] == "completed"
        return time.perf_counter() - started

    assert asyncio.run(run()) < 30
    assert handler.cancelled == 1


def test_a_stopped_request_waiting_for_the_worker_is_dropped(handler, fake_context):
    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        first_ctx, second_ctx = fake_context("first"), fake_context("second")
        first = asyncio.ensure_future(_agen_list(handler.generate(_request(nvext={"num_inference_steps": 60}),
                                                                  first_ctx)))
        await asyncio.sleep(0.2)
        second = asyncio.ensure_future(_agen_list(handler.generate(_request(), second_ctx)))
        await asyncio.sleep(0.1)
        second_ctx.stop()
        return await first, await second

    first, second = asyncio.run(run())
    assert first[-1]["status"] == "completed"
    assert second == [second[0]] and second[0]["status"] == "failed" and "before it started" in second[0]["error"]


async def _agen_list(agen: Any) -> list[dict[str, Any]]:
    return [item async for item in agen]


class _SpyGenerator:
    """Delegates to the real generator and records how many generations overlap."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.active = 0
        self.max_active = 0

    async def generate_async(self, request: Any):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            async for event in self.inner.generate_async(request):
                yield event
        finally:
            self.active -= 1


def test_generation_is_one_in_flight(tiny_generator, fake_context):
    spy = _SpyGenerator(tiny_generator)
    handler = VideoGenerationHandler(spy, model_name="fastvideo-tiny")  # type: ignore[arg-type]

    async def run() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(_agen_list(handler.generate(_request(), fake_context(f"c{i}")))
                                      for i in range(3)))

    results = asyncio.run(run())
    assert [r[-1]["status"] for r in results] == ["completed"] * 3
    assert spy.max_active == 1


def test_health_payload_is_built_from_the_public_default_request(tiny_generator, fake_context, monkeypatch):
    monkeypatch.delenv("DYN_HEALTH_CHECK_PAYLOAD", raising=False)
    payload = health_check_payload("fastvideo-tiny")
    assert payload == default_health_check_payload("fastvideo-tiny")
    assert payload["size"] == "256x256" and payload["response_format"] == "b64_json"
    assert payload["nvext"]["num_frames"] == 8 and payload["nvext"]["num_inference_steps"] == 1
    handler = VideoGenerationHandler(tiny_generator, model_name="fastvideo-tiny", health_payload=payload)
    _collect(handler, payload, fake_context("warm"))
    started = time.perf_counter()
    (chunk,) = _collect(handler, payload, fake_context("probe"))
    elapsed = time.perf_counter() - started
    assert chunk["status"] == "completed"
    # Dynamo's canary gives up after 3 s (DYN_HEALTH_CHECK_REQUEST_TIMEOUT); about 1.2 s on 2 idle CPU cores.
    assert elapsed < 3.0, f"health-check request took {elapsed:.2f}s, over Dynamo's 3 s canary timeout"


def test_health_payload_env_override(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("DYN_HEALTH_CHECK_PAYLOAD", '{"prompt": "ping", "model": "m"}')
    assert health_check_payload("m") == {"prompt": "ping", "model": "m"}
    path = tmp_path / "payload.json"
    path.write_text('{"prompt": "file"}')
    monkeypatch.setenv("DYN_HEALTH_CHECK_PAYLOAD", f"@{path}")
    assert health_check_payload("m") == {"prompt": "file"}
    monkeypatch.setenv("DYN_HEALTH_CHECK_PAYLOAD", "[1, 2]")
    assert health_check_payload("m") == default_health_check_payload("m")


def test_media_store_urls(tmp_path: Path):
    store = MediaStore(f"file://{tmp_path}/out", "https://cdn.example.com/videos/")
    assert asyncio.run(store.put("a.mp4", b"data")) == "https://cdn.example.com/videos/a.mp4"
    assert (tmp_path / "out" / "a.mp4").read_bytes() == b"data"
    memory = MediaStore("memory://fastvideo-test")
    assert asyncio.run(memory.put("b.mp4", b"x")) == "memory://fastvideo-test/b.mp4"
    for bad in ("", "../x.mp4", "a/b.mp4"):
        with pytest.raises(ValueError):
            asyncio.run(store.put(bad, b""))
    with pytest.raises(ValueError, match="not a URL"):
        MediaStore("/tmp/x")
