"""Operations: ``/readyz`` only after the real warmup, ``/metrics`` values that follow jobs, graceful shutdown
(a running job finishes and its file is written; past the drain timeout jobs fail visibly), JSON logs
carrying request ids."""

from __future__ import annotations

import json
import signal
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from fastvideo.runtime.media import decode_mp4  # noqa: E402

from serving_utils import SMALL, inproc_server, start_server_process, stop_server_process, wait_job  # noqa: E402


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(values: dict, name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_in_progress(client, video_id: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get(f"/v1/videos/{video_id}").json()["status"] != "in_progress":
        assert time.monotonic() < deadline, "job never started"
        time.sleep(0.02)


def test_readyz_only_after_warmup(live_server, client):
    seen = live_server.startup
    assert seen and seen[-1]["readyz"] == 200
    warming = [e for e in seen if e["readyz"] == 503]
    assert warming, f"never saw the server live but not ready: {seen}"
    assert all(e["health"] == 200 for e in warming)  # liveness answers during warmup
    assert {e["phase"] for e in warming} <= {"starting", "warming"}
    early = next(e for e in warming if e["create"] is not None)
    assert early["create"] == 503 and int(early["create_retry_after"]) > 0
    assert "too early" not in [v["prompt"] for v in client.get("/v1/videos", params={"limit": 100}).json()["data"]]
    ready = client.get("/readyz").json()
    assert ready["phase"] == "ready" and ready["warmup_s"] > 0


def test_metrics_follow_jobs(client):
    before = samples(client.get("/metrics").text)
    done = client.post("/v1/videos", json={"prompt": "metered", **SMALL}).json()
    assert wait_job(client, done["id"])["status"] == "completed"
    doomed = client.post("/v1/videos", json={"prompt": "doomed", "size": "64x64", "num_frames": 5,
                                             "num_inference_steps": 1000}).json()
    deadline = time.monotonic() + 60
    while client.get(f"/v1/videos/{doomed['id']}").json()["progress"] < 2:  # 20 of its 1000 steps ran
        assert time.monotonic() < deadline, "the long job made no progress"
        time.sleep(0.02)
    assert client.delete(f"/v1/videos/{doomed['id']}").status_code == 200
    deadline = time.monotonic() + 60
    while True:
        after = samples(client.get("/metrics").text)
        if metric(after, "fastvideo_job_failures_total", kind="video", code="cancelled") > \
                metric(before, "fastvideo_job_failures_total", kind="video", code="cancelled"):
            break
        assert time.monotonic() < deadline, "the cancelled job was never counted as a failure"
        time.sleep(0.05)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("fastvideo_jobs_total", kind="video", status="completed") == 1
    assert delta("fastvideo_jobs_total", kind="video", status="failed") == 1
    assert delta("fastvideo_job_failures_total", kind="video", code="cancelled") == 1
    assert delta("fastvideo_e2e_latency_seconds_count", kind="video") == 2
    assert delta("fastvideo_e2e_latency_seconds_sum", kind="video") > 0
    assert delta("fastvideo_queue_time_seconds_count", kind="video") == 2
    assert delta("fastvideo_generation_time_seconds_count", kind="video") == 2
    assert delta("fastvideo_step_time_seconds_count") >= 2 + 20  # every step of both jobs is observed
    assert metric(after, "fastvideo_queue_depth") == 0 and metric(after, "fastvideo_running_jobs") == 0
    assert metric(after, "fastvideo_ready") == 1
    assert delta("fastvideo_http_requests_total", method="POST", route="/v1/videos", status="200") == 2


def test_sigterm_drains_running_job_then_exits_0(fastvideo_cache, tmp_path, tiny_model_dir):
    # one intra-op thread: per-step time stays small and steady on a busy machine (no OpenMP spin-waits)
    server = start_server_process(fastvideo_cache, tmp_path, "--no-warmup", "--log-format", "json",
                                  env_extra={"OMP_NUM_THREADS": "1"})
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as c:
            r = c.post("/v1/videos", json={"prompt": "finish me", "size": "64x64", "num_frames": 5,
                                           "num_inference_steps": 300, "fps": 8},
                       headers={"x-request-id": "ops-drain-1"})
            assert r.status_code == 200, r.text
            vid = r.json()["id"]
            wait_in_progress(c, vid)
    finally:
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(120)
    log = server.log()
    assert code == 0, log[-3000:]
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(rec["request_id"] == "ops-drain-1" and vid in rec["message"] and "queued" in rec["message"]
               for rec in records), "the job's log line lacks the client's request id"
    messages = [rec["message"] for rec in records]
    assert any(m.startswith(f"job {vid} completed") for m in messages), messages[-10:]
    assert "shutting down: draining 0 queued and 1 running jobs (up to 60s)" in messages  # it ran at SIGTERM
    assert "shutdown complete" in messages
    frames, fps = decode_mp4((server.output_dir / f"{vid}.mp4").read_bytes())  # written during the drain
    assert frames.shape == (5, 64, 64, 3) and fps == 8
    assert stop_server_process(server) == 0


def test_drain_timeout_fails_jobs_visibly(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, server={"drain_timeout_s": 0.5}) as srv:
        state = srv.app.state.server
        with httpx.Client(base_url=srv.base_url, timeout=60) as c:
            running = c.post("/v1/videos", json={"prompt": "too long", "size": "64x64", "num_frames": 5,
                                                 "num_inference_steps": 1000}).json()["id"]
            wait_in_progress(c, running)
            queued = c.post("/v1/videos", json={"prompt": "never starts", **SMALL}).json()["id"]
    # leaving the block stopped the server: the drain timed out and both jobs failed visibly
    for vid in (running, queued):
        record = state.store.get(vid)
        assert record is not None and record.status == "failed", (vid, record and record.status)
        assert record.error_code == "shutting_down" and record.file_path is None
    assert state.phase == "stopped"
    text = state.metrics.render()[0].decode()
    assert 'fastvideo_job_failures_total{code="shutting_down",kind="video"} 2.0' in text
