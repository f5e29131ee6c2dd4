"""The LTX-2.3 vocoder with bandwidth extension, numerically matching diffusers 0.42's ``LTX2VocoderWithBWE``.

Contract
--------
- :class:`LTX2VocoderBWEConfig` has one field per argument of diffusers' ``LTX2VocoderWithBWE.__init__`` (same
  defaults; ``bwe_*`` fields configure the second generator); :meth:`LTX2VocoderBWEConfig.from_dict` reads its
  ``config.json`` (unknown keys refused by name). Each generator's fields are checked as
  :class:`~fastvideo.engine.models.ltx2.vocoder.LTX2VocoderConfig` checks them (errors name the ``bwe_`` field);
  ``output_sampling_rate`` must be a positive multiple of ``input_sampling_rate``.
- :class:`LTX2VocoderBWE` has the same ``state_dict()`` keys as diffusers' class: ``vocoder.*`` and
  ``bwe_generator.*`` (two :class:`LTX2Vocoder`), ``mel_stft.stft_fn.forward_basis`` / ``inverse_basis`` and
  ``mel_stft.mel_basis`` (the STFT and mel bases come from the checkpoint, as diffusers requires); the Hann
  resampler kernel is a non-persistent buffer, recomputed after a meta-device build.
- ``forward(mel)`` ``(B, C, T, M)``: stage-1 vocoder at ``input_sampling_rate``; its waveform is right-padded to a
  whole number of hops, turned into a causal log-mel spectrogram (left pad ``window - hop``, magnitude through the
  mel basis, ``log(max(mel, 1e-5))``), which the BWE generator turns into a residual added to the waveform
  upsampled (Hann sinc) to ``output_sampling_rate``; clamped to ``[-1, 1]`` and cut to ``samples * out / in``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastvideo.engine.models.ltx2.components import config_from_dict
from fastvideo.engine.models.ltx2.vocoder import LTX2Vocoder, LTX2VocoderConfig, _UpSample1d

__all__ = ["LTX2VocoderBWE", "LTX2VocoderBWEConfig"]

_GENERATOR_FIELDS = ("in_channels", "hidden_channels", "out_channels", "upsample_kernel_sizes", "upsample_factors",
                     "resnet_kernel_sizes", "resnet_dilations", "act_fn", "leaky_relu_negative_slope", "antialias",
                     "antialias_ratio", "antialias_kernel_size", "final_act_fn", "final_bias")


@dataclass
class LTX2VocoderBWEConfig:
    """The fields of a diffusers ``LTX2VocoderWithBWE`` ``config.json`` (defaults: diffusers', i.e. LTX-2.3)."""

    in_channels: int = 128
    hidden_channels: int = 1536
    out_channels: int = 2
    upsample_kernel_sizes: tuple[int, ...] = (11, 4, 4, 4, 4, 4)
    upsample_factors: tuple[int, ...] = (5, 2, 2, 2, 2, 2)
    resnet_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resnet_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    act_fn: str = "snakebeta"
    leaky_relu_negative_slope: float = 0.1
    antialias: bool = True
    antialias_ratio: int = 2
    antialias_kernel_size: int = 12
    final_act_fn: str | None = None
    final_bias: bool = False
    bwe_in_channels: int = 128
    bwe_hidden_channels: int = 512
    bwe_out_channels: int = 2
    bwe_upsample_kernel_sizes: tuple[int, ...] = (12, 11, 4, 4, 4)
    bwe_upsample_factors: tuple[int, ...] = (6, 5, 2, 2, 2)
    bwe_resnet_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    bwe_resnet_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    bwe_act_fn: str = "snakebeta"
    bwe_leaky_relu_negative_slope: float = 0.1
    bwe_antialias: bool = True
    bwe_antialias_ratio: int = 2
    bwe_antialias_kernel_size: int = 12
    bwe_final_act_fn: str | None = None
    bwe_final_bias: bool = False
    filter_length: int = 512
    hop_length: int = 80
    window_length: int = 512
    num_mel_channels: int = 64
    input_sampling_rate: int = 16000
    output_sampling_rate: int = 48000

    def __post_init__(self) -> None:
        self.vocoder_config()
        try:
            self.bwe_config()
        except (ValueError, NotImplementedError) as exc:
            raise type(exc)(f"bwe_ generator: {exc} (fields prefixed bwe_)") from exc
        for name in ("filter_length", "hop_length", "window_length", "num_mel_channels", "input_sampling_rate",
                     "output_sampling_rate"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.output_sampling_rate % self.input_sampling_rate:
            raise ValueError(f"output_sampling_rate ({self.output_sampling_rate}) must be a multiple of "
                             f"input_sampling_rate ({self.input_sampling_rate})")

    def vocoder_config(self) -> LTX2VocoderConfig:
        """The stage-1 generator's config (at ``input_sampling_rate``)."""
        values = {name: getattr(self, name) for name in _GENERATOR_FIELDS}
        return LTX2VocoderConfig(**values, output_sampling_rate=self.input_sampling_rate)

    def bwe_config(self) -> LTX2VocoderConfig:
        """The bandwidth-extension generator's config (at ``output_sampling_rate``)."""
        values = {name: getattr(self, f"bwe_{name}") for name in _GENERATOR_FIELDS}
        return LTX2VocoderConfig(**values, output_sampling_rate=self.output_sampling_rate)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LTX2VocoderBWEConfig":
        """Build from a diffusers ``config.json`` dict (module contract)."""
        return config_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _CausalSTFT(nn.Module):
    """Magnitude of a causal STFT through the checkpoint's windowed DFT basis (``(2 * freqs, 1, filter_length)``)."""

    forward_basis: torch.Tensor
    inverse_basis: torch.Tensor

    def __init__(self, filter_length: int, hop_length: int, window_length: int) -> None:
        super().__init__()
        self.hop_length, self.window_length = hop_length, window_length
        freqs = filter_length // 2 + 1
        self.register_buffer("forward_basis", torch.zeros(freqs * 2, 1, filter_length), persistent=True)
        self.register_buffer("inverse_basis", torch.zeros(freqs * 2, 1, filter_length), persistent=True)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = F.pad(waveform.unsqueeze(1), (max(0, self.window_length - self.hop_length), 0))
        spec = F.conv1d(x, self.forward_basis, stride=self.hop_length)
        freqs = spec.shape[1] // 2
        real, imag = spec[:, :freqs], spec[:, freqs:]
        return torch.sqrt(real ** 2 + imag ** 2)


class _MelSTFT(nn.Module):
    """Causal log-mel spectrogram ``(N, mels, frames)`` of waveforms ``(N, samples)``."""

    mel_basis: torch.Tensor

    def __init__(self, cfg: LTX2VocoderBWEConfig) -> None:
        super().__init__()
        self.stft_fn = _CausalSTFT(cfg.filter_length, cfg.hop_length, cfg.window_length)
        self.register_buffer("mel_basis", torch.zeros(cfg.num_mel_channels, cfg.filter_length // 2 + 1),
                             persistent=True)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        magnitude = self.stft_fn(waveform)
        mel = torch.matmul(self.mel_basis.to(magnitude.dtype), magnitude)
        return torch.log(torch.clamp(mel, min=1e-5))


class LTX2VocoderBWE(nn.Module):
    """Stage-1 vocoder + bandwidth extension to ``output_sampling_rate`` (module contract)."""

    def __init__(self, config: LTX2VocoderBWEConfig) -> None:
        super().__init__()
        self.config = config
        self.vocoder = LTX2Vocoder(config.vocoder_config())
        self.bwe_generator = LTX2Vocoder(config.bwe_config())
        self.mel_stft = _MelSTFT(config)
        self.resampler = _UpSample1d(config.output_sampling_rate // config.input_sampling_rate, window="hann")

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel ``(B, C, T, M)`` -> waveform ``(B, out_channels, samples)`` at ``output_sampling_rate``."""
        cfg = self.config
        x = self.vocoder(mel)
        channels, samples = x.shape[1], x.shape[2]
        remainder = samples % cfg.hop_length
        if remainder:
            x = F.pad(x, (0, cfg.hop_length - remainder))
        log_mel = self.mel_stft(x.flatten(0, 1)).unflatten(0, (-1, channels))  # (B, C, mels, frames)
        residual = self.bwe_generator(log_mel.transpose(2, 3))
        waveform = torch.clamp(residual + self.resampler(x), -1, 1)
        return waveform[..., :samples * cfg.output_sampling_rate // cfg.input_sampling_rate]
