"""A model whose output turns non-finite fails the job visibly over HTTP: no video is ever served."""

from __future__ import annotations

import shutil

import pytest

from serving_utils import SMALL, inproc_server, wait_job

httpx = pytest.importorskip("httpx")


def test_nan_model_job_fails_with_generation_failed(tiny_model_dir, tmp_path):
    import numpy as np

    from fastvideo import VideoGenerator

    model = tmp_path / "garbage"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header:] = np.random.default_rng(0).integers(0, 256, len(data) - header, dtype=np.uint8).tobytes()
    weights.write_bytes(bytes(data))
    generator = VideoGenerator.from_pretrained(str(model), device="cpu", dtype="fp32")
    try:
        with inproc_server(generator, tmp_path) as server, httpx.Client(base_url=server.base_url,
                                                                         timeout=60.0) as client:
            created = client.post("/v1/videos", json={"prompt": "a fox", **SMALL})
            assert created.status_code == 200, created.text
            video = wait_job(client, created.json()["id"])
            assert video["status"] == "failed", video
            assert video["error"]["code"] == "generation_failed", video
            assert "non-finite values (NaN/Inf) at denoising step 1/2" in video["error"]["message"], video
            assert client.get(f"/v1/videos/{video['id']}/content").status_code >= 400  # no video to serve
    finally:
        generator.shutdown()
