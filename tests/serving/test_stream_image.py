"""Image-to-video over ``/v1/stream``: ``session_init_v2.input_reference`` (a data URL or bare base64) on the
built-in tiny I2V model (``fastvideo-tiny-i2v``) is decoded by the HTTP edge's decoder, stored once under the
server's output dir and conditions every segment; an I2V session without it, or with a corrupt image, is refused
at init naming ``input_reference`` (and the session stays open for a corrected init); the stored image is gone
once the session ends."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("websockets")

from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from serving_utils import inproc_server, solid_png  # noqa: E402
from test_stream_ws import binaries, collect_until, recv, texts, ws_url  # noqa: E402

SHAPE = {"width": 64, "height": 64, "num_frames": 5, "fps": 8, "num_inference_steps": 2}


def _decode(stream: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(stream)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.int16)


@pytest.fixture(scope="module")
def i2v(fastvideo_cache, tmp_path_factory):
    """(server, its output dir) over the tiny I2V model."""
    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained("fastvideo-tiny-i2v", device="cpu", dtype="fp32")
    assert "continuation" not in generator.served_branches  # every segment is a fresh clip of the stream
    tmp = tmp_path_factory.mktemp("stream-i2v")
    out = tmp / "out"
    try:
        with inproc_server(generator, tmp, server={"output_dir": str(out)}) as srv:
            yield srv, out
    finally:
        generator.shutdown()


def _refs(out: Path) -> list[Path]:
    return sorted(out.glob("ref_*")) if out.is_dir() else []


def _two_segments(base_url: str, out: Path, reference: str) -> tuple[list[Any], list[bytes]]:
    """One session of two segments conditioned on ``reference``: its messages, and the bytes of the stored
    references seen while it was open."""
    with connect(ws_url(base_url), max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "session_init_v2", "prompt": "a cat", "seed": 3, "input_reference": reference,
                            **SHAPE}))
        msgs = collect_until(ws, "ltx2_segment_complete")
        during = [p.read_bytes() for p in _refs(out)]
        ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "the cat turns"}))
        msgs += collect_until(ws, "ltx2_segment_complete")
        ws.send(json.dumps({"type": "end_stream"}))
        msgs += collect_until(ws, "ltx2_stream_complete")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    return msgs, during


def _wait_gone(out: Path, timeout: float = 10.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while _refs(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _refs(out)


def test_input_reference_conditions_every_segment_and_is_deleted_at_the_end(i2v):
    srv, out = i2v
    red = "data:image/png;base64," + base64.b64encode(solid_png((220, 30, 30))).decode()
    msgs, during = _two_segments(srv.base_url, out, red)
    assert during == [solid_png((220, 30, 30))]  # stored once, as sent
    done = [m for m in texts(msgs) if m["type"] == "ltx2_segment_complete"]
    assert [m["segment_idx"] for m in done] == [0, 1]
    assert all(m["has_continuation_state"] is False for m in done)
    red_frames = _decode(b"".join(binaries(msgs)))
    assert red_frames.shape == (10, 64, 64, 3)  # both segments, one playable stream
    assert _wait_gone(out) == []  # the session's image is deleted when it ends

    blue = base64.b64encode(solid_png((30, 30, 220))).decode()  # bare base64 works too
    msgs, during = _two_segments(srv.base_url, out, blue)
    assert len(during) == 1
    blue_frames = _decode(b"".join(binaries(msgs)))
    assert blue_frames.shape == (10, 64, 64, 3)
    for seg in (slice(0, 5), slice(5, 10)):  # the image conditions each segment, not only the first
        assert np.abs(red_frames[seg] - blue_frames[seg]).max() > 10
    assert _wait_gone(out) == []


def test_i2v_session_without_or_with_a_bad_image_is_refused_naming_input_reference(i2v):
    srv, out = i2v
    with connect(ws_url(srv.base_url), max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "session_init_v2", "prompt": "a cat", **SHAPE}))
        err = recv(ws, 30)
        assert err["type"] == "error" and err["param"] == "input_reference", err
        assert "image-to-video" in err["message"], err
        for bad in ("data:image/png;base64," + base64.b64encode(b"not an image at all").decode(), "%%%not-base64",
                    "https://example.com/cat.png", 42):
            ws.send(json.dumps({"type": "session_init_v2", "prompt": "a cat", "input_reference": bad, **SHAPE}))
            err = recv(ws, 30)
            assert err["type"] == "error" and err["code"] == "invalid_request", err
            assert err["param"] == "input_reference", err
        assert _refs(out) == []  # nothing stored for a refused init
        # the session is still open and takes a corrected init (no prompt: nothing runs)
        ws.send(json.dumps({"type": "session_init_v2",
                            "input_reference": base64.b64encode(solid_png((9, 9, 9))).decode(), **SHAPE}))
        start = recv(ws, 30)
        assert start["type"] == "ltx2_stream_start", start
        assert len(_refs(out)) == 1
        store = srv.app.state.server.store  # the orphan sweep leaves a live session's image alone, however old
        store.sweep_files(now=time.time() + 10 * store.orphan_grace_s, owned=store.owned_files())
        assert len(_refs(out)) == 1
    assert _wait_gone(out) == []  # a client that disconnects leaves no image behind


@pytest.mark.parametrize("max_body_bytes", [1024, 32 * 1024 * 1024, 100 * 1024 * 1024 + 1])
def test_served_websocket_message_limit_fits_the_largest_accepted_image(max_body_bytes: int) -> None:
    from fastvideo.serving.server import ws_message_limit

    image = b"\xff" * max_body_bytes
    frame = json.dumps({"type": "session_init_v2", "prompt": "x" * 4096,
                        "input_reference": "data:image/png;base64," + base64.b64encode(image).decode()})
    assert len(frame.encode()) <= ws_message_limit(max_body_bytes)
    assert ws_message_limit(max_body_bytes) < len(frame.encode()) + 128 * 1024  # not unbounded either
