"""``fastvideo router-serve --config router.yaml`` (a real subprocess) in front of two real servers.

Backends are two in-process uvicorn servers, each over its own generator on the built-in model.
Checked: HTTP proxy (jobs, content, synchronous URLs pointing at the router, merged lists), WebSocket
proxy (binary fMP4 relayed), sticky continuation (a session held by the second replica is resumed
there by id although plain selection would pick the first), and failover when a replica goes down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("websockets")

from websockets.sync.client import connect  # noqa: E402

from fastvideo.runtime.media import decode_mp4  # noqa: E402

from serving_utils import SMALL, InprocServer, free_port, wait_job, wait_ready  # noqa: E402

SHAPE = {"width": 64, "height": 64, "num_frames": 5, "fps": 8, "num_inference_steps": 2}


def make_backend(model_dir: Path, tmp: Path, name: str) -> tuple[InprocServer, object]:
    from fastvideo import VideoGenerator
    from fastvideo.api import parse_config
    from fastvideo.serving.app import build_app
    from fastvideo.serving.config import ServeConfig

    generator = VideoGenerator.from_pretrained(str(model_dir), device="cpu", dtype="fp32")
    port = free_port()
    config = parse_config(ServeConfig, {"server": {"port": port, "output_dir": str(tmp / name), "warmup": False}})
    return InprocServer(build_app(config, generator), port).start(), generator


@pytest.fixture(scope="module")
def cluster(tiny_model_dir: Path, fastvideo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("router")
    backends = [make_backend(tiny_model_dir, tmp, name) for name in ("a", "b")]
    port = free_port()
    config = tmp / "router.yaml"
    config.write_text(
        "router:\n"
        f"  host: 127.0.0.1\n  port: {port}\n"
        "  replicas:\n"
        + "".join(f"    - url: {srv.base_url}\n      name: {name}\n" for (srv, _), name in zip(backends, "ab"))
        + "  health_check: {interval_s: 30, timeout_s: 2.0, failure_threshold: 1}\n")
    log = open(tmp / "router.log", "w")
    env = {**os.environ, "FASTVIDEO_CACHE_DIR": str(fastvideo_cache)}
    proc = subprocess.Popen([sys.executable, "-m", "fastvideo", "router-serve", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, 60, proc=proc)
        deadline = time.monotonic() + 30
        while not all(r["healthy"] for r in httpx.get(base + "/status").json()["replicas"]):
            assert time.monotonic() < deadline, "replicas never became healthy"
            time.sleep(0.1)
        yield {"router": base, "a": backends[0][0], "b": backends[1][0], "proc": proc}
    finally:
        proc.terminate()
        code = proc.wait(30)
        for srv, generator in backends:
            srv.stop()
            generator.shutdown()  # type: ignore[attr-defined]
        log.close()
        assert code == 0, (tmp / "router.log").read_text()[-3000:]


def sessions_on(srv: InprocServer) -> int:
    return httpx.get(srv.base_url + "/readyz", timeout=30).json()["sessions"]


def collect_until(ws, kind: str) -> list:
    out = []
    while True:
        msg = ws.recv(timeout=120)
        msg = msg if isinstance(msg, bytes) else json.loads(msg)
        out.append(msg)
        if isinstance(msg, dict):
            assert msg["type"] != "error", msg
            if msg["type"] == kind:
                return out


def test_http_proxy_jobs_content_and_urls(cluster):
    with httpx.Client(base_url=cluster["router"], timeout=120) as c:
        r = c.post("/v1/videos", json={"prompt": "via router", **SMALL, "fps": 8}, headers={"x-request-id": "rt-1"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "rt-1", r.text
        vid = r.json()["id"]
        assert wait_job(c, vid)["status"] == "completed"
        frames, fps = decode_mp4(c.get(f"/v1/videos/{vid}/content").content)
        assert frames.shape == (5, 64, 64, 3) and fps == 8
        owners = [name for name in ("a", "b")
                  if httpx.get(f"{cluster[name].base_url}/v1/videos/{vid}", timeout=30).status_code == 200]
        assert len(owners) == 1  # the job lives on exactly one replica
        assert vid in [v["id"] for v in c.get("/v1/videos").json()["data"]]

        sync = c.post("/v1/videos/generations", json={"prompt": "sync", **SMALL}).json()
        url = sync["data"][0]["url"]
        assert url.startswith(cluster["router"] + "/v1/videos/"), url  # the reply points at the router
        frames, _ = decode_mp4(httpx.get(url, timeout=60).content)
        assert frames.shape[0] == 5
        assert c.get("/v1/models").json()["data"][0]["id"] == "fastvideo-tiny"
        assert c.get("/v1/videos/video_nope").status_code == 404
        assert c.delete(f"/v1/videos/{vid}").json()["deleted"] is True


def test_ws_proxy_and_sticky_continuation(cluster):
    url = cluster["router"].replace("http", "ws", 1) + "/v1/stream"
    a, b = cluster["a"], cluster["b"]
    with connect(url, max_size=None, open_timeout=30) as hold:
        hold.send(json.dumps({"type": "session_init_v2", **SHAPE}))
        assert json.loads(hold.recv(timeout=30))["type"] == "ltx2_stream_start"
        assert (sessions_on(a), sessions_on(b)) == (1, 0)  # plain selection: the first replica
        with connect(url, max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", "prompt": "sticky", **SHAPE}))
            msgs = collect_until(ws, "ltx2_segment_complete")
            assert (sessions_on(a), sessions_on(b)) == (1, 1)  # fewest in flight: the second replica
        session_id = msgs[0]["session_id"]
        binary = [m for m in msgs if isinstance(m, bytes)]
        assert binary[0][4:8] == b"ftyp" and all(m[4:8] == b"moof" for m in binary[1:])
    time.sleep(0.3)
    assert (sessions_on(a), sessions_on(b)) == (0, 0)
    # both replicas are idle now: without stickiness the resume would go to the first one,
    # which does not hold the session and answers session_not_found
    with connect(url, max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "session_init_v2", "session_id": session_id}))
        start = json.loads(ws.recv(timeout=30))
        assert start["type"] == "ltx2_stream_start", start
        assert start["resumed"] is True and start["segment_idx"] == 1 and start["session_id"] == session_id
        assert (sessions_on(a), sessions_on(b)) == (0, 1)
        ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "continued"}))
        done = collect_until(ws, "ltx2_segment_complete")[-1]
        assert done["segment_idx"] == 1 and done["branch"] == "continuation"


def test_failover_when_a_replica_is_down(cluster):
    a = cluster["a"]
    a.stop()  # the first (preferred) replica goes away
    with httpx.Client(base_url=cluster["router"], timeout=120) as c:
        for _ in range(3):  # probes run every 30s: the first forward finds it down and fails over
            r = c.post("/v1/videos", json={"prompt": "failover", **SMALL})
            assert r.status_code == 200, r.text
            vid = r.json()["id"]
            assert httpx.get(f"{cluster['b'].base_url}/v1/videos/{vid}", timeout=30).status_code == 200
            assert wait_job(c, vid)["status"] == "completed"
        status = {r["name"]: r["healthy"] for r in c.get("/status").json()["replicas"]}
        assert status == {"a": False, "b": True}
        assert c.get("/readyz").status_code == 200
        url = cluster["router"].replace("http", "ws", 1) + "/v1/stream"
        with connect(url, max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", "prompt": "after failover", **SHAPE}))
            assert collect_until(ws, "ltx2_segment_complete")[-1]["frames"] == 5
        metrics = c.get("/metrics").text
        assert 'fastvideo_router_failovers_total{reason="connect"} 1.0' in metrics  # found down while forwarding
        assert 'fastvideo_router_replica_healthy{replica="%s"} 0.0' % a.base_url in metrics
