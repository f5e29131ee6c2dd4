"""Test support for the engine core (CPU suite and the GPU suite).

- ``core_latents(generator, request)`` resolves the request, then runs the batch executor's stages
  (``prepare``, ``denoise``) for a batch of one, exactly as ``generate`` does, and returns the final
  clean latents (before the VAE) with the resolved sampling. Parity tests compare them with diffusers'.
- ``video_request(seed, ...)``: a small 64x64x5, 3-step request that returns its continuation state.
- ``assert_same_video(got, want)``: frames within ``FRAME_TOL`` uint8 levels and tail latents within
  ``LATENT_TOL``. A batched DiT forward sums its matmuls in another order than a batch of one, so
  latents may differ by float32 rounding (measured <= 1e-5) and a frame value on a .5 boundary can flip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

FRAME_TOL = 1
LATENT_TOL = 1e-4


def core_latents(generator: Any, request: Any) -> tuple[torch.Tensor, Any]:
    from fastvideo.runtime.executor import WanBatchExecutor

    executor = WanBatchExecutor(generator)
    req, resolved = generator.resolve(request)
    item = executor.make_item(req, resolved)
    executor.prepare(item)
    dropped = executor.denoise([item], lambda *_: None)
    assert dropped == [], dropped
    return item.ctx.latents, resolved


def video_request(seed: int, prompt: str = "a red fox in snow", state: Any = None, **sampling: Any) -> dict:
    return {"prompt": prompt, "sampling": {"width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 3,
                                           "guidance_scale": 5.0, "seed": seed, **sampling},
            "output": {"return_state": True}, "state": state}


def assert_same_video(got: Any, want: Any) -> None:
    from fastvideo.engine.state_codec import decode_latent_state

    diff = np.abs(got.frames.astype(np.int16) - want.frames.astype(np.int16)).max()
    assert diff <= FRAME_TOL, f"frames differ by {diff} levels"
    tail_got, _ = decode_latent_state(got.state)
    tail_want, _ = decode_latent_state(want.state)
    assert (tail_got.float() - tail_want.float()).abs().max().item() <= LATENT_TOL
