"""Admission when the queue is full: 429 + ``retry-after`` before any job exists, on every route; and
100 concurrent requests against a small queue: every request answered, nothing lost."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serving_utils import SMALL, inproc_server, wait_job, wait_status  # noqa: E402

LONG = {"prompt": "long", "size": "64x64", "num_frames": 5, "num_inference_steps": 1000}


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def listed_ids(client) -> list[str]:
    return [v["id"] for v in client.get("/v1/videos", params={"limit": 100}).json()["data"]]


def test_queue_full_429_on_every_route_and_no_job(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, queue={"max_queue": 1, "retry_after_s": 7}) as srv, \
            httpx.Client(base_url=srv.base_url, timeout=60) as c:
        running = c.post("/v1/videos", json=LONG).json()
        wait_status(c, running["id"], "in_progress")
        waiting = c.post("/v1/videos", json=LONG)
        assert waiting.status_code == 200 and waiting.json()["status"] == "queued"
        before = listed_ids(c)
        assert sorted(before) == sorted([running["id"], waiting.json()["id"]])

        for path, body in (("/v1/videos", {"prompt": "x", **SMALL}),
                           ("/v1/videos", None),  # multipart, as SDK 3.x sends it
                           ("/v1/videos/generations", {"prompt": "x", **SMALL}),
                           ("/v1/images/generations", {"prompt": "x", "size": "64x64"})):
            if body is None:
                r = c.post(path, files={"prompt": (None, "x"), "size": (None, "64x64"), "num_frames": (None, "5")})
            else:
                r = c.post(path, json=body)
            assert r.status_code == 429, (path, r.text)
            assert r.headers["retry-after"] == "7" and "x-request-id" in r.headers
            err = error_of(r)
            assert err["code"] == "queue_full" and err["type"] == "rate_limit_error"
        assert listed_ids(c) == before  # no job was created by any refused request

        from websockets.sync.client import connect

        with connect(srv.base_url.replace("http", "ws", 1) + "/v1/stream", open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", "prompt": "x", "width": 64, "height": 64,
                                "num_frames": 5, "num_inference_steps": 2}))
            frames = [json.loads(ws.recv(timeout=30)) for _ in range(2)]
            assert frames[0]["type"] == "ltx2_stream_start"
            assert frames[1]["type"] == "error" and frames[1]["code"] == "queue_full"
            assert frames[1]["retryable"] is True and frames[1]["retry_after_s"] == 7
        assert listed_ids(c) == before

        metrics = c.get("/metrics").text
        assert 'fastvideo_queue_rejections_total{reason="queue_full"} 5.0' in metrics
        assert "fastvideo_queue_depth 1.0" in metrics and "fastvideo_running_jobs 1.0" in metrics

        # freeing the queue lets new work in
        for vid in (waiting.json()["id"], running["id"]):
            assert c.delete(f"/v1/videos/{vid}").status_code == 200
        deadline = time.monotonic() + 60
        while True:
            r = c.post("/v1/videos", json={"prompt": "after", **SMALL})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # the cancelled job stops at its next step
        assert r.status_code == 200, r.text
        assert wait_job(c, r.json()["id"])["status"] == "completed"


def test_100_concurrent_requests_against_a_full_queue(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, queue={"max_queue": 2}) as srv:

        async def burst() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=100)
            async with httpx.AsyncClient(base_url=srv.base_url, timeout=120, limits=limits) as ac:
                return await asyncio.gather(*(ac.post("/v1/videos", json={
                    "prompt": f"burst {i}", "size": "64x64", "num_frames": 5, "num_inference_steps": 1, "seed": i})
                    for i in range(100)))

        responses = asyncio.run(burst())
        assert {r.status_code for r in responses} <= {200, 429}, {r.status_code for r in responses}
        accepted = [r.json()["id"] for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        assert accepted and refused, (len(accepted), len(refused))
        for r in refused:
            assert int(r.headers["retry-after"]) > 0 and error_of(r)["code"] == "queue_full"
        assert len(set(accepted)) == len(accepted)
        with httpx.Client(base_url=srv.base_url, timeout=60) as c:
            assert sorted(listed_ids(c)) == sorted(accepted)  # nothing lost, nothing extra
            finals = [wait_job(c, vid) for vid in accepted]
            assert [v["status"] for v in finals] == ["completed"] * len(accepted)
            assert c.get("/readyz").status_code == 200
            metrics = c.get("/metrics").text
            assert f'fastvideo_queue_rejections_total{{reason="queue_full"}} {float(len(refused))}' in metrics
