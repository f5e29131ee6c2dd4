"""``/v1/stream`` limits against real servers (uvicorn on 127.0.0.1, the built-in model): streaming slots are kept
only by real session activity (pings keep nothing alive), a handshake deadline, a per-client cap, frames the JSON
parser cannot take (huge integers, deep nesting) or that hold lone surrogates answered with ``invalid_message``
while the session goes on, the browser ``Origin`` policy, and ``gpu_assigned`` naming the pool worker that ran
the segment. Config bounds of the new fields are refused naming the key.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

pytest.importorskip("fastapi")
websockets = pytest.importorskip("websockets")
httpx = pytest.importorskip("httpx")

from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from serving_utils import inproc_server  # noqa: E402

SHAPE = {"width": 64, "height": 64, "num_frames": 5, "fps": 8, "num_inference_steps": 2}

pytestmark = pytest.mark.timeout(300)


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/v1/stream"


def recv(ws: Any, timeout: float = 30.0) -> Any:
    msg = ws.recv(timeout=timeout)
    return msg if isinstance(msg, bytes) else json.loads(msg)


def until(ws: Any, kind: str, timeout: float = 120.0) -> list[Any]:
    """Every message up to and including the first text frame of type ``kind`` (fails on an error frame)."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = recv(ws, max(1.0, deadline - time.monotonic()))
        out.append(msg)
        if isinstance(msg, dict):
            assert msg["type"] != "error", msg
            if msg["type"] == kind:
                return out


def ping_until_error(ws: Any, within_s: float) -> tuple[dict, float]:
    """Send a ping every 0.2 s (reading each pong) until an error frame comes; (the frame, seconds it took)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within_s:
        try:
            ws.send(json.dumps({"type": "ping"}))
        except ConnectionClosed:  # the server ended it meanwhile: its error frame is still to be read
            pass
        msg = recv(ws, 10)
        if msg["type"] == "error":
            return msg, time.monotonic() - t0
        assert msg["type"] == "pong", msg
        time.sleep(0.2)
    raise AssertionError(f"pings kept the session alive for {within_s}s")


def close_code(ws: Any) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


def test_pings_do_not_keep_a_session_or_its_slot(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, streaming={"max_sessions": 1, "idle_timeout_s": 1.5}) as srv:
        url = ws_url(srv.base_url)
        # a socket that only pings, never sending session_init_v2, loses its slot at the idle timeout
        with connect(url, open_timeout=30) as squatter:
            err, took = ping_until_error(squatter, 15)
            assert err["code"] == "session_timeout", err
            assert 1.0 < took < 10
            assert close_code(squatter) == 1000
        # an initialized session that only pings (and snapshots) ends at the idle timeout too
        with connect(url, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", **SHAPE}))
            assert recv(ws)["type"] == "ltx2_stream_start"
            ws.send(json.dumps({"type": "snapshot_state"}))
            assert recv(ws)["type"] == "continuation_state_snapshot"
            err, took = ping_until_error(ws, 15)
            assert err["code"] == "session_timeout" and "pings" in err["message"], err
            assert 1.0 < took < 10
            assert close_code(ws) == 1000
        # real activity keeps a session: segments run to their end, and each request restarts the clock
        with connect(url, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", "prompt": "a slow one", **SHAPE,
                                "num_inference_steps": 12}))
            assert until(ws, "ltx2_segment_complete")[-1]["frames"] == 5
            time.sleep(1.0)
            ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "and on"}))
            assert until(ws, "ltx2_segment_complete")[-1]["segment_idx"] == 1
        metrics = httpx.get(srv.base_url + "/metrics", timeout=30).text
        assert 'fastvideo_stream_sessions_total{outcome="timeout"} 2.0' in metrics


def test_handshake_deadline(tiny_generator, tmp_path):
    streaming = {"max_sessions": 1, "handshake_timeout_s": 1.0, "idle_timeout_s": 60}
    with inproc_server(tiny_generator, tmp_path, streaming=streaming) as srv:
        url = ws_url(srv.base_url)
        with connect(url, open_timeout=30) as squatter:  # pings, and refused inits, do not count
            squatter.send(json.dumps({"type": "session_init_v2", "fps": -3}))
            assert recv(squatter)["code"] == "invalid_message"
            err, took = ping_until_error(squatter, 15)
            assert err["code"] == "handshake_timeout" and "session_init_v2" in err["message"], err
            assert 0.5 < took < 10
            assert close_code(squatter) == 1008
        with connect(url, open_timeout=30) as ws:  # the slot is free again; an initialized session stays
            ws.send(json.dumps({"type": "session_init_v2", **SHAPE}))
            assert recv(ws)["type"] == "ltx2_stream_start"
            time.sleep(1.5)
            ws.send(json.dumps({"type": "ping"}))
            assert recv(ws)["type"] == "pong"


def test_per_client_cap(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, streaming={"max_sessions": 3, "max_sessions_per_client": 1}) as srv:
        url = ws_url(srv.base_url)
        with connect(url, open_timeout=30) as first:
            first.send(json.dumps({"type": "session_init_v2", **SHAPE}))
            assert recv(first)["type"] == "ltx2_stream_start"
            with connect(url, open_timeout=30) as second:  # same address (127.0.0.1): over the cap
                rejected = recv(second)
                assert rejected["type"] == "error" and rejected["code"] == "session_rejected", rejected
                assert "max_sessions_per_client" in rejected["message"] and "127.0.0.1" in rejected["message"]
                assert rejected["retryable"] is True
                assert close_code(second) == 1013
            first.send(json.dumps({"type": "ping"}))
            assert recv(first)["type"] == "pong"  # the first session is untouched
        # Its slot is free once the server has seen the first one end: the client cannot know when that is, so it
        # retries as a `session_rejected` (retryable) tells it to; bounded, and it must get in.
        deadline = time.monotonic() + 20
        while True:
            with connect(url, open_timeout=30) as third:
                third.send(json.dumps({"type": "session_init_v2", **SHAPE}))
                answer = recv(third)
            if answer["type"] != "error" or time.monotonic() > deadline:
                break
            assert answer["code"] == "session_rejected" and answer["retryable"] is True, answer
            time.sleep(0.05)
        assert answer["type"] == "ltx2_stream_start", answer


def test_unparseable_frames_and_lone_surrogates_are_invalid_messages(tiny_generator, tmp_path):
    deep = '{"type": "ping", "x": ' + "[" * 200_000 + "]" * 200_000 + "}"
    frames = [
        '{"type": "session_init_v2", "seed": ' + "9" * 5000 + "}",  # past Python's int digit limit
        deep,
        "[" * 200_000,
        '{"type": "session_init_v2", "negative_prompt": "no \\ud800 here", "prompt": "fine"}',
        '{"type": "session_init_v2", "prompt": "a \\udfff b"}',
        '{"type": "session_init_v2", "session_id": "sess_\\ud83d"}',
        '{"type": "session_init_v2", "sampler": ["\\ud800"]}',
        '{"type": "ping", "\\udc00": 1}',
        json.dumps({"type": "x" * 100_000}),  # echoed back only in part
        json.dumps({"type": "session_init_v2", "session_id": "s" * 100_000}),
    ]
    with inproc_server(tiny_generator, tmp_path) as srv, connect(ws_url(srv.base_url), open_timeout=30,
                                                                  max_size=None) as ws:
        for frame in frames:
            ws.send(frame)
            err = recv(ws)
            assert err["type"] == "error" and err["code"] in ("invalid_message", "session_not_found"), (frame[:80], err)
            assert err["retryable"] is False and len(err["message"]) < 400, err
            if "\\u" in frame:
                assert "surrogate" in err["message"], err
        # the session goes on: a valid init, then segments with a surrogate refused, then a real one
        ws.send(json.dumps({"type": "session_init_v2", **SHAPE}))
        assert recv(ws)["type"] == "ltx2_stream_start"
        ws.send('{"type": "segment_prompt_source", "prompt": "ok", "negative_prompt": "\\udbff"}')
        err = recv(ws)
        assert err["code"] == "invalid_message" and err["message"].startswith("negative_prompt:"), err
        ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "a paired \U0001F600 is fine",
                            "negative_prompt": "blur"}))
        msgs = until(ws, "ltx2_segment_complete")
        assert msgs[-1]["frames"] == 5
        assert httpx.get(srv.base_url + "/readyz", timeout=30).status_code == 200


def opens(url: str, origin: str | None) -> bool:
    """Whether a socket with this ``Origin`` header (None: none) is accepted; a refusal must be a 403."""
    try:
        with connect(url, open_timeout=30, origin=origin) as ws:  # type: ignore[arg-type]
            ws.send(json.dumps({"type": "ping"}))
            return recv(ws)["type"] == "pong"
    except InvalidStatus as exc:
        assert exc.response.status_code == 403
        return False


def test_origin_same_origin_by_default(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path) as srv:
        url = ws_url(srv.base_url)
        assert opens(url, None)  # not a browser: no Origin header
        assert opens(url, srv.base_url)  # the built-in player's own origin
        assert not opens(url, "http://evil.example")
        assert not opens(url, f"http://localhost:{srv.port}")  # another name is another origin
        assert not opens(url, f"http://127.0.0.1:{srv.port + 1}")
        assert not opens(url, "null")  # sandboxed frames, file:// pages
        assert httpx.get(srv.base_url + "/readyz", timeout=30).status_code == 200


def test_allowed_origins(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, server={"allowed_origins": ["https://app.example.com"]}) as srv:
        url = ws_url(srv.base_url)
        assert opens(url, "https://app.example.com") and opens(url, "https://APP.example.com:443")
        assert opens(url, srv.base_url) and opens(url, None)
        assert not opens(url, "http://app.example.com")  # a listed host under another scheme is another origin
        assert not opens(url, "http://evil.example")
    with inproc_server(tiny_generator, tmp_path, server={"allowed_origins": ["*"]}) as srv:
        assert opens(ws_url(srv.base_url), "http://anything.example")


def test_gpu_assigned_names_the_worker(tiny_generator, tmp_path):
    # without a pool: no made-up worker id; the device is the engine's
    with inproc_server(tiny_generator, tmp_path) as srv, connect(ws_url(srv.base_url), open_timeout=30) as ws:
        ws.send(json.dumps({"type": "session_init_v2", "prompt": "one", **SHAPE}))
        assigned = next(m for m in until(ws, "ltx2_segment_complete")
                        if isinstance(m, dict) and m["type"] == "gpu_assigned")
        assert (assigned["worker_id"], assigned["device"], assigned["gpu_id"]) == (None, "cpu", None), assigned

    # a pool of two CPU workers: two sessions at once run on both, and each frame names the one that ran it
    with inproc_server(tiny_generator, tmp_path, server={"warmup": True}, pool={"devices": ["cpu", "cpu"]}) as srv:
        url = ws_url(srv.base_url)
        with connect(url, open_timeout=30) as a, connect(url, open_timeout=30) as b:
            for ws, prompt in ((a, "left"), (b, "right")):
                ws.send(json.dumps({"type": "session_init_v2", "prompt": prompt, **SHAPE, "num_inference_steps": 8}))
            frames = [[m for m in until(ws, "ltx2_segment_complete") if isinstance(m, dict)] for ws in (a, b)]
        assigned = [next(m for m in f if m["type"] == "gpu_assigned") for f in frames]
        assert sorted(m["worker_id"] for m in assigned) == ["worker0", "worker1"], assigned
        assert all(m["device"] == "cpu" and m["gpu_id"] is None for m in assigned), assigned
        workers = {w["worker_id"]: w for w in httpx.get(srv.base_url + "/readyz", timeout=30).json()["workers"]}
        assert {w: workers[w]["completed"] for w in workers} == {"worker0": 1, "worker1": 1}


@pytest.mark.parametrize("override, key", [
    ("streaming.handshake_timeout_s=0", "streaming.handshake_timeout_s"),
    ("streaming.handshake_timeout_s=7200", "streaming.handshake_timeout_s"),
    ("streaming.max_sessions_per_client=0", "streaming.max_sessions_per_client"),
    ("streaming.max_sessions_per_client=5", "streaming.max_sessions_per_client"),  # above max_sessions (4)
    ("streaming.max_sessions=0", "streaming.max_sessions"),
    ("streaming.idle_timeout_s=0", "streaming.idle_timeout_s"),
    ("server.allowed_origins=[example.com]", "server.allowed_origins[0]"),
    ("server.allowed_origins=['http://a.example/path']", "server.allowed_origins[0]"),
    ("server.allowed_origins=['null']", "server.allowed_origins[0]"),
])
def test_streaming_config_bounds(override, key):
    from fastvideo.api import ConfigError
    from fastvideo.serving.config import load_serve_config

    with pytest.raises(ConfigError) as err:
        load_serve_config(overrides=[override])
    assert err.value.path == key, str(err.value)


def test_streaming_config_defaults():
    from fastvideo.serving.config import load_serve_config

    config = load_serve_config()
    assert config.streaming.handshake_timeout_s == 10.0 and config.streaming.max_sessions_per_client is None
    assert config.server.allowed_origins == []
    config = load_serve_config(overrides=["streaming.max_sessions_per_client=2",
                                          "server.allowed_origins=['HTTPS://App.Example.com:443', 'http://h:3000/']"])
    assert config.streaming.max_sessions_per_client == 2
    assert config.server.allowed_origins == ["https://app.example.com", "http://h:3000"]


def test_ws_api_key(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, server={"api_key": "s3cret"}) as srv:
        url = ws_url(srv.base_url)
        for headers, query in (({}, ""), ({"authorization": "Bearer wrong"}, ""), ({}, "?api_key=s3cre"),
                               ({"authorization": "Bearer s3cret-and-more"}, ""), ({}, "?api_key=%C3%BC")):
            with connect(url + query, open_timeout=30, additional_headers=headers) as ws:
                err = recv(ws)
                assert err["type"] == "error" and err["code"] == "unauthorized", (headers, query, err)
                assert close_code(ws) == 1008
        for headers, query in (({"authorization": "Bearer s3cret"}, ""), ({}, "?api_key=s3cret")):
            with connect(url + query, open_timeout=30, additional_headers=headers) as ws:
                ws.send(json.dumps({"type": "ping"}))
                assert recv(ws)["type"] == "pong", (headers, query)


def test_a_bad_segment_is_refused_at_once_and_uses_none_of_the_session_budget(tiny_generator, tmp_path):
    """A segment_prompt_source with a value the engine cannot run is answered invalid_request right away (not
    after the running segment), and does not count against streaming.max_segments."""
    with inproc_server(tiny_generator, tmp_path, streaming={"max_segments": 2}) as srv:
        with connect(ws_url(srv.base_url), max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", **SHAPE}))
            assert recv(ws)["type"] == "ltx2_stream_start"
            for bad, param in (({"num_inference_steps": 0}, "num_inference_steps"), ({"prompt": ""}, "prompt"),
                               ({"guidance_scale": "high"}, "guidance_scale"), ({"num_frames": 100000}, "num_frames")):
                ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "p", **bad}))
                err = recv(ws)
                assert (err["type"], err["code"], err["param"]) == ("error", "invalid_request", param), err
            for prompt in ("a kite", "the kite climbs"):  # the whole budget of 2 is still there
                ws.send(json.dumps({"type": "segment_prompt_source", "prompt": prompt}))
                until(ws, "ltx2_segment_complete")
