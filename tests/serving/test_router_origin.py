"""The router's ``/v1/stream`` applies the server's browser ``Origin`` rule (fastvideo.serving.ws_origin).

A real uvicorn router in a thread over one replica that never becomes healthy (a fake probe, no network): a socket
from a foreign origin is refused before accept with HTTP 403, as the server's own ``/v1/stream`` does; one without an
``Origin``, from the router's own origin or from a listed one is accepted (it then gets the router's
``gpu_unavailable`` error, which only an accepted socket can receive). ``allowed_origins`` is checked when the
config is built, naming the entry.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("websockets")

from websockets.exceptions import InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from fastvideo.api import ConfigError, parse_config  # noqa: E402
from fastvideo.serving.config import RouterConfig  # noqa: E402
from fastvideo.serving.router import build_router_app  # noqa: E402
from fastvideo.serving.ws_origin import origin_allowed  # noqa: E402

from serving_utils import InprocServer, free_port  # noqa: E402


async def _never_healthy(url: str, timeout: float) -> bool:
    return False


def _router(allowed: list[str]) -> InprocServer:
    port = free_port()
    config = parse_config(RouterConfig, {"port": port, "replicas": [{"url": "http://replica.invalid:1"}],
                                         "health_check": {"interval_s": 30.0}, "allowed_origins": allowed})
    return InprocServer(build_router_app(config, probe=_never_healthy), port).start(ready_path="/health")


def opens(url: str, origin: str | None) -> bool:
    """Whether the router accepts a socket with this ``Origin`` (None: none); a refusal must be a 403."""
    try:
        with connect(url, open_timeout=30, origin=origin) as ws:  # type: ignore[arg-type]
            ws.send(json.dumps({"type": "session_init_v2", "prompt": "x"}))
            reply = json.loads(ws.recv(timeout=30))
            assert reply["code"] == "gpu_unavailable", reply  # accepted: the router looked for a replica
            return True
    except InvalidStatus as exc:
        assert exc.response.status_code == 403
        return False


@pytest.fixture(scope="module")
def routers():
    plain, listed = _router([]), _router(["https://app.example.com"])
    yield plain, listed
    plain.stop()
    listed.stop()


def test_router_refuses_a_foreign_origin_like_the_server(routers) -> None:
    plain, _ = routers
    url = plain.base_url.replace("http", "ws", 1) + "/v1/stream"
    assert opens(url, None)  # not a browser
    assert opens(url, plain.base_url)  # the router's own origin
    assert not opens(url, "http://evil.example")
    assert not opens(url, f"http://localhost:{plain.port}")  # another name is another origin
    assert not opens(url, "null")
    assert not opens(url, "https://app.example.com")  # not listed on this router
    metrics = plain.app.state.router.ws_sessions
    assert metrics.labels("origin_refused")._value.get() == 4


def test_router_accepts_a_listed_origin(routers) -> None:
    _, listed = routers
    url = listed.base_url.replace("http", "ws", 1) + "/v1/stream"
    assert opens(url, "https://app.example.com") and opens(url, "https://APP.example.com:443")
    assert opens(url, listed.base_url)
    assert not opens(url, "http://app.example.com")  # a listed host under another scheme is another origin


def test_router_allowed_origins_are_checked_and_normalized() -> None:
    config = RouterConfig(replicas=[], allowed_origins=["HTTPS://App.Example.com:443/", "*"])
    assert config.allowed_origins == ["https://app.example.com", "*"]
    with pytest.raises(ConfigError, match=r"allowed_origins\[0\]"):
        RouterConfig(allowed_origins=["app.example.com/path"])
    assert origin_allowed("http://anything.example", None, ["*"])
