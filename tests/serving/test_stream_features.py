"""``/v1/stream`` session features against real servers (uvicorn on 127.0.0.1, the built-in model): every message
of the catalogue in both directions, loop generation capped by ``generation_segment_cap``, pause/resume,
single-clip mode, presets with labels, the prompt-enhancer hook (a scripted ``PromptSource``; without one the
enhancer frames are refused ``enhancer_not_configured``), per-session JSON logs carrying the request ids, and a
session resumed by id on a restarted server through Redis."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest

pytest.importorskip("fastapi")
websockets = pytest.importorskip("websockets")

from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from fastvideo.serving.stream_protocol import CLIENT_TYPES, SERVER_FRAMES  # noqa: E402
from redis_testing import redis_server  # noqa: E402
from serving_utils import inproc_server  # noqa: E402

SHAPE = {"width": 64, "height": 64, "num_frames": 5, "fps": 8, "num_inference_steps": 2}

pytestmark = pytest.mark.timeout(300)


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/v1/stream"


def recv(ws: Any, timeout: float = 60.0) -> Any:
    msg = ws.recv(timeout=timeout)
    return msg if isinstance(msg, bytes) else json.loads(msg)


def until(ws: Any, kind: str, timeout: float = 120.0, seen: list | None = None) -> list[Any]:
    """Every message up to and including the first text frame of type ``kind`` (fails on an unexpected error)."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = recv(ws, max(1.0, deadline - time.monotonic()))
        out.append(msg)
        if seen is not None:
            seen.append(msg)
        if isinstance(msg, dict):
            assert msg["type"] != "error" or kind == "error", msg
            if msg["type"] == kind:
                return out


def texts(msgs: list[Any]) -> list[dict]:
    return [m for m in msgs if isinstance(m, dict)]


def quiet(ws: Any, seconds: float) -> None:
    """Nothing arrives for ``seconds``."""
    with pytest.raises(TimeoutError):
        got = ws.recv(timeout=seconds)
        pytest.fail(f"expected silence, got {got!r:.200}")


def closed_with(ws: Any) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=30)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


def frames_of(stream: bytes) -> int:
    import av

    with av.open(io.BytesIO(stream)) as c:
        return sum(1 for _ in c.decode(video=0))


class ScriptedEnhancer:
    """A PromptSource whose answers are known (the real enhancer is tested on its own)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def enhance(self, prompt: str, *, session: Any) -> str:
        self.calls.append(("enhance", prompt))
        return f"enhanced: {prompt}"

    async def rewrite(self, prompt: str, count: int, *, session: Any) -> list[str]:
        self.calls.append(("rewrite", prompt))
        return [f"{prompt} #{i}" for i in range(count)]

    async def extend(self, last_prompt: str, *, session: Any) -> str:
        self.calls.append(("extend", last_prompt))
        return f"after {session.segment_idx}: {last_prompt}"


def test_every_message_both_directions(tiny_generator, tmp_path):
    """One session sends every client frame and sees every server frame (the enhancer ones via the hook)."""
    seen: list[Any] = []
    sent: set[str] = set()
    with inproc_server(tiny_generator, tmp_path) as srv:
        state = srv.app.state.server
        served = state.defaults.name
        with connect(ws_url(srv.base_url), max_size=None, open_timeout=30) as ws:
            def ask(frame: dict, kind: str) -> dict:
                sent.add(frame["type"])
                ws.send(json.dumps(frame))
                return until(ws, kind, seen=seen)[-1]

            assert ask({"type": "ping"}, "pong")["ts"] > 0
            start = ask({"type": "session_init_v2", "client_id": "ui-1", "preset": served, "preset_label": "Tiny",
                         "curated_prompts": ["a red kite", "a blue kite"], **SHAPE}, "ltx2_stream_start")
            assert (start["client_id"], start["preset"], start["preset_label"]) == ("ui-1", served, "Tiny")
            assert start["curated_prompts"] == ["a red kite", "a blue kite"] and start["generation_segment_cap"] == 6
            assert start["loop_generation_enabled"] is False and start["state"] == "initializing"

            upd = ask({"type": "seed_prompts_updated", "seed_prompts": ["a green kite"]}, "session_updated")
            assert upd["curated_prompts"] == ["a green kite"]
            for frame, key in (({"type": "loop_generation_updated", "enabled": False}, "loop_generation_enabled"),
                               ({"type": "enhancement_updated", "enabled": False}, "enhancement_enabled"),
                               ({"type": "auto_extension_updated", "enabled": False}, "auto_extension_enabled")):
                assert ask(frame, "session_updated")[key] is False
            assert ask({"type": "generation_paused_updated", "paused": True}, "session_updated")["generation_paused"]
            assert ask({"type": "resume"}, "session_updated")["generation_paused"] is False
            assert ask({"type": "pause"}, "session_updated")["generation_paused"] is True
            assert ask({"type": "generation_paused_updated", "paused": False},
                       "session_updated")["generation_paused"] is False
            assert ask({"type": "preset_updated", "preset_label": "Tiny CPU"}, "session_updated")[
                "preset_label"] == "Tiny CPU"
            err = ask({"type": "preset_updated", "preset": "wan-14b"}, "error")
            assert err["code"] == "preset_mismatch" and served in err["message"] and err["param"] == "preset"
            # no enhancer configured: every enhancer-dependent frame is refused, and the flags stay off
            for frame in ({"type": "enhancement_updated", "enabled": True},
                          {"type": "auto_extension_updated", "enabled": True},
                          {"type": "enhance_prompt", "prompt": "a kite"},
                          {"type": "rewrite_prompt", "prompt": "a kite", "count": 2}):
                err = ask(frame, "error")
                assert err["code"] == "enhancer_not_configured" and "streaming.prompt" in err["message"], frame
            assert ask({"type": "teleport"}, "error")["code"] == "invalid_message"

            single = ask({"type": "single_clip_updated", "enabled": False}, "session_updated")
            assert single["single_clip_mode"] is False
            seg_start = ask({"type": "segment_prompt_source", "prompt": "a kite", "source": "curated"},
                            "ltx2_segment_start")
            until(ws, "ltx2_segment_complete", seen=seen)
            assert seg_start["prompt_source"] == "curated"
            snap = ask({"type": "snapshot_state"}, "continuation_state_snapshot")
            assert snap["state"]["kind"] and snap["segment_idx"] == 1
            assert ask({"type": "single_clip_updated", "enabled": True}, "error")["code"] == "single_clip"  # too late

            # the enhancer hook: a PromptSource set on the server state answers the enhancer frames
            state.prompt_source = ScriptedEnhancer()
            assert ask({"type": "enhance_prompt", "prompt": "a kite"}, "prompt_enhanced")["enhanced"] == \
                "enhanced: a kite"
            assert ask({"type": "rewrite_prompt", "prompt": "a kite", "count": 2}, "prompt_rewrites")["rewrites"] == \
                ["a kite #0", "a kite #1"]
            state.prompt_source = None
            done = ask({"type": "end_stream"}, "ltx2_stream_complete")
            assert done["reason"] == "stop_requested" and done["segments"] == 1
            assert closed_with(ws) == 1000
    kinds = {m["type"] for m in texts(seen)}
    assert kinds == set(SERVER_FRAMES), set(SERVER_FRAMES) ^ kinds
    assert sent - {"teleport"} == set(CLIENT_TYPES), set(CLIENT_TYPES) ^ sent


def test_loop_generation_until_the_cap(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, streaming={"generation_segment_cap": 3}) as srv:
        with connect(ws_url(srv.base_url), max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", "loop_generation_enabled": True,
                                "curated_prompts": ["dawn", "noon"], **SHAPE}))
            msgs = until(ws, "ltx2_stream_complete")
            assert closed_with(ws) == 1000
    starts = [m for m in texts(msgs) if m["type"] == "ltx2_segment_start"]
    assert [(m["segment_idx"], m["prompt"], m["prompt_source"], m["continuation"]) for m in starts] == [
        (0, "dawn", "curated", False), (1, "noon", "curated", True), (2, "dawn", "curated", True)]
    assert texts(msgs)[-1]["reason"] == "segment_cap" and texts(msgs)[-1]["segments"] == 3
    assert frames_of(b"".join(m for m in msgs if isinstance(m, bytes))) == 15


def test_pause_holds_segments_and_resume_runs_them(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, streaming={"generation_segment_cap": 2}) as srv:
        with connect(ws_url(srv.base_url), max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", **SHAPE}))
            until(ws, "ltx2_stream_start")
            ws.send(json.dumps({"type": "pause"}))
            until(ws, "session_updated")
            ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "held"}))
            ws.send(json.dumps({"type": "loop_generation_updated", "enabled": True}))
            assert until(ws, "session_updated")[-1]["loop_generation_enabled"] is True
            quiet(ws, 2.0)  # paused: the requested segment does not start, nor does the loop
            ws.send(json.dumps({"type": "resume"}))
            msgs = until(ws, "ltx2_stream_complete")
            assert closed_with(ws) == 1000
    starts = [m for m in texts(msgs) if m["type"] == "ltx2_segment_start"]
    assert [(m["prompt"], m["prompt_source"]) for m in starts] == [("held", "user"), ("held", "loop")]
    assert texts(msgs)[-1]["reason"] == "segment_cap"


def test_segments_held_by_a_pause_do_not_keep_the_session(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, streaming={"idle_timeout_s": 1.5}) as srv:
        with connect(ws_url(srv.base_url), max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", **SHAPE}))
            until(ws, "ltx2_stream_start")
            ws.send(json.dumps({"type": "pause"}))
            until(ws, "session_updated")
            ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "held"}))
            t0 = time.monotonic()
            err = recv(ws, 30)
            assert err["type"] == "error" and err["code"] == "session_timeout", err  # no queue_status before it
            assert time.monotonic() - t0 < 20
            assert closed_with(ws) == 1000


def test_single_clip_mode(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path) as srv:
        with connect(ws_url(srv.base_url), max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", "single_clip_mode": True, "prompt": "one clip",
                                "loop_generation_enabled": True, **SHAPE}))
            until(ws, "ltx2_stream_start")
            ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "a second one"}))
            err = until(ws, "error")[-1]
            assert err["code"] == "single_clip"
            msgs = until(ws, "ltx2_stream_complete")
            assert closed_with(ws) == 1000
    assert texts(msgs)[-1]["reason"] == "single_clip" and texts(msgs)[-1]["segments"] == 1
    assert [m["prompt"] for m in texts(msgs) if m["type"] == "ltx2_segment_start"] == ["one clip"]


def test_enhanced_auto_extended_loop_through_the_hook(tiny_generator, tmp_path):
    enhancer = ScriptedEnhancer()
    with inproc_server(tiny_generator, tmp_path, streaming={"generation_segment_cap": 3}) as srv:
        srv.app.state.server.prompt_source = enhancer
        with connect(ws_url(srv.base_url), max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", "enhancement_enabled": True,
                                "auto_extension_enabled": True, "loop_generation_enabled": True,
                                "prompt": "a kite", **SHAPE}))
            msgs = until(ws, "ltx2_stream_complete")
    starts = [m for m in texts(msgs) if m["type"] == "ltx2_segment_start"]
    assert [(m["prompt"], m["prompt_source"]) for m in starts] == [
        ("enhanced: a kite", "enhanced"), ("after 1: enhanced: a kite", "auto_extension"),
        ("after 2: after 1: enhanced: a kite", "auto_extension")]
    assert [c[0] for c in enhancer.calls] == ["enhance", "extend", "extend"]


def test_a_prompt_the_source_refuses_gets_its_error_frame_and_no_gpu_time(tiny_generator, tmp_path):
    from fastvideo.api import FastVideoError

    class Refused(FastVideoError, ValueError):
        code = "prompt_blocked"

    class CheckingSource(ScriptedEnhancer):
        async def check(self, prompt: str, *, session: Any) -> None:
            self.calls.append(("check", prompt))
            if "forbidden" in prompt:
                raise Refused(f"the prompt {prompt!r} was blocked")

    source = CheckingSource()
    with inproc_server(tiny_generator, tmp_path) as srv:
        srv.app.state.server.prompt_source = source
        jobs_before = len(srv.app.state.server.service.jobs)
        with connect(ws_url(srv.base_url), max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", "prompt": "a forbidden thing", **SHAPE}))
            until(ws, "ltx2_stream_start")
            err = until(ws, "error")[-1]
            assert err["code"] == "prompt_blocked" and "blocked" in err["message"] and err["segment_idx"] == 0
            assert len(srv.app.state.server.service.jobs) == jobs_before  # nothing was submitted
            ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "a fine thing"}))
            msgs = until(ws, "ltx2_segment_complete")
    assert next(m for m in texts(msgs) if m["type"] == "ltx2_segment_start")["prompt"] == "a fine thing"
    assert source.calls == [("check", "a forbidden thing"), ("check", "a fine thing")]


def test_session_log_lines_carry_request_ids(tiny_generator, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTVIDEO_SESSION_LOG_DIR", str(tmp_path / "session-logs"))
    with inproc_server(tiny_generator, tmp_path) as srv:
        with connect(ws_url(srv.base_url), max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", "prompt": "logged", **SHAPE}))
            msgs = until(ws, "ltx2_segment_complete")
            ws.send(json.dumps({"type": "end_stream"}))
            until(ws, "ltx2_stream_complete")
            closed_with(ws)
        time.sleep(0.3)  # the handler logs session_end after the close
    session_id = texts(msgs)[0]["session_id"]
    request_id = next(m for m in texts(msgs) if m["type"] == "queue_status")["request_id"]
    lines = [json.loads(line) for line in (tmp_path / "session-logs" / f"{session_id}.jsonl").read_text().splitlines()]
    events = [e["event"] for e in lines]
    assert events == ["session_open", "session_init", "segment_queued", "segment_complete", "stream_complete",
                      "session_end"], events
    assert all(e["session_id"] == session_id for e in lines)
    assert [e.get("request_id") for e in lines if e["event"].startswith("segment_")] == [request_id, request_id]


def test_session_survives_a_server_restart_through_redis(tiny_generator, tmp_path):
    (tmp_path / "redis").mkdir()
    try:
        _restart_through_redis(tiny_generator, tmp_path)
    finally:  # build_app attached the Redis blob store to the shared generator: take it away again
        tiny_generator.blob_store = None


def _restart_through_redis(tiny_generator: Any, tmp_path: Any) -> None:
    with redis_server(tmp_path / "redis") as url:
        with inproc_server(tiny_generator, tmp_path, state={"url": url, "blob_threshold_bytes": 256}) as first:
            with connect(ws_url(first.base_url), max_size=None, open_timeout=30) as ws:
                ws.send(json.dumps({"type": "session_init_v2", "prompt": "before the restart", "preset_label": "L",
                                    "curated_prompts": ["c"], **SHAPE}))
                seg0 = until(ws, "ltx2_segment_complete")
        session_id = texts(seg0)[0]["session_id"]
        from fastvideo.runtime.stores import RedisSessionStore

        stored = RedisSessionStore(url, prefix="fastvideo:stream:").get(session_id)
        assert stored is not None and stored.segment_index == 0
        assert stored.state["payload"]["tail_latents"]["encoding"] == "blob"  # the tensor itself is in Redis too
        # a new server process over the same Redis (the first one is gone, and with it its memory)
        with inproc_server(tiny_generator, tmp_path, state={"url": url, "blob_threshold_bytes": 256}) as second:
            with connect(ws_url(second.base_url), max_size=None, open_timeout=30) as ws:
                ws.send(json.dumps({"type": "session_init_v2", "session_id": session_id}))
                start = until(ws, "ltx2_stream_start")[-1]
                assert (start["session_id"], start["resumed"], start["segment_idx"]) == (session_id, True, 1)
                assert start["preset_label"] == "L" and start["curated_prompts"] == ["c"]
                assert (start["width"], start["height"], start["fps"]) == (64, 64, 8)
                ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "after the restart"}))
                seg1 = until(ws, "ltx2_segment_complete")
    done = texts(seg1)[-1]
    assert done["segment_idx"] == 1 and done["branch"] == "continuation"
    assert next(m for m in texts(seg1) if m["type"] == "ltx2_segment_start")["continuation"] is True


def test_generation_segment_cap_is_honoured_and_checked():
    from fastvideo.api import ConfigError, parse_config
    from fastvideo.serving.config import ServeConfig, check_serve_config

    assert check_serve_config(parse_config(ServeConfig, {"streaming": {"generation_segment_cap": 2}}))
    with pytest.raises(ConfigError) as err:
        check_serve_config(parse_config(ServeConfig, {"streaming": {"generation_segment_cap": 0}}))
    assert err.value.path == "streaming.generation_segment_cap"
