"""Wan2.1 video VAE: causal 3D conv encoder/decoder, numerically matching diffusers' ``AutoencoderKLWan``.

Contract
--------
Shapes and value ranges (``F = spatial_factor = 8``, ``S = temporal_factor = 4`` for Wan2.1):

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

State-dict keys and shapes are identical to diffusers' ``AutoencoderKLWan`` for Wan2.1 configs, so
a diffusers ``diffusion_pytorch_model.safetensors`` loads with ``strict=True``. Wan2.2-only features
(``is_residual=True``, ``patch_size``) raise :class:`NotImplementedError`. ``encode``/``decode`` run
under ``torch.no_grad()``.
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


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass
class WanVAEConfig:
    """The fields of diffusers' ``AutoencoderKLWan`` ``config.json`` (Wan2.1 variant)."""

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
        if self.is_residual:
            raise NotImplementedError(
                "WanVAEConfig: is_residual=True is the Wan2.2 VAE (residual down/up blocks); only the "
                "Wan2.1 VAE is implemented")
        if self.patch_size is not None:
            raise NotImplementedError(
                f"WanVAEConfig: patch_size={self.patch_size} is a Wan2.2 VAE feature (patchified "
                "input/output); only the Wan2.1 VAE is implemented")
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
    def from_dict(cls, data: dict[str, Any]) -> "WanVAEConfig":
        """Build from a diffusers ``config.json`` dict; ``_``-prefixed keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key.startswith("_"):
                continue
            if key not in known:
                raise ValueError(f"WanVAEConfig: unknown config key {key!r}; known keys: {sorted(known)}")
            kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent along H and W (8 for Wan2.1)."""
        return 2 ** (len(self.dim_mult) - 1)

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

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"Resample mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        if mode.startswith("up"):
            # nearest(-exact) x2 only copies values, so it is exact in any dtype
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          nn.Conv2d(dim, dim // 2, 3, padding=1))
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
    """Video -> ``out_dim`` channels at 1/8 spatial and 1/4 temporal (causal) resolution."""

    def __init__(self, cfg: WanVAEConfig, out_dim: int, backend: AttentionBackend) -> None:
        super().__init__()
        dims = [cfg.base_dim * m for m in [1, *cfg.dim_mult]]
        self.conv_in = CausalConv3d(cfg.in_channels, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        scale = 1.0
        for i, (in_dim, dim) in enumerate(zip(dims[:-1], dims[1:])):
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
    """Latents -> video, mirroring :class:`Encoder` (no attention outside the mid block)."""

    def __init__(self, cfg: WanVAEConfig, backend: AttentionBackend) -> None:
        super().__init__()
        base = cfg.decoder_base_dim or cfg.base_dim
        dims = [base * m for m in [cfg.dim_mult[-1], *cfg.dim_mult[::-1]]]
        temperal_upsample = cfg.temperal_downsample[::-1]
        self.conv_in = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.mid_block = MidBlock(dims[0], cfg.dropout, backend)
        blocks = []
        for i, (in_dim, dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # the previous block's upsampler halved the channels
            mode = None
            if i != len(cfg.dim_mult) - 1:
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
    """Wan2.1 video VAE; state dict identical to diffusers' ``AutoencoderKLWan``."""

    def __init__(self, config: WanVAEConfig | None = None,
                 attention_backend: AttentionBackend | None = None) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else WanVAEConfig()
        if attention_backend is None:
            # VAE attention is single-head with head_dim = 4*base_dim (384), beyond what fused
            # kernels take, so it defaults to the sdpa reference.
            attention_backend = select_attention_backend(
                "sdpa", dtype=torch.float32, head_dim=cfg.base_dim * cfg.dim_mult[-1], device="cpu")
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
        s, f = self.temporal_factor, self.spatial_factor
        x = self.post_quant_conv(z)
        out = x.new_empty(b, self.config.out_channels, s * (t - 1) + 1, f * h, f * w)
        cache: FeatureCache = {}
        start, pos = 0, 0
        while start < t:
            stop = 1 if start == 0 else min(start + chunk_size, t)
            frames = self.decoder(x[:, :, start:stop], cache).clamp_(-1.0, 1.0)
            out[:, :, pos:pos + frames.shape[2]] = frames
            pos += frames.shape[2]
            start = stop
        assert pos == out.shape[2], (pos, out.shape)
        return out

    @torch.no_grad()
    def encode(self, video: torch.Tensor, *, chunk_size: int = 1) -> DiagonalGaussian:
        """Video ``(B, C, S*k+1, H, W)`` in ``[-1, 1]`` -> posterior over ``(B, z_dim, k+1, H/F, W/F)``.

        The first frame is encoded alone, then ``S * chunk_size`` frames at a time.
        """
        if video.ndim != 5 or video.shape[1] != self.config.in_channels:
            raise ValueError(
                f"encode expects (B, {self.config.in_channels}, N, H, W) video, got {tuple(video.shape)}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        n = video.shape[2]
        self.config.latent_num_frames(n)  # validates n = S*k + 1
        s = self.temporal_factor
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
