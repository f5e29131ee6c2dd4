"""LTX-2 image-to-video through the OpenAI HTTP edge: ``/v1/videos`` with ``input_reference`` (a multipart upload or
a data URL) on the built-in tiny LTX-2 (``fastvideo-tiny-ltx2``) returns an MP4 with an AAC track whose video is
the image-conditioned one (the same request through ``VideoGenerator`` with ``inputs.image_path``, saved as an MP4,
decodes to the same frames within one level; the text-only one does not)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastvideo.runtime.media import decode_mp4, decode_mp4_audio  # noqa: E402

from serving_utils import inproc_server, solid_png, wait_job  # noqa: E402

LTX2_SMALL = {"size": "32x32", "num_frames": 9, "num_inference_steps": 2}


def test_input_reference_gives_ltx2_image_to_video_mp4(ltx2_generator, tmp_path):
    with inproc_server(ltx2_generator, tmp_path) as srv, httpx.Client(base_url=srv.base_url, timeout=120) as c:
        r = c.post("/v1/videos", data={"prompt": "a fox", **{k: str(v) for k, v in LTX2_SMALL.items()}, "seed": "3"},
                   files={"input_reference": ("in.png", solid_png((220, 30, 30)), "image/png")})
        assert r.status_code == 200, r.text
        done = wait_job(c, r.json()["id"])
        assert done["status"] == "completed", done
        data = c.get(f"/v1/videos/{done['id']}/content").content
        frames, _ = decode_mp4(data)
        assert frames.shape == (9, 32, 32, 3)
        audio, rate = decode_mp4_audio(data)
        assert rate == ltx2_generator.pipeline.sample_rate and audio.shape[0] == 2

        data_url = "data:image/png;base64," + base64.b64encode(solid_png((220, 30, 30))).decode()
        r = c.post("/v1/videos", json={"prompt": "a fox", **LTX2_SMALL, "seed": 3, "input_reference": data_url})
        assert r.status_code == 200, r.text
        done = wait_job(c, r.json()["id"])
        assert done["status"] == "completed", done
        again, _ = decode_mp4(c.get(f"/v1/videos/{done['id']}/content").content)
        assert np.array_equal(again, frames)  # the same image and seed, uploaded or as a data URL

    png = tmp_path / "in.png"
    png.write_bytes(solid_png((220, 30, 30)))
    decoded = {}
    for name, inputs in (("image", {"image_path": str(png)}), ("plain", {})):
        path = tmp_path / f"{name}.mp4"
        ltx2_generator.generate({"prompt": "a fox", "inputs": inputs,
                                 "sampling": {"width": 32, "height": 32, "num_frames": 9, "num_inference_steps": 2,
                                              "seed": 3},
                                 "output": {"save_video": True, "output_path": str(path), "return_frames": False}})
        decoded[name] = decode_mp4(path.read_bytes())[0].astype(np.int16)
    # the served video is the image-conditioned one (same MP4 encoding as a direct image_path run), not text-only
    assert np.abs(frames.astype(np.int16) - decoded["image"]).max() <= 1
    assert np.abs(frames.astype(np.int16) - decoded["plain"]).max() > 1
