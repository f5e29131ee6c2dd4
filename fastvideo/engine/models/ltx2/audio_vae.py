"""The LTX-2 audio VAE (mel spectrogram <-> audio latents), numerically equal to diffusers 0.42's
``AutoencoderKLLTX2Audio``.

Contract
--------
- :class:`LTX2AudioVAEConfig` has one field per argument of diffusers' ``AutoencoderKLLTX2Audio.__init__`` (same
  defaults); :meth:`LTX2AudioVAEConfig.from_dict` reads its ``config.json`` (unknown keys refused by name).
  Refused with a :class:`ValueError` naming the field: a ``causality_axis`` outside ``none / width / height /
  width-compatibility``, a ``norm_type`` other than ``pixel`` / ``group``, GroupNorm with a causal axis (diffusers
  refuses it too), non-positive sizes.
- :class:`LTX2AudioVAE` has the same ``state_dict()`` keys and shapes as diffusers' class (``encoder.*``,
  ``decoder.*``, the ``latents_mean`` / ``latents_std`` buffers), so a diffusers ``audio_vae/`` folder loads with
  ``load_state_dict(strict=True)``; it owns no non-persistent buffers, so it builds on the meta device.

  * :meth:`LTX2AudioVAE.decode` ``(B, latent_channels, T, mel_bins // 4)`` latents -> ``(B, output_channels,
    T', mel_bins)`` mel spectrogram, ``T' = 4 T - 3`` (causal; at least 1), cropped / zero-padded like diffusers.
  * :meth:`LTX2AudioVAE.encode` ``(B, in_channels, T, mel_bins)`` mel -> the posterior mean (diffusers'
    ``latent_dist.mode()``), or a sample drawn with ``generator`` when ``sample=True`` (``latent_dist.sample``).
    No LTX-2 pipeline of diffusers 0.42 encodes audio; it is here for audio conditioning from a waveform's mel.

- Pipeline-side audio latent rules (``LTX2Pipeline``), as plain functions:

  * :func:`audio_latent_length` -- latent frames for a clip: ``round(num_frames / fps * sample_rate / hop_length /
    4)`` (Python ``round``, half to even, as the pipeline).
  * :func:`pack_audio_latents` / :func:`unpack_audio_latents` -- ``(B, C, L, M) <-> (B, L, C * M)`` tokens.
  * :func:`normalize_audio_latents` / :func:`denormalize_audio_latents` -- per-feature statistics
    (``latents_mean`` / ``latents_std``, length ``C * M``) applied to *packed* tokens, as the pipeline does.

- Precision: every op runs in the dtype of the input and parameters (diffusers keeps nothing in float32 here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastvideo.engine.models.ltx2.components import config_from_dict, load_component

__all__ = [
    "LATENT_DOWNSAMPLE_FACTOR", "LTX2AudioVAE", "LTX2AudioVAEConfig", "audio_latent_length",
    "denormalize_audio_latents", "load_ltx2_audio_vae", "normalize_audio_latents", "pack_audio_latents",
    "unpack_audio_latents",
]

#: Time (and mel) compression of the audio VAE: diffusers hard-codes it (``temporal_compression_ratio``).
LATENT_DOWNSAMPLE_FACTOR = 4
_CAUSALITY_AXES = ("none", "width", "height", "width-compatibility")
_NORM_TYPES = ("pixel", "group")


@dataclass
class LTX2AudioVAEConfig:
    """The fields of a diffusers ``AutoencoderKLLTX2Audio`` ``config.json`` (defaults: diffusers')."""

    base_channels: int = 128
    output_channels: int = 2
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] | None = None
    in_channels: int = 2
    resolution: int = 256
    latent_channels: int = 8
    norm_type: str = "pixel"
    causality_axis: str = "height"
    dropout: float = 0.0
    mid_block_add_attention: bool = False
    sample_rate: int = 16000
    mel_hop_length: int = 160
    is_causal: bool = True
    mel_bins: int | None = 64
    double_z: bool = True

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        if self.attn_resolutions is not None:
            self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if self.causality_axis not in _CAUSALITY_AXES:
            raise ValueError(f"causality_axis must be one of {list(_CAUSALITY_AXES)}, got {self.causality_axis!r}")
        if self.norm_type not in _NORM_TYPES:
            raise ValueError(f"norm_type must be one of {list(_NORM_TYPES)}, got {self.norm_type!r}")
        if self.norm_type == "group" and self.causality_axis != "none":
            raise ValueError(f"norm_type='group' needs causality_axis='none' (got {self.causality_axis!r}); diffusers "
                             "refuses causal blocks with GroupNorm")
        if not self.ch_mult or min(self.ch_mult) <= 0:
            raise ValueError(f"ch_mult must be a non-empty list of positive ints, got {list(self.ch_mult)}")
        for name in ("base_channels", "output_channels", "in_channels", "resolution", "latent_channels",
                     "sample_rate", "mel_hop_length"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.num_res_blocks < 0:
            raise ValueError(f"num_res_blocks must be >= 0, got {self.num_res_blocks!r}")
        if self.mel_bins is not None and self.mel_bins <= 0:
            raise ValueError(f"mel_bins must be positive or null, got {self.mel_bins!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LTX2AudioVAEConfig":
        """Build from a diffusers ``config.json`` dict (module contract)."""
        return config_from_dict(cls, data)

    @property
    def latent_mel_bins(self) -> int:
        """Mel bins of the latent (``mel_bins // 4``, the pipeline's ``latent_mel_bins``)."""
        return (self.mel_bins or 64) // LATENT_DOWNSAMPLE_FACTOR


# ----------------------------------------------------------------------------------------------------------- layers

class _CausalConv2d(nn.Module):
    """A 2D convolution padded on one side of the causal axis (``conv`` holds the weights, as in diffusers)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, causality_axis: str) -> None:
        super().__init__()
        pad = kernel_size - 1
        before, after = pad // 2, pad - pad // 2
        # F.pad order: (left, right, top, bottom) = (width before/after, height before/after)
        if causality_axis == "none":
            self.padding = (before, after, before, after)
        elif causality_axis in ("width", "width-compatibility"):
            self.padding = (pad, 0, before, after)
        else:  # height
            self.padding = (before, after, pad, 0)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class _PixelNorm(nn.Module):
    """RMS normalization over channels at every (time, mel) position: ``x / sqrt(mean(x^2) + eps)``."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + self.eps)


def _norm(norm_type: str, channels: int) -> nn.Module:
    if norm_type == "group":
        return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)
    return _PixelNorm(eps=1e-6)


class _AttnBlock(nn.Module):
    """Single-head self-attention over all (time, mel) positions with 1x1 convolutions, plus the residual."""

    def __init__(self, channels: int, norm_type: str) -> None:
        super().__init__()
        self.norm = _norm(norm_type, channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        batch, channels, height, width = h.shape
        q = self.q(h).reshape(batch, channels, height * width).transpose(1, 2)  # (B, N, C)
        k = self.k(h).reshape(batch, channels, height * width)  # (B, C, N)
        v = self.v(h).reshape(batch, channels, height * width)  # (B, C, N)
        weights = torch.softmax(torch.bmm(q, k) * channels ** -0.5, dim=2)  # (B, N_q, N_k)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(batch, channels, height, width)
        return x + self.proj_out(out)


class _ResnetBlock(nn.Module):
    """norm -> SiLU -> causal conv, twice, plus a (1x1 causal conv) shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, norm_type: str, causality_axis: str) -> None:
        super().__init__()
        self.norm1 = _norm(norm_type, in_channels)
        self.conv1 = _CausalConv2d(in_channels, out_channels, 3, causality_axis)
        self.norm2 = _norm(norm_type, out_channels)
        self.conv2 = _CausalConv2d(out_channels, out_channels, 3, causality_axis)
        self.nin_shortcut = (_CausalConv2d(in_channels, out_channels, 1, causality_axis)
                             if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class _Downsample(nn.Module):
    """Stride-2 3x3 convolution after a one-sided (causal) zero pad."""

    _PADS = {"none": (0, 1, 0, 1), "width": (2, 0, 0, 1), "height": (0, 1, 2, 0), "width-compatibility": (1, 0, 0, 1)}

    def __init__(self, channels: int, causality_axis: str) -> None:
        super().__init__()
        self.pad = self._PADS[causality_axis]
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class _Upsample(nn.Module):
    """Nearest 2x upsampling, a causal 3x3 convolution, then the first row (height) / column (width) dropped."""

    def __init__(self, channels: int, causality_axis: str) -> None:
        super().__init__()
        self.causality_axis = causality_axis
        self.conv = _CausalConv2d(channels, channels, 3, causality_axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        if self.causality_axis == "height":
            return x[:, :, 1:, :]
        if self.causality_axis == "width":
            return x[:, :, :, 1:]
        return x


class _Stage(nn.Module):
    """One resolution level: ``block`` / ``attn`` lists and an optional ``downsample`` / ``upsample``."""

    downsample: nn.Module  # set on every encoder level but the last
    upsample: nn.Module  # set on every decoder level but the finest

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()

    def run(self, x: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[index](x)
        return x


class _Mid(nn.Module):
    def __init__(self, channels: int, cfg: LTX2AudioVAEConfig) -> None:
        super().__init__()
        self.block_1 = _ResnetBlock(channels, channels, cfg.norm_type, cfg.causality_axis)
        self.attn_1: nn.Module = (_AttnBlock(channels, cfg.norm_type) if cfg.mid_block_add_attention
                                  else nn.Identity())
        self.block_2 = _ResnetBlock(channels, channels, cfg.norm_type, cfg.causality_axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


def _attends(cfg: LTX2AudioVAEConfig, resolution: int) -> bool:
    return bool(cfg.attn_resolutions) and resolution in (cfg.attn_resolutions or ())


class _Encoder(nn.Module):
    """mel ``(B, in_channels, T, mel)`` -> moments ``(B, 2 * latent_channels or latent_channels, T', mel')``."""

    def __init__(self, cfg: LTX2AudioVAEConfig) -> None:
        super().__init__()
        levels = len(cfg.ch_mult)
        self.conv_in = _CausalConv2d(cfg.in_channels, cfg.base_channels, 3, cfg.causality_axis)
        self.down = nn.ModuleList()
        width, resolution = cfg.base_channels, cfg.resolution
        for level in range(levels):
            stage = _Stage()
            out = cfg.base_channels * cfg.ch_mult[level]
            for _ in range(cfg.num_res_blocks):
                stage.block.append(_ResnetBlock(width, out, cfg.norm_type, cfg.causality_axis))
                width = out
                if _attends(cfg, resolution):
                    stage.attn.append(_AttnBlock(width, cfg.norm_type))
            if level != levels - 1:
                stage.downsample = _Downsample(width, cfg.causality_axis)
                resolution //= 2
            self.down.append(stage)
        self.mid = _Mid(width, cfg)
        self.norm_out = _norm(cfg.norm_type, width)
        z_channels = 2 * cfg.latent_channels if cfg.double_z else cfg.latent_channels
        self.conv_out = _CausalConv2d(width, z_channels, 3, cfg.causality_axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for module in self.down:
            stage = cast(_Stage, module)
            x = stage.run(x)
            if hasattr(stage, "downsample"):
                x = stage.downsample(x)
        x = self.mid(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class _Decoder(nn.Module):
    """latents ``(B, latent_channels, T, M)`` -> mel ``(B, output_channels, 4T - 3, mel_bins)`` (causal)."""

    def __init__(self, cfg: LTX2AudioVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        levels = len(cfg.ch_mult)
        width = cfg.base_channels * cfg.ch_mult[-1]
        resolution = cfg.resolution // 2 ** (levels - 1)
        self.conv_in = _CausalConv2d(cfg.latent_channels, width, 3, cfg.causality_axis)
        self.mid = _Mid(width, cfg)
        stages: list[_Stage] = []
        for level in reversed(range(levels)):
            stage = _Stage()
            out = cfg.base_channels * cfg.ch_mult[level]
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(_ResnetBlock(width, out, cfg.norm_type, cfg.causality_axis))
                width = out
                if _attends(cfg, resolution):
                    stage.attn.append(_AttnBlock(width, cfg.norm_type))
            if level != 0:
                stage.upsample = _Upsample(width, cfg.causality_axis)
                resolution *= 2
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)  # up[0] is the finest level, run last
        self.norm_out = _norm(cfg.norm_type, width)
        self.conv_out = _CausalConv2d(width, cfg.output_channels, 3, cfg.causality_axis)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        frames, mel_bins = z.shape[2], z.shape[3]
        # the VAE's causal axis is always set (diffusers' decoder: ``causality_axis is not None``)
        target_time = max(frames * LATENT_DOWNSAMPLE_FACTOR - (LATENT_DOWNSAMPLE_FACTOR - 1), 1)
        target_freq = self.cfg.mel_bins if self.cfg.mel_bins is not None else mel_bins
        x = self.mid(self.conv_in(z))
        for level in reversed(range(len(self.up))):
            stage = cast(_Stage, self.up[level])
            x = stage.run(x)
            if hasattr(stage, "upsample"):
                x = stage.upsample(x)
        x = self.conv_out(F.silu(self.norm_out(x)))
        x = x[:, :self.cfg.output_channels, :target_time, :target_freq]
        pad_time, pad_freq = target_time - x.shape[2], target_freq - x.shape[3]
        if pad_time > 0 or pad_freq > 0:
            x = F.pad(x, (0, max(pad_freq, 0), 0, max(pad_time, 0)))
        return x


class LTX2AudioVAE(nn.Module):
    """The LTX-2 audio autoencoder (module contract)."""

    temporal_compression_ratio = LATENT_DOWNSAMPLE_FACTOR
    mel_compression_ratio = LATENT_DOWNSAMPLE_FACTOR
    latents_mean: torch.Tensor
    latents_std: torch.Tensor

    def __init__(self, config: LTX2AudioVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = _Encoder(config)
        self.decoder = _Decoder(config)
        # per-feature statistics of the packed latent tokens (length C * M == base_channels in the published model)
        self.register_buffer("latents_mean", torch.zeros(config.base_channels), persistent=True)
        self.register_buffer("latents_std", torch.ones(config.base_channels), persistent=True)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Unpacked, denormalized latents ``(B, C, T, M)`` -> mel spectrogram ``(B, output_channels, 4T-3, mel)``."""
        if latents.ndim != 4 or latents.shape[1] != self.config.latent_channels:
            raise ValueError(f"audio latents must be (batch, {self.config.latent_channels}, frames, mel_bins), "
                             f"got {tuple(latents.shape)}")
        return self.decoder(latents)

    @torch.no_grad()
    def encode(self, mel: torch.Tensor, *, sample: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Mel ``(B, in_channels, T, mel_bins)`` -> latents: the posterior mean, or a draw from it (module contract)."""
        if mel.ndim != 4 or mel.shape[1] != self.config.in_channels:
            raise ValueError(f"mel spectrogram must be (batch, {self.config.in_channels}, frames, mel_bins), "
                             f"got {tuple(mel.shape)}")
        mean, logvar = torch.chunk(self.encoder(mel), 2, dim=1)
        if not sample:
            return mean
        std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise


# ----------------------------------------------------------------------------------------- pipeline-side latent rules

def audio_latent_length(num_frames: int, fps: float, sample_rate: int = 16000, hop_length: int = 160,
                        temporal_compression: int = LATENT_DOWNSAMPLE_FACTOR) -> int:
    """Audio latent frames for ``num_frames`` video frames at ``fps`` (``LTX2Pipeline``'s rule, module contract)."""
    if num_frames <= 0 or fps <= 0:
        raise ValueError(f"num_frames and fps must be positive, got {num_frames!r} and {fps!r}")
    latents_per_second = sample_rate / hop_length / float(temporal_compression)
    return round(num_frames / fps * latents_per_second)


def pack_audio_latents(latents: torch.Tensor) -> torch.Tensor:
    """``(B, C, L, M)`` -> tokens ``(B, L, C * M)`` (channel-major features)."""
    return latents.transpose(1, 2).flatten(2, 3)


def unpack_audio_latents(tokens: torch.Tensor, latent_mel_bins: int) -> torch.Tensor:
    """Tokens ``(B, L, C * M)`` -> ``(B, C, L, M)``."""
    return tokens.unflatten(2, (-1, latent_mel_bins)).transpose(1, 2)


def normalize_audio_latents(tokens: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Packed raw latents -> the DiT's normalized tokens: ``(x - mean) / std`` over the last axis."""
    return (tokens - mean.to(tokens.device, tokens.dtype)) / std.to(tokens.device, tokens.dtype)


def denormalize_audio_latents(tokens: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The DiT's packed tokens -> raw latents: ``x * std + mean`` over the last axis."""
    return tokens * std.to(tokens.device, tokens.dtype) + mean.to(tokens.device, tokens.dtype)


def load_ltx2_audio_vae(folder: str | Path, *, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu", variant: str | None = None) -> LTX2AudioVAE:
    """Build and load a diffusers ``audio_vae/`` folder (``AutoencoderKLLTX2Audio``) on the meta device."""
    model, _ = load_component(folder, class_name="AutoencoderKLLTX2Audio", parse=LTX2AudioVAEConfig.from_dict,
                              build=LTX2AudioVAE, dtype=dtype, device=device, variant=variant)
    return model
