"""The LTX-2 vocoder (mel spectrogram -> waveform), numerically matching diffusers 0.42's ``LTX2Vocoder``.

Contract
--------
- :class:`LTX2VocoderConfig` has one field per argument of diffusers' ``LTX2Vocoder.__init__`` (same defaults);
  :meth:`LTX2VocoderConfig.from_dict` reads its ``config.json`` (unknown keys refused by name). Refused with a
  :class:`ValueError` naming the field: mismatched ``upsample_kernel_sizes`` / ``upsample_factors`` or
  ``resnet_kernel_sizes`` / ``resnet_dilations`` lengths, an ``act_fn`` outside ``leaky_relu / snake /
  snakebeta``, a ``final_act_fn`` outside ``tanh / clamp / null``; and, as :class:`NotImplementedError`,
  ``act_fn='leaky_relu'`` with ``antialias=true`` (diffusers builds that one with re-wrapped, nested anti-alias
  filters -- no published checkpoint uses it). LTX-2.3's ``LTX2VocoderWithBWE`` lives in :mod:`.vocoder_bwe`;
  :func:`load_ltx2_vocoder` picks it by the folder's ``_class_name``.
- :class:`LTX2Vocoder` has the same ``state_dict()`` keys and shapes as diffusers' class (the anti-alias filters
  are persistent buffers there and here, so they load from the checkpoint); it builds on the meta device.
- ``forward(mel)``: ``(B, C, T, M)`` mel (``time_last=False``, the audio VAE's output layout) or ``(B, C, M, T)``
  (``time_last=True``) with ``C * M == in_channels`` -> waveform ``(B, out_channels, samples)``, ``samples = T *
  prod(upsample_factors)`` when every ``kernel - factor`` is even (the published configs), in ``[-1, 1]`` when
  ``final_act_fn`` is ``tanh`` / ``clamp``, at ``output_sampling_rate`` Hz.
- :func:`mel_to_waveform` is the pipeline's audio tail: denormalize packed audio tokens, unpack, audio-VAE decode,
  vocoder (``LTX2Pipeline.__call__`` after the denoising loop; either vocoder class).
- Precision: every op runs in the dtype of the input and parameters, as diffusers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastvideo.engine.models.ltx2.audio_vae import LTX2AudioVAE, denormalize_audio_latents, unpack_audio_latents
from fastvideo.engine.loader import read_json
from fastvideo.engine.models.ltx2.components import config_from_dict, load_component

if TYPE_CHECKING:
    from fastvideo.engine.models.ltx2.vocoder_bwe import LTX2VocoderBWE

__all__ = ["LTX2Vocoder", "LTX2VocoderConfig", "kaiser_sinc_filter", "load_ltx2_vocoder", "mel_to_waveform"]

_ACT_FNS = ("leaky_relu", "snake", "snakebeta")
_FINAL_ACTS = ("tanh", "clamp", None)


@dataclass
class LTX2VocoderConfig:
    """The fields of a diffusers ``LTX2Vocoder`` ``config.json`` (defaults: diffusers')."""

    in_channels: int = 128
    hidden_channels: int = 1024
    out_channels: int = 2
    upsample_kernel_sizes: tuple[int, ...] = (16, 15, 8, 4, 4)
    upsample_factors: tuple[int, ...] = (6, 5, 2, 2, 2)
    resnet_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resnet_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    act_fn: str = "leaky_relu"
    leaky_relu_negative_slope: float = 0.1
    antialias: bool = False
    antialias_ratio: int = 2
    antialias_kernel_size: int = 12
    final_act_fn: str | None = "tanh"
    final_bias: bool = True
    output_sampling_rate: int = 24000

    def __post_init__(self) -> None:
        self.upsample_kernel_sizes = tuple(int(k) for k in self.upsample_kernel_sizes)
        self.upsample_factors = tuple(int(f) for f in self.upsample_factors)
        self.resnet_kernel_sizes = tuple(int(k) for k in self.resnet_kernel_sizes)
        self.resnet_dilations = tuple(tuple(int(d) for d in ds) for ds in self.resnet_dilations)
        if len(self.upsample_kernel_sizes) != len(self.upsample_factors):
            raise ValueError(f"upsample_kernel_sizes ({len(self.upsample_kernel_sizes)}) and upsample_factors "
                             f"({len(self.upsample_factors)}) must have the same length")
        if len(self.resnet_kernel_sizes) != len(self.resnet_dilations):
            raise ValueError(f"resnet_kernel_sizes ({len(self.resnet_kernel_sizes)}) and resnet_dilations "
                             f"({len(self.resnet_dilations)}) must have the same length")
        if self.act_fn not in _ACT_FNS:
            raise ValueError(f"act_fn must be one of {list(_ACT_FNS)}, got {self.act_fn!r}")
        if self.final_act_fn not in _FINAL_ACTS:
            raise ValueError(f"final_act_fn must be one of {list(_FINAL_ACTS)}, got {self.final_act_fn!r}")
        if self.act_fn == "leaky_relu" and self.antialias:
            raise NotImplementedError("act_fn='leaky_relu' with antialias=true is not supported (no published LTX-2 "
                                      "vocoder uses it); use antialias=false or a snake activation")
        if self.hidden_channels % 2 ** len(self.upsample_factors):
            raise ValueError(f"hidden_channels ({self.hidden_channels}) must be divisible by 2 ** "
                             f"len(upsample_factors) = {2 ** len(self.upsample_factors)} (each upsampler halves it)")
        for name in ("in_channels", "hidden_channels", "out_channels", "antialias_ratio", "antialias_kernel_size",
                     "output_sampling_rate"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not self.upsample_factors or min(self.upsample_factors) <= 0:
            raise ValueError(f"upsample_factors must be positive ints, got {list(self.upsample_factors)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LTX2VocoderConfig":
        """Build from a diffusers ``config.json`` dict (module contract)."""
        return config_from_dict(cls, data)

    @property
    def upsample_factor(self) -> int:
        """Waveform samples per mel frame (``prod(upsample_factors)``)."""
        return math.prod(self.upsample_factors)


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """A Kaiser-windowed sinc low-pass kernel ``(kernel_size,)``, summing to 1 (BigVGAN's design, as diffusers)."""
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    if kernel_size % 2 == 0:
        t = torch.arange(-half, half) + 0.5
    else:
        t = torch.arange(kernel_size) - half
    if cutoff == 0.0:
        return torch.zeros_like(t)
    t = 2 * cutoff * t
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(math.pi * t) / math.pi / t)
    kernel = 2 * cutoff * window * sinc
    return kernel / kernel.sum()


def hann_sinc_filter(ratio: int, rolloff: float = 0.99, lowpass_width: int = 6) -> tuple[torch.Tensor, int]:
    """The Hann-windowed sinc interpolation kernel of the LTX-2.3 resampler and its half width (in input samples)."""
    width = math.ceil(lowpass_width / rolloff)
    t = (torch.arange(2 * width * ratio + 1) / ratio - width) * rolloff
    window = torch.cos(t.clamp(-lowpass_width, lowpass_width) * math.pi / lowpass_width / 2) ** 2
    return torch.sinc(t) * window * rolloff / ratio, width


class _UpSample1d(nn.Module):
    """Zero-stuffing upsampling by ``ratio`` through a low-pass kernel (replicate-padded ends): the Kaiser-sinc
    anti-alias kernel (a persistent buffer, as diffusers), or the Hann-sinc resampler kernel (``window="hann"``, a
    non-persistent buffer recomputed by :meth:`reset_non_persistent_buffers`)."""

    filter: torch.Tensor

    def __init__(self, ratio: int, kernel_size: int = 12, window: str = "kaiser") -> None:
        super().__init__()
        self.ratio, self.window = ratio, window
        if window == "hann":
            kernel, self.pad = hann_sinc_filter(ratio)
            self.pad_left = 2 * self.pad * ratio
            self.pad_right = kernel.numel() - ratio
        else:
            kernel = kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size)
            self.pad = kernel_size // ratio - 1
            self.pad_left = self.pad * ratio + (kernel_size - ratio) // 2
            self.pad_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kernel.view(1, 1, -1), persistent=window != "hann")

    def reset_non_persistent_buffers(self, device: torch.device) -> None:
        """Recompute the Hann kernel after a meta-device build (the Kaiser kernel loads from the checkpoint)."""
        if self.window == "hann":
            self.filter = hann_sinc_filter(self.ratio)[0].view(1, 1, -1).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        kernel = self.filter.to(dtype=x.dtype, device=x.device).expand(channels, -1, -1)
        x = self.ratio * F.conv_transpose1d(x, kernel, stride=self.ratio, groups=channels)
        return x[..., self.pad_left:-self.pad_right]


class _DownSample1d(nn.Module):
    """Low-pass filtering then decimation by ``ratio`` (replicate-padded ends)."""

    filter: torch.Tensor

    def __init__(self, ratio: int, kernel_size: int) -> None:
        super().__init__()
        self.ratio = ratio
        self.pad_left = kernel_size // 2 + kernel_size % 2 - 1
        self.pad_right = kernel_size // 2
        kernel = kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size)
        self.register_buffer("filter", kernel.view(1, 1, kernel_size), persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(channels, -1, -1), stride=self.ratio, groups=channels)


class _SnakeBeta(nn.Module):
    """``x + sin(alpha x)^2 / (beta + eps)`` per channel, ``alpha`` / ``beta`` stored as logs (``beta = alpha``
    when ``use_beta`` is false: plain Snake)."""

    def __init__(self, channels: int, use_beta: bool = True, eps: float = 1e-9) -> None:
        super().__init__()
        self.eps = eps
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels)) if use_beta else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.exp(self.alpha.view(1, -1, 1))
        amplitude = torch.exp(self.beta.view(1, -1, 1)) if self.beta is not None else alpha
        return x + (1.0 / (amplitude + self.eps)) * torch.sin(x * alpha).pow(2)


class _AntiAliasAct(nn.Module):
    """Upsample, activate, downsample (alias-free activation)."""

    def __init__(self, act: nn.Module, ratio: int, kernel_size: int) -> None:
        super().__init__()
        self.upsample = _UpSample1d(ratio, kernel_size)
        self.act = act
        self.downsample = _DownSample1d(ratio, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


def _activation(cfg: LTX2VocoderConfig, channels: int) -> nn.Module:
    act: nn.Module
    if cfg.act_fn == "leaky_relu":
        act = nn.LeakyReLU(negative_slope=cfg.leaky_relu_negative_slope)
    else:
        act = _SnakeBeta(channels, use_beta=cfg.act_fn == "snakebeta")
    return _AntiAliasAct(act, cfg.antialias_ratio, cfg.antialias_kernel_size) if cfg.antialias else act


class _ResBlock(nn.Module):
    """HiFi-GAN residual block: per dilation, act -> dilated conv -> act -> conv, added to the input."""

    def __init__(self, cfg: LTX2VocoderConfig, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding="same")
                                    for d in dilations)
        self.acts1 = nn.ModuleList(_activation(cfg, channels) for _ in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, dilation=1, padding="same")
                                    for _ in dilations)
        self.acts2 = nn.ModuleList(_activation(cfg, channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for act1, conv1, act2, conv2 in zip(self.acts1, self.convs1, self.acts2, self.convs2):
            x = x + conv2(act2(conv1(act1(x))))
        return x


class LTX2Vocoder(nn.Module):
    """HiFi-GAN style mel -> waveform generator (module contract)."""

    def __init__(self, config: LTX2VocoderConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.conv_in = nn.Conv1d(cfg.in_channels, cfg.hidden_channels, kernel_size=7, padding=3)
        self.upsamplers = nn.ModuleList()
        self.resnets = nn.ModuleList()
        width = cfg.hidden_channels
        for stride, kernel_size in zip(cfg.upsample_factors, cfg.upsample_kernel_sizes):
            self.upsamplers.append(nn.ConvTranspose1d(width, width // 2, kernel_size, stride=stride,
                                                      padding=(kernel_size - stride) // 2))
            width //= 2
            for res_kernel, dilations in zip(cfg.resnet_kernel_sizes, cfg.resnet_dilations):
                self.resnets.append(_ResBlock(cfg, width, res_kernel, dilations))
        self.act_out: nn.Module
        if cfg.act_fn == "leaky_relu":
            self.act_out = nn.LeakyReLU()  # default slope 0.01, not leaky_relu_negative_slope (as the original)
        else:  # snake family: always SnakeBeta with beta, always anti-aliased
            self.act_out = _AntiAliasAct(_SnakeBeta(width, use_beta=True), cfg.antialias_ratio,
                                         cfg.antialias_kernel_size)
        self.conv_out = nn.Conv1d(width, cfg.out_channels, 7, padding=3, bias=cfg.final_bias)

    def forward(self, mel: torch.Tensor, time_last: bool = False) -> torch.Tensor:
        """Mel spectrogram -> waveform ``(B, out_channels, samples)`` (module contract)."""
        cfg = self.config
        if mel.ndim != 4 or mel.shape[1] * mel.shape[2 if time_last else 3] != cfg.in_channels:
            raise ValueError(f"mel must be (batch, channels, frames, mel_bins) with channels * mel_bins == "
                             f"{cfg.in_channels} (time_last: (batch, channels, mel_bins, frames)), "
                             f"got {tuple(mel.shape)}")
        x = mel if time_last else mel.transpose(2, 3)
        x = self.conv_in(x.flatten(1, 2))
        per_stage = len(cfg.resnet_kernel_sizes)
        for index, upsampler in enumerate(self.upsamplers):
            if cfg.act_fn == "leaky_relu":
                x = F.leaky_relu(x, negative_slope=cfg.leaky_relu_negative_slope)
            x = upsampler(x)
            blocks = self.resnets[index * per_stage:(index + 1) * per_stage]
            x = torch.mean(torch.stack([block(x) for block in blocks], dim=0), dim=0)
        x = self.conv_out(self.act_out(x))
        if cfg.final_act_fn == "tanh":
            return torch.tanh(x)
        if cfg.final_act_fn == "clamp":
            return torch.clamp(x, -1, 1)
        return x


@torch.no_grad()
def mel_to_waveform(audio_vae: LTX2AudioVAE, vocoder: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The pipeline's audio tail: the DiT's normalized, packed audio tokens ``(B, L, C * M)`` -> waveform
    ``(B, out_channels, samples)`` (denormalize, unpack, decode to mel, vocode)."""
    raw = denormalize_audio_latents(tokens, audio_vae.latents_mean, audio_vae.latents_std)
    latents = unpack_audio_latents(raw, audio_vae.config.latent_mel_bins)
    param = next(audio_vae.parameters())
    mel = audio_vae.decode(latents.to(param.dtype))
    return vocoder(mel)


def load_ltx2_vocoder(folder: str | Path, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                      variant: str | None = None) -> "LTX2Vocoder | LTX2VocoderBWE":
    """Build and load a diffusers ``vocoder/`` folder on the meta device: ``LTX2Vocoder`` (LTX-2.0) or, by its
    ``_class_name``, ``LTX2VocoderWithBWE`` (LTX-2.3, :class:`~.vocoder_bwe.LTX2VocoderBWE`)."""
    from fastvideo.engine.models.ltx2.vocoder_bwe import LTX2VocoderBWE, LTX2VocoderBWEConfig

    folder = Path(folder).expanduser()
    if read_json(folder / "config.json").get("_class_name") == "LTX2VocoderWithBWE":
        bwe, _ = load_component(folder, class_name="LTX2VocoderWithBWE", parse=LTX2VocoderBWEConfig.from_dict,
                                build=LTX2VocoderBWE, dtype=dtype, device=device, variant=variant)
        return bwe
    model, _ = load_component(folder, class_name="LTX2Vocoder", parse=LTX2VocoderConfig.from_dict,
                              build=LTX2Vocoder, dtype=dtype, device=device, variant=variant)
    return model
