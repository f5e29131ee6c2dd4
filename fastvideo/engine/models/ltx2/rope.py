"""LTX-2 rotary position embeddings: patch coordinates -> (cos, sin) tables -> rotation, as diffusers 0.42 does them.

Contract
--------
- Positions are *coordinates*, not indices: each token carries a ``[start, end)`` interval per axis in the
  original signal's units: seconds for time, pixels for height and width. :func:`video_coords` gives
  ``(B, 3, N, 2)`` for a latent grid (frame-major token order, the VAE scale factors applied, the causal first
  frame shifted by ``causal_offset - scale_t`` and clamped at 0, time divided by ``fps``); :func:`audio_coords`
  gives ``(B, 1, N, 2)`` for audio latent frames (mel frames -> seconds through ``hop_length / sampling_rate``).
  Both are float32, bit-equal to diffusers' ``prepare_video_coords`` / ``prepare_audio_coords``.
- :func:`rope_tables` turns coordinates into tables for one :class:`RopeSpec` (width, per-axis base extents,
  theta, precision, layout): the interval midpoints are divided by the base extents, mapped to ``[-1, 1]``, and
  multiplied by ``dim // (2 * axes)`` frequencies ``theta ** linspace(0, 1) * pi / 2`` (float64 when
  ``double_precision``, then float32). Channels left over (``dim`` not divisible by ``2 * axes``) are padded at the
  *front* with the identity rotation (cos 1, sin 0).

  * ``interleaved`` layout: ``(B, N, dim)`` tables, each frequency repeated for its channel pair ``(2i, 2i+1)``.
  * ``split`` layout: ``(B, N, heads, dim_per_head // 2)``; within each head the first half of the channels is
    rotated against the second half.

- :func:`apply_rope` rotates ``(B, N, dim)`` q/k (heads not yet split) in float32 and returns the input dtype.
- Tables depend only on the coordinates, so the model computes them once per forward (not per block) and caches
  the ones built from grid sizes (see :class:`~fastvideo.engine.models.ltx2.transformer.LTX2Transformer`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["RopeSpec", "RopeTables", "apply_rope", "audio_coords", "rope_tables", "video_coords"]

RopeTables = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class RopeSpec:
    """What a set of RoPE tables is built for."""

    dim: int  #: width of the rotated q/k (all heads together)
    max_positions: tuple[float, ...]  #: base extent per coordinate axis (frames/seconds, height, width)
    theta: float
    double_precision: bool
    layout: str  #: "interleaved" or "split"
    heads: int  #: head count the split layout is laid out for


def video_coords(batch: int, num_frames: int, height: int, width: int, *, patch_size: int, patch_size_t: int,
                 scale_factors: tuple[int, int, int], causal_offset: int, fps: float,
                 device: torch.device | str) -> torch.Tensor:
    """``(batch, 3, N, 2)`` float32 ``[start, end)`` of every video patch in seconds / pixels (module contract)."""
    axes = [torch.arange(0, size, step, dtype=torch.float32, device=device)
            for size, step in ((num_frames, patch_size_t), (height, patch_size), (width, patch_size))]
    starts = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)  # (3, F', H', W')
    steps = torch.tensor((patch_size_t, patch_size, patch_size), dtype=torch.float32, device=device)
    latent = torch.stack([starts, starts + steps.view(3, 1, 1, 1)], dim=-1).flatten(1, 3)  # (3, N, 2)
    pixel = latent * torch.tensor(scale_factors, device=device).view(3, 1, 1)
    seconds = (pixel[0] + causal_offset - scale_factors[0]).clamp(min=0) / fps
    pixel = torch.cat([seconds.unsqueeze(0), pixel[1:]], dim=0)
    return pixel.unsqueeze(0).repeat(batch, 1, 1, 1)


def audio_coords(batch: int, num_frames: int, *, patch_size_t: int, scale_factor: int, causal_offset: int,
                 hop_length: int, sampling_rate: int, device: torch.device | str, shift: int = 0) -> torch.Tensor:
    """``(batch, 1, N, 2)`` float32 ``[start, end)`` seconds of every audio latent frame; ``shift`` offsets the
    latent index (a window further along the same timeline)."""
    frames = torch.arange(shift, num_frames + shift, patch_size_t, dtype=torch.float32, device=device)

    def seconds(latent_index: torch.Tensor) -> torch.Tensor:
        mel = (latent_index * scale_factor + causal_offset - scale_factor).clip(min=0)
        return mel * hop_length / sampling_rate

    interval = torch.stack([seconds(frames), seconds(frames + patch_size_t)], dim=-1)  # (N, 2)
    return interval.unsqueeze(0).expand(batch, -1, -1).unsqueeze(1)


def rope_tables(spec: RopeSpec, coords: torch.Tensor, device: torch.device | str | None = None) -> RopeTables:
    """``(cos, sin)`` for ``coords`` ``(B, axes, N, 2)`` intervals (or ``(B, axes, N)`` points); see module doc."""
    device = device or coords.device
    if coords.ndim == 4:
        start, end = coords.chunk(2, dim=-1)
        coords = ((start + end) / 2.0).squeeze(-1)
    axes = coords.shape[1]
    if axes > len(spec.max_positions):
        raise ValueError(f"coordinates have {axes} axes, this RoPE knows {len(spec.max_positions)}")
    fraction = torch.stack([coords[:, i] / spec.max_positions[i] for i in range(axes)], dim=-1).to(device)
    count = spec.dim // (2 * axes)
    exponent_dtype = torch.float64 if spec.double_precision else torch.float32
    exponents = torch.linspace(0.0, 1.0, steps=count, dtype=exponent_dtype, device=device)
    freqs = (torch.pow(spec.theta, exponents) * math.pi / 2.0).to(torch.float32)
    angles = ((fraction.unsqueeze(-1) * 2 - 1) * freqs).transpose(-1, -2).flatten(2)  # (B, N, count * axes)
    cos, sin = angles.cos(), angles.sin()
    if spec.layout == "interleaved":
        cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
        pad = spec.dim - cos.shape[-1]
    else:
        pad = spec.dim // 2 - cos.shape[-1]
    if pad:
        cos = torch.cat([torch.ones_like(cos[..., :pad]), cos], dim=-1)
        sin = torch.cat([torch.zeros_like(sin[..., :pad]), sin], dim=-1)
    if spec.layout == "split":
        cos = cos.unflatten(-1, (spec.heads, -1))
        sin = sin.unflatten(-1, (spec.heads, -1))
    return cos, sin


def apply_rope(x: torch.Tensor, tables: RopeTables, layout: str) -> torch.Tensor:
    """Rotate ``x`` ``(B, N, dim)`` by ``tables`` (from :func:`rope_tables` with the same layout); float32 math."""
    cos, sin = tables
    if layout == "interleaved":
        real, imag = x.unflatten(-1, (-1, 2)).unbind(-1)
        partner = torch.stack([-imag, real], dim=-1).flatten(-2)
        return (x.float() * cos + partner.float() * sin).to(x.dtype)
    heads = cos.shape[-2]
    halves = x.unflatten(-1, (heads, 2, -1)).float()  # (B, N, heads, 2, r)
    first, second = halves[..., 0:1, :], halves[..., 1:2, :]
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    rotated = halves * cos  # then the cross terms with fused multiply-adds, rounding as diffusers does
    rotated[..., 0:1, :].addcmul_(-sin, second)
    rotated[..., 1:2, :].addcmul_(sin, first)
    return rotated.flatten(-3).to(x.dtype)
