"""The prompt enhancer and safety filter inside ``/v1/stream`` sessions (real uvicorn on 127.0.0.1, the built-in
model, chat-completions stubs on 127.0.0.1): a 4-segment auto-extended loop session with enhancement where the
first LLM call falls back once, and a blocked prompt answered ``error{code:"prompt_blocked"}`` without a segment."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("websockets")

from websockets.sync.client import connect  # noqa: E402

from chat_stub import ChatStub  # noqa: E402
from serving_utils import inproc_server  # noqa: E402
from test_stream_features import SHAPE, closed_with, frames_of, texts, until, ws_url  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def test_an_enhanced_auto_extended_loop_session_with_one_fallback(tiny_generator, tmp_path):
    primary = ChatStub([("status", 500), ("ok", "seg 2: the kite climbs into pink clouds"),
                        ("ok", "seg 3: the kite drifts over the lighthouse"),
                        ("ok", "seg 4: the kite lands softly on the dunes")])
    fallback = ChatStub(default=("ok", "seg 1: a red kite over a windy beach at dawn"))
    with primary, fallback:
        prompt = {"enabled": True, "provider": "openai_compatible", "base_url": primary.base_url, "model": "a",
                  "timeout_ms": 5000, "fallbacks": [{"base_url": fallback.base_url, "model": "b"}]}
        with inproc_server(tiny_generator, tmp_path, streaming={"generation_segment_cap": 4, "prompt": prompt}) as srv:
            with connect(ws_url(srv.base_url), max_size=None, open_timeout=30) as ws:
                ws.send(json.dumps({"type": "session_init_v2", "enhancement_enabled": True,
                                    "auto_extension_enabled": True, "loop_generation_enabled": True,
                                    "prompt": "a kite", **SHAPE}))
                msgs = until(ws, "ltx2_stream_complete", timeout=240)
                assert closed_with(ws) == 1000
            stats = srv.app.state.server.prompting.enhancer.stats
            exposition = httpx.get(srv.base_url + "/metrics", timeout=10).text
    assert 'fastvideo_prompt_fallbacks_total{operation="enhance"} 1.0' in exposition
    labels = 'operation="auto_extend",outcome="ok",provider="openai_compatible"'
    assert f"fastvideo_prompt_llm_requests_total{{{labels}}} 3.0" in exposition
    starts = [m for m in texts(msgs) if m["type"] == "ltx2_segment_start"]
    assert [(m["segment_idx"], m["prompt"], m["prompt_source"]) for m in starts] == [
        (0, "seg 1: a red kite over a windy beach at dawn", "enhanced"),
        (1, "seg 2: the kite climbs into pink clouds", "auto_extension"),
        (2, "seg 3: the kite drifts over the lighthouse", "auto_extension"),
        (3, "seg 4: the kite lands softly on the dunes", "auto_extension")]
    assert [m["continuation"] for m in starts] == [False, True, True, True]
    assert frames_of(b"".join(m for m in msgs if isinstance(m, bytes))) == 4 * SHAPE["num_frames"]
    assert (stats.calls, stats.fallbacks, stats.failed) == (4, 1, 0)
    assert len(fallback.requests) == 1 and len(primary.requests) == 4
    # each auto-extension was written from the segment before it
    assert [r["messages"][1]["content"].splitlines()[0] for r in primary.requests[1:]] == [
        "Segment 1: seg 1: a red kite over a windy beach at dawn", "Segment 1: seg 2: the kite climbs into pink clouds",
        "Segment 1: seg 3: the kite drifts over the lighthouse"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> str:
    fasttext = pytest.importorskip("fasttext")
    rng = random.Random(0)
    words = {"unsafe": ["gore", "blood", "corpse", "wound", "severed", "bloody"],
             "safe": ["kitten", "meadow", "sunny", "beach", "kite", "fox", "snow", "lake"]}
    filler = ["a", "the", "with", "in", "on", "and", "scene", "close", "shot", "slow", "camera", "at"]
    lines = [f"__label__{label} " + " ".join(rng.sample(ws, 2) + rng.sample(filler, 4))
             for label, ws in words.items() for _ in range(100)]
    folder = tmp_path_factory.mktemp("stream-safety")
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    model = fasttext.train_supervised(input=str(folder / "train.txt"), epoch=25, lr=0.5, thread=1, seed=7,
                                      verbose=0)
    model.save_model(str(folder / "safety.bin"))
    return str(folder / "safety.bin")


def test_a_blocked_prompt_gets_an_error_frame_and_no_segment(tiny_generator, tmp_path, classifier):
    safety = {"enabled": True, "classifier_path": classifier}
    with inproc_server(tiny_generator, tmp_path, streaming={"safety": safety}) as srv:
        submitted: list[Any] = []
        state = srv.app.state.server
        real_submit = state.submit
        state.submit = lambda *a, **k: submitted.append(a) or real_submit(*a, **k)
        with connect(ws_url(srv.base_url), max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", "prompt": "gore and blood on a corpse", **SHAPE}))
            msgs = until(ws, "error")
            err = msgs[-1]
            assert err["code"] == "prompt_blocked" and "safety filter" in err["message"], err
            assert not any(isinstance(m, dict) and m["type"] == "ltx2_segment_start" for m in msgs)
            assert submitted == []  # nothing reached the generator
            ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "a kitten in a sunny meadow"}))
            done = until(ws, "ltx2_segment_complete")
            ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "a severed bloody wound"}))
            assert until(ws, "error")[-1]["code"] == "prompt_blocked"
            ws.send(json.dumps({"type": "end_stream"}))
            until(ws, "ltx2_stream_complete")
    starts = [m for m in texts(done) if m["type"] == "ltx2_segment_start"]
    assert [m["prompt"] for m in starts] == ["a kitten in a sunny meadow"] and len(submitted) == 1


def test_an_enhanced_prompt_the_filter_blocks_does_not_run(tiny_generator, tmp_path, classifier):
    with ChatStub([("ok", "a bloody corpse with a gore wound"), ("ok", "a kitten on a sunny beach")]) as llm:
        streaming = {"prompt": {"enabled": True, "provider": "openai_compatible", "base_url": llm.base_url},
                     "safety": {"enabled": True, "classifier_path": classifier}}
        with inproc_server(tiny_generator, tmp_path, streaming=streaming) as srv:
            with connect(ws_url(srv.base_url), max_size=None, open_timeout=30) as ws:
                ws.send(json.dumps({"type": "session_init_v2", "enhancement_enabled": True, "prompt": "a kitten",
                                    **SHAPE}))
                msgs = until(ws, "error")
                assert msgs[-1]["code"] == "prompt_blocked" and "enhanced prompt" in msgs[-1]["message"]
                assert not any(isinstance(m, dict) and m["type"] == "ltx2_segment_start" for m in msgs)
                ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "a kitten"}))
                done = until(ws, "ltx2_segment_complete")
    starts = [m for m in texts(done) if m["type"] == "ltx2_segment_start"]
    assert [(m["prompt"], m["prompt_source"]) for m in starts] == [("a kitten on a sunny beach", "enhanced")]


def test_the_operator_reloads_the_system_prompts_over_http(tiny_generator, tmp_path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "enhance.txt").write_text("ENHANCE v1")
    with ChatStub(default=("ok", "answer")) as llm:
        prompt = {"enabled": True, "provider": "openai_compatible", "base_url": llm.base_url,
                  "system_prompt_dir": str(folder)}
        with inproc_server(tiny_generator, tmp_path, streaming={"prompt": prompt}) as srv:
            enhancer = srv.app.state.server.prompting.enhancer
            assert enhancer.system_prompts.enhance == "ENHANCE v1"
            (folder / "enhance.txt").write_text("ENHANCE v2")
            r = httpx.post(srv.base_url + "/v1/prompts/reload", timeout=10)
            assert r.status_code == 200 and r.json() == {"reloaded": True, "system_prompt_dir": str(folder)}
            assert enhancer.system_prompts.enhance == "ENHANCE v2"
            (folder / "enhance.txt").unlink()
            folder.rmdir()
            r = httpx.post(srv.base_url + "/v1/prompts/reload", timeout=10)
            assert r.status_code == 409 and "system_prompt_dir" in r.json()["error"]["message"], r.text
            assert enhancer.system_prompts.enhance == "ENHANCE v2"  # kept
            schema = httpx.get(srv.base_url + "/openapi.json", timeout=10).json()
            assert "409" in schema["paths"]["/v1/prompts/reload"]["post"]["responses"]
    with inproc_server(tiny_generator, tmp_path) as srv:
        r = httpx.post(srv.base_url + "/v1/prompts/reload", timeout=10)
        assert r.status_code == 404 and r.json()["error"]["code"] == "enhancer_not_configured"
