"""``fastvideo serve`` on a device pool (``pool.devices`` / ``--devices``) with two CPU workers on the built-in
model: the first worker runs in the server process over its generator, the second in its own spawned process.
Jobs reach both (their counters in ``/readyz`` say so), bad input is refused before any worker sees it,
``queue.max_queue`` bounds the waiting jobs of the whole pool, and a cancelled job stops on its worker."""

from __future__ import annotations

import os
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serving_utils import SMALL, inproc_server, wait_job, wait_status  # noqa: E402

pytestmark = pytest.mark.timeout(600)

LONG = {"prompt": "long", "size": "64x64", "num_frames": 5, "num_inference_steps": 1000}


def workers_of(client) -> dict[str, dict]:
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    return {w["worker_id"]: w for w in ready.json()["workers"]}


def test_serve_with_two_cpu_workers(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, server={"warmup": True}, pool={"devices": ["cpu", "cpu"]},
                       queue={"max_queue": 2}) as server, httpx.Client(base_url=server.base_url, timeout=120) as client:
        booted = workers_of(client)
        assert sorted(booted) == ["worker0", "worker1"]
        assert all(w["status"] == "ready" and w["device"] == "cpu" for w in booted.values())
        assert booted["worker0"]["pid"] == os.getpid() and booted["worker1"]["pid"] not in (None, os.getpid())
        assert all(w["completed"] == w["failed"] == 0 for w in booted.values())

        bad = client.post("/v1/videos", json={"prompt": "odd", "size": "30x30", "num_frames": 5})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "size"

        # two jobs at once: the second goes to the idle worker
        ids = [client.post("/v1/videos", json={"prompt": f"fox {i}", **SMALL, "num_inference_steps": 8}).json()["id"]
               for i in range(2)]
        videos = [wait_job(client, video_id) for video_id in ids]
        assert [v["status"] for v in videos] == ["completed", "completed"], videos
        for video_id in ids:
            content = client.get(f"/v1/videos/{video_id}/content")
            assert content.status_code == 200 and content.content[4:8] == b"ftyp"
        served = workers_of(client)
        assert {w: served[w]["completed"] for w in served} == {"worker0": 1, "worker1": 1}

        # admission over the whole pool: both workers busy, two jobs wait, the next one is refused
        running = [client.post("/v1/videos", json=LONG).json()["id"] for _ in range(2)]
        for video_id in running:
            wait_status(client, video_id, "in_progress", timeout_s=120.0)
        waiting = [client.post("/v1/videos", json=LONG).json()["id"] for _ in range(2)]
        refused = client.post("/v1/videos", json=LONG)
        assert refused.status_code == 429 and refused.headers.get("retry-after")
        assert client.get("/readyz").json()["queue_depth"] == 2
        for video_id in running + waiting:
            assert client.delete(f"/v1/videos/{video_id}").status_code == 200
        deadline = time.monotonic() + 60
        while sum(w["failed"] for w in workers_of(client).values()) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        ended = workers_of(client)
        assert sum(w["failed"] for w in ended.values()) == 4  # cancellations end on their workers
        assert all(w["load"] == 0 for w in ended.values())
