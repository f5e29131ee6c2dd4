"""OpenAI HTTP routes against a real ``fastvideo serve`` process: jobs, sync routes, errors, operations."""

from __future__ import annotations

import base64
import io

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastvideo.runtime.media import decode_mp4  # noqa: E402

from serving_utils import SMALL, inproc_server, wait_job  # noqa: E402

PNG_1x1 = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0g"
                           "AAAABJRU5ErkJggg==")


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_video_job_lifecycle_json(client):
    r = client.post("/v1/videos", json={"prompt": "a red fox", **SMALL, "seed": 3, "fps": 8},
                    headers={"x-request-id": "test-lifecycle-1"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "test-lifecycle-1"
    assert int(r.headers["openai-poll-after-ms"]) > 0
    video = r.json()
    assert video["object"] == "video" and video["status"] in ("queued", "in_progress")
    assert video["size"] == "64x64" and video["seconds"] == "0.625" and video["progress"] < 100
    seen = {video["status"]}
    done = wait_job(client, video["id"])
    seen.add(done["status"])
    assert done["status"] == "completed" and done["progress"] == 100 and done["error"] is None
    assert done["completed_at"] >= done["created_at"] and done["expires_at"] > done["completed_at"]
    assert done["inference_time_s"] > 0 and done["queue_time_s"] >= 0
    content = client.get(f"/v1/videos/{video['id']}/content")
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    frames, fps = decode_mp4(content.content)
    assert frames.shape == (5, 64, 64, 3) and fps == 8
    thumb = client.get(f"/v1/videos/{video['id']}/content", params={"variant": "thumbnail"})
    assert thumb.status_code == 200 and thumb.content.startswith(b"\x89PNG")
    listed = client.get("/v1/videos", params={"limit": 100}).json()
    assert listed["object"] == "list" and video["id"] in [v["id"] for v in listed["data"]]
    deleted = client.delete(f"/v1/videos/{video['id']}")
    assert deleted.json() == {"id": video["id"], "object": "video.deleted", "deleted": True}
    assert client.get(f"/v1/videos/{video['id']}").status_code == 404


def test_progress_moves_while_running(client):
    video = client.post("/v1/videos", json={"prompt": "slow", "size": "64x64", "num_frames": 5,
                                            "num_inference_steps": 40}).json()
    progresses, statuses = [], []
    while True:
        v = client.get(f"/v1/videos/{video['id']}").json()
        progresses.append(v["progress"])
        statuses.append(v["status"])
        if v["status"] in ("completed", "failed"):
            break
    assert statuses[-1] == "completed"
    assert "in_progress" in statuses
    middle = {p for p, s in zip(progresses, statuses) if s == "in_progress"}
    assert any(0 < p < 100 for p in middle), progresses
    assert progresses == sorted(progresses)


def test_multipart_string_extras_and_nvext(client):
    files = {"prompt": (None, "a cat"), "size": (None, "64x64"), "num_frames": (None, "5"),
             "num_inference_steps": (None, "2"), "nvext[seed]": (None, "11"), "nvext[fps]": (None, "4")}
    r = client.post("/v1/videos", files=files)
    assert r.status_code == 200, r.text
    done = wait_job(client, r.json()["id"])
    assert done["status"] == "completed" and done["fps"] == 4 and done["seconds"] == "1.25"


def test_sync_generation_b64_and_url(client):
    r = client.post("/v1/videos/generations", json={"prompt": "waves", **SMALL, "response_format": "b64_json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"][0]["output_format"] == "mp4" and body["inference_time_s"] > 0
    frames, _ = decode_mp4(base64.b64decode(body["data"][0]["b64_json"]))
    assert frames.shape == (5, 64, 64, 3)
    r = client.post("/v1/videos/generations", json={"prompt": "waves", "seconds": 1, "fps": 5, "size": "64x64",
                                                    "num_inference_steps": 2})
    url = r.json()["data"][0]["url"]
    assert url.startswith(client.base_url.scheme + "://") and url.endswith("/content")
    frames, fps = decode_mp4(httpx.get(url).content)
    assert frames.shape[0] == 5 and fps == 5


def test_image_generation_png(client):
    r = client.post("/v1/images/generations", json={"prompt": "a lighthouse", "size": "64x64",
                                                    "num_inference_steps": 2})
    assert r.status_code == 200, r.text
    png = base64.b64decode(r.json()["data"][0]["b64_json"])
    assert png.startswith(b"\x89PNG")
    import av

    with av.open(io.BytesIO(png)) as c:
        frame = next(c.decode(video=0))
    assert (frame.width, frame.height) == (64, 64)
    r = client.post("/v1/images/generations", json={"prompt": "x", "size": "64x64", "num_inference_steps": 2,
                                                    "response_format": "url"})
    assert httpx.get(r.json()["data"][0]["url"]).content.startswith(b"\x89PNG")


def test_models(client):
    data = client.get("/v1/models").json()
    assert data["object"] == "list" and data["data"][0]["id"] == "fastvideo-tiny"
    assert client.get("/v1/models/fastvideo-tiny").status_code == 200
    assert error_of(client.get("/v1/models/gpt-4"))["code"] == "model_not_found"


@pytest.mark.parametrize("body,status,param", [
    ({"prompt": "x", "size": "sixty-four"}, 400, "size"),
    ({"prompt": "x", "size": "65x64"}, 400, "size"),
    ({"prompt": "x", "model": "sora-2"}, 404, "model"),
    ({"prompt": "x", "num_frames": 1_000_000}, 400, "num_frames"),
    ({"prompt": "x", "num_frames": "many"}, 400, "num_frames"),
    ({"prompt": "x", "input_reference": "data:image/png;base64,@@@not-base64@@@"}, 400, "input_reference"),
    ({"prompt": "x", "input_reference": base64.b64encode(b"plain text").decode()}, 400, "input_reference"),
    ({"prompt": "x", "input_reference": "https://example.com/a.png"}, 400, "input_reference"),
    ({"prompt": "x", "input_reference": base64.b64encode(PNG_1x1).decode()}, 400, "input_reference"),
    ({"prompt": "x", "num_inference_steps": 0}, 400, "num_inference_steps"),
    ({"prompt": ""}, 400, "prompt"),
    ({"size": "64x64"}, 400, "prompt"),
])
def test_bad_inputs_get_400_with_param(client, body, status, param):
    r = client.post("/v1/videos", json=body)
    assert r.status_code == status, r.text
    assert "x-request-id" in r.headers
    err = error_of(r)
    assert err["param"] == param and err["type"] == "invalid_request_error"


def test_malformed_bodies_and_unknown_ids(client):
    before = len(client.get("/v1/videos", params={"limit": 100}).json()["data"])
    assert error_of(client.post("/v1/videos", content=b"{not json", headers={"content-type": "application/json"}))[
        "code"] == "invalid_json"
    assert client.post("/v1/videos", content=b"[1,2]", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/v1/videos", files={"input_reference": ("a.png", b"GIF00 nope", "image/png"),
                                            "prompt": (None, "x")}).status_code == 400
    for method, path in (("GET", "/v1/videos/video_nope"), ("DELETE", "/v1/videos/video_nope"),
                         ("GET", "/v1/videos/video_nope/content"), ("GET", "/v1/nothing-here")):
        r = client.request(method, path)
        assert r.status_code == 404 and "x-request-id" in r.headers
        error_of(r)
    assert client.get("/v1/videos", params={"limit": 0}).status_code == 400
    assert client.get("/v1/videos", params={"after": "video_nope"}).status_code == 400
    assert len(client.get("/v1/videos", params={"limit": 100}).json()["data"]) == before  # no job was created
    good = client.post("/v1/videos", json={"prompt": "still serving", **SMALL}).json()  # the server keeps serving
    assert wait_job(client, good["id"])["status"] == "completed"


def test_operations_endpoints(client):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and "x-request-id" in health.headers
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["warmup_s"] > 0
    text = client.get("/metrics").text
    for name in ("fastvideo_queue_depth", "fastvideo_running_jobs", "fastvideo_e2e_latency_seconds_bucket",
                 "fastvideo_queue_time_seconds", "fastvideo_step_time_seconds", "fastvideo_job_failures_total",
                 "fastvideo_http_requests_total", "fastvideo_ready 1.0"):
        assert name in text, name
    page = client.get("/")
    assert page.status_code == 200 and "MediaSource" in page.text and "/v1/stream" in page.text


def test_api_key_required(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, server={"api_key": "s3cret"}) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=60) as c:
            assert c.get("/health").status_code == 200  # liveness needs no key
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
                r = c.post("/v1/videos", json={"prompt": "x", **SMALL}, headers=headers)
                assert r.status_code == 401 and error_of(r)["type"] == "authentication_error"
                assert "x-request-id" in r.headers
            assert c.get("/v1/videos", headers={"authorization": "Bearer wrong"}).status_code == 401
            ok = c.post("/v1/videos", json={"prompt": "x", **SMALL}, headers={"authorization": "Bearer s3cret"})
            assert ok.status_code == 200
            c.headers["authorization"] = "Bearer s3cret"
            assert wait_job(c, ok.json()["id"])["status"] == "completed"


def test_not_ready_before_warmup(tiny_generator, tmp_path):
    from fastvideo.serving.app_state import ServerState

    with inproc_server(tiny_generator, tmp_path) as srv:
        state: ServerState = srv.app.state.server
        state.phase = "warming"  # as during warmup
        try:
            with httpx.Client(base_url=srv.base_url, timeout=30) as c:
                r = c.get("/readyz")
                assert r.status_code == 503 and "retry-after" in r.headers
                r = c.post("/v1/videos", json={"prompt": "x", **SMALL})
                assert r.status_code == 503 and r.headers["retry-after"] and error_of(r)["code"] == "not_ready"
                assert c.get("/v1/videos").json()["data"] == []
        finally:
            state.phase = "ready"
