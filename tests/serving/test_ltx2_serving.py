"""LTX-2 through the OpenAI HTTP edge: ``/v1/videos`` on the built-in tiny LTX-2 (``fastvideo-tiny-ltx2``) runs on
the same runtime core as Wan and ``/v1/videos/{id}/content`` is an MP4 with an AAC track of the video's duration;
the server warms up on it (initial branch only, at the preset's size); a field LTX-2 refuses is a 400 naming it."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

import av  # noqa: E402

from fastvideo.runtime.media import decode_mp4, decode_mp4_audio  # noqa: E402

from serving_utils import inproc_server, wait_job  # noqa: E402

LTX2_SMALL = {"size": "32x32", "num_frames": 9, "num_inference_steps": 2}


def test_v1_videos_returns_an_mp4_with_audio(ltx2_generator, tmp_path):
    with inproc_server(ltx2_generator, tmp_path, server={"warmup": True}) as srv, \
            httpx.Client(base_url=srv.base_url, timeout=120) as c:
        r = c.post("/v1/videos", json={"prompt": "a fox in the snow", **LTX2_SMALL, "seed": 4})
        assert r.status_code == 200, r.text
        done = wait_job(c, r.json()["id"])
        assert done["status"] == "completed", done
        data = c.get(f"/v1/videos/{done['id']}/content").content
        frames, fps = decode_mp4(data)
        assert frames.shape == (9, 32, 32, 3)
        audio, rate = decode_mp4_audio(data)
        assert rate == ltx2_generator.pipeline.sample_rate and audio.shape[0] == 2
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            assert stream.codec_context.name == "aac"
            assert float(stream.duration * stream.time_base) == pytest.approx(9 / fps, abs=1024 / rate + 1e-3)

        r = c.post("/v1/videos", json={"prompt": "a fox", **LTX2_SMALL, "size": "48x48"})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] in ("size", "sampling.width"), error
        assert "32" in error["message"], error


def test_websocket_stream_carries_the_audio_track(ltx2_generator, tmp_path):
    """``/v1/stream`` on LTX-2: two continued segments (the second conditioned on the first's ``ltx2.v1`` state) in
    one fMP4 whose init segment has a video and an AAC track; the stream decodes to both segments' frames and sound."""
    websockets = pytest.importorskip("websockets")
    from websockets.sync.client import connect

    del websockets
    import json

    def collect(ws, kind):
        out = []
        while True:
            msg = ws.recv(timeout=120)
            msg = msg if isinstance(msg, bytes) else json.loads(msg)
            out.append(msg)
            if isinstance(msg, dict):
                assert msg["type"] != "error", msg
                if msg["type"] == kind:
                    return out

    shape = {"width": 32, "height": 32, "num_frames": 9, "fps": 24, "num_inference_steps": 2}
    with inproc_server(ltx2_generator, tmp_path) as srv:
        with connect(srv.base_url.replace("http://", "ws://") + "/v1/stream", max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", "prompt": "waves on a beach", "seed": 5, **shape}))
            seg0 = collect(ws, "ltx2_segment_complete")
            ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "gulls over the waves"}))
            seg1 = collect(ws, "ltx2_segment_complete")
    media_init = [m for m in seg0 if isinstance(m, dict) and m["type"] == "media_init"]
    assert len(media_init) == 1 and "mp4a.40.2" in media_init[0]["codec"], media_init
    for idx, seg in enumerate((seg0, seg1)):
        done = seg[-1]
        assert done["frames"] == 9 and done["has_continuation_state"] is True
        assert done["branch"] == ("initial" if idx == 0 else "continuation")
    stream = b"".join(m for m in seg0 + seg1 if isinstance(m, bytes))
    with av.open(io.BytesIO(stream)) as container:
        assert len(container.streams.audio) == 1
        frames = [f for f in container.decode(video=0)]
    assert len(frames) == 18
    with av.open(io.BytesIO(stream)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    rate = ltx2_generator.pipeline.sample_rate
    # AAC holds up to ~two frames back until the next segment (fmp4 contract): the rest of both segments is there
    assert 18 / 24 * rate - 3 * 1024 <= samples <= 18 / 24 * rate + 1024, samples
