"""Wan2.2 I2V A14B (two experts, no CLIP) through the runtime core, on a tiny diffusers folder
(``tests/engine/wan22_i2v_fixtures.py``; the engine test checks it against diffusers).

- ``VideoGenerator.generate`` (the facade) gives the engine core's video (frames within 1 uint8 level of the
  executor's latents decoded) with the experts' settings in the metadata.
- Two image requests in one batch: one forward per step for both (each step's members sit on the same expert),
  each member equal to its solo run (latents within ``core_testing.LATENT_TOL``: batched matmuls sum in another
  order).
- The OpenAI HTTP edge: ``input_reference`` conditions the video, a request without one is a 400 naming it; a
  served model warms up with the probe image.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

_TESTS = Path(__file__).resolve().parents[1]
for _sub in ("engine", "serving"):
    if str(_TESTS / _sub) not in sys.path:
        sys.path.insert(0, str(_TESTS / _sub))

from core_testing import LATENT_TOL, core_latents  # noqa: E402
from fastvideo.api import GenerationRequest, InputConfig, OutputConfig, RequestError, SamplingConfig  # noqa: E402
from wan22_i2v_fixtures import image, write_i2v_a14b_folder  # noqa: E402

STEPS = 4


@pytest.fixture(scope="module")
def generator(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from fastvideo import VideoGenerator

    folder, _, _ = write_i2v_a14b_folder(tiny_model_dir, tmp_path_factory.mktemp("i2v_a14b") / "model", STEPS)
    gen = VideoGenerator.from_pretrained(str(folder), device="cpu", dtype="fp32")
    yield gen
    gen.shutdown()


def _request(seed: int, picture: Any, **sampling: Any) -> GenerationRequest:
    values = dict(width=48, height=32, num_frames=5, num_inference_steps=STEPS, guidance_scale=5.0,
                  guidance_scale_2=2.0, seed=seed)
    return GenerationRequest(prompt=f"a fox {seed}", inputs=InputConfig(pil_image=picture),
                             sampling=SamplingConfig(**{**values, **sampling}),
                             output=OutputConfig(save_video=False, return_frames=True))


def test_generate_equals_the_engine_core(generator: Any) -> None:
    request = _request(3, image(10))
    result = generator.generate(request)
    latents, resolved = core_latents(generator, request)
    want = generator.pipeline.decode(latents, resolved)
    assert result.frames.shape == want.shape == (5, 32, 48, 3)
    assert np.abs(result.frames.astype(np.int16) - want.astype(np.int16)).max() <= 1
    assert result.metadata["boundary_ratio"] == pytest.approx(generator.preset.boundary_ratio)
    assert result.metadata["guidance_scale_2"] == 2.0
    with pytest.raises(RequestError) as info:  # an image-to-video model: the image is required
        generator.generate(GenerationRequest(prompt="x", sampling=SamplingConfig(num_inference_steps=1)))
    assert info.value.field == "inputs.image_path"


def test_two_image_requests_batch_on_one_expert_per_step(generator: Any) -> None:
    from fastvideo.runtime.executor import WanBatchExecutor

    requests = [_request(7, image(11)), _request(8, image(12))]
    executor = WanBatchExecutor(generator)
    items = []
    for request in requests:
        req, resolved = generator.resolve(request)
        item = executor.make_item(req, resolved)
        executor.prepare(item)
        assert item.ctx.image is not None and item.ctx.image[1] is None  # condition channels, no CLIP tokens
        items.append(item)
    assert len({item.key for item in items}) == 1
    before = generator.counters.snapshot()
    assert executor.denoise(items, lambda *_: None) == []
    after = generator.counters.snapshot()
    forwards = [after[f"expert_{k}_forwards"] - before[f"expert_{k}_forwards"] for k in (0, 1)]
    assert forwards == [2, 2]  # one forward per step for the whole batch, the switch after step 2
    for item, request in zip(items, requests):
        solo, _ = core_latents(generator, request)
        assert (item.ctx.latents - solo).abs().max().item() <= LATENT_TOL


def test_http_input_reference(generator: Any, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from fastvideo.runtime.media import decode_mp4
    from serving_utils import SMALL, inproc_server, solid_png, wait_job

    with inproc_server(generator, tmp_path, server={"warmup": True}) as srv, \
            httpx.Client(base_url=srv.base_url, timeout=120) as client:
        assert client.get("/readyz").status_code == 200  # warmed up with the probe image
        videos = []
        for color in ((220, 30, 30), (30, 30, 220)):
            r = client.post("/v1/videos", data={"prompt": "a cat", **{k: str(v) for k, v in SMALL.items()},
                                                "seed": "3"},
                            files={"input_reference": ("in.png", solid_png(color), "image/png")})
            assert r.status_code == 200, r.text
            done = wait_job(client, r.json()["id"])
            assert done["status"] == "completed", done
            frames, _ = decode_mp4(client.get(f"/v1/videos/{done['id']}/content").content)
            assert frames.shape == (5, 64, 64, 3)
            videos.append(torch.from_numpy(frames.astype(np.int16)))
        assert (videos[0] - videos[1]).abs().max().item() > 10  # the reference image conditions the video
        r = client.post("/v1/videos", json={"prompt": "a cat", **SMALL})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "input_reference" and "image-to-video" in error["message"], error
