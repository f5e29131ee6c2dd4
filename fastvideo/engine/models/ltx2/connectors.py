"""The LTX-2 text connectors (Gemma-3 hidden states -> video and audio text embeddings), numerically matching
diffusers 0.42's ``LTX2TextConnectors``.

Contract
--------
- :class:`LTX2ConnectorsConfig` has one field per argument of diffusers' ``LTX2TextConnectors.__init__`` (same
  defaults); :meth:`LTX2ConnectorsConfig.from_dict` reads its ``config.json`` (unknown keys refused by name; a
  ``rope_type`` other than ``interleaved`` / ``split`` or non-positive sizes raise :class:`ValueError` naming
  the field). Both layouts are implemented: LTX-2.0 (one shared ``text_proj_in`` after a per-layer masked
  mean/range normalization) and LTX-2.3 (``per_modality_projections``: per-token RMS norm, one projection per
  stream).
- :class:`LTX2Connectors` has the same ``state_dict()`` keys and shapes as diffusers' class and no buffers, so it
  builds on the meta device. ``forward(hidden_states, attention_mask, padding_side="left", scale_factor=8)``:

  * ``hidden_states`` ``(B, L, caption_channels * text_proj_in_factor)`` (the packed Gemma-3 layers, see
    :mod:`.text_encoding`) or ``(B, L, caption_channels, text_proj_in_factor)``; ``attention_mask`` ``(B, L)``,
    1 for a real token, 0 for padding, with the padding on ``padding_side``.
  * returns ``(video_embeds, audio_embeds, mask)``: ``(B, L, video width)``, ``(B, L, audio width)`` and the
    ``(B, L)`` int64 mask the DiT's text cross-attention takes. With learnable registers (the published models)
    the valid tokens move to the front, the tail is filled with the registers and attention sees every token;
    without registers padding is masked inside the connectors (additive ``-finfo.max``). Either way the returned
    mask is diffusers' ``additive_mask < 1e-6``, which is all ones (kept as is: the DiT then attends to all ``L``).

- Precision: as diffusers: the normalization's statistics and everything else run in the input/parameter dtype;
  the 1D RoPE angles come from float64 exponents when ``rope_double_precision`` and the rotation in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastvideo.engine.models.ltx2.components import config_from_dict, load_component

__all__ = ["LTX2Connectors", "LTX2ConnectorsConfig", "load_ltx2_connectors", "masked_layer_norm"]

_ROPE_TYPES = ("interleaved", "split")


@dataclass
class LTX2ConnectorsConfig:
    """The fields of a diffusers ``LTX2TextConnectors`` ``config.json`` (defaults: diffusers', i.e. Gemma-3-12B)."""

    caption_channels: int = 3840
    text_proj_in_factor: int = 49
    video_connector_num_attention_heads: int = 30
    video_connector_attention_head_dim: int = 128
    video_connector_num_layers: int = 2
    video_connector_num_learnable_registers: int | None = 128
    video_gated_attn: bool = False
    audio_connector_num_attention_heads: int = 30
    audio_connector_attention_head_dim: int = 128
    audio_connector_num_layers: int = 2
    audio_connector_num_learnable_registers: int | None = 128
    audio_gated_attn: bool = False
    connector_rope_base_seq_len: int = 4096
    rope_theta: float = 10000.0
    rope_double_precision: bool = True
    causal_temporal_positioning: bool = False
    rope_type: str = "interleaved"
    per_modality_projections: bool = False
    video_hidden_dim: int = 4096
    audio_hidden_dim: int = 2048
    proj_bias: bool = False

    def __post_init__(self) -> None:
        if self.rope_type not in _ROPE_TYPES:
            raise ValueError(f"rope_type must be one of {list(_ROPE_TYPES)}, got {self.rope_type!r}")
        for name in ("caption_channels", "text_proj_in_factor", "video_connector_num_attention_heads",
                     "video_connector_attention_head_dim", "audio_connector_num_attention_heads",
                     "audio_connector_attention_head_dim", "connector_rope_base_seq_len", "video_hidden_dim",
                     "audio_hidden_dim"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("video_connector_num_learnable_registers", "audio_connector_num_learnable_registers"):
            value = getattr(self, name)
            if value is not None and int(value) <= 0:
                raise ValueError(f"{name} must be positive or null, got {value!r}")
        if self.per_modality_projections:
            for stream in ("video", "audio"):
                width = self.stream_width(stream)
                if width != getattr(self, f"{stream}_hidden_dim"):
                    raise ValueError(f"{stream}_hidden_dim ({getattr(self, f'{stream}_hidden_dim')}) must equal "
                                     f"{stream}_connector_num_attention_heads * {stream}_connector_attention_head_dim "
                                     f"({width}) with per_modality_projections")
        else:
            for stream in ("video", "audio"):
                if self.stream_width(stream) != self.caption_channels:
                    raise ValueError(f"{stream}_connector_num_attention_heads * {stream}_connector_attention_head_dim "
                                     f"({self.stream_width(stream)}) must equal caption_channels "
                                     f"({self.caption_channels}) without per_modality_projections")

    def stream_width(self, stream: str) -> int:
        """Width of the ``video`` / ``audio`` connector (heads * head dim)."""
        return (getattr(self, f"{stream}_connector_num_attention_heads")
                * getattr(self, f"{stream}_connector_attention_head_dim"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LTX2ConnectorsConfig":
        """Build from a diffusers ``config.json`` dict (module contract)."""
        return config_from_dict(cls, data)


# ------------------------------------------------------------------------------------------- input normalization

def masked_layer_norm(hidden: torch.Tensor, lengths: torch.Tensor, padding_side: str = "left",
                      scale_factor: float = 8, eps: float = 1e-6) -> torch.Tensor:
    """LTX-2.0's normalization of stacked text-encoder layers ``(B, L, D, layers)`` -> ``(B, L, D * layers)``.

    Per sample and layer: subtract the mean over valid tokens and features, divide by their range (max - min),
    times ``scale_factor``; padded positions become 0. ``lengths`` ``(B,)`` counts valid tokens, which sit on
    ``padding_side``'s opposite end.
    """
    batch, seq_len, dim, layers = hidden.shape
    positions = torch.arange(seq_len, device=hidden.device).unsqueeze(0)
    if padding_side == "left":
        valid = positions >= seq_len - lengths[:, None]
    elif padding_side == "right":
        valid = positions < lengths[:, None]
    else:
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    valid4 = valid[:, :, None, None]
    count = (lengths * dim).view(batch, 1, 1, 1)
    mean = hidden.masked_fill(~valid4, 0.0).sum(dim=(1, 2), keepdim=True) / (count + eps)
    low = hidden.masked_fill(~valid4, float("inf")).amin(dim=(1, 2), keepdim=True)
    high = hidden.masked_fill(~valid4, float("-inf")).amax(dim=(1, 2), keepdim=True)
    normed = ((hidden - mean) / (high - low + eps) * scale_factor).flatten(2)
    return normed.masked_fill(~valid[:, :, None], 0.0).to(hidden.dtype)


def _token_rms_norm(hidden: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LTX-2.3's per-token RMS norm over the features of each layer: ``(B, L, D, layers)``."""
    return hidden * torch.rsqrt(torch.mean(hidden ** 2, dim=2, keepdim=True) + eps)


# ----------------------------------------------------------------------------------------------------- 1D RoPE

def _rope_1d(cfg: LTX2ConnectorsConfig, dim: int, heads: int, batch: int, seq_len: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for positions ``0..L-1`` (fractions of ``connector_rope_base_seq_len``, mapped to [-1, 1)).

    Interleaved: ``(B, L, dim)`` (each angle twice, ones/zeros in front for an odd ``dim``). Split: ``(B, heads, L,
    dim // heads // 2)`` per head, front-padded likewise.
    """
    grid = (torch.arange(seq_len, dtype=torch.float32, device=device) / cfg.connector_rope_base_seq_len)
    grid = grid.unsqueeze(0).repeat(batch, 1)
    exponent_dtype = torch.float64 if cfg.rope_double_precision else torch.float32
    steps = torch.linspace(0.0, 1.0, steps=dim // 2, dtype=exponent_dtype, device=device)
    freqs = (torch.pow(cfg.rope_theta, steps) * torch.pi / 2.0).to(torch.float32)
    angles = (grid.unsqueeze(-1) * 2 - 1) * freqs  # (B, L, dim // 2)
    if cfg.rope_type == "interleaved":
        cos, sin = angles.cos().repeat_interleave(2, dim=-1), angles.sin().repeat_interleave(2, dim=-1)
        if dim % 2:
            cos = torch.cat([torch.ones_like(cos[:, :, :1]), cos], dim=-1)
            sin = torch.cat([torch.zeros_like(sin[:, :, :1]), sin], dim=-1)
        return cos, sin
    cos, sin = angles.cos(), angles.sin()  # dim // 2 angles: no padding needed
    cos = cos.reshape(batch, seq_len, heads, -1).transpose(1, 2)
    sin = sin.reshape(batch, seq_len, heads, -1).transpose(1, 2)
    return cos, sin


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rope_type: str) -> torch.Tensor:
    """Apply the tables to ``(B, L, heads * head_dim)`` q or k; float32 math, result in ``x``'s dtype."""
    if rope_type == "interleaved":
        even, odd = x.unflatten(2, (-1, 2)).unbind(-1)
        rotated = torch.stack([-odd, even], dim=-1).flatten(2)
        return (x.float() * cos + rotated.float() * sin).to(x.dtype)
    batch, heads, seq_len, _ = cos.shape
    halves = x.reshape(batch, seq_len, heads, -1).transpose(1, 2)
    halves = halves.reshape(*halves.shape[:-1], 2, -1).float()  # (B, H, L, 2, r)
    first, second = halves[..., :1, :], halves[..., 1:, :]
    cos_u, sin_u = cos.unsqueeze(-2), sin.unsqueeze(-2)
    out = halves * cos_u
    out[..., :1, :].addcmul_(-sin_u, second)  # same fused multiply-adds as diffusers
    out[..., 1:, :].addcmul_(sin_u, first)
    out = out.flatten(-2).transpose(1, 2).reshape(batch, seq_len, -1)
    return out.to(x.dtype)


# ------------------------------------------------------------------------------------------------------- blocks

class _Attention(nn.Module):
    """Self-attention with q/k RMS norm across heads (with weight), 1D RoPE and optional per-head gates."""

    def __init__(self, dim: int, heads: int, head_dim: int, rope_type: str, gated: bool) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.rope_type = heads, rope_type
        self.norm_q = nn.RMSNorm(inner, eps=1e-6, elementwise_affine=True)
        self.norm_k = nn.RMSNorm(inner, eps=1e-6, elementwise_affine=True)
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])
        self.to_gate_logits = nn.Linear(dim, heads) if gated else None

    def forward(self, x: torch.Tensor, bias: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q = _rotate(self.norm_q(self.to_q(x)), *rope, self.rope_type)
        k = _rotate(self.norm_k(self.to_k(x)), *rope, self.rope_type)
        v = self.to_v(x)
        q, k, v = (t.unflatten(2, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # bias (B, 1, 1, L), additive
        out = out.transpose(1, 2)  # (B, L, H, D)
        if self.to_gate_logits is not None:
            out = out * (2.0 * torch.sigmoid(self.to_gate_logits(x))).unsqueeze(-1)
        return self.to_out[0](out.flatten(2, 3).to(q.dtype))


class _GeluTanh(nn.Module):
    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class _FeedForward(nn.Module):
    """``net.0`` (linear + tanh-GELU, 4x wide) -> ``net.2`` (linear back), diffusers' ``FeedForward`` keys."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GeluTanh(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class _Block(nn.Module):
    """Pre-norm (affine-free RMS) self-attention and feed-forward with residuals."""

    def __init__(self, dim: int, heads: int, head_dim: int, rope_type: str, gated: bool) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(dim, eps=1e-6, elementwise_affine=False)
        self.attn1 = _Attention(dim, heads, head_dim, rope_type, gated)
        self.norm2 = nn.RMSNorm(dim, eps=1e-6, elementwise_affine=False)
        self.ff = _FeedForward(dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x), bias, rope)
        return x + self.ff(self.norm2(x))


class _Connector(nn.Module):
    """One stream's 1D transformer: registers replace padding, blocks, final affine-free RMS norm."""

    def __init__(self, cfg: LTX2ConnectorsConfig, stream: str) -> None:
        super().__init__()
        self.cfg = cfg
        self.heads = getattr(cfg, f"{stream}_connector_num_attention_heads")
        head_dim = getattr(cfg, f"{stream}_connector_attention_head_dim")
        self.width = self.heads * head_dim
        self.num_registers: int | None = getattr(cfg, f"{stream}_connector_num_learnable_registers")
        self.learnable_registers = (nn.Parameter(torch.empty(self.num_registers, self.width))
                                    if self.num_registers is not None else None)
        gated = getattr(cfg, f"{stream}_gated_attn")
        self.transformer_blocks = nn.ModuleList(
            _Block(self.width, self.heads, head_dim, cfg.rope_type, gated)
            for _ in range(getattr(cfg, f"{stream}_connector_num_layers")))
        self.norm_out = nn.RMSNorm(self.width, eps=1e-6, elementwise_affine=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, seq_len, _ = x.shape
        if self.learnable_registers is not None and self.num_registers is not None:
            if seq_len % self.num_registers:
                raise ValueError(f"text length {seq_len} must be a multiple of the connector's "
                                 f"{self.num_registers} learnable registers (pad the prompt to it)")
            registers = self.learnable_registers.unsqueeze(0).expand(seq_len // self.num_registers, -1, -1)
            registers = registers.reshape(seq_len, -1)
            keep = (bias >= -9000.0).int().reshape(batch, seq_len)
            order = torch.argsort(1 - keep, dim=1, stable=True)  # valid tokens first, in order
            front = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            valid = torch.arange(seq_len, device=x.device).unsqueeze(0) < keep.sum(dim=1, keepdim=True)
            x = torch.where(valid.unsqueeze(-1), front, registers.unsqueeze(0).expand(batch, -1, -1).to(x.dtype))
            bias = torch.zeros_like(bias)
        rope = _rope_1d(self.cfg, self.width, self.heads, batch, seq_len, x.device)
        for block in self.transformer_blocks:
            x = block(x, bias, rope)
        return self.norm_out(x), bias


class LTX2Connectors(nn.Module):
    """Video and audio text connectors over packed Gemma-3 hidden states (module contract)."""

    def __init__(self, config: LTX2ConnectorsConfig) -> None:
        super().__init__()
        self.config = config
        in_dim = config.caption_channels * config.text_proj_in_factor
        if config.per_modality_projections:
            self.video_text_proj_in = nn.Linear(in_dim, config.video_hidden_dim, bias=config.proj_bias)
            self.audio_text_proj_in = nn.Linear(in_dim, config.audio_hidden_dim, bias=config.proj_bias)
        else:
            self.text_proj_in = nn.Linear(in_dim, config.caption_channels, bias=config.proj_bias)
        self.video_connector = _Connector(config, "video")
        self.audio_connector = _Connector(config, "audio")

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, padding_side: str = "left",
                scale_factor: float = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(video_embeds, audio_embeds, mask)`` (module contract)."""
        cfg = self.config
        if hidden_states.ndim == 3:
            hidden_states = hidden_states.unflatten(2, (cfg.caption_channels, -1))
        if hidden_states.ndim != 4 or hidden_states.shape[2:] != (cfg.caption_channels, cfg.text_proj_in_factor):
            raise ValueError(f"text hidden states must be (batch, tokens, {cfg.caption_channels} * "
                             f"{cfg.text_proj_in_factor}) or (batch, tokens, {cfg.caption_channels}, "
                             f"{cfg.text_proj_in_factor}), got {tuple(hidden_states.shape)}")
        if attention_mask.shape != hidden_states.shape[:2]:
            raise ValueError(f"attention_mask must be (batch, tokens) = {tuple(hidden_states.shape[:2])}, "
                             f"got {tuple(attention_mask.shape)}")
        if cfg.per_modality_projections:  # LTX-2.3
            normed = _token_rms_norm(hidden_states).flatten(2, 3)
            normed = torch.where(attention_mask.bool().unsqueeze(-1), normed, torch.zeros_like(normed))
            video_in = self.video_text_proj_in(normed * math.sqrt(cfg.video_hidden_dim / cfg.caption_channels))
            audio_in = self.audio_text_proj_in(normed * math.sqrt(cfg.audio_hidden_dim / cfg.caption_channels))
        else:  # LTX-2.0
            normed = masked_layer_norm(hidden_states, attention_mask.sum(dim=-1), padding_side, scale_factor)
            video_in = audio_in = self.text_proj_in(normed)
        dtype = video_in.dtype
        bias = (attention_mask.to(torch.int64) - 1).to(dtype)
        bias = bias.reshape(bias.shape[0], 1, -1, bias.shape[-1]) * torch.finfo(dtype).max
        video, video_bias = self.video_connector(video_in, bias)
        keep = (video_bias < 1e-6).to(torch.int64).reshape(video.shape[0], video.shape[1], 1)
        video = video * keep
        audio, _ = self.audio_connector(audio_in, bias)
        return video, audio, keep.squeeze(-1)


def load_ltx2_connectors(folder: str | Path, *, dtype: torch.dtype = torch.float32,
                         device: torch.device | str = "cpu", variant: str | None = None) -> LTX2Connectors:
    """Build and load a diffusers ``connectors/`` folder (``LTX2TextConnectors``) on the meta device."""
    model, _ = load_component(folder, class_name="LTX2TextConnectors", parse=LTX2ConnectorsConfig.from_dict,
                              build=LTX2Connectors, dtype=dtype, device=device, variant=variant)
    return model
