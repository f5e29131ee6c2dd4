"""The router app in process: module-level handlers reach their own app's state through dependencies.

Two router apps live in one process with different replicas and health probes (fakes, no network);
each answers from its own state, its middleware enforces its own API key, and a request that creates
work with no healthy replica gets the 503 envelope without anything being forwarded.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from fastvideo.serving.config import HealthCheckConfig, ReplicaEndpoint, RouterConfig  # noqa: E402
from fastvideo.serving.router import RouterState, build_router_app  # noqa: E402


def make_app(urls: list[str], healthy: bool, api_key: str | None = None):
    probed: list[str] = []

    async def probe(url: str, timeout: float) -> bool:
        probed.append(url)
        return healthy

    config = RouterConfig(replicas=[ReplicaEndpoint(url=u) for u in urls], api_key=api_key,
                          health_check=HealthCheckConfig(interval_s=30.0, recovery_threshold=1))
    return build_router_app(config, probe=probe), probed


def wait_probed(probed: list[str], count: int) -> None:
    deadline = time.monotonic() + 10
    while len(probed) < count:
        assert time.monotonic() < deadline, "the health checks never ran"
        time.sleep(0.01)


def test_two_router_apps_answer_from_their_own_state() -> None:
    app_a, probed_a = make_app(["http://a1.invalid:1", "http://a2.invalid:2"], healthy=True)
    app_b, probed_b = make_app(["http://b1.invalid:3"], healthy=False, api_key="secret")
    assert isinstance(app_a.state.router, RouterState) and app_a.state.router is not app_b.state.router
    with TestClient(app_a) as a, TestClient(app_b) as b:
        wait_probed(probed_a, 2)
        wait_probed(probed_b, 1)
        assert sorted(probed_a) == ["http://a1.invalid:1/readyz", "http://a2.invalid:2/readyz"]
        assert probed_b == ["http://b1.invalid:3/readyz"]

        status_a = a.get("/status").json()["replicas"]
        assert [(r["url"], r["healthy"]) for r in status_a] == [("http://a1.invalid:1", True),
                                                                ("http://a2.invalid:2", True)]
        assert a.get("/readyz").status_code == 200
        assert a.get("/health").json() == {"status": "ok", "healthy_replicas": 2}

        assert [(r["url"], r["healthy"]) for r in b.get("/status").json()["replicas"]] == [
            ("http://b1.invalid:3", False)]
        ready_b = b.get("/readyz")
        assert ready_b.status_code == 503 and ready_b.json()["status"] == "not_ready"

        # b's middleware checks b's key; a has none.
        refused = b.post("/v1/videos", json={"prompt": "x"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert refused.headers["x-request-id"]
        none_healthy = b.post("/v1/videos", json={"prompt": "x"}, headers={"authorization": "Bearer secret"})
        assert none_healthy.status_code == 503 and none_healthy.headers["retry-after"] == "2"
        assert none_healthy.json()["error"]["code"] == "no_healthy_replica"

        # Each app counts into its own registry: b's two 503s (readyz, the create); the 401 is answered
        # before counting, as before.
        assert 'fastvideo_router_requests_total{status="503"} 2.0' in b.get("/metrics").text
        assert 'status="503"' not in a.get("/metrics").text
