"""Full pipeline parity: our engine core against diffusers' WanPipeline on the same tiny folder.

Both load the built-in tiny model folder (real diffusers layout), get the same prompt, negative
prompt, seed (CPU generator) and settings. Ours runs the one denoising loop there is, the engine
core's batched executor, with a batch of one; we compare its clean latents, decoded as float frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastvideo.api import GenerationRequest, SamplingConfig
from core_testing import core_latents
from fastvideo.engine.presets import get_preset

diffusers = pytest.importorskip("diffusers")

# Float frames in [0, 1]; fp32 on both sides, CFG batched (ours) vs two passes (diffusers).
FRAME_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def ours(tiny_generator):
    return tiny_generator


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return diffusers.WanPipeline.from_pretrained(str(tiny_model_dir), torch_dtype=torch.float32)


@pytest.mark.parametrize("steps,guidance,frames,size", [(3, 5.0, 5, (64, 48)), (2, 1.0, 1, (32, 32))])
def test_pipeline_matches_diffusers(ours, reference, steps, guidance, frames, size):
    width, height = size
    prompt, negative, seed = "a red fox running through snow", "blurry, low quality", 1234
    request = GenerationRequest(prompt=prompt, negative_prompt=negative,
                                sampling=SamplingConfig(width=width, height=height, num_frames=frames,
                                                        num_inference_steps=steps, guidance_scale=guidance,
                                                        seed=seed))
    latents, _ = core_latents(ours, request)
    pipe = ours.pipeline
    with torch.no_grad():
        video = pipe.vae.decode(pipe.vae.denormalize_latents(latents))[0]
    mine = (video / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()

    theirs = reference(prompt=prompt, negative_prompt=negative, height=height, width=width, num_frames=frames,
                       num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                       generator=torch.Generator("cpu").manual_seed(seed),
                       max_sequence_length=get_preset("fastvideo-tiny").text_length).frames[0]
    assert mine.shape == theirs.shape == (frames, height, width, 3)
    assert float(np.abs(mine).max()) > 0  # not a trivially empty video
    err = float(np.abs(mine - theirs).max())
    assert float(mine.std()) > 1e-3  # frames vary: the comparison is not between two constants
    assert err <= FRAME_TOLERANCE, f"max abs frame error {err:.2e} > {FRAME_TOLERANCE}"


def test_uint8_frames_are_the_core_latents_decoded_and_trimmed(ours):
    """``generate`` returns the core's latents decoded, quantized and trimmed to the asked frame count."""
    request = GenerationRequest(prompt="waves", sampling=SamplingConfig(width=32, height=32, num_frames=3,
                                                                        num_inference_steps=2, seed=7))
    out = ours.generate(request)
    assert out.frames.dtype == np.uint8 and out.frames.shape == (3, 32, 32, 3)  # 5 generated, trimmed to 3
    again = ours.generate(request)
    assert np.array_equal(out.frames, again.frames)
    latents, resolved = core_latents(ours, request)
    with torch.no_grad():
        assert np.array_equal(out.frames, ours.pipeline.decode(latents, resolved))
