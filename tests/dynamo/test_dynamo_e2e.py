"""End to end through NVIDIA Dynamo 1.6.1: ``python -m dynamo.frontend`` + two FastVideo workers on CPU.

File discovery (``DYN_FILE_KV`` in a temp folder), TCP request plane, everything on 127.0.0.1 and
the built-in tiny model (64x64, 5 frames, 2 steps). Every process is started in its own process
group and ended by the fixture's finalizer whatever happens. Skipped only when ``dynamo`` is not
importable (CI installs it: see the README's "Scale out with Dynamo").
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import av
import pytest

pytest.importorskip("dynamo.llm", reason="NVIDIA Dynamo is not installed: pip install --no-deps "
                                         "ai-dynamo==1.6.1 ai-dynamo-runtime==1.6.1 "
                                         "(see README, Scale out with Dynamo)")

from fastvideo.serving.dynamo.local import ClusterConfig, LocalDynamoCluster, http_json, http_sse  # noqa: E402

pytestmark = [pytest.mark.dynamo, pytest.mark.timeout(300)]
MODEL = "fastvideo-tiny"


def _request(**fields: Any) -> dict[str, Any]:
    nvext = {"num_frames": 5, "num_inference_steps": 2, "fps": 8, "seed": 1, **fields.pop("nvext", {})}
    return {"prompt": "a red fox running through snow", "model": MODEL, "size": "64x64",
            "response_format": "b64_json", "nvext": nvext, **fields}


def _decode(data: bytes) -> tuple[int, int, int]:
    with av.open(io.BytesIO(data)) as container:
        ctx = container.streams.video[0].codec_context
        return sum(1 for _ in container.decode(video=0)), ctx.width, ctx.height


@pytest.fixture(scope="module")
def cluster(tiny_model_dir: Path, fastvideo_cache: Path) -> Any:
    # tiny_model_dir synthesizes the built-in model once; the workers find it through FASTVIDEO_CACHE_DIR.
    config = ClusterConfig(workers=2, worker_args=["--device", "cpu", "--no-warmup"], threads_per_worker=1,
                           env={"FASTVIDEO_CACHE_DIR": str(fastvideo_cache)}, startup_timeout_s=240)
    with LocalDynamoCluster(config) as running:
        yield running


def _post(cluster: LocalDynamoCluster, body: dict[str, Any], timeout: float = 120) -> tuple[int, Any]:
    return http_json("POST", cluster.base_url, "/v1/videos", body, timeout=timeout)


def test_model_is_listed(cluster):
    status, body = http_json("GET", cluster.base_url, "/v1/models")
    assert status == 200 and [m["id"] for m in body["data"]] == [MODEL]
    assert cluster.instances() == 2


def test_b64_json_returns_a_playable_mp4(cluster):
    status, body = _post(cluster, _request())
    assert status == 200, body
    assert (body["object"], body["status"], body["progress"], body["model"]) == ("video", "completed", 100, MODEL)
    assert body["id"].startswith("video-") and body["inference_time_s"] > 0
    (item,) = body["data"]
    assert item["output_format"] == "mp4"
    assert _decode(base64.b64decode(item["b64_json"])) == (5, 64, 64)


def test_url_returns_a_playable_mp4_written_by_the_worker(cluster):
    status, body = _post(cluster, _request(response_format="url"))
    assert status == 200 and body["status"] == "completed", body
    url = body["data"][0]["url"]
    assert url.startswith("file://") and url.endswith(f"{body['id']}.mp4")
    assert _decode(Path(url[len("file://"):]).read_bytes()) == (5, 64, 64)


def test_stream_sends_progress_events_then_the_final(cluster):
    events = list(http_sse(cluster.base_url, "/v1/videos", _request(stream=True, nvext={"num_inference_steps": 3}),
                           timeout=120))
    assert events[-1] == "[DONE]", events[-1]
    chunks = events[:-1]
    assert [c["status"] for c in chunks] == ["in_progress"] * 3 + ["completed"]
    assert [c["progress"] for c in chunks] == sorted(c["progress"] for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert _decode(base64.b64decode(chunks[-1]["data"][0]["b64_json"])) == (5, 64, 64)


def test_two_concurrent_requests_are_served_by_both_workers(cluster):
    results: list[tuple[int, Any]] = []
    # 30 steps keeps each request busy long enough that the two overlap.
    threads = [threading.Thread(target=lambda: results.append(_post(cluster,
                                                                    _request(nvext={"num_inference_steps": 30}))))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 2 and all(status == 200 and body["status"] == "completed" for status, body in results)
    served_by = {body["id"]: cluster.worker_for(body["id"]) for _, body in results}
    assert sorted(served_by.values()) == [0, 1], f"worker logs show {served_by}"


@pytest.mark.parametrize("body,status,needle", [
    ({"model": MODEL, "size": "64x64"}, 400, "missing field `prompt`"),  # Dynamo's frontend rejects it
    ({**_request(), "prompt": "   "}, 200, "prompt: is required"),
    (_request(size="sixty-four"), 200, "size: 'sixty-four' is not a size"),
    (_request(size="65x64"), 200, "size: 65 is not a multiple of 16"),  # named as the client sent it
    (_request(nvext={"num_frames": 100000}), 200, "nvext.num_frames: 100000 frames cannot be generated"),
    ({**_request(), "not_a_field": 1}, 200, "extra_args.media_passthrough.not_a_field"),
    ({**_request(), "model": "no-such-model"}, 404, "Model not found"),
])
def test_bad_requests_get_clear_errors(cluster, body, status, needle):
    started = time.monotonic()
    got_status, got = _post(cluster, body, timeout=60)
    assert time.monotonic() - started < 30
    assert got_status == status, got
    text = json.dumps(got)
    assert needle in text, text
    if status == 200:
        assert got["status"] == "failed" and got["data"] == []


def test_killing_a_worker_mid_request_fails_that_request_and_the_other_keeps_serving(cluster):
    """Last test of the module: it kills one of the two workers."""
    long_request = _request(size="256x256", stream=True, nvext={"num_frames": 9, "num_inference_steps": 1000})
    events: list[Any] = []
    first_event = threading.Event()

    def consume() -> None:
        for event in http_sse(cluster.base_url, "/v1/videos", long_request, timeout=120):
            events.append(event)
            first_event.set()
        first_event.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    assert first_event.wait(60), "no progress event from the long request"
    response_id = events[0]["id"]
    victim = cluster.worker_for(response_id)
    assert victim is not None, f"no worker log shows {response_id}"
    killed_at = time.monotonic()
    cluster.kill_worker(victim)
    reader.join(timeout=60)
    assert not reader.is_alive(), "the request to the killed worker hung"
    assert time.monotonic() - killed_at < 60
    tail = [e for e in events if not (isinstance(e, dict) and e.get("status") == "in_progress")]
    assert tail and not any(isinstance(e, dict) and e.get("status") == "completed" for e in tail), tail
    assert any(isinstance(e, dict) and ("error" in e or e.get("status") == "failed") for e in tail), tail

    survivor = 1 - victim
    deadline = time.monotonic() + 30
    while cluster.instances() > 1 and time.monotonic() < deadline:  # the frontend drops the dead instance
        time.sleep(0.5)
    for _ in range(3):
        status, body = _post(cluster, _request())
        assert status == 200 and body["status"] == "completed", body
        assert cluster.worker_for(body["id"]) == survivor
