"""Fused DiT ops (q/k RMSNorm, AdaLN modulation, 3D RoPE, gated residual), chosen once per model.

Contract:
- Four ops, each with a torch reference here and a Triton twin in :mod:`fastvideo.kernels.fused_triton`
  with the same signature and numerics (float32 math, one rounding to ``x.dtype``; the result has
  ``x``'s shape and dtype; the references compute in float64 when ``x`` is float64):

  * ``rms_norm(x, weight, eps)``: ``x * rsqrt(mean(x^2, -1) + eps) * weight``; x ``(..., N)``,
    weight ``(N,)``. (Wan's q/k norm: ``N = heads * head_dim``; matches ``F.rms_norm``.)
  * ``layer_norm_modulate(x, scale, shift, eps)``: ``LayerNorm(x) * (1 + scale) + shift``, LayerNorm
    without affine; x ``(B, L, C)``, scale/shift ``(C,)``, ``(B, C)``, ``(B, 1, C)`` or
    ``(B, L, C)`` (any float dtype, typically float32).
  * ``apply_rope(x, cos, sin)``: rotates interleaved channel pairs ``(2i, 2i+1)`` of x
    ``(B, L, H, D)``: ``out[2i] = x[2i] cos_i - x[2i+1] sin_i``, ``out[2i+1] = x[2i] sin_i +
    x[2i+1] cos_i``; cos/sin hold ``(L, D/2)`` values (``(L, D/2)`` or ``(1, L, 1, D/2)``). From
    diffusers' repeat-interleaved ``(1, L, 1, D)`` tables use ``freqs_cos[..., 0::2]`` and
    ``freqs_sin[..., 1::2]`` (what its ``apply_rotary_emb`` does).
  * ``gated_residual(x, y, gate)``: ``x + y * gate``; x, y ``(B, L, C)``, gate broadcastable like
    scale above.
- :func:`select_ops_backend` is called once at model load and returns an :class:`OpsBackend`
  (``torch``: the references; ``triton``: the ``torch.ops.fastvideo.*`` custom ops). An unknown
  name or a configuration the backend cannot run raises :class:`OpsBackendError` with the reason;
  there is no silent fallback.
- The Triton ops are ``torch.library`` custom ops (``fastvideo::rms_norm``,
  ``fastvideo::layer_norm_modulate``, ``fastvideo::apply_rope``, ``fastvideo::gated_residual``)
  with fake implementations, so ``torch.compile(fullgraph=True)``/``torch.export`` trace them as
  single nodes. Importing this module does not import triton; the ops do on first call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from fastvideo.api.errors import FastVideoError

logger = logging.getLogger(__name__)

__all__ = [
    "OPS_BACKENDS", "OpsBackend", "OpsBackendError", "apply_rope", "apply_rope_ref", "gated_residual",
    "gated_residual_ref", "layer_norm_modulate", "layer_norm_modulate_ref", "ops_backend_check", "rms_norm",
    "rms_norm_ref", "select_ops_backend",
]

#: Names accepted by :func:`select_ops_backend`.
OPS_BACKENDS: tuple[str, ...] = ("torch", "triton")


# ------------------------------------------------------------------------------- references
# Math in float32 (float64 when x is float64, so the tests can use these as exact references).
def _math_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Reference RMSNorm over the last dim (float32 math, result in ``x.dtype``)."""
    xf = x.to(_math_dtype(x))
    out = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps) * weight.to(xf.dtype)
    return out.to(x.dtype)


def layer_norm_modulate_ref(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    """Reference ``LayerNorm(x) * (1 + scale) + shift`` (float32 math, result in ``x.dtype``)."""
    dt = _math_dtype(x)
    scale, shift = _as_modulation(scale).to(dt), _as_modulation(shift).to(dt)
    normed = F.layer_norm(x.to(dt), (x.shape[-1],), eps=eps)
    return (normed * (1 + scale) + shift).to(x.dtype)


def apply_rope_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Reference interleaved-pair rotation of x ``(B, L, H, D)`` (float32 math, result in ``x.dtype``)."""
    dt = _math_dtype(x)
    length, half = x.shape[1], x.shape[-1] // 2
    c = cos.reshape(length, 1, half).to(dt)
    s = sin.reshape(length, 1, half).to(dt)
    x1, x2 = x.to(dt).unflatten(-1, (half, 2)).unbind(-1)
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2).to(x.dtype)


def gated_residual_ref(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Reference ``x + y * gate`` (float32 math, result in ``x.dtype``)."""
    dt = _math_dtype(x)
    return (x.to(dt) + y.to(dt) * _as_modulation(gate).to(dt)).to(x.dtype)


def _as_modulation(t: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` modulation -> ``(B, 1, C)`` so it broadcasts over the sequence."""
    return t.unsqueeze(1) if t.dim() == 2 else t


# ------------------------------------------------------------------------------- custom ops
# Schemas are inferred from the annotations; these functions are only entry points (the kernels
# and their argument checks live in fused_triton).
def _fused_triton():  # noqa: ANN202 - module type
    from fastvideo.kernels import fused_triton

    return fused_triton


@torch.library.custom_op("fastvideo::rms_norm", mutates_args=())
def _rms_norm_op(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _fused_triton().rms_norm_triton(x, weight, eps)


@torch.library.custom_op("fastvideo::layer_norm_modulate", mutates_args=())
def _layer_norm_modulate_op(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    return _fused_triton().layer_norm_modulate_triton(x, scale, shift, eps)


@torch.library.custom_op("fastvideo::apply_rope", mutates_args=())
def _apply_rope_op(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return _fused_triton().apply_rope_triton(x, cos, sin)


@torch.library.custom_op("fastvideo::gated_residual", mutates_args=())
def _gated_residual_op(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    return _fused_triton().gated_residual_triton(x, y, gate)


@_rms_norm_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    torch._check(weight.dim() == 1 and weight.shape[0] == x.shape[-1], lambda: "weight must be (x.shape[-1],)")
    return x.new_empty(x.shape)


@_layer_norm_modulate_op.register_fake
def _(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    torch._check(x.dim() == 3, lambda: "x must be (batch, seq, channels)")
    return x.new_empty(x.shape)


@_apply_rope_op.register_fake
def _(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    torch._check(x.dim() == 4, lambda: "x must be (batch, seq, heads, head_dim)")
    torch._check(cos.numel() == x.shape[1] * (x.shape[3] // 2), lambda: "cos must hold (L, D/2) values")
    return x.new_empty(x.shape)


@_gated_residual_op.register_fake
def _(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    torch._check(x.dim() == 3 and y.shape == x.shape, lambda: "x and y must both be (batch, seq, channels)")
    return x.new_empty(x.shape)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``torch.ops.fastvideo.rms_norm`` (Triton)."""
    return _rms_norm_op(x, weight, eps)


def layer_norm_modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    """``torch.ops.fastvideo.layer_norm_modulate`` (Triton)."""
    return _layer_norm_modulate_op(x, scale, shift, eps)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``torch.ops.fastvideo.apply_rope`` (Triton)."""
    return _apply_rope_op(x, cos, sin)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``torch.ops.fastvideo.gated_residual`` (Triton)."""
    return _gated_residual_op(x, y, gate)


# ------------------------------------------------------------------------------- dispatcher
class OpsBackendError(FastVideoError, ValueError):
    """Raised when a requested fused-ops backend cannot be used."""


@dataclass(frozen=True)
class OpsBackend:
    """The four fused ops of one implementation; pick it once with :func:`select_ops_backend`."""

    name: str
    rms_norm: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    layer_norm_modulate: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
    apply_rope: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    gated_residual: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


TORCH_OPS = OpsBackend("torch", rms_norm_ref, layer_norm_modulate_ref, apply_rope_ref, gated_residual_ref)
TRITON_OPS = OpsBackend("triton", rms_norm, layer_norm_modulate, apply_rope, gated_residual)


def ops_backend_check(name: str, *, dtype: torch.dtype, device: torch.device | str) -> str | None:
    """Why backend ``name`` cannot run activations of ``dtype`` on ``device``; ``None`` if it can."""
    if name == "torch":
        return None
    if name == "triton":
        try:
            fused_triton = _fused_triton()
        except ImportError as exc:
            return f"the 'triton' package is not importable ({exc}); install it with `pip install triton`"
        return fused_triton.fused_check(dtype, torch.device(device))
    return f"unknown ops backend {name!r}; choose one of {list(OPS_BACKENDS)}"


def select_ops_backend(name: str | None, *, dtype: torch.dtype, device: torch.device | str) -> OpsBackend:
    """Pick the fused-ops backend once, at model load (``None`` -> ``torch``); raise with the reason
    when it cannot run."""
    chosen = (name or "torch").strip().lower()
    if chosen not in OPS_BACKENDS:
        raise OpsBackendError(f"unknown ops backend {chosen!r}; choose one of {list(OPS_BACKENDS)}")
    reason = ops_backend_check(chosen, dtype=dtype, device=device)
    if reason is not None:
        raise OpsBackendError(f"ops backend {chosen!r} rejected: {reason}")
    logger.info("fused ops backend: %s", chosen)
    return TRITON_OPS if chosen == "triton" else TORCH_OPS
