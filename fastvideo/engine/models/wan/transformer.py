"""Wan2.1 text- and image-to-video diffusion transformer (DiT), numerically matching diffusers.

Contract
--------
- :class:`WanTransformer3DModel` has the same ``state_dict()`` keys and shapes as diffusers'
  ``WanTransformer3DModel`` for T2V configs, so a diffusers ``transformer/`` safetensors checkpoint
  loads with ``load_state_dict(strict=True)``, for T2V configs and for Wan2.1 I2V / FLF2V configs
  (``image_dim`` and ``added_kv_proj_dim`` both set, ``added_kv_proj_dim`` equal to the model width;
  ``pos_embed_seq_len`` for first-last-frame): the image embedder ``condition_embedder.image_embedder``
  (float32 LayerNorm, GELU MLP, float32 LayerNorm, optional learned ``pos_embed``) and, in every block's
  cross-attention, ``add_k_proj`` / ``add_v_proj`` / ``norm_added_k``. Other combinations raise
  :class:`NotImplementedError` naming the fields. The model owns no buffers (RoPE tables are built lazily),
  so it can be built under ``torch.device("meta")`` and loaded with ``assign=True``.
- ``forward(hidden_states, timestep, encoder_hidden_states)``:

  * ``hidden_states``: ``(B, in_channels, F, H, W)`` latents, channels-first, in the compute dtype
    (the dtype of the patch-embedding weight). ``F, H, W`` must be multiples of ``patch_size``.
  * ``timestep``: ``(B,)`` (or ``(1,)``, broadcast), float or int, on the scale of the scheduler
    (0..1000). It is turned into a float32 sinusoid, as diffusers does. Or per token, ``(B, L)`` (or
    ``(1, L)``) with ``L = F'*H'*W'`` the patch tokens in their order (Wan2.2 TI2V-5B: the first latent
    frame's tokens at 0, the rest at ``t``), as diffusers' forward takes a 2-D timestep: every token gets its
    own time embedding ``temb (B, L, D)`` and block modulation ``(B, L, 6, D)``, broadcast per token in the
    blocks' AdaLN and gates and in the output AdaLN. Per-token steps always run the eager modulation code
    (the fused ops take one modulation per row), and under sequence parallelism the modulation is sharded
    with the tokens.
  * ``encoder_hidden_states``: ``(B, L_text, text_dim)`` text-encoder states in the compute dtype.
  * ``encoder_hidden_states_image``: image-conditioned configs only (required there, refused
    otherwise): ``(B, L_img, image_dim)`` CLIP penultimate hidden states in the compute dtype
    (``L_img = pos_embed_seq_len`` for first-last-frame: both images' tokens, first image first).
    The cross-attention adds an attention of the same queries over the embedded image tokens
    (keys ``norm_added_k(add_k_proj(img))``, values ``add_v_proj(img)``) to the text attention
    before ``to_out``, as diffusers does; the text and image contexts stay separate tensors, so no
    text length is assumed (diffusers splits its concatenation 512 text tokens from the end).
  * returns ``(B, out_channels, F, H, W)`` in the compute dtype (the flow/velocity prediction).

  ``forward`` is ``head(run_blocks(embed(...)))``, and those three are public for step caching
  (:mod:`fastvideo.engine.step_cache`): ``embed`` returns an :class:`EmbeddedStep` (patch-embedded
  tokens, time embedding, the blocks' ``(B, 6, D)`` modulation, text/image context, RoPE), ``run_blocks``
  runs every block (optionally over a subset of batch rows, each row computed as in the whole batch:
  nothing mixes rows), ``head`` the output AdaLN, projection and unpatchify.

  Tokens are ordered frame-major ``(F', H', W')`` after a stride=kernel Conv3d patch embedding;
  the output is unpatchified with the same ordering (patch element layout ``(pt, ph, pw, C)``).
- Precision (mirrors diffusers exactly, so bf16 runs round the same way):

  * float32 always: the timestep sinusoid, the RoPE cos/sin tables (angles in float64), the
    rotation itself (cast back to the q/k dtype afterwards), every LayerNorm (``norm1``, ``norm2``,
    ``norm3``, ``norm_out``) and the AdaLN modulation ``norm(x) * (1 + scale) + shift``, and the
    gated residual adds of the self-attention and FFN branches.
  * compute dtype: all linear layers, the q/k RMSNorm, attention, the FFN, and the (ungated)
    cross-attention residual add.
  * ``time_embedder`` runs in its own parameter dtype; its output ``temb`` is cast to the dtype of
    ``encoder_hidden_states`` (diffusers' ``type_as``) before ``time_proj`` and the output AdaLN.
  * :meth:`WanTransformer3DModel.to_inference_dtype` casts parameters the way diffusers'
    ``from_pretrained(torch_dtype=...)`` does: the components in :data:`KEEP_FP32_COMPONENTS` stay
    float32, everything else takes the compute dtype.
- Attention: every self- and cross-attention goes through :func:`fastvideo.engine.attention.attention`
  with ``(B, L, heads, head_dim)`` tensors and the model's :class:`AttentionBackend` (``sdpa`` by
  default, replaced with :meth:`WanTransformer3DModel.set_attention_backend`). Self-attention q/k
  get RMS norm across all heads (weight over ``heads * head_dim``) then 3D RoPE; cross-attention
  q/k get the RMS norm only.
- 3D RoPE: ``head_dim`` is split into ``(t, h, w)`` parts with ``h = w = 2 * (head_dim // 6)`` and
  ``t = head_dim - h - w``; channel pairs ``(2i, 2i+1)`` are rotated (interleaved convention).
  The tables depend only on the patch grid, so they are computed once per
  ``(F', H', W', device)`` and cached (oldest evicted past :data:`ROPE_CACHE_SIZE` grids), never
  per block.
- Fused ops: by default (``ops is None``) the model runs the code above, which mirrors diffusers
  operation by operation. :meth:`WanTransformer3DModel.set_ops_backend` with an
  :class:`~fastvideo.kernels.fused.OpsBackend` (``select_ops_backend("triton", ...)``) routes the
  q/k RMSNorm, the three AdaLN modulations (``norm1``, ``norm3``, ``norm_out``), the RoPE rotation
  and the two gated residual adds through that backend's single-pass kernels instead. They keep
  the precision rules above (float32 math, one rounding to the activation dtype); the only
  difference is the q/k RMSNorm, which the fused kernel computes in float32 rather than in the
  compute dtype, so bf16 results differ by rounding (tested against a float64 model).
- Sequence parallelism: after :meth:`WanTransformer3DModel.set_sequence_parallel` with a
  :class:`~fastvideo.engine.sequence_parallel.SequenceParallel` (every rank holding the same weights and
  inputs), :meth:`WanTransformer3DModel.run_blocks` shards the patch tokens and their RoPE tables over the
  ranks, runs self-attention as Ulysses all-to-all (cross-attention to the replicated text stays local) and
  all-gathers the tokens before returning, so ``embed`` / ``head`` and callers see full sequences. The result
  equals the single-process forward up to float reordering (tokens % ranks != 0 included: padding is exact).
- ``forward`` has no data-dependent control flow and no host syncs; the only Python branches are
  on shapes/config. Building a RoPE table is kept out of compiled graphs: warm the cache
  (:meth:`WanTransformer3DModel.rope_tables` or one eager forward) per latent shape before
  ``torch.compile(fullgraph=True)`` or CUDA-graph capture.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastvideo.engine.attention import attention
from fastvideo.engine.layers import TwoLayerMLP, timestep_sinusoid
from fastvideo.engine.sequence_parallel import SequenceParallel, SequenceShard
from fastvideo.kernels.fused import OpsBackend
from fastvideo.kernels.registry import AttentionBackend, select_attention_backend

logger = logging.getLogger(__name__)

__all__ = [
    "KEEP_FP32_COMPONENTS",
    "ROPE_CACHE_SIZE",
    "EmbeddedStep",
    "WanDiTConfig",
    "WanTransformer3DModel",
    "apply_rotary_embedding",
    "build_rope_tables",
    "inference_param_dtype",
    "timestep_sinusoid",
]

#: Parameter-name components that stay float32 under :meth:`WanTransformer3DModel.to_inference_dtype`
#: (diffusers' ``_keep_in_fp32_modules`` for Wan, matched on ``name.split(".")``).
KEEP_FP32_COMPONENTS: tuple[str, ...] = ("time_embedder", "scale_shift_table", "norm1", "norm2", "norm3")
#: How many distinct ``(F', H', W', device)`` RoPE table pairs the model keeps.
ROPE_CACHE_SIZE = 8
_ROPE_THETA = 10000.0
_QK_NORM = "rms_norm_across_heads"
_NUM_MODULATIONS = 6  # shift/scale/gate for self-attention, then for the FFN

RopeTables = tuple[torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
@dataclass
class WanDiTConfig:
    """The fields of a diffusers ``WanTransformer3DModel`` ``config.json`` (defaults: diffusers')."""

    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 40
    attention_head_dim: int = 128
    in_channels: int = 16
    out_channels: int | None = 16
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 13824
    num_layers: int = 40
    cross_attn_norm: bool = True
    qk_norm: str | None = _QK_NORM
    eps: float = 1e-6
    image_dim: int | None = None
    added_kv_proj_dim: int | None = None
    rope_max_seq_len: int = 1024
    pos_embed_seq_len: int | None = None

    def __post_init__(self) -> None:
        patch = tuple(int(p) for p in self.patch_size)
        if len(patch) != 3 or min(patch) <= 0:
            raise ValueError(f"patch_size must be three positive ints (t, h, w), got {self.patch_size!r}")
        self.patch_size = patch  # type: ignore[assignment]
        if not self.out_channels:  # diffusers: ``out_channels or in_channels``
            self.out_channels = self.in_channels
        for name in ("num_attention_heads", "attention_head_dim", "in_channels", "text_dim", "freq_dim",
                     "ffn_dim", "rope_max_seq_len"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {self.num_layers!r}")
        if self.attention_head_dim % 2:
            raise ValueError(f"attention_head_dim must be even for RoPE, got {self.attention_head_dim}")

    @property
    def inner_dim(self) -> int:
        """Model width: ``num_attention_heads * attention_head_dim``."""
        return self.num_attention_heads * self.attention_head_dim

    @property
    def rope_axis_dims(self) -> tuple[int, int, int]:
        """Per-axis RoPE channel counts ``(t, h, w)`` (each even, summing to ``attention_head_dim``)."""
        hw = 2 * (self.attention_head_dim // 6)
        return self.attention_head_dim - 2 * hw, hw, hw

    @property
    def is_image_conditioned(self) -> bool:
        """True for I2V/FLF2V configs (an image embedder or added K/V projections)."""
        return self.image_dim is not None or self.added_kv_proj_dim is not None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WanDiTConfig":
        """Build from a diffusers ``config.json`` dict; ``_``-prefixed keys are ignored, unknown keys
        raise :class:`ValueError` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in d.items() if not k.startswith("_")}
        unknown = sorted(k for k in fields if k not in known)
        if unknown:
            raise ValueError(f"unknown WanDiTConfig key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``patch_size`` as a list, like diffusers writes it)."""
        out = dataclasses.asdict(self)
        out["patch_size"] = list(self.patch_size)
        return out


def inference_param_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype a parameter called ``name`` gets when the model computes in ``dtype``."""
    if any(part in KEEP_FP32_COMPONENTS for part in name.split(".")):
        return torch.float32
    return dtype


# --------------------------------------------------------------------------------------------
# Functional pieces
# --------------------------------------------------------------------------------------------
def _axis_angles(dim: int, positions: int, theta: float) -> torch.Tensor:
    """``(positions, dim // 2)`` float64 rotation angles for one RoPE axis."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    return torch.outer(torch.arange(positions, dtype=torch.float64), inv_freq)


def build_rope_tables(
    config: WanDiTConfig,
    grid: tuple[int, int, int],
    device: torch.device | str,
) -> RopeTables:
    """3D RoPE ``(cos, sin)`` for a ``(F', H', W')`` patch grid, each ``(1, F'*H'*W', 1, head_dim // 2)``
    float32 on ``device`` (broadcasts against ``(B, L, heads, head_dim // 2)``)."""
    f, h, w = grid
    if max(grid) > config.rope_max_seq_len:
        raise ValueError(f"patch grid {grid} exceeds rope_max_seq_len={config.rope_max_seq_len}")
    dim_t, dim_h, dim_w = config.rope_axis_dims
    per_axis = (
        _axis_angles(dim_t, f, _ROPE_THETA).view(f, 1, 1, -1),
        _axis_angles(dim_h, h, _ROPE_THETA).view(1, h, 1, -1),
        _axis_angles(dim_w, w, _ROPE_THETA).view(1, 1, w, -1),
    )
    angles = torch.cat([a.expand(f, h, w, -1) for a in per_axis], dim=-1).reshape(1, f * h * w, 1, -1)
    return (angles.cos().to(device=device, dtype=torch.float32),
            angles.sin().to(device=device, dtype=torch.float32))


def apply_rotary_embedding(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(2i, 2i+1)`` of ``x`` ``(B, L, heads, head_dim)``; math in float32,
    result in ``x.dtype``."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.flatten(-2).to(x.dtype)


def _layer_norm_fp32(
    x: torch.Tensor,
    eps: float,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """LayerNorm over the last dim, computed and returned in float32."""
    return F.layer_norm(
        x.float(),
        (x.shape[-1],),
        weight.float() if weight is not None else None,
        bias.float() if bias is not None else None,
        eps,
    )


def _modulated_norm(x: torch.Tensor, eps: float, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN: ``LayerNorm(x) * (1 + scale) + shift`` in float32, returned in ``x.dtype``."""
    return (_layer_norm_fp32(x, eps) * (1 + scale) + shift).to(x.dtype)


# --------------------------------------------------------------------------------------------
# Modules (attribute names follow diffusers' checkpoint keys)
# --------------------------------------------------------------------------------------------
class _ImageEmbedder(nn.Module):
    """CLIP image tokens -> cross-attention image context (diffusers' ``WanImageEmbedding``):
    ``norm2(ff(norm1(x + pos_embed)))``, both LayerNorms affine, computed in float32 (eps 1e-5)."""

    def __init__(self, image_dim: int, dim: int, pos_embed_seq_len: int | None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(image_dim)
        self.ff = _ExactGeluFeedForward(image_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.pos_embed: nn.Parameter | None = None
        if pos_embed_seq_len is not None:
            self.pos_embed = nn.Parameter(torch.zeros(1, pos_embed_seq_len, image_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            x = x + self.pos_embed
        h = _layer_norm_fp32(x, self.norm1.eps, self.norm1.weight, self.norm1.bias).to(x.dtype)
        h = self.ff(h)
        return _layer_norm_fp32(h, self.norm2.eps, self.norm2.weight, self.norm2.bias).to(h.dtype)


class _ConditionEmbedder(nn.Module):
    """Timestep -> (``temb``, per-block modulation); text states -> cross-attention context; CLIP image
    states -> image context (I2V configs)."""

    def __init__(self, config: WanDiTConfig) -> None:
        super().__init__()
        dim = config.inner_dim
        self.freq_dim = config.freq_dim
        self.time_embedder = TwoLayerMLP(config.freq_dim, dim, "silu")
        self.time_proj = nn.Linear(dim, dim * _NUM_MODULATIONS)
        self.text_embedder = TwoLayerMLP(config.text_dim, dim, "gelu_tanh")
        self.image_embedder: _ImageEmbedder | None = None
        if config.image_dim is not None:
            self.image_embedder = _ImageEmbedder(config.image_dim, dim, config.pos_embed_seq_len)

    def forward(self, timestep: torch.Tensor,
                text_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``temb (B, D)``, ``modulation (B, 6, D)`` and ``context (B, L_text, D)``; for a per-token
        ``timestep (B, L)``: ``temb (B, L, D)`` and ``modulation (B, L, 6, D)``."""
        sinusoid = timestep_sinusoid(timestep.flatten(), self.freq_dim).unflatten(0, timestep.shape)
        temb = self.time_embedder(sinusoid.to(self.time_embedder.linear_1.weight.dtype)).to(text_states.dtype)
        modulation = self.time_proj(F.silu(temb)).unflatten(-1, (_NUM_MODULATIONS, -1))
        return temb, modulation, self.text_embedder(text_states)


class _Attention(nn.Module):
    """Multi-head attention with RMS q/k norm across heads; K/V come from ``kv_states``."""

    def __init__(self, dim: int, heads: int, eps: float, added_kv_proj_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        # I2V cross-attention: keys/values over the embedded image tokens (diffusers' names).
        self.add_k_proj: nn.Linear | None = None
        self.add_v_proj: nn.Linear | None = None
        self.norm_added_k: nn.RMSNorm | None = None
        if added_kv_proj_dim is not None:
            self.add_k_proj = nn.Linear(added_kv_proj_dim, dim)
            self.add_v_proj = nn.Linear(added_kv_proj_dim, dim)
            self.norm_added_k = nn.RMSNorm(dim, eps=eps)

    def _rms(self, norm: nn.RMSNorm, x: torch.Tensor, ops: OpsBackend | None) -> torch.Tensor:
        if ops is None:
            return norm(x)
        eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
        return ops.rms_norm(x, norm.weight, eps)

    def forward(
        self,
        x: torch.Tensor,
        kv_states: torch.Tensor,
        backend: AttentionBackend,
        rope: RopeTables | None = None,
        ops: OpsBackend | None = None,
        image_states: torch.Tensor | None = None,
        sp: SequenceShard | None = None,
    ) -> torch.Tensor:
        q = self._rms(self.norm_q, self.to_q(x), ops).unflatten(2, (self.heads, -1))
        k = self._rms(self.norm_k, self.to_k(kv_states), ops).unflatten(2, (self.heads, -1))
        v = self.to_v(kv_states).unflatten(2, (self.heads, -1))
        if rope is not None:
            rotate = apply_rotary_embedding if ops is None else ops.apply_rope
            q = rotate(q, *rope)
            k = rotate(k, *rope)
        out = attention(q, k, v, backend, sp).flatten(2, 3).to(q.dtype)
        if image_states is not None:
            assert self.add_k_proj is not None and self.add_v_proj is not None and self.norm_added_k is not None
            k_img = self._rms(self.norm_added_k, self.add_k_proj(image_states), ops).unflatten(2, (self.heads, -1))
            v_img = self.add_v_proj(image_states).unflatten(2, (self.heads, -1))
            out = out + attention(q, k_img, v_img, backend).flatten(2, 3).to(q.dtype)
        return self.to_out[0](out)


class _GeluTanhProj(nn.Module):
    """``gelu_tanh(proj(x))`` (diffusers' ``GELU`` activation-projection)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class _ExactGelu(nn.Module):
    """``gelu(proj(x))`` with the exact (erf) GELU (diffusers' ``GELU``, ``approximate="none"``)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x))


class _ExactGeluFeedForward(nn.Module):
    """``net.2(gelu(net.0.proj(x)))`` with hidden width ``in_dim`` (diffusers' ``FeedForward(mult=1,
    activation_fn="gelu")``, the image embedder's MLP); ``net.1`` is the dropout slot."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([_ExactGelu(in_dim, in_dim), nn.Identity(), nn.Linear(in_dim, out_dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class _FeedForward(nn.Module):
    """``net.2(gelu_tanh(net.0.proj(x)))``; ``net.1`` is a parameter-free slot (diffusers' dropout)
    kept only so the checkpoint indices line up."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GeluTanhProj(dim, hidden_dim), nn.Identity(), nn.Linear(hidden_dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class _WanBlock(nn.Module):
    """AdaLN self-attention (with RoPE) -> cross-attention to text -> AdaLN FFN."""

    def __init__(self, config: WanDiTConfig) -> None:
        super().__init__()
        dim = config.inner_dim
        self.eps = config.eps
        self.attn1 = _Attention(dim, config.num_attention_heads, config.eps)
        self.attn2 = _Attention(dim, config.num_attention_heads, config.eps, config.added_kv_proj_dim)
        # norm1/norm3/norm_out are affine-free and live in the forward; norm2 has weights if enabled.
        self.norm2: nn.LayerNorm | None = nn.LayerNorm(dim, eps=config.eps) if config.cross_attn_norm else None
        self.ffn = _FeedForward(dim, config.ffn_dim)
        self.scale_shift_table = nn.Parameter(torch.randn(1, _NUM_MODULATIONS, dim) / dim**0.5)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        modulation: torch.Tensor,
        rope: RopeTables,
        backend: AttentionBackend,
        ops: OpsBackend | None = None,
        image_context: torch.Tensor | None = None,
        sp: SequenceShard | None = None,
    ) -> torch.Tensor:
        """``x (B, L, D)``, ``context (B, L_text, D)``, ``modulation (B, 6, D)`` or per token ``(B, L, 6, D)``
        (``image_context (B, L_img, D)``: I2V) -> ``(B, L, D)``; with ``sp``, ``x``, ``rope`` (and a per-token
        modulation) are this rank's token shard."""
        if modulation.ndim == 4:  # per-token timesteps (Wan2.2 TI2V): (B, L, 6, D) -> six (B, L, D)
            shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (
                t.squeeze(2) for t in (self.scale_shift_table.unsqueeze(0) + modulation.float()).chunk(
                    _NUM_MODULATIONS, dim=2))
            ops = None  # the fused kernels take one modulation per row
        else:
            shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (
                self.scale_shift_table + modulation.float()).chunk(_NUM_MODULATIONS, dim=1)
        if ops is not None:
            return self._forward_fused(x, context, rope, backend, ops, (shift_sa, scale_sa, gate_sa, shift_ff,
                                                                        scale_ff, gate_ff), image_context, sp)

        h = _modulated_norm(x, self.eps, shift_sa, scale_sa)
        x = (x.float() + self.attn1(h, h, backend, rope, sp=sp) * gate_sa).to(x.dtype)

        if self.norm2 is not None:
            h = _layer_norm_fp32(x, self.eps, self.norm2.weight, self.norm2.bias).to(x.dtype)
        else:
            h = x
        x = x + self.attn2(h, context, backend, image_states=image_context)

        h = _modulated_norm(x, self.eps, shift_ff, scale_ff)
        return (x.float() + self.ffn(h).float() * gate_ff).to(x.dtype)

    def _forward_fused(self, x: torch.Tensor, context: torch.Tensor, rope: RopeTables, backend: AttentionBackend,
                       ops: OpsBackend, mods: tuple[torch.Tensor, ...],
                       image_context: torch.Tensor | None = None, sp: SequenceShard | None = None) -> torch.Tensor:
        """The same block with norms, modulation, RoPE and gated residuals through ``ops``."""
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = mods
        h = ops.layer_norm_modulate(x, scale_sa, shift_sa, self.eps)
        x = ops.gated_residual(x, self.attn1(h, h, backend, rope, ops, sp=sp), gate_sa)
        if self.norm2 is not None:
            h = _layer_norm_fp32(x, self.eps, self.norm2.weight, self.norm2.bias).to(x.dtype)
        else:
            h = x
        x = x + self.attn2(h, context, backend, None, ops, image_context)
        h = ops.layer_norm_modulate(x, scale_ff, shift_ff, self.eps)
        return ops.gated_residual(x, self.ffn(h), gate_ff)


@dataclass
class EmbeddedStep:
    """One DiT step's state between :meth:`WanTransformer3DModel.embed` and the blocks (see the module doc).

    ``x`` ``(B, L, D)`` the patch-embedded latents; ``temb`` ``(B, D)`` (per-token timesteps: ``(B, L, D)``) the
    time embedding (the output AdaLN reads it); ``modulation`` ``(B, 6, D)`` (per token: ``(B, L, 6, D)``) the
    blocks' timestep modulation (``time_proj(silu(temb))``, what a TeaCache
    decision compares between steps); ``context`` / ``image_context`` the embedded text (and image) tokens; the
    RoPE tables and the patch grid."""

    x: torch.Tensor
    temb: torch.Tensor
    modulation: torch.Tensor
    context: torch.Tensor
    image_context: torch.Tensor | None
    rope: RopeTables
    grid: tuple[int, int, int]


class WanTransformer3DModel(nn.Module):
    """Wan2.1 T2V / I2V DiT; checkpoint-compatible with diffusers' class of the same name (see module doc)."""

    def __init__(self, config: WanDiTConfig, attention_backend: AttentionBackend | None = None) -> None:
        super().__init__()
        if config.is_image_conditioned and (config.image_dim is None
                                            or config.added_kv_proj_dim != config.inner_dim):
            raise NotImplementedError(
                f"image-conditioned config with image_dim={config.image_dim}, added_kv_proj_dim="
                f"{config.added_kv_proj_dim}: Wan2.1 I2V sets both, added_kv_proj_dim equal to the model width "
                f"({config.inner_dim}); other combinations are not supported")
        if config.qk_norm != _QK_NORM:
            raise NotImplementedError(
                f"qk_norm={config.qk_norm!r} is not supported; Wan checkpoints use {_QK_NORM!r} "
                "(and diffusers applies that norm whatever this field says)")
        self.config = config
        dim = config.inner_dim
        assert config.out_channels is not None  # __post_init__ resolves None to in_channels
        self.patch_embedding = nn.Conv3d(config.in_channels, dim, kernel_size=config.patch_size,
                                         stride=config.patch_size)
        self.condition_embedder = _ConditionEmbedder(config)
        self.blocks = nn.ModuleList([_WanBlock(config) for _ in range(config.num_layers)])
        self.proj_out = nn.Linear(dim, config.out_channels * math.prod(config.patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

        if attention_backend is None:
            attention_backend = select_attention_backend(
                "sdpa", dtype=torch.float32, head_dim=config.attention_head_dim, device="cpu")
        self.attention_backend: AttentionBackend = attention_backend
        #: Fused-ops backend (None: the diffusers-mirroring eager code); see set_ops_backend.
        self.ops: OpsBackend | None = None
        self._rope_cache: OrderedDict[tuple[int, int, int, torch.device], RopeTables] = OrderedDict()
        #: Ranks sharing each forward along the token sequence (None: this process alone).
        self.sequence_parallel: SequenceParallel | None = None

    # ---------------------------------------------------------------- setup helpers
    def set_attention_backend(self, backend: AttentionBackend) -> None:
        """Route every attention call through ``backend`` (pick it with ``select_attention_backend``)."""
        if not isinstance(backend, AttentionBackend):
            raise TypeError(f"expected an AttentionBackend, got {type(backend).__name__}")
        logger.info("WanTransformer3DModel attention backend: %s", backend.name)
        self.attention_backend = backend

    def set_ops_backend(self, ops: OpsBackend | None) -> None:
        """Route norms, modulation, RoPE and gated residuals through ``ops`` (pick it with
        ``fastvideo.kernels.fused.select_ops_backend``); ``None`` restores the eager code."""
        if ops is not None and not isinstance(ops, OpsBackend):
            raise TypeError(f"expected an OpsBackend or None, got {type(ops).__name__}")
        logger.info("WanTransformer3DModel fused ops: %s", ops.name if ops is not None else "eager (none)")
        self.ops = ops

    def set_sequence_parallel(self, sp: SequenceParallel | None) -> None:
        """Share each forward with the ranks of ``sp`` (Ulysses; see the module doc); ``None`` runs alone.
        Raises :class:`~fastvideo.engine.sequence_parallel.SequenceParallelError` when the heads do not split
        evenly over the ranks."""
        if sp is not None:
            sp.check_heads(self.config.num_attention_heads)
            logger.info("WanTransformer3DModel sequence parallel: rank %d of %d", sp.rank, sp.world_size)
        self.sequence_parallel = sp if sp is not None and sp.world_size > 1 else None

    def to_inference_dtype(self, dtype: torch.dtype) -> "WanTransformer3DModel":
        """Cast parameters like diffusers' ``from_pretrained(torch_dtype=dtype)``: the
        :data:`KEEP_FP32_COMPONENTS` stay float32, the rest become ``dtype``. Returns ``self``."""
        with torch.no_grad():
            for name, param in self.named_parameters():
                target = inference_param_dtype(name, dtype)
                if param.dtype != target:
                    param.data = param.data.to(target)
        return self

    def rope_tables(self, grid: tuple[int, int, int], device: torch.device | str) -> RopeTables:
        """Cached RoPE ``(cos, sin)`` for a ``(F', H', W')`` patch grid (see :func:`build_rope_tables`).

        A cache hit is a plain dict lookup (traceable by ``torch.compile``); a miss builds the tables
        eagerly outside any graph, so warm the cache (or run one eager forward) for each latent shape
        before compiling with ``fullgraph=True`` or capturing a CUDA graph."""
        key = (*grid, torch.device(device))
        tables = self._rope_cache.get(key)
        if tables is None:
            tables = self._build_rope_tables(key)
        return tables

    def step_constants(self, latents: torch.Tensor) -> RopeTables:
        """Device tensors a forward at ``latents``' shape reads besides parameters and inputs (the RoPE
        tables of its grid): a captured CUDA graph keeps them alive, so the RoPE cache evicting them
        cannot free memory the graph reads."""
        pt, ph, pw = self.config.patch_size
        _, _, frames, height, width = latents.shape
        return self.rope_tables((frames // pt, height // ph, width // pw), latents.device)

    @torch.compiler.disable
    def _build_rope_tables(self, key: tuple[int, int, int, torch.device]) -> RopeTables:
        grid, device = key[:3], key[3]
        logger.debug("building RoPE tables for grid %s on %s", grid, device)
        tables = build_rope_tables(self.config, grid, device)
        self._rope_cache[key] = tables
        while len(self._rope_cache) > ROPE_CACHE_SIZE:  # evict the oldest grid
            self._rope_cache.popitem(last=False)
        return tables

    def _check_inputs(self, hidden_states: torch.Tensor, timestep: torch.Tensor,
                      encoder_hidden_states: torch.Tensor, image: torch.Tensor | None) -> None:
        cfg = self.config
        if cfg.is_image_conditioned:
            tokens = cfg.pos_embed_seq_len
            if (image is None or image.ndim != 3 or image.shape[0] != hidden_states.shape[0]
                    or image.shape[2] != cfg.image_dim or (tokens is not None and image.shape[1] != tokens)):
                raise ValueError(f"this image-to-video DiT needs encoder_hidden_states_image of shape "
                                 f"({hidden_states.shape[0]}, {tokens or 'L_img'}, {cfg.image_dim}), got "
                                 f"{None if image is None else tuple(image.shape)}")
        elif image is not None:
            raise ValueError("encoder_hidden_states_image was given to a text-to-video DiT (no image_dim)")
        if hidden_states.ndim != 5 or hidden_states.shape[1] != cfg.in_channels:
            raise ValueError(f"hidden_states must be (B, {cfg.in_channels}, F, H, W), "
                             f"got {tuple(hidden_states.shape)}")
        bad = [(n, s, p) for n, s, p in zip("FHW", hidden_states.shape[2:], cfg.patch_size) if s % p]
        if bad:
            raise ValueError(f"latent sizes must be multiples of patch_size {cfg.patch_size}: {bad}")
        batch = hidden_states.shape[0]
        f, h, w = hidden_states.shape[2:]
        tokens = (f // cfg.patch_size[0]) * (h // cfg.patch_size[1]) * (w // cfg.patch_size[2])
        if not ((timestep.ndim == 1 and timestep.shape[0] in (1, batch))
                or (timestep.ndim == 2 and timestep.shape[0] in (1, batch) and timestep.shape[1] == tokens)):
            raise ValueError(f"timestep must have shape ({batch},) or (1,), or per token ({batch}, {tokens}) or "
                             f"(1, {tokens}), got {tuple(timestep.shape)}")
        if (encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch
                or encoder_hidden_states.shape[2] != cfg.text_dim):
            raise ValueError(f"encoder_hidden_states must be ({batch}, L, {cfg.text_dim}), "
                             f"got {tuple(encoder_hidden_states.shape)}")

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, C_in, F, H, W)``, ``(B,)`` or per token ``(B, F'*H'*W')``, ``(B, L_text, text_dim)`` (I2V:
        ``(B, L_img, image_dim)``) -> ``(B, C_out, F, H, W)``; the same as ``head(run_blocks(embed(...)), ...)``."""
        step = self.embed(hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image)
        return self.head(self.run_blocks(step), step)

    def embed(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
    ) -> "EmbeddedStep":
        """The forward up to the first block: patch embedding, time/text (and image) embeddings, RoPE."""
        self._check_inputs(hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image)
        batch, _, frames, height, width = hidden_states.shape
        pt, ph, pw = self.config.patch_size
        grid = (frames // pt, height // ph, width // pw)
        rope = self.rope_tables(grid, hidden_states.device)

        x = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()  # (B, L, D)
        temb, modulation, context = self.condition_embedder(timestep, encoder_hidden_states)
        image_context = None
        if encoder_hidden_states_image is not None:
            assert self.condition_embedder.image_embedder is not None  # _check_inputs
            image_context = self.condition_embedder.image_embedder(encoder_hidden_states_image)
        return EmbeddedStep(x, temb, modulation, context, image_context, rope, grid)

    def run_blocks(self, step: "EmbeddedStep", rows: torch.Tensor | None = None) -> torch.Tensor:
        """All transformer blocks over ``step.x`` (``(B, L, D)`` -> ``(B, L, D)``); with ``rows`` (a 1-D index
        tensor) over those batch rows only (-> ``(len(rows), L, D)``), each row computed as in the full batch."""
        x, context, modulation, image_context = step.x, step.context, step.modulation, step.image_context
        if rows is not None:
            x, context = x[rows], context[rows]
            modulation = modulation[rows] if modulation.shape[0] > 1 else modulation  # (1,) timestep: broadcast
            image_context = image_context[rows] if image_context is not None else None
        backend, ops, rope = self.attention_backend, self.ops, step.rope
        shard = self.sequence_parallel.plan(x.shape[1]) if self.sequence_parallel is not None else None
        if shard is not None:
            x = shard.scatter(x)
            rope = (shard.scatter(rope[0]), shard.scatter(rope[1]))
            if modulation.ndim == 4:  # per-token modulation follows its tokens
                modulation = shard.scatter(modulation.expand(x.shape[0], -1, -1, -1))
        for block in self.blocks:
            x = block(x, context, modulation, rope, backend, ops, image_context, shard)
        return shard.gather(x) if shard is not None else x

    def head(self, x: torch.Tensor, step: "EmbeddedStep") -> torch.Tensor:
        """Output AdaLN, projection and unpatchify of the blocks' output ``x`` ``(B, L, D)``
        -> ``(B, C_out, F, H, W)``."""
        if step.temb.ndim == 3:  # per-token timesteps: (B, L, D) -> shift/scale (B, L, D), eager code only
            shift, scale = (t.squeeze(2) for t in (self.scale_shift_table.unsqueeze(0)
                                                   + step.temb.unsqueeze(2)).chunk(2, dim=2))
            return self._unpatchify(self.proj_out(_modulated_norm(x, self.config.eps, shift, scale)), x.shape[0],
                                    step.grid)
        shift, scale = (self.scale_shift_table + step.temb.unsqueeze(1)).chunk(2, dim=1)
        if self.ops is None:
            x = self.proj_out(_modulated_norm(x, self.config.eps, shift, scale))
        else:
            x = self.proj_out(self.ops.layer_norm_modulate(x, scale, shift, self.config.eps))
        return self._unpatchify(x, x.shape[0], step.grid)

    def _unpatchify(self, x: torch.Tensor, batch: int, grid: tuple[int, int, int]) -> torch.Tensor:
        """``(B, F'*H'*W', pt*ph*pw*C)`` -> ``(B, C, F'*pt, H'*ph, W'*pw)``."""
        f, h, w = grid
        pt, ph, pw = self.config.patch_size
        c = self.config.out_channels
        assert c is not None  # WanDiTConfig.__post_init__ resolves None to in_channels
        x = x.reshape(batch, f, h, w, pt, ph, pw, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(batch, c, f * pt, h * ph, w * pw)
