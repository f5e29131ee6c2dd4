"""The LTX-2 audio+video diffusion transformer, numerically matching diffusers 0.42's ``LTX2VideoTransformer3DModel``.

Contract
--------
- :class:`LTX2Transformer` has the same ``state_dict()`` keys and shapes as diffusers' class for every config
  :class:`~fastvideo.engine.models.ltx2.config.LTX2DiTConfig` accepts, so a diffusers ``transformer/`` folder
  loads with ``load_state_dict(strict=True)``. It owns no buffers (RoPE tables are computed per call and cached
  in a plain dict), so it can be built under ``torch.device("meta")`` and loaded with ``assign=True``.
- ``forward`` takes diffusers' arguments, by the same names, and returns ``(video, audio)``:

  * ``hidden_states`` ``(B, N_v, in_channels)``: packed video latent tokens (frame-major, patch already folded
    into channels, as ``LTX2Pipeline._pack_latents`` does); ``audio_hidden_states`` ``(B, N_a, audio_in_channels)``.
  * ``encoder_hidden_states`` / ``audio_encoder_hidden_states`` ``(B, L, caption_channels)``: the text connector
    outputs for each stream (projected here by ``caption_projection`` / ``audio_caption_projection``).
  * ``timestep`` ``(B,)`` or ``(B, N_v)`` (per token), already on the model's scale (sigma * 1000);
    ``audio_timestep`` likewise for audio (default: ``timestep``). ``sigma`` / ``audio_sigma`` and
    ``use_cross_timestep`` choose which stream's time drives the a2v/v2a modulation, as in diffusers.
  * ``encoder_attention_mask`` / ``audio_encoder_attention_mask`` ``(B, L)``: 1 keeps a text token, 0 drops it
    (turned into diffusers' additive ``-10000`` bias in the input dtype).
  * positions: ``video_coords`` ``(B, 3, N_v, 2)`` / ``audio_coords`` ``(B, 1, N_a, 2)`` (see :mod:`.rope`), or,
    when absent, the grid ``num_frames, height, width`` (latent sizes), ``fps`` and ``audio_num_frames``.
  * ``isolate_modalities`` skips the a2v/v2a attention in every block.
  * ``spatio_temporal_guidance_blocks`` / ``perturbation_mask`` ``(B,)``: STG, only with ``perturbed_attn``
    configs (ignored otherwise, as in diffusers): in those blocks the self-attention of both streams becomes
    ``lerp(values, attention, mask)`` per sample (no mask: every sample gets the values).
  * ``video_self_attention_mask`` ``(B, N_v, N_v)`` in ``[0, 1]``: multiplicative video self-attention mask
    (IC-LoRA), turned into the additive bias; ``video_keyframes_mask`` ``(B, N_v, 1)``: tokens that get
    ``keyframes_abs_pos_embedding`` (configs with ``use_keyframes_abs_pos_embedding``).
  * ``sigma`` (and ``audio_sigma``) is required by configs with prompt AdaLN (``cross_attn_mod`` and
    ``use_prompt_adaln_single``), which modulate the text K/V by it.
  * returns ``(B, N_v, out_channels)`` and ``(B, N_a, audio_out_channels)`` in the compute dtype.

- Precision mirrors diffusers operation by operation (its LTX-2 class keeps no module in float32): the timestep
  sinusoid and the RoPE tables/rotation are float32 (RoPE angles from float64 when ``rope_double_precision``); the
  affine-free block RMS norms reduce in float32 and return the activation dtype; everything else (linears,
  modulation, residuals, attention, the output LayerNorm) runs in the dtype of the parameters/activations.
  :meth:`LTX2Transformer.to_inference_dtype` casts every parameter, like ``from_pretrained(torch_dtype=...)``.
- Attention: every unmasked, unperturbed attention goes through :func:`fastvideo.engine.attention.attention` with
  ``(B, L, heads, head_dim)`` tensors and the model's :class:`AttentionBackend` (``sdpa`` unless
  :meth:`LTX2Transformer.set_attention_backend` picks another). Registry backends take no mask, so a text
  cross-attention *with* an attention mask runs torch SDPA with the additive bias (exactly diffusers' path);
  callers whose mask keeps every token should pass ``None`` to get the selected backend. The same holds for a
  video self-attention mask.
- RoPE: self-attention q/k get the per-stream tables (video 3 axes at ``inner_dim``, audio 1 axis at
  ``audio_inner_dim``); in a2v/v2a the video q/k get time-only tables at ``audio_cross_attention_dim`` (video
  head layout) and the audio q/k the audio time tables at that width (audio head layout). Text cross-attention
  has no RoPE. q/k get RMS norm across all heads (with weight, eps 1e-6) before the rotation.
- ``forward`` has no data-dependent control flow and no host syncs (Python branches only on shapes, config and
  which optional inputs are given). Tables built from a grid are cached (:meth:`LTX2Transformer.rope_tables`);
  building them is kept out of compiled graphs, so warm the cache (one eager forward) per shape before
  ``torch.compile(fullgraph=True)`` or CUDA-graph capture. Tables from caller-given coordinates are computed
  inside the forward (traceable, not cached).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastvideo.engine.attention import attention
from fastvideo.engine.layers import timestep_sinusoid
from fastvideo.engine.layers import TwoLayerMLP
from fastvideo.engine.models.ltx2.config import LTX2DiTConfig
from fastvideo.engine.models.ltx2.rope import RopeSpec, RopeTables, apply_rope, audio_coords, rope_tables, video_coords
from fastvideo.kernels.registry import AttentionBackend, select_attention_backend

logger = logging.getLogger(__name__)

__all__ = ["LTX2Transformer", "ROPE_CACHE_SIZE"]

#: How many distinct grid-built RoPE table sets the model keeps.
ROPE_CACHE_SIZE = 8
_SINUSOID_DIM = 256
_QK_NORM_EPS = 1e-6  # diffusers' LTX2Attention default; the block does not pass its own eps down
_OUT_NORM_EPS = 1e-6
_MASK_BIAS = -10000.0
_NUM_MODULATIONS = 6  # shift/scale/gate for self-attention, then for the FFN


# --------------------------------------------------------------------------------------------
# Functional pieces
# --------------------------------------------------------------------------------------------
def _rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Affine-free RMS norm: mean of squares in float32, result in ``x.dtype`` (diffusers' ``RMSNorm``)."""
    return (x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _modulation(table: torch.Tensor, temb: torch.Tensor, batch: int) -> tuple[torch.Tensor, ...]:
    """Per-layer ``table (K, D)`` + global ``temb (B, T, K*D)`` -> K tensors ``(B, T, D)``."""
    count = table.shape[0]
    values = table[None, None].to(temb.device) + temb.reshape(batch, temb.shape[1], count, -1)
    return values.unbind(dim=2)


def _mask_bias(mask: torch.Tensor | None, dtype: torch.dtype, batch: int, name: str) -> torch.Tensor | None:
    """``(B, L)`` keep-mask -> ``(B, 1, 1, L)`` additive bias (0 kept, -10000 dropped) in ``dtype``."""
    if mask is None:
        return None
    if mask.ndim != 2 or mask.shape[0] != batch:
        raise ValueError(f"{name} must be (batch={batch}, text_len) with 1 = keep, got {tuple(mask.shape)}")
    return ((1 - mask.to(dtype)) * _MASK_BIAS)[:, None, None, :]


# --------------------------------------------------------------------------------------------
# Modules (attribute names follow diffusers' checkpoint keys)
# --------------------------------------------------------------------------------------------
class _SinusoidEmbedding(nn.Module):
    """Holds ``timestep_embedder`` so keys read ``emb.timestep_embedder.*`` (diffusers' PixArt-alpha embedding)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.timestep_embedder = TwoLayerMLP(_SINUSOID_DIM, dim, "silu")


class _TimeModulation(nn.Module):
    """AdaLN-single: timestep -> (``count * dim`` modulation, ``dim`` embedding)."""

    def __init__(self, dim: int, count: int) -> None:
        super().__init__()
        self.emb = _SinusoidEmbedding(dim)
        self.linear = nn.Linear(dim, count * dim)

    def forward(self, timestep: torch.Tensor, batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``timestep`` (any shape, ``B * T`` values) -> ``(B, T, count*dim)`` modulation, ``(B, T, dim)`` embedding."""
        sinusoid = timestep_sinusoid(timestep.flatten(), _SINUSOID_DIM).to(dtype)
        embedded = self.emb.timestep_embedder(sinusoid)
        modulation = self.linear(F.silu(embedded))
        return modulation.view(batch, -1, modulation.shape[-1]), embedded.view(batch, -1, embedded.shape[-1])


class _Attention(nn.Module):
    """Multi-head attention: q/k RMS norm across heads, optional RoPE on q and k, optional per-head output gate."""

    def __init__(self, query_dim: int, kv_dim: int, heads: int, head_dim: int, *, bias: bool, out_bias: bool,
                 gated: bool) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(kv_dim, inner, bias=bias)
        self.to_v = nn.Linear(kv_dim, inner, bias=bias)
        self.norm_q = nn.RMSNorm(inner, eps=_QK_NORM_EPS)
        self.norm_k = nn.RMSNorm(inner, eps=_QK_NORM_EPS)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Identity()])  # [1]: dropout slot
        self.to_gate_logits: nn.Linear | None = nn.Linear(query_dim, heads) if gated else None

    def forward(self, x: torch.Tensor, kv_states: torch.Tensor, backend: AttentionBackend, *, layout: str,
                q_rope: RopeTables | None = None, k_rope: RopeTables | None = None,
                bias: torch.Tensor | None = None, skip_attention: bool = False,
                perturbation: torch.Tensor | None = None) -> torch.Tensor:
        """``skip_attention``: output the value projection instead of attending (STG, every sample perturbed);
        ``perturbation`` ``(B, 1, 1)``: ``lerp(values, attention, perturbation)`` per sample (0 = perturbed)."""
        v = self.to_v(kv_states)
        if skip_attention:
            return self._output(v.unflatten(2, (self.heads, -1)), x)
        q = self.norm_q(self.to_q(x))
        k = self.norm_k(self.to_k(kv_states))
        if q_rope is not None:
            q = apply_rope(q, q_rope, layout)
            k = apply_rope(k, k_rope if k_rope is not None else q_rope, layout)
        q, k, v = (t.unflatten(2, (self.heads, -1)) for t in (q, k, v))
        if bias is None:
            out = attention(q, k, v, backend)
        else:  # registry backends take no mask: torch SDPA with the additive bias (module contract)
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 attn_mask=bias).transpose(1, 2)
        out = out.to(q.dtype)
        if perturbation is not None:  # lerp is exact at 0 and 1: same as diffusers' all-perturbed shortcut
            out = torch.lerp(v.flatten(2, 3), out.flatten(2, 3), perturbation).unflatten(2, (self.heads, -1))
        return self._output(out, x)

    def _output(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, heads, head_dim)`` -> per-head gate (if any) -> ``to_out``."""
        if self.to_gate_logits is not None:
            out = out * (2.0 * torch.sigmoid(self.to_gate_logits(x))).unsqueeze(-1)
        return self.to_out[0](out.flatten(2, 3))


class _GeluTanhProj(nn.Module):
    """``gelu_tanh(proj(x))`` (diffusers' ``GELU`` activation-projection)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class _FeedForward(nn.Module):
    """``net.2(gelu_tanh(net.0.proj(x)))`` with a 4x hidden width; ``net.1`` is the (parameter-free) dropout slot."""

    def __init__(self, dim: int, bias: bool) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GeluTanhProj(dim, 4 * dim, bias), nn.Identity(), nn.Linear(4 * dim, dim, bias=bias)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


@dataclass
class _StepContext:
    """What every block of one forward reads: modulation, text context, RoPE tables, masks, backend."""

    backend: AttentionBackend
    temb: torch.Tensor  # (B, T, 6*D)
    temb_audio: torch.Tensor  # (B, T, 6*D_a)
    video_ca_mod: torch.Tensor  # (B, T, 4*D): a2v/v2a scale+shift, video side
    video_ca_gate: torch.Tensor  # (B, T, D)
    audio_ca_mod: torch.Tensor  # (B, T, 4*D_a)
    audio_ca_gate: torch.Tensor  # (B, T, D_a)
    context: torch.Tensor  # (B, L, D)
    audio_context: torch.Tensor  # (B, L_a, D_a)
    text_bias: torch.Tensor | None
    audio_text_bias: torch.Tensor | None
    self_bias: torch.Tensor | None  # (B, 1, N_v, N_v) video self-attention bias
    temb_prompt: torch.Tensor | None  # (B, T, 2*D): text K/V modulation (cross_attn_mod, prompt AdaLN)
    temb_prompt_audio: torch.Tensor | None
    perturbation: torch.Tensor | None  # (B, 1, 1) STG weights; None with stg_blocks: every sample perturbed
    stg_blocks: frozenset[int]
    video_rope: RopeTables
    audio_rope: RopeTables
    cross_video_rope: RopeTables
    cross_audio_rope: RopeTables
    isolate_modalities: bool


class _Block(nn.Module):
    """One audio+video block: self-attention (each stream), text cross-attention (each stream),
    audio-to-video and video-to-audio attention, then the FFNs; AdaLN-zero modulated."""

    def __init__(self, cfg: LTX2DiTConfig) -> None:
        super().__init__()
        dim, adim = cfg.inner_dim, cfg.audio_inner_dim
        heads, head_dim = cfg.num_attention_heads, cfg.attention_head_dim
        aheads, ahead_dim = cfg.audio_num_attention_heads, cfg.audio_attention_head_dim
        common = {"bias": cfg.attention_bias, "out_bias": cfg.attention_out_bias}
        self.eps = cfg.norm_eps
        self.layout = cfg.rope_type
        self.attn1 = _Attention(dim, dim, heads, head_dim, gated=cfg.gated_attn, **common)
        self.audio_attn1 = _Attention(adim, adim, aheads, ahead_dim, gated=cfg.audio_gated_attn, **common)
        self.attn2 = _Attention(dim, cfg.cross_attention_dim, heads, head_dim, gated=cfg.gated_attn, **common)
        self.audio_attn2 = _Attention(adim, cfg.audio_cross_attention_dim, aheads, ahead_dim,
                                      gated=cfg.audio_gated_attn, **common)
        # a2v: video queries, audio keys/values; v2a: the reverse. Both run at the audio head layout.
        self.audio_to_video_attn = _Attention(dim, adim, aheads, ahead_dim, gated=cfg.gated_attn, **common)
        self.video_to_audio_attn = _Attention(adim, dim, aheads, ahead_dim, gated=cfg.audio_gated_attn, **common)
        self.ff = _FeedForward(dim, cfg.ff_bias)
        self.audio_ff = _FeedForward(adim, cfg.audio_ff_bias)
        self.video_text_mod, self.audio_text_mod = cfg.cross_attn_mod, cfg.audio_cross_attn_mod
        self.perturbed = cfg.perturbed_attn
        video_rows = _NUM_MODULATIONS + 3 * cfg.cross_attn_mod  # + text-query shift/scale/gate
        audio_rows = _NUM_MODULATIONS + 3 * cfg.audio_cross_attn_mod
        self.scale_shift_table = nn.Parameter(torch.randn(video_rows, dim) / dim**0.5)
        self.audio_scale_shift_table = nn.Parameter(torch.randn(audio_rows, adim) / adim**0.5)
        if cfg.cross_attn_mod or cfg.audio_cross_attn_mod:  # text K/V shift/scale, both streams
            self.prompt_scale_shift_table = nn.Parameter(torch.randn(2, dim))
            self.audio_prompt_scale_shift_table = nn.Parameter(torch.randn(2, adim))
        # rows: a2v scale, a2v shift, v2a scale, v2a shift, gate
        self.video_a2v_cross_attn_scale_shift_table = nn.Parameter(torch.randn(5, dim))
        self.audio_a2v_cross_attn_scale_shift_table = nn.Parameter(torch.randn(5, adim))

    def _text_kv_mod(self, table: torch.Tensor, temb: torch.Tensor | None, like: torch.Tensor,
                     batch: int) -> tuple[torch.Tensor, ...]:
        """Text K/V (shift, scale): the table plus the prompt AdaLN, or the table alone (timestep-free)."""
        if temb is not None:
            return _modulation(table, temb, batch)
        return table[None, None].to(device=like.device, dtype=like.dtype).unbind(dim=2)

    def forward(self, x: torch.Tensor, a: torch.Tensor, ctx: _StepContext,
                index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, N_v, D)``, ``a (B, N_a, D_a)`` -> updated ``(x, a)``; ``index``: this block's place (STG)."""
        batch, eps, layout, backend = x.shape[0], self.eps, self.layout, ctx.backend
        video_mod = _modulation(self.scale_shift_table, ctx.temb, batch)
        audio_mod = _modulation(self.audio_scale_shift_table, ctx.temb_audio, batch)
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = video_mod[:_NUM_MODULATIONS]
        a_shift_sa, a_scale_sa, a_gate_sa, a_shift_ff, a_scale_ff, a_gate_ff = audio_mod[:_NUM_MODULATIONS]
        stg = self.perturbed and index in ctx.stg_blocks
        skip = stg and ctx.perturbation is None
        perturbation = ctx.perturbation if stg else None

        # 1. self-attention, each stream with its own RoPE (STG may replace it with the values)
        h = _rms_norm(x, eps) * (1 + scale_sa) + shift_sa
        x = x + self.attn1(h, h, backend, layout=layout, q_rope=ctx.video_rope, bias=ctx.self_bias,
                           skip_attention=skip, perturbation=perturbation) * gate_sa
        h = _rms_norm(a, eps) * (1 + a_scale_sa) + a_shift_sa
        a = a + self.audio_attn1(h, h, backend, layout=layout, q_rope=ctx.audio_rope, skip_attention=skip,
                                 perturbation=perturbation) * a_gate_sa

        # 2. text cross-attention (no RoPE); with cross_attn_mod the query, the text K/V and the output are modulated
        context, audio_context = ctx.context, ctx.audio_context
        if self.video_text_mod or self.audio_text_mod:
            shift_kv, scale_kv = self._text_kv_mod(self.prompt_scale_shift_table, ctx.temb_prompt, x, batch)
            a_shift_kv, a_scale_kv = self._text_kv_mod(self.audio_prompt_scale_shift_table, ctx.temb_prompt_audio,
                                                       a, batch)
            context = context * (1 + scale_kv) + shift_kv
            audio_context = audio_context * (1 + a_scale_kv) + a_shift_kv
        h = _rms_norm(x, eps)
        if self.video_text_mod:
            shift_q, scale_q, gate_q = video_mod[_NUM_MODULATIONS:]
            h = h * (1 + scale_q) + shift_q
        out = self.attn2(h, context, backend, layout=layout, bias=ctx.text_bias)
        x = x + (out * gate_q if self.video_text_mod else out)
        h = _rms_norm(a, eps)
        if self.audio_text_mod:
            a_shift_q, a_scale_q, a_gate_q = audio_mod[_NUM_MODULATIONS:]
            h = h * (1 + a_scale_q) + a_shift_q
        out = self.audio_attn2(h, audio_context, backend, layout=layout, bias=ctx.audio_text_bias)
        a = a + (out * a_gate_q if self.audio_text_mod else out)

        # 3. audio-to-video and video-to-audio attention, both from the same normed states
        if not ctx.isolate_modalities:
            hx, ha = _rms_norm(x, eps), _rms_norm(a, eps)
            v_a2v_scale, v_a2v_shift, v_v2a_scale, v_v2a_shift = _modulation(
                self.video_a2v_cross_attn_scale_shift_table[:4], ctx.video_ca_mod, batch)
            (a2v_gate,) = _modulation(self.video_a2v_cross_attn_scale_shift_table[4:], ctx.video_ca_gate, batch)
            a_a2v_scale, a_a2v_shift, a_v2a_scale, a_v2a_shift = _modulation(
                self.audio_a2v_cross_attn_scale_shift_table[:4], ctx.audio_ca_mod, batch)
            (v2a_gate,) = _modulation(self.audio_a2v_cross_attn_scale_shift_table[4:], ctx.audio_ca_gate, batch)

            q_in = hx * (1 + v_a2v_scale) + v_a2v_shift
            kv_in = ha * (1 + a_a2v_scale) + a_a2v_shift
            a2v = self.audio_to_video_attn(q_in, kv_in, backend, layout=layout, q_rope=ctx.cross_video_rope,
                                           k_rope=ctx.cross_audio_rope)
            x = x + a2v_gate * a2v

            q_in = ha * (1 + a_v2a_scale) + a_v2a_shift
            kv_in = hx * (1 + v_v2a_scale) + v_v2a_shift
            v2a = self.video_to_audio_attn(q_in, kv_in, backend, layout=layout, q_rope=ctx.cross_audio_rope,
                                           k_rope=ctx.cross_video_rope)
            a = a + v2a_gate * v2a

        # 4. feed-forward
        x = x + self.ff(_rms_norm(x, eps) * (1 + scale_ff) + shift_ff) * gate_ff
        a = a + self.audio_ff(_rms_norm(a, eps) * (1 + a_scale_ff) + a_shift_ff) * a_gate_ff
        return x, a
class LTX2Transformer(nn.Module):
    """LTX-2 audio+video DiT; checkpoint-compatible with diffusers' ``LTX2VideoTransformer3DModel`` (module doc)."""

    def __init__(self, config: LTX2DiTConfig, attention_backend: AttentionBackend | None = None) -> None:
        super().__init__()
        self.config = config
        dim, adim = config.inner_dim, config.audio_inner_dim
        assert config.out_channels is not None and config.audio_out_channels is not None  # resolved by the config
        self.proj_in = nn.Linear(config.in_channels, dim)
        self.audio_proj_in = nn.Linear(config.audio_in_channels, adim)
        if config.use_keyframes_abs_pos_embedding:
            self.keyframes_abs_pos_embedding = nn.Parameter(torch.zeros(1, dim))
        if config.use_prompt_embeddings:  # LTX-2.0; later versions project per stream in the text connector
            self.caption_projection = TwoLayerMLP(config.caption_channels, dim, "gelu_tanh")
            self.audio_caption_projection = TwoLayerMLP(config.caption_channels, adim, "gelu_tanh")
        self.time_embed = _TimeModulation(dim, _NUM_MODULATIONS + 3 * config.cross_attn_mod)
        self.audio_time_embed = _TimeModulation(adim, _NUM_MODULATIONS + 3 * config.audio_cross_attn_mod)
        #: the text K/V modulation follows the timestep (prompt AdaLN) rather than a fixed per-layer table
        self.prompt_adaln_on = (config.cross_attn_mod or config.audio_cross_attn_mod) and config.use_prompt_adaln_single
        if self.prompt_adaln_on:
            self.prompt_adaln = _TimeModulation(dim, 2)
            self.audio_prompt_adaln = _TimeModulation(adim, 2)
        self.av_cross_attn_video_scale_shift = _TimeModulation(dim, 4)
        self.av_cross_attn_audio_scale_shift = _TimeModulation(adim, 4)
        self.av_cross_attn_video_a2v_gate = _TimeModulation(dim, 1)
        self.av_cross_attn_audio_v2a_gate = _TimeModulation(adim, 1)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.audio_scale_shift_table = nn.Parameter(torch.randn(2, adim) / adim**0.5)
        self.transformer_blocks = nn.ModuleList([_Block(config) for _ in range(config.num_layers)])
        self.proj_out = nn.Linear(dim, config.out_channels)
        self.audio_proj_out = nn.Linear(adim, config.audio_out_channels)

        cross_max = float(max(config.pos_embed_max_pos, config.audio_pos_embed_max_pos))

        def spec(dim: int, max_positions: tuple[float, ...], heads: int) -> RopeSpec:
            return RopeSpec(dim, max_positions, theta=config.rope_theta,
                            double_precision=config.rope_double_precision, layout=config.rope_type, heads=heads)

        video_extent = (float(config.pos_embed_max_pos), float(config.base_height), float(config.base_width))
        self.video_rope_spec = spec(dim, video_extent, config.num_attention_heads)
        self.audio_rope_spec = spec(adim, (float(config.audio_pos_embed_max_pos),), config.audio_num_attention_heads)
        # a2v / v2a: time-only tables at the audio width; the video side keeps the video head layout (diffusers)
        self.cross_video_rope_spec = spec(config.audio_cross_attention_dim, (cross_max,), config.num_attention_heads)
        self.cross_audio_rope_spec = spec(config.audio_cross_attention_dim, (cross_max,),
                                          config.audio_num_attention_heads)

        if attention_backend is None:
            attention_backend = select_attention_backend(
                "sdpa", dtype=torch.float32, head_dim=config.attention_head_dim, device="cpu")
        self.attention_backend: AttentionBackend = attention_backend
        self._rope_cache: OrderedDict[tuple[Any, ...], tuple[RopeTables, ...]] = OrderedDict()

    # ---------------------------------------------------------------- setup helpers
    def set_attention_backend(self, backend: AttentionBackend) -> None:
        """Route every unmasked attention through ``backend`` (pick it with ``select_attention_backend``)."""
        if not isinstance(backend, AttentionBackend):
            raise TypeError(f"expected an AttentionBackend, got {type(backend).__name__}")
        logger.info("LTX2Transformer attention backend: %s", backend.name)
        self.attention_backend = backend

    def to_inference_dtype(self, dtype: torch.dtype) -> "LTX2Transformer":
        """Cast every parameter to ``dtype`` (diffusers keeps no LTX-2 module in float32). Returns ``self``."""
        with torch.no_grad():
            for param in self.parameters():
                if param.dtype != dtype:
                    param.data = param.data.to(dtype)
        return self

    def video_coords(self, batch: int, num_frames: int, height: int, width: int, device: torch.device | str,
                     fps: float = 24.0) -> torch.Tensor:
        """``(batch, 3, N_v, 2)`` coordinates of a latent grid (diffusers' ``rope.prepare_video_coords``)."""
        cfg = self.config
        return video_coords(batch, num_frames, height, width, patch_size=cfg.patch_size,
                            patch_size_t=cfg.patch_size_t, scale_factors=cfg.vae_scale_factors,
                            causal_offset=cfg.causal_offset, fps=fps, device=device)

    def audio_coords(self, batch: int, num_frames: int, device: torch.device | str, shift: int = 0) -> torch.Tensor:
        """``(batch, 1, N_a, 2)`` coordinates of audio latent frames (``audio_rope.prepare_audio_coords``)."""
        cfg = self.config
        return audio_coords(batch, num_frames, patch_size_t=cfg.audio_patch_size_t,
                            scale_factor=cfg.audio_scale_factor, causal_offset=cfg.causal_offset,
                            hop_length=cfg.audio_hop_length, sampling_rate=cfg.audio_sampling_rate,
                            device=device, shift=shift)

    def _tables_from_coords(self, vcoords: torch.Tensor, acoords: torch.Tensor,
                            device: torch.device) -> tuple[RopeTables, ...]:
        return (rope_tables(self.video_rope_spec, vcoords, device),
                rope_tables(self.audio_rope_spec, acoords, device),
                rope_tables(self.cross_video_rope_spec, vcoords[:, 0:1], device),
                rope_tables(self.cross_audio_rope_spec, acoords[:, 0:1], device))

    def rope_tables(self, grid: tuple[int, int, int], fps: float, audio_frames: int,
                    device: torch.device | str) -> tuple[RopeTables, ...]:
        """The four RoPE table pairs (video, audio, a2v video side, v2a audio side) for coordinates built from a
        latent ``grid``, ``fps`` and ``audio_frames``; batch 1, they broadcast over the batch.

        Cached per ``(grid, fps, audio_frames, device)`` (oldest evicted past :data:`ROPE_CACHE_SIZE`). A hit is a
        plain dict lookup (traceable by ``torch.compile``); a miss builds eagerly outside any graph, so run one
        eager forward (or call this) per shape before ``torch.compile(fullgraph=True)`` or CUDA-graph capture,
        and keep the returned tensors alive for as long as a captured graph reads them."""
        key = (*grid, float(fps), int(audio_frames), torch.device(device))
        tables = self._rope_cache.get(key)
        if tables is None:
            tables = self._build_rope_tables(key)
        return tables

    @torch.compiler.disable
    def _build_rope_tables(self, key: tuple[Any, ...]) -> tuple[RopeTables, ...]:
        frames, height, width, fps, audio_frames, device = key
        logger.debug("building LTX-2 RoPE tables for grid %s, fps %s, %d audio frames on %s", (frames, height, width),
                     fps, audio_frames, device)
        tables = self._tables_from_coords(self.video_coords(1, frames, height, width, device, fps=fps),
                                          self.audio_coords(1, audio_frames, device), device)
        self._rope_cache[key] = tables
        while len(self._rope_cache) > ROPE_CACHE_SIZE:  # evict the oldest shape
            self._rope_cache.popitem(last=False)
        return tables

    def _positions(self, hidden_states: torch.Tensor, audio_hidden_states: torch.Tensor,
                   video_coords: torch.Tensor | None, audio_coords: torch.Tensor | None, num_frames: int | None,
                   height: int | None, width: int | None, fps: float,
                   audio_num_frames: int | None) -> tuple[RopeTables, ...]:
        cfg = self.config
        device = hidden_states.device
        grid = None
        if num_frames is not None and height is not None and width is not None:
            grid = (int(num_frames), int(height), int(width))
        if video_coords is None:
            if grid is None:
                raise ValueError("pass video_coords or the latent grid num_frames, height, width")
            tokens = -(-grid[0] // cfg.patch_size_t) * -(-grid[1] // cfg.patch_size) * -(-grid[2] // cfg.patch_size)
            if tokens != hidden_states.shape[1]:
                raise ValueError(f"the latent grid {grid} makes {tokens} video tokens, hidden_states has "
                                 f"{hidden_states.shape[1]}")
        if audio_coords is None:
            if audio_num_frames is None:
                raise ValueError("pass audio_coords or audio_num_frames")
            if -(-audio_num_frames // cfg.audio_patch_size_t) != audio_hidden_states.shape[1]:
                raise ValueError(f"audio_num_frames={audio_num_frames} does not match the "
                                 f"{audio_hidden_states.shape[1]} audio tokens of audio_hidden_states")
        if video_coords is None and audio_coords is None:
            assert grid is not None and audio_num_frames is not None
            return self.rope_tables(grid, fps, int(audio_num_frames), device)
        batch = hidden_states.shape[0]
        if video_coords is None:
            assert grid is not None
            video_coords = self.video_coords(batch, *grid, device, fps=fps)
        if audio_coords is None:
            assert audio_num_frames is not None
            audio_coords = self.audio_coords(batch, int(audio_num_frames), audio_hidden_states.device)
        return self._tables_from_coords(video_coords, audio_coords, device)

    def _check_inputs(self, hidden_states: torch.Tensor, audio_hidden_states: torch.Tensor,
                      encoder_hidden_states: torch.Tensor, audio_encoder_hidden_states: torch.Tensor) -> None:
        cfg = self.config
        batch = hidden_states.shape[0]
        text, audio_text = ((cfg.caption_channels, cfg.caption_channels) if cfg.use_prompt_embeddings
                            else (cfg.inner_dim, cfg.audio_inner_dim))
        for name, tensor, channels in (
                ("hidden_states", hidden_states, cfg.in_channels),
                ("audio_hidden_states", audio_hidden_states, cfg.audio_in_channels),
                ("encoder_hidden_states", encoder_hidden_states, text),
                ("audio_encoder_hidden_states", audio_encoder_hidden_states, audio_text)):
            if tensor.ndim != 3 or tensor.shape[0] != batch or tensor.shape[2] != channels:
                raise ValueError(f"{name} must be ({batch}, L, {channels}), got {tuple(tensor.shape)}")

    @staticmethod
    def _check_time(name: str, value: torch.Tensor | None, batch: int, tokens: int) -> None:
        """``value`` must be ``(B,)``, ``(B, 1)`` or ``(B, tokens)`` (one per sample, or one per token)."""
        if value is None:
            return
        if value.ndim == 0 or value.shape[0] != batch or value.numel() not in (batch, batch * tokens):
            raise ValueError(f"{name} must have shape ({batch},) or ({batch}, {tokens}), got {tuple(value.shape)}")

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        audio_hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        audio_encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        audio_timestep: torch.Tensor | None = None,
        sigma: torch.Tensor | None = None,
        audio_sigma: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        audio_encoder_attention_mask: torch.Tensor | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        fps: float = 24.0,
        audio_num_frames: int | None = None,
        video_coords: torch.Tensor | None = None,
        audio_coords: torch.Tensor | None = None,
        isolate_modalities: bool = False,
        spatio_temporal_guidance_blocks: list[int] | None = None,
        perturbation_mask: torch.Tensor | None = None,
        use_cross_timestep: bool = False,
        video_self_attention_mask: torch.Tensor | None = None,
        video_keyframes_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Denoise one step for both streams; see the module contract for shapes. Returns ``(video, audio)``."""
        cfg = self.config
        self._check_inputs(hidden_states, audio_hidden_states, encoder_hidden_states, audio_encoder_hidden_states)
        batch = hidden_states.shape[0]
        audio_timestep = audio_timestep if audio_timestep is not None else timestep
        audio_sigma = audio_sigma if audio_sigma is not None else sigma
        n_video, n_audio = hidden_states.shape[1], audio_hidden_states.shape[1]
        for name, value, tokens in (("timestep", timestep, n_video), ("audio_timestep", audio_timestep, n_audio),
                                    ("sigma", sigma, n_video), ("audio_sigma", audio_sigma, n_audio)):
            self._check_time(name, value, batch, tokens)
        if (use_cross_timestep or self.prompt_adaln_on) and (sigma is None or audio_sigma is None):
            raise ValueError("sigma is required (and audio_sigma optional) with use_cross_timestep=True or a "
                             "config with cross_attn_mod and use_prompt_adaln_single")
        text_bias = _mask_bias(encoder_attention_mask, hidden_states.dtype, batch, "encoder_attention_mask")
        audio_text_bias = _mask_bias(audio_encoder_attention_mask, audio_hidden_states.dtype, batch,
                                     "audio_encoder_attention_mask")
        video_rope, audio_rope, cross_video_rope, cross_audio_rope = self._positions(
            hidden_states, audio_hidden_states, video_coords, audio_coords, num_frames, height, width, fps,
            audio_num_frames)

        self_bias = None
        if video_self_attention_mask is not None:  # multiplicative [0, 1] -> additive bias, like diffusers
            n_video = hidden_states.shape[1]
            if video_self_attention_mask.shape != (batch, n_video, n_video):
                raise ValueError(f"video_self_attention_mask must be ({batch}, {n_video}, {n_video}), got "
                                 f"{tuple(video_self_attention_mask.shape)}")
            self_bias = ((1 - video_self_attention_mask.to(hidden_states.dtype)) * _MASK_BIAS).unsqueeze(1)
        stg_blocks = frozenset(spatio_temporal_guidance_blocks or ())
        if perturbation_mask is not None and perturbation_mask.ndim == 1:
            perturbation_mask = perturbation_mask[:, None, None]

        x = self.proj_in(hidden_states)
        a = self.audio_proj_in(audio_hidden_states)
        if cfg.use_keyframes_abs_pos_embedding and video_keyframes_mask is not None:
            marker = (video_keyframes_mask > 0).to(x.dtype)
            x = x + marker * self.keyframes_abs_pos_embedding.to(x.dtype)

        temb, embedded = self.time_embed(timestep, batch, x.dtype)
        temb_audio, audio_embedded = self.audio_time_embed(audio_timestep, batch, a.dtype)
        gate_factor = cfg.cross_attn_timestep_scale_multiplier / cfg.timestep_scale_multiplier
        video_ca_t = audio_sigma if use_cross_timestep else timestep
        audio_ca_t = sigma if use_cross_timestep else audio_timestep
        assert video_ca_t is not None and audio_ca_t is not None
        video_ca_t, audio_ca_t = video_ca_t.flatten(), audio_ca_t.flatten()
        video_ca_mod, _ = self.av_cross_attn_video_scale_shift(video_ca_t, batch, x.dtype)
        video_ca_gate, _ = self.av_cross_attn_video_a2v_gate(video_ca_t * gate_factor, batch, x.dtype)
        audio_ca_mod, _ = self.av_cross_attn_audio_scale_shift(audio_ca_t, batch, a.dtype)
        audio_ca_gate, _ = self.av_cross_attn_audio_v2a_gate(audio_ca_t * gate_factor, batch, a.dtype)
        temb_prompt = temb_prompt_audio = None
        if self.prompt_adaln_on:
            assert sigma is not None and audio_sigma is not None
            temb_prompt, _ = self.prompt_adaln(sigma, batch, x.dtype)
            temb_prompt_audio, _ = self.audio_prompt_adaln(audio_sigma, batch, a.dtype)
        context, audio_context = encoder_hidden_states, audio_encoder_hidden_states
        if cfg.use_prompt_embeddings:
            context = self.caption_projection(context).view(batch, -1, x.shape[-1])
            audio_context = self.audio_caption_projection(audio_context).view(batch, -1, a.shape[-1])

        ctx = _StepContext(
            backend=self.attention_backend, temb=temb, temb_audio=temb_audio,
            video_ca_mod=video_ca_mod, video_ca_gate=video_ca_gate, audio_ca_mod=audio_ca_mod,
            audio_ca_gate=audio_ca_gate,
            context=context, audio_context=audio_context, text_bias=text_bias, audio_text_bias=audio_text_bias,
            self_bias=self_bias, temb_prompt=temb_prompt, temb_prompt_audio=temb_prompt_audio,
            perturbation=perturbation_mask, stg_blocks=stg_blocks, video_rope=video_rope, audio_rope=audio_rope,
            cross_video_rope=cross_video_rope, cross_audio_rope=cross_audio_rope,
            isolate_modalities=isolate_modalities)
        for index, block in enumerate(self.transformer_blocks):
            x, a = block(x, a, ctx, index)

        video = self.proj_out(self._output_norm(x, self.scale_shift_table, embedded))
        audio = self.audio_proj_out(self._output_norm(a, self.audio_scale_shift_table, audio_embedded))
        return video, audio

    @staticmethod
    def _output_norm(x: torch.Tensor, table: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        """Affine-free LayerNorm, then ``* (1 + scale) + shift`` with ``table (2, D) + embedded (B, T, D)``."""
        values = table[None, None] + embedded[:, :, None]
        shift, scale = values[:, :, 0], values[:, :, 1]
        return F.layer_norm(x, (x.shape[-1],), eps=_OUT_NORM_EPS) * (1 + scale) + shift
