"""Wan video VAEs (Wan2.1 and Wan2.2 TI2V-5B's): causal 3D conv encoder/decoder, numerically matching
diffusers' ``AutoencoderKLWan``.

Contract
--------
Shapes and value ranges (``F = spatial_factor``: 8 for Wan2.1, 16 for Wan2.2; ``S = temporal_factor = 4``;
``C`` = the video channels, 3 for RGB, i.e. ``in_channels``/``out_channels`` divided by ``patch_size**2``):

* :meth:`WanVAE.decode` takes raw VAE latents ``z`` of shape ``(B, z_dim, T, h, w)`` (i.e. already
  *denormalized*, see below) and returns video ``(B, out_channels, S*(T-1)+1, F*h, F*w)`` in the
  latents' dtype, clamped to ``[-1, 1]`` exactly as diffusers does.
* :meth:`WanVAE.encode` takes video ``(B, in_channels, N, H, W)`` with values in ``[-1, 1]`` and
  ``N = S*k + 1`` frames, and returns a :class:`DiagonalGaussian` posterior over raw latents of shape
  ``(B, z_dim, k+1, H/F, W/F)`` (``.mode()`` is the mean, ``.sample(generator)`` draws like diffusers).
  ``H`` and ``W`` should be multiples of ``F``.
* "4k+1 frames": the VAE is causal in time. The first video frame is compressed on its own into
  the first latent frame (so a single image is a 1-frame video), and every further group of ``S``
  frames becomes one more latent frame. Hence ``N`` video frames <-> ``(N-1)/S + 1`` latent frames.
* Latent normalization (what the denoiser sees) follows diffusers' Wan pipelines exactly:
  ``denormalize_latents(x) = x / (1/std) + mean`` (pipeline_wan.py, before ``vae.decode``) and
  ``normalize_latents(z) = (z - mean) * (1/std)`` (pipeline_wan_i2v.py, after ``vae.encode``), with
  ``1/std`` computed in the latents' dtype. ``mean``/``std`` are the config's per-channel lists.

Temporal chunking and the causal feature cache
----------------------------------------------
Every temporal convolution is causal (``2*pad`` zero frames on the left, none on the right), all
attention and normalization is per frame, so the network can be run chunk by chunk along time with
bounded memory. A :data:`FeatureCache` (a dict keyed by module, created fresh per call) holds, for
every causal conv, the last ``CACHE_T = 2`` input frames seen so far; the next chunk is
concatenated after them instead of zero padding, which makes chunked evaluation equal to evaluating
the whole sequence. The temporal resamplers need one special case each, mirroring the original
Wan code: on the first chunk (the lone first frame) ``upsample3d`` does not upsample in time and
``downsample3d`` does not downsample; afterwards they run their strided/doubling temporal conv
with the cached context. Decoding therefore runs the first latent frame alone, then
``chunk_size`` (default 1, as diffusers) latent frames at a time; encoding runs the first video
frame alone, then ``S * chunk_size`` frames at a time. Chunked evaluation is the only mode: the
temporal resamplers are only defined with a cache.

Wan2.2 (TI2V-5B: ``is_residual=True``, ``patch_size=2``, ``z_dim=48``)
-----------------------------------------------------------------------
* ``patch_size`` p: :meth:`WanVAE.encode` folds each ``p x p`` pixel cell into channels
  (:func:`patchify`, diffusers' channel order) before the encoder, so ``in_channels`` is
  ``3 * p * p`` (12); :meth:`WanVAE.decode` unfolds the decoder's ``out_channels`` (12) back
  (:func:`unpatchify`) and clamps. ``spatial_factor`` includes p (2 * 8 = 16).
* ``is_residual``: each encoder stage is a :class:`ResidualDownBlock` (residual blocks + resample,
  plus a parameter-free :class:`AvgDown3D` shortcut of the stage input) and each decoder stage a
  :class:`ResidualUpBlock` (``num_res_blocks + 1`` residual blocks + a channel-keeping resample, plus
  a :class:`DupUp3D` shortcut that drops its first ``factor_t - 1`` frames on the lone first latent
  frame). The decoder's channels are not halved between stages; ``decoder_base_dim`` (256 for
  TI2V-5B) sets its width. No attention outside the mid blocks: ``attn_scales`` must be empty
  (diffusers would silently ignore it; refused here).
* :meth:`WanVAEConfig.wan22_ti2v_5b` is the TI2V-5B ``vae/config.json`` (48 latent means/stds).

Config handling: every ``AutoencoderKLWan`` argument is a field; ``_``-prefixed keys and
:data:`IGNORED_CONFIG_KEYS` (keys diffusers ignores too) are skipped; any other key, and
inconsistent values (lists of the wrong length, channels not divisible by ``patch_size**2``, residual
shortcuts that cannot fold evenly), raise ``ValueError`` naming the field. ``scale_factor_temporal`` /
``scale_factor_spatial`` are informational, as in diffusers (the geometry comes from ``dim_mult``,
``temperal_downsample`` and ``patch_size``).

State-dict keys and shapes are identical to diffusers' ``AutoencoderKLWan`` for both variants, so a
diffusers ``diffusion_pytorch_model.safetensors`` loads with ``strict=True``. ``encode``/``decode``
run under ``torch.no_grad()``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastvideo.engine.attention import attention
from fastvideo.kernels.registry import AttentionBackend, select_attention_backend

logger = logging.getLogger(__name__)

#: Number of trailing input frames each causal 3x3x3 conv keeps between chunks.
CACHE_T = 2

#: Keys of real ``config.json`` files that diffusers' ``AutoencoderKLWan`` does not take and ignores;
#: accepted and ignored here too. ``clip_output`` (false in Wan2.2 TI2V-5B's file): diffusers clamps
#: the decoded video to ``[-1, 1]`` regardless, and so do we.
IGNORED_CONFIG_KEYS = frozenset({"clip_output"})

#: Per-call streaming state: module -> cached trailing frames (or a marker for resamplers).
FeatureCache = dict[nn.Module, Any]

_WAN21_LATENTS_MEAN = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
]
_WAN21_LATENTS_STD = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
]

_WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]
_WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass
class WanVAEConfig:
    """The fields of diffusers' ``AutoencoderKLWan`` ``config.json``; defaults are the Wan2.1 VAE's."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_res_blocks: int = 2
    attn_scales: list[float] = field(default_factory=list)
    temperal_downsample: list[bool] = field(default_factory=lambda: [False, True, True])
    dropout: float = 0.0
    latents_mean: list[float] = field(default_factory=lambda: list(_WAN21_LATENTS_MEAN))
    latents_std: list[float] = field(default_factory=lambda: list(_WAN21_LATENTS_STD))
    decoder_base_dim: int | None = None
    is_residual: bool = False
    in_channels: int = 3
    out_channels: int = 3
    patch_size: int | None = None
    scale_factor_temporal: int | None = 4
    scale_factor_spatial: int | None = 8

    def __post_init__(self) -> None:
        self.is_residual = bool(self.is_residual)
        if self.patch_size is not None:
            if isinstance(self.patch_size, bool) or not isinstance(self.patch_size, int) or self.patch_size < 1:
                raise ValueError(
                    f"WanVAEConfig: patch_size must be null or a positive integer, got {self.patch_size!r}")
            area = self.patch_size ** 2
            for name in ("in_channels", "out_channels"):
                if getattr(self, name) % area:
                    raise ValueError(
                        f"WanVAEConfig: {name}={getattr(self, name)} must be a multiple of patch_size**2 = {area} "
                        "(the patchified pixel channels)")
        if self.is_residual and self.attn_scales:
            raise ValueError(
                f"WanVAEConfig: attn_scales={self.attn_scales} has no effect with is_residual=True (the Wan2.2 "
                "residual blocks have no attention; diffusers ignores it); set attn_scales to []")
        self.dim_mult = [int(m) for m in self.dim_mult]
        self.attn_scales = [float(s) for s in self.attn_scales]
        self.temperal_downsample = [bool(t) for t in self.temperal_downsample]
        self.latents_mean = [float(v) for v in self.latents_mean]
        self.latents_std = [float(v) for v in self.latents_std]
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"WanVAEConfig: temperal_downsample has {len(self.temperal_downsample)} entries, "
                f"expected len(dim_mult) - 1 = {len(self.dim_mult) - 1}")
        for name in ("latents_mean", "latents_std"):
            if len(getattr(self, name)) != self.z_dim:
                raise ValueError(f"WanVAEConfig: {name} has {len(getattr(self, name))} entries, "
                                 f"expected z_dim = {self.z_dim}")
        if any(s == 0.0 for s in self.latents_std):
            raise ValueError("WanVAEConfig: latents_std must be non-zero")

    @classmethod
    def wan22_ti2v_5b(cls) -> "WanVAEConfig":
        """Wan-AI/Wan2.2-TI2V-5B-Diffusers ``vae/config.json``."""
        return cls(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, patch_size=2,
                   in_channels=12, out_channels=12, scale_factor_spatial=16,
                   latents_mean=list(_WAN22_LATENTS_MEAN), latents_std=list(_WAN22_LATENTS_STD))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WanVAEConfig":
        """Build from a diffusers ``config.json`` dict; ``_``-prefixed keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key.startswith("_") or key in IGNORED_CONFIG_KEYS:
                continue
            if key not in known:
                raise ValueError(f"WanVAEConfig: unknown config key {key!r}; known keys: {sorted(known)}")
            kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def patch(self) -> int:
        """Pixel patch side folded into channels before the encoder (1 without ``patch_size``)."""
        return self.patch_size or 1

    @property
    def video_in_channels(self) -> int:
        """Channels of the video :meth:`WanVAE.encode` takes (``in_channels / patch**2``; 3 for RGB)."""
        return self.in_channels // self.patch ** 2

    @property
    def video_out_channels(self) -> int:
        """Channels of the video :meth:`WanVAE.decode` returns (``out_channels / patch**2``)."""
        return self.out_channels // self.patch ** 2

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent along H and W (8 for Wan2.1, 16 for Wan2.2 TI2V-5B: patch 2 x 8)."""
        return self.patch * 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame after the first (4 for Wan2.1)."""
        return 2 ** sum(self.temperal_downsample)

    def latent_num_frames(self, num_frames: int) -> int:
        """Latent frames for a ``temporal_factor * k + 1``-frame video."""
        if num_frames < 1 or (num_frames - 1) % self.temporal_factor:
            raise ValueError(f"num_frames must be {self.temporal_factor}*k+1, got {num_frames}")
        return (num_frames - 1) // self.temporal_factor + 1

    def video_num_frames(self, latent_frames: int) -> int:
        """Video frames decoded from ``latent_frames`` latent frames."""
        return self.temporal_factor * (latent_frames - 1) + 1


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _cache_tail(prev: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """The last ``CACHE_T`` frames of ``cat(prev, x)`` along time, without copying all of ``x``."""
    t = x.shape[2]
    if t > CACHE_T:
        return x[:, :, -CACHE_T:].clone()  # clone so the full chunk can be freed
    if t < CACHE_T and prev is not None:
        return torch.cat([prev[:, :, -(CACHE_T - t):], x], dim=2)
    return x  # a fresh activation that nothing modifies in place


class CausalConv3d(nn.Conv3d):
    """3D conv, zero-padded ``2*pad_t`` frames on the left only; streams through a FeatureCache."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 1, padding: int | tuple[int, int, int] = 0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        self.time_pad = 2 * pt
        self.space_pad = (pw, pw, ph, ph)

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        time_pad = self.time_pad
        if cache is not None and time_pad > 0:
            prev = cache.get(self)
            cache[self] = _cache_tail(prev, x)
            if prev is not None:
                x = torch.cat([prev, x], dim=2)
                time_pad -= prev.shape[2]
        pad = (*self.space_pad, time_pad, 0)
        if any(pad):
            x = F.pad(x, pad)
        return super().forward(x)


class RMSNorm(nn.Module):
    """L2-normalize over channels (dim 1), times ``sqrt(dim) * gamma``; fp32 math for 16-bit inputs."""

    def __init__(self, dim: int, spatial_dims: int) -> None:
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim, *(1,) * spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            normed = F.normalize(x.float(), dim=1).to(x.dtype)
        else:
            normed = F.normalize(x, dim=1)
        return normed * self.scale * self.gamma


class ResidualBlock(nn.Module):
    """``x + conv2(silu(norm2(conv1(silu(norm1(x))))))`` with a 1x1x1 conv shortcut if dims differ."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = RMSNorm(in_dim, 3)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1)
        self.norm2 = RMSNorm(out_dim, 3)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()
        self.dropout = dropout

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        shortcut = self.conv_shortcut(x)
        x = self.conv1(F.silu(self.norm1(x)), cache)
        x = F.silu(self.norm2(x))
        if self.dropout > 0.0 and self.training:
            x = F.dropout(x, self.dropout, training=True)
        return self.conv2(x, cache) + shortcut


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame independently."""

    def __init__(self, dim: int, backend: AttentionBackend) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, 2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.backend = backend

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        qkv = self.to_qkv(self.norm(frames))  # (bt, 3c, h, w)
        qkv = qkv.flatten(2).transpose(1, 2).unsqueeze(2)  # (bt, hw, 1, 3c): (batch, seq, heads, d)
        q, k, v = qkv.chunk(3, dim=-1)
        out = attention(q, k, v, self.backend)  # (bt, hw, 1, c)
        out = self.proj(out.squeeze(2).transpose(1, 2).reshape(b * t, c, h, w))
        return out.view(b, t, c, h, w).permute(0, 2, 1, 3, 4) + x


class Resample(nn.Module):
    """Spatial x2 (down or up) per frame, plus, for the ``*3d`` modes, causal temporal x2.

    ``resample`` is ``Sequential(pad-or-upsample, Conv2d)`` so the conv's keys are ``resample.1.*``.
    """

    MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")

    def __init__(self, dim: int, mode: str, upsample_out_dim: int | None = None) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"Resample mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        if mode.startswith("up"):
            # nearest(-exact) x2 only copies values, so it is exact in any dtype
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          nn.Conv2d(dim, upsample_out_dim or dim // 2, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        b, c, t, h, w = x.shape
        if self.mode == "upsample3d" and self in cache:
            # Not the first chunk: time_conv emits 2 frames per input frame, as 2c channels.
            x = self.time_conv(x, cache).view(b, 2, c, t, h, w)
            t *= 2
            frames = x.permute(0, 3, 1, 2, 4, 5).reshape(b * t, c, h, w)
        else:
            if self.mode == "upsample3d":
                cache[self] = None  # first chunk seen: a lone frame is not upsampled in time
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        frames = self.resample(frames)
        x = frames.view(b, t, *frames.shape[1:]).permute(0, 2, 1, 3, 4)

        if self.mode == "downsample3d":
            prev = cache.get(self)
            cache[self] = x[:, :, -1:].clone()
            if prev is not None:  # the first chunk (a lone frame) is not downsampled in time
                x = self.time_conv(torch.cat([prev, x], dim=2))
        return x


class AvgDown3D(nn.Module):
    """Parameter-free shortcut of the Wan2.2 residual down block: average groups of space-time neighbours.

    Pads time on the left to a multiple of ``factor_t`` (so a lone first frame is averaged with a zero
    frame, as diffusers does), folds each ``factor_t x factor_s x factor_s`` cell into channels (channel
    major, then t, h, w offsets) and averages consecutive groups of those channels down to ``out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.factor_t, self.factor_s = factor_t, factor_s
        folded = in_channels * factor_t * factor_s * factor_s
        if folded % out_channels:
            raise ValueError(f"WanVAEConfig: residual down block from {in_channels} to {out_channels} channels "
                             f"cannot average {folded} folded channels evenly; change base_dim or dim_mult")
        self.out_channels, self.group = out_channels, folded // out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        x = F.pad(x, (0, 0, 0, 0, (-x.shape[2]) % ft, 0))
        b, c, t, h, w = x.shape
        x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        x = x.reshape(b, self.out_channels, self.group, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class DupUp3D(nn.Module):
    """Parameter-free shortcut of the Wan2.2 residual up block: the inverse fold of :class:`AvgDown3D`.

    Repeats each channel, unfolds channels into ``factor_t x factor_s x factor_s`` cells; on the
    decoder's first chunk (the lone first latent frame) the first ``factor_t - 1`` frames are dropped.
    """

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.factor_t, self.factor_s = factor_t, factor_s
        unfolded = out_channels * factor_t * factor_s * factor_s
        if unfolded % in_channels:
            raise ValueError(f"WanVAEConfig: residual up block from {in_channels} to {out_channels} channels "
                             f"cannot spread {in_channels} channels over {unfolded}; change decoder_base_dim "
                             "or dim_mult")
        self.out_channels, self.repeats = out_channels, unfolded // in_channels

    def forward(self, x: torch.Tensor, first_chunk: bool) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        b, _, t, h, w = x.shape
        x = x.repeat_interleave(self.repeats, dim=1).view(b, self.out_channels, ft, fs, fs, t, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.out_channels, t * ft, h * fs, w * fs)
        return x[:, :, ft - 1:] if first_chunk else x


class ResidualDownBlock(nn.Module):
    """Wan2.2 encoder stage: residual blocks and an optional Resample, plus an :class:`AvgDown3D` shortcut
    of the stage's input. Keys: ``resnets.*``, ``downsampler.*`` (the shortcut has no parameters)."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float,
                 temporal: bool, down: bool) -> None:
        super().__init__()
        self.avg_shortcut = AvgDown3D(in_dim, out_dim, 2 if temporal else 1, 2 if down else 1)
        self.resnets = nn.ModuleList(
            [ResidualBlock(in_dim if j == 0 else out_dim, out_dim, dropout) for j in range(num_res_blocks)])
        self.downsampler = (Resample(out_dim, "downsample3d" if temporal else "downsample2d")
                            if down else None)

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        shortcut = self.avg_shortcut(x)
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.downsampler is not None:
            x = self.downsampler(x, cache)
        return x + shortcut


class ResidualUpBlock(nn.Module):
    """Wan2.2 decoder stage: ``num_res_blocks + 1`` residual blocks and an optional Resample keeping
    ``out_dim`` channels, plus a :class:`DupUp3D` shortcut of the stage's input when it upsamples.
    Keys: ``resnets.*``, ``upsampler.*``."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float,
                 temporal: bool, up: bool) -> None:
        super().__init__()
        self.avg_shortcut = DupUp3D(in_dim, out_dim, 2 if temporal else 1, 2) if up else None
        self.resnets = nn.ModuleList(
            [ResidualBlock(in_dim if j == 0 else out_dim, out_dim, dropout) for j in range(num_res_blocks + 1)])
        self.upsampler = (Resample(out_dim, "upsample3d" if temporal else "upsample2d", upsample_out_dim=out_dim)
                          if up else None)

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        first_chunk = self not in cache  # the decoder's first call: the lone first latent frame
        cache[self] = None
        shortcut = x
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsampler is not None:
            x = self.upsampler(x, cache)
        if self.avg_shortcut is not None:
            x = x + self.avg_shortcut(shortcut, first_chunk)
        return x


class MidBlock(nn.Module):
    """ResidualBlock -> AttentionBlock -> ResidualBlock."""

    def __init__(self, dim: int, dropout: float, backend: AttentionBackend) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([AttentionBlock(dim, backend)])
        self.resnets = nn.ModuleList([ResidualBlock(dim, dim, dropout), ResidualBlock(dim, dim, dropout)])

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        x = self.resnets[0](x, cache)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            x = resnet(attn(x), cache)
        return x


class Encoder(nn.Module):
    """(Patchified) video -> ``out_dim`` channels at 1/8 spatial and 1/4 temporal (causal) resolution.

    Wan2.1 (``is_residual=False``): ``down_blocks`` is a flat list of residual/attention/resample
    layers. Wan2.2 (``is_residual=True``): one :class:`ResidualDownBlock` per stage, no attention.
    """

    def __init__(self, cfg: WanVAEConfig, out_dim: int, backend: AttentionBackend) -> None:
        super().__init__()
        dims = [cfg.base_dim * m for m in [1, *cfg.dim_mult]]
        self.conv_in = CausalConv3d(cfg.in_channels, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        scale = 1.0
        for i, (in_dim, dim) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(cfg.dim_mult) - 1
            if cfg.is_residual:
                layers.append(ResidualDownBlock(in_dim, dim, cfg.num_res_blocks, cfg.dropout,
                                                temporal=not last and cfg.temperal_downsample[i], down=not last))
                continue
            for _ in range(cfg.num_res_blocks):
                layers.append(ResidualBlock(in_dim, dim, cfg.dropout))
                if scale in cfg.attn_scales:
                    layers.append(AttentionBlock(dim, backend))
                in_dim = dim
            if i != len(cfg.dim_mult) - 1:
                layers.append(Resample(dim, "downsample3d" if cfg.temperal_downsample[i] else "downsample2d"))
                scale /= 2.0
        self.down_blocks = nn.ModuleList(layers)
        self.mid_block = MidBlock(dims[-1], cfg.dropout, backend)
        self.norm_out = RMSNorm(dims[-1], 3)
        self.conv_out = CausalConv3d(dims[-1], out_dim, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        x = self.conv_in(x, cache)
        for layer in self.down_blocks:
            x = layer(x, cache)
        x = self.mid_block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class UpBlock(nn.Module):
    """``num_res_blocks + 1`` residual blocks, then an optional Resample (output ``dim // 2``)."""

    def __init__(self, in_dim: int, dim: int, num_res_blocks: int, dropout: float,
                 upsample_mode: str | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResidualBlock(in_dim if j == 0 else dim, dim, dropout) for j in range(num_res_blocks + 1)])
        self.upsamplers = nn.ModuleList([Resample(dim, upsample_mode)]) if upsample_mode else None

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, cache)
        return x


class Decoder(nn.Module):
    """Latents -> (patchified) video, mirroring :class:`Encoder` (no attention outside the mid block);
    Wan2.2 (``is_residual``) stages are :class:`ResidualUpBlock`, Wan2.1 ones :class:`UpBlock`."""

    def __init__(self, cfg: WanVAEConfig, backend: AttentionBackend) -> None:
        super().__init__()
        base = cfg.decoder_base_dim or cfg.base_dim
        dims = [base * m for m in [cfg.dim_mult[-1], *cfg.dim_mult[::-1]]]
        temperal_upsample = cfg.temperal_downsample[::-1]
        self.conv_in = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.mid_block = MidBlock(dims[0], cfg.dropout, backend)
        blocks: list[nn.Module] = []
        for i, (in_dim, dim) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(cfg.dim_mult) - 1
            if cfg.is_residual:  # Wan2.2: upsamplers keep the channels
                blocks.append(ResidualUpBlock(in_dim, dim, cfg.num_res_blocks, cfg.dropout,
                                              temporal=not last and temperal_upsample[i], up=not last))
                continue
            if i > 0:
                in_dim //= 2  # the previous block's upsampler halved the channels
            mode = None
            if not last:
                mode = "upsample3d" if temperal_upsample[i] else "upsample2d"
            blocks.append(UpBlock(in_dim, dim, cfg.num_res_blocks, cfg.dropout, mode))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = RMSNorm(dims[-1], 3)
        self.conv_out = CausalConv3d(dims[-1], cfg.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        x = self.mid_block(self.conv_in(x, cache), cache)
        for block in self.up_blocks:
            x = block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


# --------------------------------------------------------------------------------------------
# Posterior and the model
# --------------------------------------------------------------------------------------------


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B, C*p*p, T, H/p, W/p)``; channel ``c*p*p + pw*p + ph`` holds pixel
    offset ``(ph, pw)`` of each ``p x p`` cell (diffusers' Wan order: width offset before height)."""
    if p == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    if p == 1:
        return x
    b, cp, t, h, w = x.shape
    x = x.view(b, cp // (p * p), p, p, t, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, cp // (p * p), t, h * p, w * p)


class DiagonalGaussian:
    """Posterior ``N(mean, exp(logvar))`` over raw latents, as diffusers' DiagonalGaussianDistribution."""

    def __init__(self, params: torch.Tensor) -> None:
        self.mean, logvar = params.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``mean + std * eps``; eps is drawn on the generator's device (CPU generators stay
        reproducible across devices), matching diffusers' ``randn_tensor``."""
        device = self.mean.device if generator is None else generator.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)


class WanVAE(nn.Module):
    """Wan2.1 / Wan2.2 video VAE; state dict identical to diffusers' ``AutoencoderKLWan``."""

    def __init__(self, config: WanVAEConfig | None = None,
                 attention_backend: AttentionBackend | None = None) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else WanVAEConfig()
        if attention_backend is None:
            # VAE attention is single-head with head_dim = 4*base_dim (384; 1024 in the Wan2.2
            # decoder), beyond what fused kernels take, so it defaults to the sdpa reference.
            widest = max(cfg.base_dim, cfg.decoder_base_dim or cfg.base_dim)
            attention_backend = select_attention_backend(
                "sdpa", dtype=torch.float32, head_dim=widest * cfg.dim_mult[-1], device="cpu")
        self.encoder = Encoder(cfg, cfg.z_dim * 2, attention_backend)
        self.quant_conv = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1)
        self.post_quant_conv = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder(cfg, attention_backend)

    @property
    def spatial_factor(self) -> int:
        return self.config.spatial_factor

    @property
    def temporal_factor(self) -> int:
        return self.config.temporal_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor, *, chunk_size: int = 1) -> torch.Tensor:
        """Raw latents ``(B, z_dim, T, h, w)`` -> video ``(B, C, S*(T-1)+1, F*h, F*w)`` in ``[-1, 1]``.

        The first latent frame is decoded alone, then ``chunk_size`` latent frames at a time with
        the causal feature cache; ``chunk_size=1`` is diffusers' schedule and the least memory.
        """
        if z.ndim != 5 or z.shape[1] != self.config.z_dim:
            raise ValueError(
                f"decode expects (B, {self.config.z_dim}, T, h, w) latents, got {tuple(z.shape)}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        b, _, t, h, w = z.shape
        s, f = self.temporal_factor, self.spatial_factor // self.config.patch
        x = self.post_quant_conv(z)
        out = x.new_empty(b, self.config.out_channels, s * (t - 1) + 1, f * h, f * w)  # patchified
        cache: FeatureCache = {}
        start, pos = 0, 0
        while start < t:
            stop = 1 if start == 0 else min(start + chunk_size, t)
            frames = self.decoder(x[:, :, start:stop], cache).clamp_(-1.0, 1.0)
            out[:, :, pos:pos + frames.shape[2]] = frames
            pos += frames.shape[2]
            start = stop
        assert pos == out.shape[2], (pos, out.shape)
        return unpatchify(out, self.config.patch)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, *, chunk_size: int = 1) -> DiagonalGaussian:
        """Video ``(B, C, S*k+1, H, W)`` in ``[-1, 1]`` -> posterior over ``(B, z_dim, k+1, H/F, W/F)``.

        The first frame is encoded alone, then ``S * chunk_size`` frames at a time.
        """
        c, p = self.config.video_in_channels, self.config.patch
        if video.ndim != 5 or video.shape[1] != c:
            raise ValueError(f"encode expects (B, {c}, N, H, W) video, got {tuple(video.shape)}")
        if video.shape[3] % p or video.shape[4] % p:
            raise ValueError(f"encode: height and width must be multiples of patch_size={p}, "
                             f"got {video.shape[3]}x{video.shape[4]}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        n = video.shape[2]
        self.config.latent_num_frames(n)  # validates n = S*k + 1
        s = self.temporal_factor
        video = patchify(video, p)
        cache: FeatureCache = {}
        chunks = [self.encoder(video[:, :, :1], cache)]
        for start in range(1, n, s * chunk_size):
            chunks.append(self.encoder(video[:, :, start:start + s * chunk_size], cache))
        h = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=2)
        return DiagonalGaussian(self.quant_conv(h))

    def _latent_stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, 1/std)`` as ``(1, z_dim, 1, 1, 1)`` in z's device/dtype, built as the pipelines do."""
        shape = (1, self.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.config.latents_mean).view(shape).to(z.device, z.dtype)
        inv_std = 1.0 / torch.tensor(self.config.latents_std).view(shape).to(z.device, z.dtype)
        return mean, inv_std

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> denoiser space: ``(z - mean) * (1/std)`` (diffusers' Wan I2V)."""
        mean, inv_std = self._latent_stats(z)
        return (z - mean) * inv_std

    def denormalize_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Denoiser latents -> raw VAE latents: ``x / (1/std) + mean`` (diffusers' WanPipeline)."""
        mean, inv_std = self._latent_stats(x)
        return x / inv_std + mean
