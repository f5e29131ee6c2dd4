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

from fastvideo.serving.dynamo.handler import HealthCheckFailed, VideoGenerationHandler
from fastvideo.serving.dynamo.health import (
    HEALTH_CHECK_KEY,
    HealthPolicy,
    default_health_check_payload,
    health_check_payload,
    is_health_check,
)
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
    before = handler.generator.counters.snapshot()
    chunks = _collect(handler, _request(), fake_context("ctx-b64"))
    after = handler.generator.counters.snapshot()
    # the worker runs the generator's engine core: its executor (the one denoising loop) counted the request
    assert after["generations_started"] - before["generations_started"] == 1
    assert after["generations_completed"] - before["generations_completed"] == 1
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
    ({"size": "65x64"}, "size: 65 is not a multiple of 16"),  # the engine's check, named as the client sent it
    ({"nvext": {"num_frames": 100000}}, "nvext.num_frames: 100000 frames cannot be generated"),
    ({"nvext": {"num_inference_steps": 0}}, "nvext.num_inference_steps: 0 is out of range; use 1..1000"),
    ({"extra_args": {"media_passthrough": {"checkpoint": "x"}}}, "unknown request field(s) ['checkpoint']"),
    ({"input_reference": "/tmp/ref.png"}, "input_reference: model 'fastvideo-tiny' is text-to-video"),
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


class _GatedGenerator:
    """Delegates to the real generator, but each generation first waits until ``gate`` is set.

    While a generation waits at the gate it holds the worker and has made no progress, which makes
    "a request queued behind a running one" deterministic instead of a race against a fast CPU.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate: asyncio.Event | None = None
        self.entered = 0

    async def generate_async(self, request: Any):
        if self.gate is None:
            self.gate = asyncio.Event()
        self.entered += 1
        await self.gate.wait()
        async for event in self.inner.generate_async(request):
            yield event


async def _until(predicate: Any, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_a_stopped_request_waiting_for_the_worker_is_dropped(tiny_generator, fake_context):
    gated = _GatedGenerator(tiny_generator)
    handler = VideoGenerationHandler(gated, model_name="fastvideo-tiny")  # type: ignore[arg-type]

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        first_ctx, second_ctx = fake_context("first"), fake_context("second")
        first = asyncio.ensure_future(_agen_list(handler.generate(_request(), first_ctx)))
        await _until(lambda: gated.entered == 1)  # the first request holds the worker
        second = asyncio.ensure_future(_agen_list(handler.generate(_request(), second_ctx)))
        await _until(lambda: handler._waiting == 1)  # the second waits for it
        second_ctx.stop()
        second_chunks = await second  # answered while the first still holds the worker
        assert gated.gate is not None
        gated.gate.set()
        return await first, second_chunks

    first, second = asyncio.run(run())
    assert first[-1]["status"] == "completed"
    assert second == [second[0]] and second[0]["status"] == "failed" and "before it started" in second[0]["error"]
    assert gated.entered == 1, "the stopped request must never reach the generator"
    assert (handler.completed, handler.cancelled) == (1, 1)


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


def test_health_payload_is_built_from_the_public_default_request(monkeypatch):
    monkeypatch.delenv("DYN_HEALTH_CHECK_PAYLOAD", raising=False)
    payload = health_check_payload("fastvideo-tiny")
    assert payload == default_health_check_payload("fastvideo-tiny")
    assert payload["size"] == "256x256" and payload["response_format"] == "b64_json"
    assert payload["nvext"]["num_frames"] == 8 and payload["nvext"]["num_inference_steps"] == 1
    assert payload[HEALTH_CHECK_KEY] is True and is_health_check(payload)  # Dynamo 1.6.1's canary marker
    assert not is_health_check(_request()) and not is_health_check({**_request(), HEALTH_CHECK_KEY: "yes"})


async def _canary(handler: VideoGenerationHandler, payload: dict[str, Any], context: Any) -> list[dict[str, Any]]:
    return [chunk async for chunk in handler.generate(payload, context)]


def test_health_canary_probes_the_engine_in_the_background(tiny_generator, fake_context, monkeypatch):
    """The canary answers at once; its probe runs the real payload on the engine, one at a time."""
    monkeypatch.delenv("DYN_HEALTH_CHECK_PAYLOAD", raising=False)
    payload = health_check_payload("fastvideo-tiny")
    handler = VideoGenerationHandler(tiny_generator, model_name="fastvideo-tiny", health_payload=payload)

    async def run() -> list[dict[str, Any]]:
        answers = [await _canary(handler, payload, fake_context(f"canary-{i}")) for i in range(5)]
        assert handler._probe_task is not None
        await handler._probe_task
        return [chunk for answer in answers for chunk in answer]

    chunks = asyncio.run(run())
    assert [c["status"] for c in chunks] == ["completed"] * 5 and all(c["data"] == [] for c in chunks)
    assert chunks[0]["id"] == "health-canary-0" and chunks[0]["object"] == "video"
    assert handler.probes == 1, "canaries that arrive while a probe runs must not queue more generations"
    assert handler.health.last_success is not None and handler.health.problem() is None
    assert (handler.completed, handler.failed, handler.health_checks) == (0, 0, 5)  # probes are not requests


def test_health_canary_is_answered_while_a_generation_holds_the_worker(tiny_generator, fake_context):
    gated = _GatedGenerator(tiny_generator)
    payload = {**_request(), HEALTH_CHECK_KEY: True}
    handler = VideoGenerationHandler(gated, model_name="fastvideo-tiny",  # type: ignore[arg-type]
                                     health_payload=payload)

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        busy = asyncio.ensure_future(_agen_list(handler.generate(_request(), fake_context("busy"))))
        await _until(lambda: gated.entered == 1)
        answer = await _canary(handler, payload, fake_context("canary"))  # the worker is still busy
        assert gated.gate is not None and not busy.done()
        gated.gate.set()
        return answer, await busy

    answer, busy = asyncio.run(run())
    assert [c["status"] for c in answer] == ["completed"] and busy[-1]["status"] == "completed"


def test_a_failing_health_probe_fails_the_next_canary(tiny_generator, fake_context):
    """A payload the engine cannot serve: the canary raises (Dynamo counts only errors as unhealthy)."""
    payload = {**_request(size="sixty-four"), HEALTH_CHECK_KEY: True}
    handler = VideoGenerationHandler(tiny_generator, model_name="fastvideo-tiny", health_payload=payload)

    async def run() -> None:
        first = await _canary(handler, payload, fake_context("c1"))  # nothing known yet: healthy, probe starts
        assert [c["status"] for c in first] == ["completed"]
        assert handler._probe_task is not None
        await handler._probe_task
        with pytest.raises(HealthCheckFailed, match="size: 'sixty-four' is not a size"):
            await _canary(handler, payload, fake_context("c2"))
        await handler._probe_task  # that canary started another probe; let it fail too
        # A generation that succeeds proves the engine healthy again.
        (ok,) = await _agen_list(handler.generate(_request(), fake_context("real")))
        assert ok["status"] == "completed"
        assert [c["status"] for c in await _canary(handler, payload, fake_context("c3"))] == ["completed"]

    asyncio.run(run())


def test_a_generation_without_progress_fails_the_canary(tiny_generator, fake_context):
    gated = _GatedGenerator(tiny_generator)
    handler = VideoGenerationHandler(gated, model_name="fastvideo-tiny",  # type: ignore[arg-type]
                                     health_payload={**_request(), HEALTH_CHECK_KEY: True},
                                     health_policy=HealthPolicy(stall_timeout_s=0.05))
    handler.health.generation_finished(True)  # as if a generation had just succeeded: no probe

    async def run() -> None:
        busy = asyncio.ensure_future(_agen_list(handler.generate(_request(), fake_context("busy"))))
        await _until(lambda: gated.entered == 1)
        await asyncio.sleep(0.2)  # stuck at the gate: no denoising step for longer than the stall timeout
        with pytest.raises(HealthCheckFailed, match="no progress"):
            await _canary(handler, {HEALTH_CHECK_KEY: True}, fake_context("canary"))
        assert gated.gate is not None
        gated.gate.set()
        assert (await busy)[-1]["status"] == "completed"
        assert handler.health.problem() is None

    asyncio.run(run())


def test_health_payload_env_override(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("DYN_HEALTH_CHECK_PAYLOAD", '{"prompt": "ping", "model": "m"}')
    assert health_check_payload("m") == {"prompt": "ping", "model": "m", HEALTH_CHECK_KEY: True}
    path = tmp_path / "payload.json"
    path.write_text('{"prompt": "file"}')
    monkeypatch.setenv("DYN_HEALTH_CHECK_PAYLOAD", f"@{path}")
    assert health_check_payload("m") == {"prompt": "file", HEALTH_CHECK_KEY: True}
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


def test_one_stuck_device_fails_the_canary_while_another_keeps_progressing(monkeypatch):
    """A worker serving several devices runs several generations at once: the stall verdict follows the
    longest-silent one, not the last progress of any."""
    from fastvideo.serving.dynamo import health as health_module
    from fastvideo.serving.dynamo.health import HealthMonitor

    now = [1000.0]
    monkeypatch.setattr(health_module.time, "monotonic", lambda: now[0])
    monitor = HealthMonitor(HealthPolicy(stall_timeout_s=10.0))
    stuck, busy = monitor.generation_started(), monitor.generation_started()
    for _ in range(5):
        now[0] += 4.0
        monitor.progressed(busy)  # the other device keeps stepping
    assert monitor.problem() is not None and "no progress for 20s" in monitor.problem()
    monitor.generation_finished(False, stuck)
    assert monitor.problem() is None and monitor.busy
    monitor.generation_finished(True, busy)
    assert not monitor.busy and monitor.problem() is None
