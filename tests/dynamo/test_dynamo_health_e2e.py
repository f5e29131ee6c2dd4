"""Dynamo's health canary against a real worker: healthy while it works, not ready when it cannot serve.

Dynamo (1.6.1) sends the worker's ``health_check_payload`` (marked ``_HEALTH_CHECK``) through
``generate`` when the endpoint had no streamed traffic for ``DYN_CANARY_WAIT_TIME`` seconds, takes
the FIRST chunk within ``DYN_HEALTH_CHECK_REQUEST_TIMEOUT`` (3 s) as the verdict, and reports it on
the worker's system status server (``GET /health`` on ``DYN_SYSTEM_PORT``). Here the canary fires
every second: the worker must stay ready through many rounds (with a 30-step request running, which
on its own outlasts the 3 s timeout on a busy CPU), and a worker whose payload cannot be generated
must turn not ready, which shows that our failure answer is the shape Dynamo counts as unhealthy.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dynamo.llm", reason="NVIDIA Dynamo is not installed: pip install --no-deps ai-dynamo==1.6.1 "
                                         "ai-dynamo-runtime==1.6.1 (see README, Scale out with Dynamo)")

from fastvideo.serving.dynamo.local import ClusterConfig, LocalDynamoCluster, http_json  # noqa: E402

pytestmark = [pytest.mark.dynamo, pytest.mark.timeout(300)]
CANARY = {"DYN_HEALTH_CHECK_ENABLED": "true", "DYN_CANARY_WAIT_TIME": "1"}


def _config(fastvideo_cache: Path, **worker_env: str) -> ClusterConfig:
    return ClusterConfig(workers=1, worker_args=["--device", "cpu", "--no-warmup"], worker_system_ports=True,
                         env={"FASTVIDEO_CACHE_DIR": str(fastvideo_cache)}, worker_env={**CANARY, **worker_env})


def _wait_status(base: str, wanted: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        status, body = http_json("GET", base, "/health", timeout=5)
        if isinstance(body, dict) and body.get("status") == wanted:
            return body
        time.sleep(0.5)
    raise AssertionError(f"/health never reported {wanted!r}; last answer: {body}")


def test_health_canary_passes_within_dynamos_timeout(tiny_model_dir: Path, fastvideo_cache: Path):
    with LocalDynamoCluster(_config(fastvideo_cache)) as cluster:
        base = f"http://127.0.0.1:{cluster.system_ports[0]}"
        _wait_status(base, "ready")
        # A long non-streamed request: no activity reaches Dynamo's canary timer while it runs.
        request = {"prompt": "a fox", "model": "fastvideo-tiny", "size": "64x64", "response_format": "b64_json",
                   "nvext": {"num_frames": 5, "num_inference_steps": 30, "fps": 8}}
        replies: list[tuple[int, Any]] = []
        worker = threading.Thread(target=lambda: replies.append(
            http_json("POST", cluster.base_url, "/v1/videos", request, timeout=120)))
        worker.start()
        seen: list[str] = []
        for _ in range(12):  # several canary rounds, during and after the request
            time.sleep(0.5)
            status, body = http_json("GET", base, "/health", timeout=5)
            seen.append(body.get("status") if isinstance(body, dict) else f"http {status}")
        worker.join(timeout=120)
        status, body = http_json("GET", base, "/health", timeout=5)
        log = cluster.worker_log(0)
        assert seen == ["ready"] * len(seen), seen
        assert status == 200 and body["status"] == "ready" and body["endpoints"]["generate"] == "ready", body
        assert replies and replies[0][0] == 200 and replies[0][1]["status"] == "completed", replies
        assert "Health check timeout" not in log and "fails Dynamo's health check" not in log, log[-3000:]


def test_a_worker_whose_health_payload_fails_turns_not_ready(tiny_model_dir: Path, fastvideo_cache: Path):
    bad_payload = '{"prompt": "probe", "model": "fastvideo-tiny", "size": "sixty-four"}'
    with LocalDynamoCluster(_config(fastvideo_cache, DYN_HEALTH_CHECK_PAYLOAD=bad_payload)) as cluster:
        base = f"http://127.0.0.1:{cluster.system_ports[0]}"
        _wait_status(base, "ready")  # the first canary: nothing known yet, it starts the probe
        body = _wait_status(base, "notready")  # the probe failed: the next canary raises
        assert body["endpoints"]["generate"] == "notready", body
        log = cluster.worker_log(0)
        assert "fails Dynamo's health check: the health probe failed" in log and "sixty-four" in log, log[-3000:]
    # Leaving the block stops every process the cluster started (each in its own process group).
    assert cluster.frontend is not None and cluster.frontend.poll() is not None
    assert all(proc.poll() is not None for proc in cluster.workers)
