"""LTX-2 video VAE: our own encoder/decoder, numerically equal to diffusers 0.42's ``AutoencoderKLLTX2Video``.

Contract
--------
Shapes (``S = spatial_ratio``, ``T = temporal_ratio`` of :class:`LTX2VideoVAEConfig`; 32 and 8 for LTX-2):

* :meth:`LTX2VideoVAE.decode` takes raw latents ``(B, latent_channels, t, h, w)`` (already *denormalized*, see
  :mod:`fastvideo.engine.models.ltx2.latents`) and returns video ``(B, out_channels, T*(t-1)+1, S*h, S*w)`` in the
  latents' dtype, **not clamped** (diffusers' LTX-2 pipelines clamp only when post-processing to ``[0, 1]``).
  With ``timestep_conditioning`` it needs ``timestep`` (``(B,)`` or a scalar, the pipeline's ``decode_timestep``);
  without it a timestep is ignored, as diffusers does.
* :meth:`LTX2VideoVAE.encode` takes video ``(B, in_channels, T*k+1, H, W)`` with values in ``[-1, 1]`` and ``H``,
  ``W`` multiples of ``S``, and returns a :class:`~fastvideo.engine.models.wan.vae.DiagonalGaussian` over raw latents
  ``(B, latent_channels, k+1, H/S, W/S)``. Its ``mode()`` is what the LTX-2 conditioning pipelines use
  (``retrieve_latents(..., sample_mode="argmax")``). The encoder predicts one shared log-variance channel; the
  posterior broadcasts it over all latent channels exactly as diffusers does. Other shapes raise ``ValueError``,
  as does a latent grid under 2x2 where the config pads by reflection (torch cannot reflect one pixel).
* ``causal``: both calls take ``causal=None`` and run ``causal or config.<encoder|decoder>_causal`` (diffusers'
  rule: a config that is causal stays causal). Causal: every temporal conv pads with copies of the first frame on
  the left; non-causal (the published LTX-2 decoder): half on each side, copies of the first and last frames.
  "T*k+1 frames": the first frame is compressed alone, every further ``T`` frames make one latent frame.
* Both calls run under ``torch.no_grad()`` on the whole clip at once, as the diffusers LTX-2 pipelines run them;
  ``tiling=LTX2VAETiling(...)`` opts into diffusers' spatial (``enable_tiling``) and temporal (framewise) tiling
  for bounded memory, equal to diffusers' tiled results (:mod:`~fastvideo.engine.models.ltx2.vae_tiling`).
  diffusers' batch slicing (``enable_slicing``) is not implemented (it only trades memory for time).

Architecture (diffusers' module tree, so a diffusers ``vae/`` folder loads with ``strict=True``): input patchify
(``patch_size`` x ``patch_size`` pixels into channels, in diffusers' (channel, t, w, h) order) -> causal 3x3x3 conv
-> down blocks (resnets, then a strided conv or a space-to-depth downsampler whose residual is the channel-group
mean of the unshuffled input) -> mid resnets -> per-pixel RMS norm, SiLU, conv to ``latent_channels + 1``.
The decoder mirrors it: conv -> mid resnets -> up blocks (a depth-to-space upsampler, with optionally the
unshuffled input repeated as residual, then resnets) -> RMS norm (+ timestep scale/shift) -> SiLU -> conv ->
unpatchify. Resnets: ``x + conv2(silu(rms(conv1(silu(rms(x))))))``, a LayerNorm + 1x1x1 conv shortcut when the
width changes, and with ``timestep_conditioning`` a per-block scale/shift from a sinusoidal timestep embedding.

:func:`load_ltx2_video_vae` builds it on the meta device and fills it from a diffusers ``vae/`` folder through
:func:`fastvideo.engine.loader.load_module_weights`; :func:`read_ltx2_video_vae_config` parses its ``config.json``
(an unknown key or an unsupported value becomes :class:`~fastvideo.api.errors.ModelLoadError` naming the file and
the field).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastvideo.api.errors import ModelLoadError
from fastvideo.engine.layers import timestep_sinusoid
from fastvideo.engine.loader import load_module_weights, read_json
from fastvideo.engine.models.ltx2.latents import denormalize_latents, normalize_latents
from fastvideo.engine.models.ltx2.vae_config import (DOWNSAMPLE_STRIDES, UPSAMPLE_STRIDES, LTX2VideoVAEConfig,
                                                     PaddingMode)
from fastvideo.engine.models.ltx2.vae_tiling import LTX2VAETiling, tiled_decode, tiled_encode
from fastvideo.engine.models.wan.vae import DiagonalGaussian

logger = logging.getLogger(__name__)

__all__ = ["LTX2VAETiling", "LTX2VideoVAE", "LTX2VideoVAEConfig", "load_ltx2_video_vae",
           "read_ltx2_video_vae_config"]

_DIFFUSERS_CLASS = "AutoencoderKLLTX2Video"
_SINUSOID_DIM = 256  # PixArt-alpha timestep embedding width
_RMS_EPS = 1e-8

Stride = tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel RMS norm over channels (dim 1), no weights; in the input's dtype as diffusers."""
    return x / torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + _RMS_EPS)


def _space_to_depth(x: torch.Tensor, stride: Stride) -> torch.Tensor:
    """``(B, C, t*st, h*sh, w*sw)`` -> ``(B, C*st*sh*sw, t, h, w)``, channels ordered ``(C, st, sh, sw)``."""
    st, sh, sw = stride
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // st, st, h // sh, sh, w // sw, sw)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * st * sh * sw, t // st, h // sh, w // sw)


def _depth_to_space(x: torch.Tensor, stride: Stride) -> torch.Tensor:
    """Inverse of :func:`_space_to_depth`: ``(B, C*st*sh*sw, t, h, w)`` -> ``(B, C, t*st, h*sh, w*sw)``."""
    st, sh, sw = stride
    b, _, t, h, w = x.shape
    x = x.reshape(b, -1, st, sh, sw, t, h, w)
    return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, -1, t * st, h * sh, w * sw)


class CausalConv3d(nn.Module):
    """3D conv whose time axis is padded by repeating edge frames (left only when causal); spatial padding is
    the wrapped ``nn.Conv3d``'s own (``padding_mode``). Holds the conv as ``conv`` (diffusers' keys)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int | Stride = 1,
                 padding_mode: PaddingMode = "zeros") -> None:
        super().__init__()
        strides = (stride,) * 3 if isinstance(stride, int) else stride
        self.time_pad = kernel_size - 1
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=strides,
                              padding=(0, kernel_size // 2, kernel_size // 2), padding_mode=padding_mode)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        if self.time_pad:
            if causal:
                x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
            else:
                half = self.time_pad // 2
                x = torch.cat([x[:, :, :1].expand(-1, -1, half, -1, -1), x,
                               x[:, :, -1:].expand(-1, -1, half, -1, -1)], dim=2)
        return self.conv(x)


class _TimestepMLP(nn.Module):
    """``linear_2(silu(linear_1(x)))`` (diffusers' ``TimestepEmbedding`` keys)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> ``(B, dim)``: 256-wide ``[cos, sin]`` sinusoid, then a two-layer MLP (PixArt-alpha)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.timestep_embedder = _TimestepMLP(_SINUSOID_DIM, dim)

    def forward(self, timestep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.timestep_embedder(timestep_sinusoid(timestep.flatten(), _SINUSOID_DIM).to(dtype))


class ResnetBlock3d(nn.Module):
    """Pre-norm residual block (module contract); ``temb`` is ``(B, 4*C, 1, 1, 1)`` when timestep-conditioned."""

    def __init__(self, in_channels: int, out_channels: int, eps: float, padding_mode: PaddingMode,
                 timestep_conditioning: bool = False) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(in_channels, out_channels, padding_mode=padding_mode)
        self.conv2 = CausalConv3d(out_channels, out_channels, padding_mode=padding_mode)
        self.norm3: nn.LayerNorm | None = None
        self.conv_shortcut: nn.Conv3d | None = None
        if in_channels != out_channels:
            self.norm3 = nn.LayerNorm(in_channels, eps=eps)
            self.conv_shortcut = nn.Conv3d(in_channels, out_channels, kernel_size=1)
        self.scale_shift_table: nn.Parameter | None = None
        if timestep_conditioning:
            self.scale_shift_table = nn.Parameter(torch.zeros(4, in_channels))

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None, causal: bool) -> torch.Tensor:
        h = _rms_norm(x)
        if self.scale_shift_table is not None:
            assert temb is not None  # checked by the decoder
            mod = temb.unflatten(1, (4, -1)) + self.scale_shift_table[None, :, :, None, None, None]
            shift1, scale1, shift2, scale2 = mod.unbind(dim=1)
            h = h * (1 + scale1) + shift1
        h = self.conv1(F.silu(h), causal)
        h = _rms_norm(h)
        if self.scale_shift_table is not None:
            h = h * (1 + scale2) + shift2
        h = self.conv2(F.silu(h), causal)
        if self.norm3 is not None and self.conv_shortcut is not None:
            x = self.conv_shortcut(self.norm3(x.movedim(1, -1)).movedim(-1, 1))
        return h + x


class SpaceToDepthDownsampler(nn.Module):
    """Downsample by ``stride``: conv to ``out/prod(stride)`` channels then space-to-depth, plus the input's
    space-to-depth averaged over channel groups. The first ``stride_t - 1`` frames are repeated in front (causal)."""

    def __init__(self, in_channels: int, out_channels: int, stride: Stride, padding_mode: PaddingMode) -> None:
        super().__init__()
        self.stride = stride
        volume = math.prod(stride)
        self.group_size = in_channels * volume // out_channels
        self.conv = CausalConv3d(in_channels, out_channels // volume, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        x = torch.cat([x[:, :, :self.stride[0] - 1], x], dim=2)
        residual = _space_to_depth(x, self.stride).unflatten(1, (-1, self.group_size)).mean(dim=2)
        return _space_to_depth(self.conv(x, causal), self.stride) + residual


class DepthToSpaceUpsampler(nn.Module):
    """Upsample by ``stride``: conv to ``C*prod(stride)/factor`` channels then depth-to-space (``factor`` divides the
    width); optionally plus the input's depth-to-space tiled over channels. The first ``stride_t - 1`` output frames
    (the causal front padding's images) are dropped, so ``t`` latent frames become ``stride_t*(t-1)+1``."""

    def __init__(self, in_channels: int, stride: Stride, residual: bool, factor: int,
                 padding_mode: PaddingMode) -> None:
        super().__init__()
        self.stride = stride
        self.residual = residual
        self.repeats = math.prod(stride) // factor
        self.conv = CausalConv3d(in_channels, in_channels * math.prod(stride) // factor, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        drop = self.stride[0] - 1
        out = _depth_to_space(self.conv(x, causal), self.stride)[:, :, drop:]
        if self.residual:
            out = out + _depth_to_space(x, self.stride).repeat(1, self.repeats, 1, 1, 1)[:, :, drop:]
        return out


class DownBlock(nn.Module):
    """``num_layers`` resnets at the input width, then an optional downsampler (to ``out_channels``)."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, eps: float, downsample: str | None,
                 padding_mode: PaddingMode) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock3d(in_channels, in_channels, eps, padding_mode) for _ in range(num_layers)])
        self.downsamplers: nn.ModuleList | None = None
        if downsample == "conv":
            self.downsamplers = nn.ModuleList(
                [CausalConv3d(in_channels, in_channels, stride=2, padding_mode=padding_mode)])
        elif downsample is not None:
            self.downsamplers = nn.ModuleList([SpaceToDepthDownsampler(
                in_channels, out_channels, DOWNSAMPLE_STRIDES[downsample], padding_mode)])

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, None, causal)
        for downsampler in self.downsamplers or ():
            x = downsampler(x, causal)
        return x


class MidBlock(nn.Module):
    """``num_layers`` resnets; with timestep conditioning it embeds the timestep for them (``4*C`` wide)."""

    def __init__(self, channels: int, num_layers: int, eps: float, padding_mode: PaddingMode,
                 timestep_conditioning: bool = False) -> None:
        super().__init__()
        self.time_embedder = TimestepEmbedder(channels * 4) if timestep_conditioning else None
        self.resnets = nn.ModuleList([ResnetBlock3d(channels, channels, eps, padding_mode, timestep_conditioning)
                                      for _ in range(num_layers)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None, causal: bool) -> torch.Tensor:
        if self.time_embedder is not None:
            assert temb is not None
            temb = self.time_embedder(temb, x.dtype).view(x.shape[0], -1, 1, 1, 1)
        for resnet in self.resnets:
            x = resnet(x, temb, causal)
        return x


class UpBlock(nn.Module):
    """Optional width-changing resnet (``conv_in``), optional upsampler, then ``num_layers`` resnets."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, eps: float, upsample: str | None,
                 residual: bool, factor: int, padding_mode: PaddingMode, timestep_conditioning: bool) -> None:
        super().__init__()
        self.time_embedder = TimestepEmbedder(in_channels * 4) if timestep_conditioning else None
        self.conv_in: ResnetBlock3d | None = None
        if in_channels != out_channels:  # the config refuses this together with timestep conditioning
            self.conv_in = ResnetBlock3d(in_channels, out_channels, eps, padding_mode)
        self.upsamplers: nn.ModuleList | None = None
        if upsample is not None:
            self.upsamplers = nn.ModuleList([DepthToSpaceUpsampler(
                out_channels * factor, UPSAMPLE_STRIDES[upsample], residual, factor, padding_mode)])
        self.resnets = nn.ModuleList([ResnetBlock3d(out_channels, out_channels, eps, padding_mode,
                                                    timestep_conditioning) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None, causal: bool) -> torch.Tensor:
        if self.conv_in is not None:
            x = self.conv_in(x, None, causal)
        if self.time_embedder is not None:
            assert temb is not None
            temb = self.time_embedder(temb, x.dtype).view(x.shape[0], -1, 1, 1, 1)
        for upsampler in self.upsamplers or ():
            x = upsampler(x, causal)
        for resnet in self.resnets:
            x = resnet(x, temb, causal)
        return x


# --------------------------------------------------------------------------------------------
# Encoder, decoder, model
# --------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """Video -> ``latent_channels + 1`` channels (means, then one shared log-variance)."""

    def __init__(self, cfg: LTX2VideoVAEConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        mode, eps = cfg.encoder_spatial_padding_mode, cfg.resnet_norm_eps
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch_size ** 2, cfg.latent_channels, padding_mode=mode)
        blocks, channels = [], cfg.latent_channels
        for i, out in enumerate(cfg.block_out_channels):
            downsample = cfg.downsample_type[i] if cfg.spatio_temporal_scaling[i] else None
            blocks.append(DownBlock(channels, out, cfg.layers_per_block[i], eps, downsample, mode))
            channels = out
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(channels, cfg.layers_per_block[-1], eps, mode)
        self.conv_out = CausalConv3d(channels, cfg.latent_channels + 1, padding_mode=mode)

    def forward(self, video: torch.Tensor, causal: bool) -> torch.Tensor:
        p = self.patch_size
        b, c, t, h, w = video.shape
        # diffusers' patch order: channels (C, t-patch, w-patch, h-patch)
        x = video.reshape(b, c, t, 1, h // p, p, w // p, p).permute(0, 1, 3, 7, 5, 2, 4, 6)
        x = self.conv_in(x.reshape(b, c * p * p, t, h // p, w // p), causal)
        for block in self.down_blocks:
            x = block(x, causal)
        x = self.mid_block(x, None, causal)
        return self.conv_out(F.silu(_rms_norm(x)), causal)


class Decoder(nn.Module):
    """Latents (+ timestep) -> video, mirroring :class:`Encoder`."""

    def __init__(self, cfg: LTX2VideoVAEConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        mode, eps, cond = cfg.decoder_spatial_padding_mode, cfg.resnet_norm_eps, cfg.timestep_conditioning
        layers = tuple(reversed(cfg.decoder_layers_per_block))
        scaling = tuple(reversed(cfg.decoder_spatio_temporal_scaling))
        residual = tuple(reversed(cfg.upsample_residual))
        width = cfg.decoder_block_out_channels[-1]
        self.conv_in = CausalConv3d(cfg.latent_channels, width, padding_mode=mode)
        self.mid_block = MidBlock(width, layers[0], eps, mode, cond)
        blocks = []
        for i, (in_ch, out_ch, factor) in enumerate(cfg.decoder_blocks()):
            # diffusers reverses every per-block list but upsample_type
            upsample = cfg.upsample_type[i] if scaling[i] else None
            blocks.append(UpBlock(in_ch, out_ch, layers[i + 1], eps, upsample, residual[i], factor, mode, cond))
            width = out_ch
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_out = CausalConv3d(width, cfg.out_channels * cfg.patch_size ** 2, padding_mode=mode)
        self.timestep_scale_multiplier: nn.Parameter | None = None
        self.time_embedder: TimestepEmbedder | None = None
        self.scale_shift_table: nn.Parameter | None = None
        if cond:
            self.timestep_scale_multiplier = nn.Parameter(torch.tensor(1000.0))
            self.time_embedder = TimestepEmbedder(width * 2)
            self.scale_shift_table = nn.Parameter(torch.zeros(2, width))

    def forward(self, z: torch.Tensor, temb: torch.Tensor | None, causal: bool) -> torch.Tensor:
        x = self.conv_in(z, causal)
        if self.timestep_scale_multiplier is not None:
            assert temb is not None
            temb = temb * self.timestep_scale_multiplier
        x = self.mid_block(x, temb, causal)
        for block in self.up_blocks:
            x = block(x, temb, causal)
        x = _rms_norm(x)
        if self.time_embedder is not None and self.scale_shift_table is not None:
            assert temb is not None
            mod = self.time_embedder(temb, x.dtype).view(x.shape[0], 2, -1, 1, 1, 1)
            shift, scale = (mod + self.scale_shift_table[None, :, :, None, None, None]).unbind(dim=1)
            x = x * (1 + scale) + shift
        x = self.conv_out(F.silu(x), causal)
        p = self.patch_size
        b, _, t, h, w = x.shape
        # channels (C, t-patch, w-patch, h-patch), as the encoder packed them
        x = x.reshape(b, -1, 1, p, p, t, h, w).permute(0, 1, 5, 2, 6, 4, 7, 3)
        return x.reshape(b, -1, t, h * p, w * p)


class LTX2VideoVAE(nn.Module):
    """The LTX-2 video VAE (module contract); state dict identical to diffusers' ``AutoencoderKLLTX2Video``."""

    latents_mean: torch.Tensor
    latents_std: torch.Tensor

    def __init__(self, config: LTX2VideoVAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else LTX2VideoVAEConfig(
            spatial_compression_ratio=32, temporal_compression_ratio=8)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.register_buffer("latents_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latents_std", torch.ones(cfg.latent_channels))

    @property
    def spatial_compression_ratio(self) -> int:
        return self.config.spatial_ratio

    @property
    def temporal_compression_ratio(self) -> int:
        return self.config.temporal_ratio

    @torch.no_grad()
    def encode(self, video: torch.Tensor, causal: bool | None = None,
               tiling: LTX2VAETiling | None = None) -> DiagonalGaussian:
        """Video ``(B, C, T*k+1, H, W)`` in ``[-1, 1]`` -> posterior over raw latents (module contract)."""
        cfg = self.config
        if video.ndim != 5 or video.shape[1] != cfg.in_channels:
            raise ValueError(f"LTX-2 video VAE encode expects (B, {cfg.in_channels}, frames, H, W) video, "
                             f"got {tuple(video.shape)}")
        cfg.latent_num_frames(video.shape[2])
        s = cfg.spatial_ratio
        if video.shape[3] % s or video.shape[4] % s:
            raise ValueError(f"LTX-2 video VAE encode: height and width must be multiples of {s}, "
                             f"got {video.shape[3]}x{video.shape[4]}")
        _check_reflect_size(cfg.encoder_spatial_padding_mode, video.shape[3] // s, video.shape[4] // s, s, "encode")
        is_causal = bool(causal or cfg.encoder_causal)
        if tiling is None:
            h = self.encoder(video, is_causal)
        else:
            h = tiled_encode(video, lambda x: self.encoder(x, is_causal), tiling, s, cfg.temporal_ratio)
        c = cfg.latent_channels
        logvar = h[:, c:].expand(-1, c, -1, -1, -1)  # one predicted log-variance, shared by every channel
        return DiagonalGaussian(torch.cat([h[:, :c], logvar], dim=1))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, timestep: torch.Tensor | float | None = None, causal: bool | None = None,
               tiling: LTX2VAETiling | None = None) -> torch.Tensor:
        """Raw latents ``(B, latent_channels, t, h, w)`` -> video ``(B, C, T*(t-1)+1, S*h, S*w)``, unclamped."""
        cfg = self.config
        if z.ndim != 5 or z.shape[1] != cfg.latent_channels:
            raise ValueError(f"LTX-2 video VAE decode expects (B, {cfg.latent_channels}, t, h, w) latents, "
                             f"got {tuple(z.shape)}")
        _check_reflect_size(cfg.decoder_spatial_padding_mode, z.shape[3], z.shape[4], cfg.spatial_ratio, "decode")
        temb: torch.Tensor | None = None
        if cfg.timestep_conditioning:
            if timestep is None:
                raise ValueError("this LTX-2 video VAE is timestep-conditioned (timestep_conditioning=true): pass "
                                 "the decode timestep (LTX2Pipeline's decode_timestep, e.g. 0.05)")
            temb = torch.as_tensor(timestep, dtype=z.dtype, device=z.device).reshape(-1)
            if temb.numel() == 1:
                temb = temb.expand(z.shape[0])
            if temb.numel() != z.shape[0]:
                raise ValueError(f"decode timestep has {temb.numel()} values for a batch of {z.shape[0]}")
        is_causal = bool(causal or cfg.decoder_causal)
        if tiling is None:
            return self.decoder(z, temb, is_causal)
        return tiled_decode(z, lambda x: self.decoder(x, temb, is_causal), tiling, cfg.spatial_ratio,
                            cfg.temporal_ratio)

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> denoiser space with this VAE's statistics (``LTX2Pipeline._normalize_latents``)."""
        return normalize_latents(z, self.latents_mean, self.latents_std, self.config.scaling_factor)

    def denormalize_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Denoiser latents -> raw VAE latents (``LTX2Pipeline._denormalize_latents``)."""
        return denormalize_latents(x, self.latents_mean, self.latents_std, self.config.scaling_factor)


def _check_reflect_size(mode: str, height: int, width: int, ratio: int, call: str) -> None:
    """Reflect padding needs 2 latent pixels per side (torch refuses to reflect a single one)."""
    if mode == "reflect" and (height < 2 or width < 2):
        raise ValueError(f"LTX-2 video VAE {call}: a {height}x{width} latent grid is too small for this VAE's "
                         f"reflect padding; use at least {2 * ratio}x{2 * ratio} pixels (2x2 latents)")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def read_ltx2_video_vae_config(folder: str | Path) -> LTX2VideoVAEConfig:
    """The :class:`LTX2VideoVAEConfig` of a ``vae/`` folder; any problem is a ``ModelLoadError`` naming it."""
    path = Path(folder).expanduser() / "config.json"
    data = read_json(path)
    class_name = data.get("_class_name")
    if class_name is not None and class_name != _DIFFUSERS_CLASS:
        raise ModelLoadError(f"{path} describes a {class_name}, not an {_DIFFUSERS_CLASS}; point at the vae/ "
                             "folder of an LTX-2 diffusers checkpoint")
    try:
        return LTX2VideoVAEConfig.from_dict(data)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise ModelLoadError(f"unsupported LTX-2 video VAE config {path}: {exc}") from exc


def load_ltx2_video_vae(folder: str | Path, *, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu", variant: str | None = None) -> LTX2VideoVAE:
    """Build the video VAE of a diffusers LTX-2 ``vae/`` folder on the meta device and load its safetensors
    (single or sharded, weight ``variant`` as diffusers names them; missing, unexpected or mis-shaped tensors raise
    ``ModelLoadError``); every tensor takes ``dtype``. Returns it in eval mode, gradients off, on ``device``."""
    folder = Path(folder).expanduser()
    config = read_ltx2_video_vae_config(folder)
    device = torch.device(device)
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = LTX2VideoVAE(config)
    load_module_weights(model, folder, dtype=dtype, device=device, variant=variant)
    logger.info("loaded LTX-2 video VAE from %s in %.2fs on %s/%s", folder, time.perf_counter() - t0, device, dtype)
    return model
