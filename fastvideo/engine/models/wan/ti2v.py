"""Wan2.2 TI2V-5B (text-image-to-video) conditioning: the first-frame latent and the per-token timesteps.

Contract (each numerically what diffusers 0.42's ``WanPipeline`` / ``WanImageToVideoPipeline`` do with
``expand_timesteps=True``):
- :func:`first_frame_latents`: the image resized to the video size (Lanczos, ``[-1, 1]``: the same
  ``vae_pixels`` as Wan2.1 I2V), encoded by the VAE as a one-frame video, the posterior's mode normalized with the
  config's mean/std: ``(1, z_dim, 1, H / s, W / s)`` float32 (``s`` the VAE's spatial factor, 16 for Wan2.2).
- :func:`with_first_frame`: latents whose first latent frame is that clean latent. Diffusers writes it as
  ``(1 - mask) * condition + mask * latents`` with ``mask`` 0 on the first latent frame and 1 elsewhere, which is
  exactly this replacement. The DiT input of every step is this, and so is the final latent the VAE decodes; the
  sampler's own state keeps its first frame (the sampler is per element, so that frame never reaches the others).
- :func:`token_timesteps`: ``(R, F' * H' * W')`` per-token timesteps in the DiT's token order (frame-major): row
  ``r``'s ``t[r]`` everywhere, except 0 on the first latent frame's ``H' * W'`` tokens of the rows in
  ``conditioned`` (diffusers' ``mask[0][0][:, ::2, ::2] * t``).
- Without an image a TI2V model is text-to-video: every token has the same timestep, which the DiT takes as a
  ``(R,)`` timestep (the same numbers as the per-token form, without its ``(R, L, 6, D)`` modulation).
"""

from __future__ import annotations

from typing import Any

import torch

from fastvideo.engine.models.wan.image_conditioning import vae_pixels
from fastvideo.engine.models.wan.vae import WanVAE


@torch.no_grad()
def first_frame_latents(vae: WanVAE, image: Any, *, height: int, width: int,
                        vae_dtype: torch.dtype) -> torch.Tensor:
    """The normalized VAE latent ``(1, z_dim, 1, height / s, width / s)`` float32 of ``image`` (a PIL RGB image)."""
    pixels = vae_pixels(image, height, width).unsqueeze(2)  # (1, 3, 1, H, W)
    device = next(vae.parameters()).device
    latents = vae.encode(pixels.to(device=device, dtype=vae_dtype)).mode().float()
    return vae.normalize_latents(latents)


def with_first_frame(latents: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """``latents`` ``(B, C, T', h, w)`` with latent frame 0 replaced by ``first`` ``(1 or B, C, 1, h, w)``."""
    first = first.to(latents).expand(latents.shape[0], -1, -1, -1, -1)
    return torch.cat([first, latents[:, :, 1:]], dim=2)


def token_timesteps(t: torch.Tensor, grid: tuple[int, int, int], conditioned: list[bool]) -> torch.Tensor:
    """``(R, F'*H'*W')`` float32 per-token timesteps for the rows' timesteps ``t`` ``(R,)`` on a ``(F', H', W')``
    patch grid; 0 on the first frame's tokens of each row whose ``conditioned`` entry is true."""
    frames, height, width = grid
    if len(conditioned) != t.shape[0]:
        raise ValueError(f"{t.shape[0]} timesteps but {len(conditioned)} conditioned flags")
    out = t.float()[:, None].repeat(1, frames * height * width)
    rows = [r for r, c in enumerate(conditioned) if c]
    if rows:
        out[rows, : height * width] = 0.0
    return out
