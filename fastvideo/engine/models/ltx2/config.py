"""The LTX-2 audio+video DiT config: a typed mirror of diffusers' ``LTX2VideoTransformer3DModel`` ``config.json``.

Contract
--------
- :class:`LTX2DiTConfig` has one field per argument of diffusers 0.42's ``LTX2VideoTransformer3DModel.__init__``,
  with diffusers' defaults. :meth:`LTX2DiTConfig.from_dict` reads a ``config.json`` dict: ``_``-prefixed keys
  (``_class_name``, ``_diffusers_version``, ...) are ignored, an unknown key raises :class:`ValueError` naming it.
- Values this engine does not implement raise :class:`NotImplementedError` naming the field and the value it
  supports (see :data:`UNSUPPORTED`): affine block norms (``norm_elementwise_affine``, which no published
  checkpoint uses) and any q/k norm or activation other than the published ones (diffusers refuses those too).
  Everything else is implemented: LTX-2.0 (``Lightricks/LTX-2``) and the later extensions diffusers carries:
  per-head gated attention (``gated_attn`` / ``audio_gated_attn``), text cross-attention modulation
  (``cross_attn_mod`` / ``audio_cross_attn_mod``, with or without ``use_prompt_adaln_single``), STG-capable
  attention (``perturbed_attn``), connector-projected prompts (``use_prompt_embeddings=False``), the keyframe
  position embedding, both RoPE layouts (``interleaved``, ``split``) and the bias switches.
- Shape fields are checked (positive, RoPE dims even); every problem names the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["LTX2DiTConfig", "UNSUPPORTED"]

#: field -> the only value this engine implements (other values raise NotImplementedError).
UNSUPPORTED: dict[str, Any] = {
    "norm_elementwise_affine": False,
    "qk_norm": "rms_norm_across_heads",
    "activation_fn": "gelu-approximate",
}
_ROPE_TYPES = ("interleaved", "split")


@dataclass
class LTX2DiTConfig:
    """The fields of a diffusers ``LTX2VideoTransformer3DModel`` ``config.json`` (defaults: diffusers')."""

    # video stream
    in_channels: int = 128
    out_channels: int | None = 128
    patch_size: int = 1
    patch_size_t: int = 1
    num_attention_heads: int = 32
    attention_head_dim: int = 128
    cross_attention_dim: int = 4096
    vae_scale_factors: tuple[int, int, int] = (8, 32, 32)
    pos_embed_max_pos: int = 20
    base_height: int = 2048
    base_width: int = 2048
    gated_attn: bool = False
    cross_attn_mod: bool = False
    # audio stream
    audio_in_channels: int = 128
    audio_out_channels: int | None = 128
    audio_patch_size: int = 1
    audio_patch_size_t: int = 1
    audio_num_attention_heads: int = 32
    audio_attention_head_dim: int = 64
    audio_cross_attention_dim: int = 2048
    audio_scale_factor: int = 4
    audio_pos_embed_max_pos: int = 20
    audio_sampling_rate: int = 16000
    audio_hop_length: int = 160
    audio_gated_attn: bool = False
    audio_cross_attn_mod: bool = False
    # shared
    num_layers: int = 48
    activation_fn: str = "gelu-approximate"
    qk_norm: str = "rms_norm_across_heads"
    norm_elementwise_affine: bool = False
    norm_eps: float = 1e-6
    caption_channels: int = 3840
    attention_bias: bool = True
    attention_out_bias: bool = True
    rope_theta: float = 10000.0
    rope_double_precision: bool = True
    causal_offset: int = 1
    timestep_scale_multiplier: int = 1000
    cross_attn_timestep_scale_multiplier: int = 1000
    rope_type: str = "interleaved"
    use_prompt_embeddings: bool = True
    perturbed_attn: bool = False
    ff_bias: bool = True
    audio_ff_bias: bool = True
    use_prompt_adaln_single: bool = True
    use_keyframes_abs_pos_embedding: bool = False

    def __post_init__(self) -> None:
        factors = tuple(int(f) for f in self.vae_scale_factors)
        if len(factors) != 3 or min(factors) <= 0:
            raise ValueError(f"vae_scale_factors must be three positive ints (t, h, w), got {self.vae_scale_factors!r}")
        self.vae_scale_factors = factors  # type: ignore[assignment]
        if not self.out_channels:  # diffusers: ``out_channels or in_channels``
            self.out_channels = self.in_channels
        if not self.audio_out_channels:
            self.audio_out_channels = self.audio_in_channels
        for name in ("in_channels", "patch_size", "patch_size_t", "num_attention_heads", "attention_head_dim",
                     "cross_attention_dim", "pos_embed_max_pos", "base_height", "base_width", "audio_in_channels",
                     "audio_patch_size", "audio_patch_size_t", "audio_num_attention_heads",
                     "audio_attention_head_dim", "audio_cross_attention_dim", "audio_scale_factor",
                     "audio_pos_embed_max_pos", "audio_sampling_rate", "audio_hop_length", "caption_channels",
                     "timestep_scale_multiplier"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {self.num_layers!r}")
        if self.rope_type not in _ROPE_TYPES:
            raise ValueError(f"rope_type must be one of {list(_ROPE_TYPES)}, got {self.rope_type!r}")
        for name, supported in UNSUPPORTED.items():
            if getattr(self, name) != supported:
                raise NotImplementedError(
                    f"{name}={getattr(self, name)!r} is not supported by this engine's LTX-2 DiT (it implements "
                    f"{name}={supported!r}, as every published LTX-2 checkpoint uses)")
        if self.audio_cross_attention_dim != self.audio_inner_dim:
            # a2v / v2a attention runs at the audio width while its RoPE is built at audio_cross_attention_dim
            raise ValueError(f"audio_cross_attention_dim ({self.audio_cross_attention_dim}) must equal "
                             f"audio_num_attention_heads * audio_attention_head_dim ({self.audio_inner_dim})")
        for name, width in (("num_attention_heads * attention_head_dim", self.inner_dim),
                            ("audio_num_attention_heads * audio_attention_head_dim", self.audio_inner_dim)):
            if width % 2:
                raise ValueError(f"{name} = {width} must be even for RoPE")

    @property
    def inner_dim(self) -> int:
        """Video stream width: ``num_attention_heads * attention_head_dim``."""
        return self.num_attention_heads * self.attention_head_dim

    @property
    def audio_inner_dim(self) -> int:
        """Audio stream width: ``audio_num_attention_heads * audio_attention_head_dim``."""
        return self.audio_num_attention_heads * self.audio_attention_head_dim

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LTX2DiTConfig":
        """Build from a diffusers ``config.json`` dict; ``_``-prefixed keys are ignored, unknown keys raise
        :class:`ValueError` naming them, unsupported values :class:`NotImplementedError` (module contract)."""
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in d.items() if not k.startswith("_")}
        unknown = sorted(k for k in fields if k not in known)
        if unknown:
            raise ValueError(f"unknown LTX2DiTConfig key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``vae_scale_factors`` as a list, like diffusers writes it)."""
        out = dataclasses.asdict(self)
        out["vae_scale_factors"] = list(self.vae_scale_factors)
        return out
