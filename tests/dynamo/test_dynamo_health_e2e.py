"""Dynamo's health canary against a real worker: the built-in model's health payload answers in time.

Dynamo (1.6.1) sends the worker's ``health_check_payload`` through ``generate`` when the endpoint
has been idle for ``DYN_CANARY_WAIT_TIME`` seconds and marks it not ready if no answer comes within
``DYN_HEALTH_CHECK_REQUEST_TIMEOUT`` (3 s by default). This runs one worker with the canary every
second and checks its system status server reports ready and its log shows no canary timeout.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dynamo.llm", reason="NVIDIA Dynamo is not installed: pip install --no-deps "
                                         "ai-dynamo==1.6.1 ai-dynamo-runtime==1.6.1 (see README, Scale out with Dynamo)")

from fastvideo.serving.dynamo.local import ClusterConfig, LocalDynamoCluster, http_json  # noqa: E402

pytestmark = [pytest.mark.dynamo, pytest.mark.timeout(300)]


def test_health_canary_passes_within_dynamos_timeout(tiny_model_dir: Path, fastvideo_cache: Path):
    config = ClusterConfig(workers=1, worker_args=["--device", "cpu"], worker_system_ports=True,
                           env={"FASTVIDEO_CACHE_DIR": str(fastvideo_cache)},
                           worker_env={"DYN_HEALTH_CHECK_ENABLED": "true", "DYN_CANARY_WAIT_TIME": "1"})
    with LocalDynamoCluster(config) as cluster:
        port = cluster.system_ports[0]
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        body: Any = None
        while time.monotonic() < deadline:
            status, body = http_json("GET", base, "/health", timeout=5)
            if status == 200 and isinstance(body, dict) and body.get("status") == "ready":
                break
            time.sleep(0.5)
        assert isinstance(body, dict) and body.get("status") == "ready", body
        time.sleep(6)  # several more canary rounds
        status, body = http_json("GET", base, "/health", timeout=5)
        log = cluster.worker_log(0)
        assert status == 200 and body["endpoints"]["generate"] == "ready", body
        assert "Health check timeout" not in log, log[-3000:]
