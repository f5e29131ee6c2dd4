"""Image-to-video through the OpenAI edge: ``input_reference`` (multipart upload or a data URL) on the built-in
tiny I2V model (``fastvideo-tiny-i2v``) becomes ``inputs.image_path`` and conditions the video; the image
changes the video; an I2V model given no reference is a 400 naming ``input_reference``."""

from __future__ import annotations

import base64

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastvideo.runtime.media import decode_mp4  # noqa: E402

from serving_utils import SMALL, inproc_server, solid_png, wait_job  # noqa: E402


def test_input_reference_gives_image_to_video(i2v_generator, tmp_path):
    with inproc_server(i2v_generator, tmp_path) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
        videos = []
        for color in ((220, 30, 30), (30, 30, 220)):
            r = c.post("/v1/videos", data={"prompt": "a cat", **{k: str(v) for k, v in SMALL.items()}, "seed": "3"},
                       files={"input_reference": ("in.png", solid_png(color), "image/png")})
            assert r.status_code == 200, r.text
            done = wait_job(c, r.json()["id"])
            assert done["status"] == "completed", done
            frames, _ = decode_mp4(c.get(f"/v1/videos/{done['id']}/content").content)
            assert frames.shape == (5, 64, 64, 3)
            videos.append(frames.astype(np.int16))
        assert np.abs(videos[0] - videos[1]).max() > 10  # the reference image conditions the video
        data_url = "data:image/png;base64," + base64.b64encode(solid_png((30, 200, 30))).decode()
        r = c.post("/v1/videos", json={"prompt": "a cat", **SMALL, "input_reference": data_url})
        assert r.status_code == 200, r.text
        assert wait_job(c, r.json()["id"])["status"] == "completed"
        r = c.post("/v1/videos", json={"prompt": "a cat", **SMALL})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "input_reference" and "image-to-video" in error["message"], error


def test_server_warmup_runs_on_an_image_to_video_model(i2v_generator, tmp_path):
    """A served I2V model warms up with a grey probe image, initial branch only (its videos are not continued:
    the continuation warmup would be refused), and becomes ready; the default-request check passes too."""
    assert i2v_generator.served_branches == ("initial",)
    assert i2v_generator.probe_inputs().pil_image is not None
    with inproc_server(i2v_generator, tmp_path, server={"warmup": True}) as srv:
        assert httpx.get(f"{srv.base_url}/readyz", timeout=30).status_code == 200


def test_openai_sdk_input_reference_on_the_i2v_model(i2v_generator, tmp_path):
    """The OpenAI SDK's ``videos.create(input_reference=...)`` (a multipart upload) gives image-to-video."""
    openai = pytest.importorskip("openai")
    import warnings

    warnings.filterwarnings("ignore", message="The Sora API", category=DeprecationWarning)
    with inproc_server(i2v_generator, tmp_path) as srv:
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="sk-unused", max_retries=0, timeout=120.0)
        video = client.videos.create(prompt="a cat", size="64x64", input_reference=("in.png", solid_png((200, 90, 10)),
                                                                                     "image/png"),
                                     extra_body={"num_frames": 5, "num_inference_steps": 2, "seed": 5})
        video = client.videos.poll(video.id, poll_interval_ms=50)
        assert video.status == "completed", (video.status, video.error)
        data = client.videos.download_content(video.id).read()
        frames, _ = decode_mp4(data)
        assert frames.shape == (5, 64, 64, 3)
        try:
            client.videos.create(prompt="a cat", size="64x64", extra_body={"num_inference_steps": 2})
            raise AssertionError("an image-to-video model accepted a request without input_reference")
        except openai.BadRequestError as exc:
            assert exc.param == "input_reference", exc.body
