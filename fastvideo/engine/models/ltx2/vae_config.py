"""The LTX-2 video VAE config: a typed mirror of diffusers' ``AutoencoderKLLTX2Video`` ``config.json``.

Contract
--------
- :class:`LTX2VideoVAEConfig` has one field per argument of diffusers 0.42's ``AutoencoderKLLTX2Video.__init__``,
  with diffusers' defaults. :meth:`LTX2VideoVAEConfig.from_dict` reads a ``config.json`` dict: ``_``-prefixed keys
  (``_class_name``, ``_diffusers_version``, ...) are ignored; an unknown key raises :class:`ValueError` naming it.
- Scalar shorthands are expanded as diffusers does (a bool ``spatio_temporal_scaling`` /
  ``decoder_spatio_temporal_scaling`` / ``upsample_residual`` / ``decoder_inject_noise`` becomes one entry per
  block); JSON lists become tuples.
- Checked, each problem naming the field: per-block tuples have one entry per block; block and up/down-sample
  types are known; channel counts chain the way the blocks are built (an encoder block that does not downsample
  keeps its channels, a depth-to-space upsampler divides them evenly); padding modes are ``torch.nn.Conv3d``'s.
- ``spatial_compression_ratio`` / ``temporal_compression_ratio`` are what the pipelines size latents by. Omitted, they
  take diffusers' formula (``patch_size * 2**sum(spatio_temporal_scaling)``, which over-counts LTX-2's spatial-only
  and temporal-only blocks); either way they must equal what the encoder and the decoder actually do
  (:meth:`encoder_factors`, :meth:`decoder_factors`), else :class:`ValueError` says which value to write.
- Not implemented, refused with :class:`NotImplementedError` naming the field: ``patch_size_t != 1`` (diffusers'
  encoder does not size its input conv for it), ``decoder_inject_noise`` (per-call random noise; no published LTX-2
  VAE uses it), and ``timestep_conditioning`` together with an up block that changes channels before it upsamples
  (diffusers hands that block the raw timestep and fails).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

__all__ = ["LTX2VideoVAEConfig", "DOWNSAMPLE_STRIDES", "PaddingMode", "UPSAMPLE_STRIDES"]

#: ``torch.nn.Conv3d`` spatial padding modes.
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]

#: downsample_type -> (time, height, width) stride of the block's downsampler.
DOWNSAMPLE_STRIDES: dict[str, tuple[int, int, int]] = {
    "conv": (2, 2, 2), "spatial": (1, 2, 2), "temporal": (2, 1, 1), "spatiotemporal": (2, 2, 2)}
#: upsample_type -> (time, height, width) stride of the block's depth-to-space upsampler.
UPSAMPLE_STRIDES: dict[str, tuple[int, int, int]] = {
    "spatial": (1, 2, 2), "temporal": (2, 1, 1), "spatiotemporal": (2, 2, 2)}
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_DOWN_BLOCK = "LTX2VideoDownBlock3D"


@dataclass
class LTX2VideoVAEConfig:
    """The fields of a diffusers ``AutoencoderKLLTX2Video`` ``config.json`` (defaults: diffusers').

    The four per-block flag tuples also take one bool (diffusers' shorthand), expanded in ``__post_init__``.
    """

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 128
    block_out_channels: tuple[int, ...] = (256, 512, 1024, 2048)
    down_block_types: tuple[str, ...] = (_DOWN_BLOCK,) * 4
    decoder_block_out_channels: tuple[int, ...] = (256, 512, 1024)
    layers_per_block: tuple[int, ...] = (4, 6, 6, 2, 2)
    decoder_layers_per_block: tuple[int, ...] = (5, 5, 5, 5)
    spatio_temporal_scaling: tuple[bool, ...] = (True, True, True, True)
    decoder_spatio_temporal_scaling: tuple[bool, ...] = (True, True, True)
    decoder_inject_noise: tuple[bool, ...] = (False, False, False, False)
    downsample_type: tuple[str, ...] = ("spatial", "temporal", "spatiotemporal", "spatiotemporal")
    upsample_type: tuple[str, ...] = ("spatiotemporal", "spatiotemporal", "spatiotemporal")
    upsample_residual: tuple[bool, ...] = (True, True, True)
    upsample_factor: tuple[int, ...] = (2, 2, 2)
    timestep_conditioning: bool = False
    patch_size: int = 4
    patch_size_t: int = 1
    resnet_norm_eps: float = 1e-6
    scaling_factor: float = 1.0
    encoder_causal: bool = True
    decoder_causal: bool = True
    encoder_spatial_padding_mode: PaddingMode = "zeros"
    decoder_spatial_padding_mode: PaddingMode = "reflect"
    spatial_compression_ratio: int | None = None
    temporal_compression_ratio: int | None = None

    # ------------------------------------------------------------------ parsing and checks

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LTX2VideoVAEConfig":
        """Build from a diffusers ``config.json`` dict (module contract)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key.startswith("_"):
                continue
            if key not in known:
                raise ValueError(f"LTX2VideoVAEConfig: unknown config key {key!r} (diffusers 0.42's "
                                 f"AutoencoderKLLTX2Video has no such argument); known keys: {sorted(known)}")
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __post_init__(self) -> None:
        encoder_blocks = len(self.layers_per_block) - 1
        decoder_blocks = len(self.decoder_layers_per_block) - 1
        if encoder_blocks < 1 or decoder_blocks < 1:
            raise ValueError("LTX2VideoVAEConfig: layers_per_block and decoder_layers_per_block need one entry per "
                             "block plus one for the mid block (at least 2 entries)")
        self.spatio_temporal_scaling = _per_block(self.spatio_temporal_scaling, encoder_blocks)
        self.decoder_spatio_temporal_scaling = _per_block(self.decoder_spatio_temporal_scaling, decoder_blocks)
        self.upsample_residual = _per_block(self.upsample_residual, decoder_blocks)
        self.decoder_inject_noise = _per_block(self.decoder_inject_noise, decoder_blocks + 1)
        for name in ("block_out_channels", "down_block_types", "spatio_temporal_scaling", "downsample_type"):
            self._check_length(name, encoder_blocks, "len(layers_per_block) - 1")
        for name in ("decoder_block_out_channels", "decoder_spatio_temporal_scaling", "upsample_type",
                     "upsample_residual", "upsample_factor"):
            self._check_length(name, decoder_blocks, "len(decoder_layers_per_block) - 1")
        self._check_length("decoder_inject_noise", decoder_blocks + 1, "len(decoder_layers_per_block)")
        self._check_values()
        self._check_channels()
        self._check_ratios()

    def _check_length(self, name: str, expected: int, what: str) -> None:
        value = getattr(self, name)
        if len(value) != expected:
            raise ValueError(f"LTX2VideoVAEConfig: {name} has {len(value)} entries, expected {what} = {expected}")

    def _check_values(self) -> None:
        for name in ("in_channels", "out_channels", "latent_channels", "patch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"LTX2VideoVAEConfig: {name} must be a positive integer, got {getattr(self, name)}")
        for name in ("block_out_channels", "decoder_block_out_channels", "upsample_factor"):
            if any(int(v) < 1 for v in getattr(self, name)):
                raise ValueError(f"LTX2VideoVAEConfig: {name} must hold positive integers, got {getattr(self, name)}")
        if self.patch_size_t != 1:
            raise NotImplementedError(f"LTX2VideoVAEConfig: patch_size_t={self.patch_size_t} is not supported "
                                      "(diffusers' encoder input conv ignores it); only patch_size_t=1")
        if any(self.decoder_inject_noise):
            raise NotImplementedError("LTX2VideoVAEConfig: decoder_inject_noise=True (random noise added inside the "
                                      "decoder) is not implemented; only False (every published LTX-2 VAE)")
        for kind in self.down_block_types:
            if kind != _DOWN_BLOCK:
                raise ValueError(f"LTX2VideoVAEConfig: down_block_types entry {kind!r} is unknown; "
                                 f"only {_DOWN_BLOCK!r}")
        for name, allowed in (("downsample_type", DOWNSAMPLE_STRIDES), ("upsample_type", UPSAMPLE_STRIDES)):
            for kind in getattr(self, name):
                if kind not in allowed:
                    raise ValueError(f"LTX2VideoVAEConfig: {name} entry {kind!r} is unknown; one of {sorted(allowed)}")
        for name in ("encoder_spatial_padding_mode", "decoder_spatial_padding_mode"):
            if getattr(self, name) not in _PADDING_MODES:
                raise ValueError(f"LTX2VideoVAEConfig: {name}={getattr(self, name)!r}; one of {list(_PADDING_MODES)}")

    def _check_channels(self) -> None:
        channels = self.latent_channels  # the encoder's conv_in width (diffusers starts from latent_channels)
        for i, out in enumerate(self.block_out_channels):
            if not self.spatio_temporal_scaling[i] and out != channels:
                raise ValueError(f"LTX2VideoVAEConfig: encoder block {i} does not downsample (spatio_temporal_scaling) "
                                 f"so it keeps {channels} channels, but block_out_channels[{i}] = {out}")
            if self.spatio_temporal_scaling[i] and self.downsample_type[i] != "conv":
                volume = math.prod(DOWNSAMPLE_STRIDES[self.downsample_type[i]])
                if out % volume or (channels * volume) % out:
                    raise ValueError(f"LTX2VideoVAEConfig: block_out_channels[{i}] = {out} does not fit a "
                                     f"{self.downsample_type[i]} space-to-depth downsampler from {channels} channels")
            if self.spatio_temporal_scaling[i] and self.downsample_type[i] == "conv" and out != channels:
                raise ValueError(f"LTX2VideoVAEConfig: encoder block {i} downsamples with a strided conv, which keeps "
                                 f"{channels} channels, but block_out_channels[{i}] = {out}")
            channels = out
        channels = self.decoder_block_out_channels[-1]  # the decoder's conv_in / mid block width
        for i, (in_ch, out_ch, factor) in enumerate(self.decoder_blocks()):
            if in_ch != out_ch:  # the block opens with a channel-changing resnet (diffusers' conv_in)
                if self.timestep_conditioning:
                    raise NotImplementedError(f"LTX2VideoVAEConfig: timestep_conditioning with decoder block {i} "
                                              f"changing channels ({in_ch} -> {out_ch}) is not supported (diffusers "
                                              "fails on it)")
                if channels != in_ch:
                    raise ValueError(f"LTX2VideoVAEConfig: decoder block {i} expects {in_ch} input channels, gets "
                                     f"{channels} (decoder_block_out_channels / upsample_factor do not chain)")
                channels = out_ch
            wanted = out_ch * factor if self.decoder_spatio_temporal_scaling[i] else out_ch
            if channels != wanted:
                raise ValueError(f"LTX2VideoVAEConfig: decoder block {i} expects {wanted} channels, gets {channels} "
                                 "(decoder_block_out_channels / upsample_factor do not chain)")
            channels = out_ch

    def decoder_blocks(self) -> list[tuple[int, int, int]]:
        """``(nominal input, output channels, upsample_factor)`` per up block, in decoding order (as diffusers)."""
        channels = tuple(reversed(self.decoder_block_out_channels))
        factors = tuple(reversed(self.upsample_factor))
        out = channels[0]
        blocks = []
        for width, factor in zip(channels, factors):
            in_ch, out = out // factor, width // factor
            blocks.append((in_ch, out, factor))
        return blocks

    def _check_ratios(self) -> None:
        for name, stated, actual in (
                ("spatial_compression_ratio", self.spatial_ratio, self.encoder_factors()[1]),
                ("temporal_compression_ratio", self.temporal_ratio, self.encoder_factors()[0])):
            decoded = self.decoder_factors()[0 if name.startswith("temporal") else 1]
            if actual != decoded:
                raise ValueError(f"LTX2VideoVAEConfig: the encoder compresses by {actual} but the decoder expands by "
                                 f"{decoded} ({name}); encoder and decoder blocks do not mirror each other")
            if stated != actual:
                given = "" if getattr(self, name) is not None else " (diffusers' default formula, as it is omitted)"
                raise ValueError(f"LTX2VideoVAEConfig: {name} = {stated}{given}, but the VAE's blocks compress by "
                                 f"{actual}; write {name}: {actual} in config.json")

    # ------------------------------------------------------------------ derived sizes

    def encoder_factors(self) -> tuple[int, int]:
        """``(temporal, spatial)`` compression the encoder's blocks actually perform (patching included)."""
        t, s = self.patch_size_t, self.patch_size
        for scale, kind in zip(self.spatio_temporal_scaling, self.downsample_type):
            if scale:
                st, sh, _ = DOWNSAMPLE_STRIDES[kind]
                t, s = t * st, s * sh
        return t, s

    def decoder_factors(self) -> tuple[int, int]:
        """``(temporal, spatial)`` expansion the decoder's blocks actually perform (unpatching included)."""
        t, s = self.patch_size_t, self.patch_size
        for scale, kind in zip(self.decoder_spatio_temporal_scaling, self.upsample_type):
            if scale:
                st, sh, _ = UPSAMPLE_STRIDES[kind]
                t, s = t * st, s * sh
        return t, s

    @property
    def spatial_ratio(self) -> int:
        """Pixels per latent along H and W, as diffusers' ``spatial_compression_ratio`` attribute."""
        if self.spatial_compression_ratio is not None:
            return int(self.spatial_compression_ratio)
        return self.patch_size * 2 ** sum(self.spatio_temporal_scaling)

    @property
    def temporal_ratio(self) -> int:
        """Video frames per latent frame after the first, as diffusers' ``temporal_compression_ratio``."""
        if self.temporal_compression_ratio is not None:
            return int(self.temporal_compression_ratio)
        return self.patch_size_t * 2 ** sum(self.spatio_temporal_scaling)

    def latent_num_frames(self, num_frames: int) -> int:
        """Latent frames of a ``temporal_ratio * k + 1``-frame video (ValueError otherwise)."""
        if num_frames < 1 or (num_frames - 1) % self.temporal_ratio:
            raise ValueError(f"LTX-2 video VAE: num_frames must be {self.temporal_ratio}*k+1, got {num_frames}")
        return (num_frames - 1) // self.temporal_ratio + 1

    def video_num_frames(self, latent_frames: int) -> int:
        """Video frames decoded from ``latent_frames`` latent frames."""
        return self.temporal_ratio * (latent_frames - 1) + 1


def _per_block(value: Any, count: int) -> tuple[bool, ...]:
    """diffusers' shorthand: one bool stands for every block."""
    if isinstance(value, bool):
        return (value,) * count
    return tuple(bool(v) for v in value)
