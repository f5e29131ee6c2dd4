"""``/v1/stream`` against real servers: continued segments as one fMP4 stream, snapshots, resume, bad frames,
session cap and idle timeout.

The fMP4 bytes are checked with a box walker written here (independent of ``fastvideo.serving.fmp4``):
init = ``ftyp`` + ``moov`` once, then each binary message is ``moof`` + ``mdat`` with rising ``mfhd``
sequence numbers and ``tfdt`` decode times that continue across segments; the concatenated stream
decodes with PyAV to every frame of both segments.
"""

from __future__ import annotations

import io
import json
import struct
import time
from typing import Any

import pytest

pytest.importorskip("fastapi")
websockets = pytest.importorskip("websockets")
httpx = pytest.importorskip("httpx")

from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from serving_utils import inproc_server  # noqa: E402

SHAPE = {"width": 64, "height": 64, "num_frames": 5, "fps": 8, "num_inference_steps": 2}
CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex"}


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/v1/stream"


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of the ISO-BMFF boxes laid end to end in data[start:end]."""
    end = len(data) if end is None else end
    out, pos = [], start
    while pos < end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        assert size >= 8 and pos + size <= end, f"bad box {kind!r} size {size} at {pos}"
        out.append((kind, pos, size))
        pos += size
    return out


def child(data: bytes, parent: tuple[bytes, int, int], kind: bytes) -> tuple[bytes, int, int]:
    assert parent[0] in CONTAINERS
    found = [b for b in boxes(data, parent[1] + 8, parent[1] + parent[2]) if b[0] == kind]
    assert found, f"{parent[0]!r} has no {kind!r}"
    return found[0]


def fragment_info(data: bytes) -> tuple[int, int]:
    """(mfhd sequence number, tfdt base media decode time) of one moof+mdat message."""
    top = boxes(data)
    assert [b[0] for b in top] == [b"moof", b"mdat"], [b[0] for b in top]
    moof = top[0]
    mfhd = child(data, moof, b"mfhd")
    seq = struct.unpack(">I", data[mfhd[1] + 12:mfhd[1] + 16])[0]
    tfdt = child(data, child(data, moof, b"traf"), b"tfdt")
    version = data[tfdt[1] + 8]
    base = (struct.unpack(">Q", data[tfdt[1] + 12:tfdt[1] + 20])[0] if version == 1
            else struct.unpack(">I", data[tfdt[1] + 12:tfdt[1] + 16])[0])
    return seq, base


def recv(ws: Any, timeout: float = 120.0) -> Any:
    msg = ws.recv(timeout=timeout)
    return msg if isinstance(msg, bytes) else json.loads(msg)


def collect_until(ws: Any, kind: str, timeout: float = 120.0) -> list[Any]:
    """Every message up to and including the first text frame of type ``kind`` (fails on an error frame)."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = recv(ws, max(1.0, deadline - time.monotonic()))
        out.append(msg)
        if isinstance(msg, dict):
            assert msg["type"] != "error" or kind == "error", msg
            if msg["type"] == kind:
                return out


def texts(msgs: list[Any]) -> list[dict]:
    return [m for m in msgs if isinstance(m, dict)]


def binaries(msgs: list[Any]) -> list[bytes]:
    return [m for m in msgs if isinstance(m, bytes)]


def decode_all(stream: bytes) -> tuple[int, int, int]:
    import av

    with av.open(io.BytesIO(stream)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return len(frames), frames[0].shape[1], frames[0].shape[0]


def test_two_continued_segments_stream_one_fmp4(live_server):
    with connect(ws_url(live_server.base_url), max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "session_init_v2", "prompt": "a kite over a beach", "seed": 5, **SHAPE}))
        seg0 = collect_until(ws, "ltx2_segment_complete")
        ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "the kite climbs higher"}))
        seg1 = collect_until(ws, "ltx2_segment_complete")
        ws.send(json.dumps({"type": "snapshot_state"}))
        snap = collect_until(ws, "continuation_state_snapshot")[-1]
        ws.send(json.dumps({"type": "end_stream"}))
        end = collect_until(ws, "ltx2_stream_complete")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000

    start = texts(seg0)[0]
    assert start["type"] == "ltx2_stream_start" and start["resumed"] is False
    assert (start["width"], start["height"], start["fps"], start["num_frames"]) == (64, 64, 8, 5)
    session_id = start["session_id"]
    assert all(m["session_id"] == session_id for m in texts(seg0 + seg1 + end) + [snap])

    for idx, seg in enumerate((seg0, seg1)):
        kinds = [m["type"] for m in texts(seg) if m["type"] not in ("ltx2_stream_start", "queue_status")]
        assert kinds[:2] == ["gpu_assigned", "ltx2_segment_start"], kinds
        steps = [m for m in texts(seg) if m["type"] == "step_complete"]
        assert [(s["step"], s["total_steps"], s["segment_idx"]) for s in steps] == [(1, 2, idx), (2, 2, idx)]
        seg_start = next(m for m in texts(seg) if m["type"] == "ltx2_segment_start")
        assert seg_start["segment_idx"] == idx and seg_start["continuation"] is (idx == 1)
        # media follows the steps: nothing binary before the last step
        first_bin = next(i for i, m in enumerate(seg) if isinstance(m, bytes))
        last_step = max(i for i, m in enumerate(seg) if isinstance(m, dict) and m["type"] == "step_complete")
        assert first_bin > last_step
        done = texts(seg)[-1]
        assert done["segment_idx"] == idx and done["frames"] == 5 and done["has_continuation_state"] is True
        assert done["branch"] == ("initial" if idx == 0 else "continuation")
        assert texts(seg)[-2]["type"] == "media_segment_complete"

    # the init segment comes exactly once, announced by media_init with the codec read from it
    media_init = [m for m in texts(seg0 + seg1) if m["type"] == "media_init"]
    assert len(media_init) == 1
    init, *frags0 = binaries(seg0)
    frags1 = binaries(seg1)
    assert [b[0] for b in boxes(init)] == [b"ftyp", b"moov"] and media_init[0]["bytes"] == len(init)
    codec = media_init[0]["codec"]
    assert codec.startswith("avc1.") and codec.encode() not in init  # derived from avcC, not a copied string
    avcc_at = init.index(b"avcC")
    assert codec == "avc1." + init[avcc_at + 5:avcc_at + 8].hex()
    assert media_init[0]["mime"] == f'video/mp4; codecs="{codec}"'
    for seg, frags in ((seg0, frags0), (seg1, frags1)):
        complete = next(m for m in texts(seg) if m["type"] == "media_segment_complete")
        assert complete["fragments"] == len(frags) >= 1 and complete["bytes"] == sum(map(len, frags))
    infos = [fragment_info(f) for f in frags0 + frags1]
    seqs, times = [i[0] for i in infos], [i[1] for i in infos]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert times == sorted(times) and len(set(times)) == len(times), times
    seg1_start = next(m for m in texts(seg1) if m["type"] == "media_segment_complete")["start_time_s"]
    assert seg1_start == pytest.approx(5 / 8)
    assert decode_all(init + b"".join(frags0 + frags1)) == (10, 64, 64)

    state = snap["state"]
    assert snap["segment_idx"] == 2 and state["kind"] and state["payload"]["schema_version"]
    assert end[-1]["segments"] == 2 and end[-1]["duration_s"] == pytest.approx(10 / 8)

    # resume from the snapshot on a new connection: the next segment continues it
    with connect(ws_url(live_server.base_url), max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "session_init_v2", "continuation_state": state, "prompt": "the kite lands",
                            **SHAPE}))
        seg2 = collect_until(ws, "ltx2_segment_complete")
    start2 = texts(seg2)[0]
    assert start2["type"] == "ltx2_stream_start" and start2["resumed"] is True and start2["segment_idx"] == 2
    assert start2["session_id"] != session_id
    assert texts(seg2)[-1]["segment_idx"] == 2 and texts(seg2)[-1]["branch"] == "continuation"
    init2, *frags2 = binaries(seg2)
    assert decode_all(init2 + b"".join(frags2)) == (5, 64, 64)

    # resume by session id on the server that held it
    with connect(ws_url(live_server.base_url), max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "session_init_v2", "session_id": session_id}))
        start3 = recv(ws)
        assert start3["type"] == "ltx2_stream_start" and start3["resumed"] is True
        assert start3["session_id"] == session_id and start3["segment_idx"] == 2


def test_malformed_frames_get_errors_and_session_goes_on(live_server):
    bad_frames = ["not json at all", "[1, 2]", json.dumps({"type": "teleport"}), json.dumps({"no_type": 1}),
                  json.dumps({"type": "segment_prompt_source", "prompt": "too early"}),
                  json.dumps({"type": "session_init_v2", "width": "wide"}),
                  json.dumps({"type": "session_init_v2", "fps": -3}), b"\x00\x01binary"]
    with connect(ws_url(live_server.base_url), max_size=None, open_timeout=30) as ws:
        for frame in bad_frames:
            ws.send(frame)
            err = recv(ws, 30)
            assert (err["type"] == "error" and err["code"] == "invalid_message"
                    and err["retryable"] is False), (frame, err)
            assert err["message"]
        ws.send(json.dumps({"type": "ping"}))
        assert recv(ws, 30)["type"] == "pong"
        ws.send(json.dumps({"type": "session_init_v2", "session_id": "sess_never_seen"}))
        err = recv(ws, 30)
        assert err["type"] == "error" and err["code"] == "session_not_found"
        ws.send(json.dumps({"type": "session_init_v2", **SHAPE}))
        assert recv(ws, 30)["type"] == "ltx2_stream_start"
        ws.send(json.dumps({"type": "session_init_v2", **SHAPE}))
        assert recv(ws, 30)["code"] == "invalid_message"  # a second init
        ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "p", "num_frames": 100000}))
        err = recv(ws, 30)
        assert err["type"] == "error" and err["code"] == "invalid_request" and err["param"] == "num_frames", err
        ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "still serving"}))
        msgs = collect_until(ws, "ltx2_segment_complete")
        assert texts(msgs)[-1]["frames"] == 5 and binaries(msgs)
    # the server keeps serving HTTP too
    assert httpx.get(live_server.base_url + "/readyz", timeout=30).status_code == 200


def test_session_cap_and_idle_timeout(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, streaming={"max_sessions": 1, "idle_timeout_s": 1.5}) as srv:
        url = ws_url(srv.base_url)
        with connect(url, open_timeout=30) as first:
            time.sleep(0.2)  # let the server register the first session
            with connect(url, open_timeout=30) as second:
                rejected = recv(second, 30)
                assert rejected["type"] == "error" and rejected["code"] == "session_rejected"
                assert rejected["retryable"] is True
                with pytest.raises(ConnectionClosed) as closed:
                    second.recv(timeout=30)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            # the idle first session times out on its own and frees its slot
            t0 = time.monotonic()
            timeout = recv(first, 30)
            assert timeout["type"] == "error" and timeout["code"] == "session_timeout"
            assert time.monotonic() - t0 < 25
            with pytest.raises(ConnectionClosed):
                first.recv(timeout=30)
        with connect(url, open_timeout=30) as third:
            third.send(json.dumps({"type": "session_init_v2", **SHAPE}))
            assert recv(third, 30)["type"] == "ltx2_stream_start"
        metrics = httpx.get(srv.base_url + "/metrics", timeout=30).text
        assert 'fastvideo_stream_sessions_total{outcome="rejected"} 1.0' in metrics
        assert 'fastvideo_stream_sessions_total{outcome="timeout"} 1.0' in metrics
