"""Streaming session model without a server: the ``SessionState`` machine (``InvalidSessionTransition`` is a
FastVideoError), ``SessionManager`` caps, handshake/idle deadlines and reaping, sessions written to and read back
from the session store (in memory and a real ``redis-server``: a second manager over a fresh connection - a
restarted worker - resumes them), ``SessionLogger`` JSON lines, and every client frame of the catalogue parsed
into its model (and refused when malformed)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pydantic")

from fastvideo.api import ContinuationState, FastVideoError  # noqa: E402
from fastvideo.runtime.stores import InMemorySessionStore, RedisSessionStore  # noqa: E402
from fastvideo.serving import stream_protocol as sp  # noqa: E402
from fastvideo.serving.session import (  # noqa: E402
    FLAGS,
    InvalidSessionTransition,
    Session,
    SessionManager,
    SessionRejected,
    SessionState,
)
from fastvideo.serving.session_logger import SessionLogger  # noqa: E402

S = SessionState


def test_state_machine():
    s = Session()
    assert s.state is S.INITIALIZING and s.history == [S.INITIALIZING]
    for target in (S.QUEUED, S.GPU_BINDING, S.ACTIVE, S.ACTIVE, S.QUEUED, S.GPU_BINDING, S.ACTIVE, S.COMPLETE):
        s.transition(target)
    assert s.terminal and s.history[-1] is S.COMPLETE
    with pytest.raises(InvalidSessionTransition) as err:
        s.transition(S.ACTIVE)
    assert isinstance(err.value, FastVideoError) and "complete -> active" in str(err.value)
    fresh = Session()
    fresh.transition(S.QUEUED)
    with pytest.raises(InvalidSessionTransition):
        fresh.transition(S.REJECTED)  # rejection happens at admission only
    assert fresh.state is S.QUEUED  # the refused edge changed nothing
    # FastVideo's fields, with its defaults
    assert (fresh.client_id, fresh.preset, fresh.preset_label, fresh.curated_prompts, fresh.stream_mode,
            fresh.gpu_id, fresh.metadata) == (None, None, None, [], "av_fmp4", None, {})
    assert not any(getattr(fresh, f) for f in FLAGS)


def test_manager_caps_deadlines_and_reaping():
    m = SessionManager(2, 1, segment_cap=3, idle_timeout_s=5.0, handshake_timeout_s=2.0)
    a = m.create("10.0.0.1")
    with pytest.raises(SessionRejected, match="per client"):
        m.create("10.0.0.1")
    b = m.create("10.0.0.2")
    with pytest.raises(SessionRejected, match="limit of 2"):
        m.create("10.0.0.3")
    assert len(m) == 2 and a.id in m and m.get(b.id) is b
    a.transition(S.ACTIVE)
    assert a.is_active() and m.active_sessions() == [a] and not a.segment_cap_reached(3)
    a.segment_idx = 3
    assert a.segment_cap_reached(m.segment_cap)
    # before session_init_v2 the handshake deadline comes first; after it the idle one; none while busy
    assert m.deadline(a, busy=False, initialized=False) == (a.created_at + 2.0, "handshake_timeout")
    assert m.deadline(a, busy=False, initialized=True) == (a.last_activity + 5.0, "session_timeout")
    assert m.deadline(a, busy=True, initialized=True) is None
    assert m.reap_timed_out(now=a.last_activity + 1.0) == []
    b.transition(S.ERROR)  # a terminal session is never reaped
    assert m.reap_timed_out(now=max(a.last_activity, b.last_activity) + 6.0) == [a.id]
    m.release(a)
    m.release(a)  # idempotent
    assert len(m) == 1 and m.create("10.0.0.1")
    with pytest.raises(ValueError):
        SessionManager(1, segment_cap=0)


def _state(index: int) -> ContinuationState:
    return ContinuationState(kind="wan.v1", payload={"schema_version": 1, "segment_index": index})


@pytest.fixture(params=["memory", "redis"])
def store_factory(request):
    if request.param == "memory":
        store = InMemorySessionStore()
        return lambda: store
    url = request.getfixturevalue("redis_url")
    return lambda: RedisSessionStore(url, prefix="fastvideo:stream-test:")


def test_sessions_persist_and_resume_in_a_new_manager(store_factory):
    first = SessionManager(4, idle_timeout_s=60.0, store=store_factory())
    s = first.create("c")
    s.client_id, s.preset, s.preset_label = "ui-7", "tiny", "Tiny (CPU)"
    s.curated_prompts, s.loop_generation_enabled, s.single_clip_mode = ["a", "b"], True, False
    s.sampling, s.negative_prompt, s.last_prompt = {"width": 64, "height": 64, "fps": 8}, "blur", "a"
    s.continuation_state, s.segment_idx = _state(2), 3
    first.persist(s)
    first.release(s)

    restarted = SessionManager(4, idle_timeout_s=60.0, store=store_factory())  # a new worker, same store
    record = restarted.load(s.id)
    assert record is not None and record.segment_index == 2
    resumed = restarted.create("c")
    restarted.rename(resumed, record.session_id)
    resumed.restore(record)
    assert resumed.id == s.id and restarted.get(s.id) is resumed
    assert (resumed.segment_idx, resumed.continuation_state.to_dict()) == (3, _state(2).to_dict())
    assert (resumed.client_id, resumed.preset, resumed.preset_label, resumed.curated_prompts) == (
        "ui-7", "tiny", "Tiny (CPU)", ["a", "b"])
    assert resumed.loop_generation_enabled and not resumed.single_clip_mode
    assert (resumed.sampling, resumed.negative_prompt, resumed.last_prompt) == (s.sampling, "blur", "a")
    assert restarted.load("sess_never_written") is None
    assert restarted.load("bad id with spaces") is None and restarted.load("x" * 500) is None


def test_session_logger_json_lines(tmp_path, caplog):
    slog = SessionLogger(tmp_path / "logs")
    with caplog.at_level("INFO", logger="fastvideo.sessions"):
        slog.log("sess_abc", "segment_queued", request_id="sess_abc_seg0", segment_idx=0, obj=object())
        slog.log("sess_abc", "session_end", state="complete")
        slog.log("../escape", "x")  # not a safe file name: logged, never written as a file
    lines = [json.loads(line) for line in (tmp_path / "logs" / "sess_abc.jsonl").read_text().splitlines()]
    assert [(e["event"], e["session_id"]) for e in lines] == [("segment_queued", "sess_abc"),
                                                             ("session_end", "sess_abc")]
    assert lines[0]["request_id"] == "sess_abc_seg0" and lines[0]["segment_idx"] == 0 and lines[0]["ts"] > 0
    assert "request_id" not in lines[1]
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["sess_abc.jsonl"]
    assert sum('"event":"segment_queued"' in r.getMessage() for r in caplog.records) == 1
    assert '"session_id":"../escape"' in caplog.text


#: One valid frame per client type (the catalogue), and one malformed variant of each that has fields.
VALID = {
    "session_init_v2": {"client_id": "c1", "preset": "p", "preset_label": "P", "curated_prompts": ["a"],
                        "enhancement_enabled": False, "auto_extension_enabled": False,
                        "loop_generation_enabled": True, "single_clip_mode": False, "stream_mode": "av_fmp4"},
    "segment_prompt_source": {"prompt": "x", "source": "curated"},
    "seed_prompts_updated": {"seed_prompts": ["a", "b"]},
    "enhancement_updated": {"enabled": True},
    "auto_extension_updated": {"enabled": False},
    "loop_generation_updated": {"enabled": True},
    "generation_paused_updated": {"paused": True},
    "single_clip_updated": {"enabled": True},
    "preset_updated": {"preset_label": "L"},
    "pause": {}, "resume": {},
    "enhance_prompt": {"prompt": "x"},
    "rewrite_prompt": {"prompt": "x", "count": 2},
    "snapshot_state": {}, "end_stream": {}, "ping": {},
}
INVALID = {
    "session_init_v2": {"loop_generation_enabled": "yes"},
    "segment_prompt_source": {"source": "telepathy"},
    "seed_prompts_updated": {"seed_prompts": "a"},
    "enhancement_updated": {"enabled": 1},
    "auto_extension_updated": {},
    "loop_generation_updated": {"enabled": "true"},
    "generation_paused_updated": {"paused": None},
    "single_clip_updated": {"enabled": []},
    "preset_updated": {"preset": 3},
    "enhance_prompt": {"prompt": 5},
    "rewrite_prompt": {"prompt": "x", "count": 9},
}


def test_catalogue_parses_every_client_frame():
    assert set(VALID) == set(sp.CLIENT_TYPES)
    for kind, fields in VALID.items():
        msg = sp.parse_client_message(json.dumps({"type": kind, **fields}))
        assert msg.type == kind
        for key, value in fields.items():
            assert getattr(msg, key) == value, (kind, key)
    for kind, fields in INVALID.items():
        with pytest.raises(sp.ProtocolError) as err:
            sp.parse_client_message(json.dumps({"type": kind, **fields}))
        assert str(err.value).startswith(f"{kind}: "), err.value
    with pytest.raises(sp.ProtocolError, match="unknown message type 'teleport'"):
        sp.parse_client_message('{"type": "teleport"}')
    with pytest.raises(sp.ProtocolError):
        sp.parse_client_message(json.dumps({"type": "seed_prompts_updated", "seed_prompts": ["a"] * 65}))


def test_readme_documents_the_whole_catalogue():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("#### Sessions and the message catalogue"):]
    section = section[:section.index("\n### ")]
    missing = [t for t in (*sp.CLIENT_TYPES, *sp.SERVER_FRAMES) if f"`{t}" not in section]
    assert not missing, f"README's WebSocket catalogue lacks {missing}"
