"""LTX-2 video latents between the VAE and the DiT: (de)normalization and token packing, as ``LTX2Pipeline`` does.

Contract
--------
- :func:`normalize_latents` (raw VAE latents -> denoiser space) is ``(z - mean) * scaling_factor / std`` and
  :func:`denormalize_latents` its inverse ``x * std / scaling_factor + mean``, per channel of ``(B, C, F, H, W)``
  latents, with ``mean`` / ``std`` (the VAE's ``latents_mean`` / ``latents_std`` buffers, shape ``(C,)``) cast to
  the latents' device and dtype first: the same operations, in the same order, as diffusers 0.42's
  ``LTX2Pipeline._normalize_latents`` / ``_denormalize_latents``, so results are bit-equal in any dtype.
- Which ``scaling_factor`` a pipeline passes differs: ``LTX2Pipeline`` uses the VAE config's on both sides
  (:meth:`~fastvideo.engine.models.ltx2.vae.LTX2VideoVAE.normalize_latents` does the same), while the image /
  condition pipelines normalize encoded conditioning frames with the default 1.0. The published LTX-2 VAE has
  ``scaling_factor = 1.0``, where the two agree; callers pass what the pipeline they mirror passes.
- :func:`pack_latents` turns ``(B, C, F, H, W)`` into DiT tokens ``(B, F/pt * H/p * W/p, C*pt*p*p)``: tokens in
  (frame, row, column) order, features in (channel, t-patch, h-patch, w-patch) order, as
  ``LTX2Pipeline._pack_latents``; :func:`unpack_latents` inverts it given the latent grid (``num_frames``,
  ``height``, ``width`` *after* patching, as diffusers takes them). Sizes that do not divide, or a token count
  that does not match the grid, raise ``ValueError``.
- :func:`mix_decode_noise` is ``LTX2Pipeline``'s last step before a *timestep-conditioned* VAE decode (on the
  normalized, unpacked latents, before :func:`denormalize_latents`): noise ``n`` drawn like diffusers'
  ``randn_tensor`` (one generator, or one per batch row; a CPU generator draws on the CPU and the noise moves to
  the latents' device), then ``(1 - s) * x + s * n`` with ``s = decode_noise_scale`` (default: the decode timestep)
  per row; it returns the mixed latents and the ``(B,)`` decode timestep. For a VAE without timestep conditioning
  the pipeline decodes with no timestep and no noise (do not call it).
- No torch state, no config: pure tensor functions (importing this module imports torch).
"""

from __future__ import annotations

import torch

__all__ = ["denormalize_latents", "mix_decode_noise", "normalize_latents", "pack_latents", "unpack_latents"]


def _stats(latents: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if latents.ndim != 5 or mean.numel() != latents.shape[1] or std.numel() != latents.shape[1]:
        raise ValueError(f"latent statistics of {mean.numel()}/{std.numel()} channels do not fit latents of shape "
                         f"{tuple(latents.shape)} (expected (B, C, F, H, W) with C = {mean.numel()})")
    shape = (1, -1, 1, 1, 1)
    return (mean.view(shape).to(latents.device, latents.dtype), std.view(shape).to(latents.device, latents.dtype))


def normalize_latents(latents: torch.Tensor, latents_mean: torch.Tensor, latents_std: torch.Tensor,
                      scaling_factor: float = 1.0) -> torch.Tensor:
    """Raw VAE latents -> denoiser space: ``(z - mean) * scaling_factor / std`` per channel."""
    mean, std = _stats(latents, latents_mean, latents_std)
    return (latents - mean) * scaling_factor / std


def denormalize_latents(latents: torch.Tensor, latents_mean: torch.Tensor, latents_std: torch.Tensor,
                        scaling_factor: float = 1.0) -> torch.Tensor:
    """Denoiser latents -> raw VAE latents: ``x * std / scaling_factor + mean`` per channel."""
    mean, std = _stats(latents, latents_mean, latents_std)
    return latents * std / scaling_factor + mean


def pack_latents(latents: torch.Tensor, patch_size: int = 1, patch_size_t: int = 1) -> torch.Tensor:
    """``(B, C, F, H, W)`` -> ``(B, F/pt * H/p * W/p, C*pt*p*p)`` tokens (module contract)."""
    if latents.ndim != 5:
        raise ValueError(f"pack_latents expects (B, C, F, H, W) latents, got shape {tuple(latents.shape)}")
    b, c, f, h, w = latents.shape
    p, pt = patch_size, patch_size_t
    if f % pt or h % p or w % p:
        raise ValueError(f"latent grid {f}x{h}x{w} does not divide into patches of {pt}x{p}x{p}")
    x = latents.reshape(b, c, f // pt, pt, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, F', H', W', C, pt, p, p)
    return x.reshape(b, (f // pt) * (h // p) * (w // p), c * pt * p * p)


def unpack_latents(latents: torch.Tensor, num_frames: int, height: int, width: int, patch_size: int = 1,
                   patch_size_t: int = 1) -> torch.Tensor:
    """``(B, num_frames*height*width, C*pt*p*p)`` tokens -> ``(B, C, num_frames*pt, height*p, width*p)``."""
    if latents.ndim != 3 or latents.shape[1] != num_frames * height * width:
        raise ValueError(f"unpack_latents: tokens of shape {tuple(latents.shape)} do not fit a "
                         f"{num_frames}x{height}x{width} latent grid (expected (B, {num_frames * height * width}, D))")
    p, pt = patch_size, patch_size_t
    if latents.shape[2] % (pt * p * p):
        raise ValueError(f"unpack_latents: {latents.shape[2]} features do not divide into {pt}x{p}x{p} patches")
    b = latents.shape[0]
    x = latents.reshape(b, num_frames, height, width, -1, pt, p, p)
    x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, F', pt, H', p, W', p)
    return x.reshape(b, -1, num_frames * pt, height * p, width * p)


def _per_row(value: float | list[float], batch: int, name: str) -> list[float]:
    values = list(value) if isinstance(value, (list, tuple)) else [float(value)] * batch
    if len(values) != batch:
        raise ValueError(f"{name} has {len(values)} values for a batch of {batch}")
    return values


def mix_decode_noise(latents: torch.Tensor, decode_timestep: float | list[float],
                     decode_noise_scale: float | list[float] | None = None,
                     generator: torch.Generator | list[torch.Generator] | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise the latents for a timestep-conditioned decode as ``LTX2Pipeline`` does (module contract); returns
    ``(latents, timestep)``."""
    batch, device, dtype = latents.shape[0], latents.device, latents.dtype
    timesteps = _per_row(decode_timestep, batch, "decode_timestep")
    scales = timesteps if decode_noise_scale is None else _per_row(decode_noise_scale, batch, "decode_noise_scale")
    generators = generator if isinstance(generator, list) else None
    if generators is not None and len(generators) == 1:
        generator, generators = generators[0], None
    if generators is not None:
        if len(generators) != batch:
            raise ValueError(f"{len(generators)} generators for a batch of {batch}")
        draw_on = generators[0].device
        noise = torch.cat([torch.randn((1, *latents.shape[1:]), generator=g, device=draw_on, dtype=dtype)
                           for g in generators]).to(device)
    else:
        single = generator if isinstance(generator, torch.Generator) else None
        draw_on = single.device if single is not None else device
        noise = torch.randn(latents.shape, generator=single, device=draw_on, dtype=dtype).to(device)
    timestep = torch.tensor(timesteps, device=device, dtype=dtype)
    scale = torch.tensor(scales, device=device, dtype=dtype)[:, None, None, None, None]
    return (1 - scale) * latents + scale * noise, timestep
