"""Triton kernels of the fused DiT ops; same signatures as the torch references in
:mod:`fastvideo.kernels.fused`.

Contract (each function):
- Math in float32, one rounding to the output dtype at the end (== the references). The output is
  a new contiguous tensor of ``x.dtype`` and ``x.shape`` unless ``out=`` is given (same shape and
  dtype, any strides; written in place; the tests pass NaN-filled buffers).
- Inputs: any strides for the per-row tensors (copied only when the last dim is not unit-stride);
  modulation/gate tensors may be broadcast (stride 0) views.
- Devices: CUDA (bf16/fp16/fp32), or CPU under ``TRITON_INTERPRET=1`` (tests). :func:`fused_check`
  says why a configuration cannot run.
- Launches go through :class:`~fastvideo.kernels.triton_utils.KernelLaunch` (device guard; ahead-of-time
  planning on ``meta`` tensors).
- Kernels: one program per row (``B*L`` rows) for the norms, per (row, channel block) for the gated
  residual, per (token, head block) for RoPE. No autotuning: row tiles are the next power of two
  of the row length, warps grow with it.
"""

import logging

import torch
import triton
import triton.language as tl

from fastvideo.kernels.triton_utils import (KernelLaunch, interpreter_mode_error, is_interpreted, next_power_of_2,
                                            rne_bf16, row_num_warps, row_sum, soft_bf16, triton_device_reason)

logger = logging.getLogger(__name__)

_FUSED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_GATED_BLOCK = 1024


@triton.jit
def _store_rounded(ptrs, y, mask, SOFT_BF16: tl.constexpr):
    if SOFT_BF16:
        y = rne_bf16(y)
    tl.store(ptrs, y.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_kernel(X, W, Y, stride_xr, stride_yr, N, eps,
                     BLOCK: tl.constexpr, SOFT_BF16: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * stride_xr + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.math.rsqrt(row_sum(x * x, 0) / N + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    _store_rounded(Y + row * stride_yr + cols, x * rstd * w, mask, SOFT_BF16)


@triton.jit
def _ln_modulate_kernel(X, SCALE, SHIFT, Y, L, stride_xr, stride_yr,
                        stride_sb, stride_sl, stride_sc, stride_hb, stride_hl, stride_hc, N, eps,
                        BLOCK: tl.constexpr, SOFT_BF16: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    b = row // L
    pos = row % L
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * stride_xr + cols, mask=mask, other=0.0).to(tl.float32)
    mean = row_sum(x, 0) / N
    xc = tl.where(mask, x - mean, 0.0)
    rstd = tl.math.rsqrt(row_sum(xc * xc, 0) / N + eps)
    scale = tl.load(SCALE + b * stride_sb + pos * stride_sl + cols * stride_sc, mask=mask, other=0.0)
    shift = tl.load(SHIFT + b * stride_hb + pos * stride_hl + cols * stride_hc, mask=mask, other=0.0)
    y = xc * rstd * (1.0 + scale.to(tl.float32)) + shift.to(tl.float32)
    _store_rounded(Y + row * stride_yr + cols, y, mask, SOFT_BF16)


@triton.jit
def _gated_residual_kernel(X, R, G, Y, L, stride_xr, stride_rr, stride_yr,
                           stride_gb, stride_gl, stride_gc, N,
                           BLOCK: tl.constexpr, SOFT_BF16: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < N
    b = row // L
    pos = row % L
    x = tl.load(X + row * stride_xr + cols, mask=mask, other=0.0).to(tl.float32)
    r = tl.load(R + row * stride_rr + cols, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + b * stride_gb + pos * stride_gl + cols * stride_gc, mask=mask, other=0.0)
    _store_rounded(Y + row * stride_yr + cols, x + r * g.to(tl.float32), mask, SOFT_BF16)


@triton.jit
def _rope_kernel(X, COS, SIN, Y, L, H, HALF,
                 stride_xb, stride_xl, stride_xh, stride_xd,
                 stride_yb, stride_yl, stride_yh, stride_yd,
                 stride_cl, stride_cj, stride_sl, stride_sj,
                 BLOCK_H: tl.constexpr, BLOCK_J: tl.constexpr, SOFT_BF16: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    b = token // L
    pos = token % L
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_j = tl.arange(0, BLOCK_J)
    mask_j = offs_j < HALF
    mask = (offs_h < H)[:, None] & mask_j[None, :]
    x_even = X + b * stride_xb + pos * stride_xl + offs_h[:, None] * stride_xh + (2 * offs_j)[None, :] * stride_xd
    x1 = tl.load(x_even, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_even + stride_xd, mask=mask, other=0.0).to(tl.float32)
    cos = tl.load(COS + pos * stride_cl + offs_j * stride_cj, mask=mask_j, other=0.0).to(tl.float32)[None, :]
    sin = tl.load(SIN + pos * stride_sl + offs_j * stride_sj, mask=mask_j, other=0.0).to(tl.float32)[None, :]
    y_even = Y + b * stride_yb + pos * stride_yl + offs_h[:, None] * stride_yh + (2 * offs_j)[None, :] * stride_yd
    _store_rounded(y_even, x1 * cos - x2 * sin, mask, SOFT_BF16)
    _store_rounded(y_even + stride_yd, x1 * sin + x2 * cos, mask, SOFT_BF16)


#: True when this module's kernels were built for the Triton interpreter (TRITON_INTERPRET=1).
INTERPRETED: bool = is_interpreted(_rms_norm_kernel)
_MODE_ERROR: str | None = interpreter_mode_error(_rms_norm_kernel)


def fused_check(dtype: torch.dtype, device: torch.device) -> str | None:
    """Why the Triton fused ops cannot run on ``device`` with activations of ``dtype``, or ``None``."""
    return _MODE_ERROR or triton_device_reason(dtype, torch.device(device), interpreted=INTERPRETED,
                                               cuda_dtypes=_FUSED_DTYPES)


def _require(x: torch.Tensor, *others: torch.Tensor) -> None:
    reason = fused_check(x.dtype, x.device)
    if reason is not None:
        raise ValueError(f"triton fused op cannot run: {reason}")
    for t in others:
        if t.device != x.device:
            raise ValueError(f"all tensors must be on {x.device}, got one on {t.device}")


def _output(x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    if out is None:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"out must be {tuple(x.shape)} {x.dtype} on {x.device}, got "
                         f"{tuple(out.shape)} {out.dtype} on {out.device}")
    return out


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``(..., N)`` -> ``(R, N)`` with unit stride on N (a view when possible)."""
    rows = t.reshape(-1, t.shape[-1])
    return rows if rows.stride(1) == 1 or rows.shape[1] == 1 else rows.contiguous()


def _as_row_writer(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A ``(R, N)`` unit-stride view of ``out`` to write, plus ``out`` itself when a copy-back is
    needed (``out`` not viewable that way)."""
    try:
        rows = out.view(-1, out.shape[-1])
        if rows.stride(1) == 1 or rows.shape[1] == 1:
            return rows, None
    except RuntimeError:
        pass
    return torch.empty(out.shape, dtype=out.dtype, device=out.device).view(-1, out.shape[-1]), out


def _finish(rows: torch.Tensor, target: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    if target is None:
        return rows.view(shape)
    target.copy_(rows.view(shape))
    return target


def _broadcast_3d(t: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """Expand a modulation tensor (``(C,)``, ``(B|1, C)``, ``(B|1, 1|L, C)``) to x's ``(B, L, C)``."""
    b, length, c = x.shape
    if t.dim() == 2:
        t = t.unsqueeze(1)
    try:
        return t.expand(b, length, c)
    except RuntimeError as exc:
        raise ValueError(f"{name} {tuple(t.shape)} does not broadcast to x {tuple(x.shape)}") from exc


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float, *,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """``x * rsqrt(mean(x^2, -1) + eps) * weight`` over the last dim; ``weight`` is ``(N,)``."""
    _require(x, weight)
    n = x.shape[-1]
    if weight.shape != (n,):
        raise ValueError(f"weight must be ({n},), got {tuple(weight.shape)}")
    y = _output(x, out)
    if x.numel() == 0:
        return y
    xr = _rows(x)
    yr, target = _as_row_writer(y)
    block = next_power_of_2(n)
    KernelLaunch("rms_norm", _rms_norm_kernel, (xr.shape[0],),
                 (xr, weight.contiguous(), yr, xr.stride(0), yr.stride(0), n, float(eps)),
                 dict(BLOCK=block, SOFT_BF16=soft_bf16(x.dtype, INTERPRETED), num_warps=row_num_warps(block))).run()
    return _finish(yr, target, x.shape)


def layer_norm_modulate_triton(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float, *,
                               out: torch.Tensor | None = None) -> torch.Tensor:
    """``LayerNorm(x) * (1 + scale) + shift`` (no affine); x ``(B, L, C)``."""
    _require(x, scale, shift)
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, seq, channels), got {tuple(x.shape)}")
    batch, length, n = x.shape
    sc = _broadcast_3d(scale, x, "scale")
    sh = _broadcast_3d(shift, x, "shift")
    y = _output(x, out)
    if x.numel() == 0:
        return y
    xr = _rows(x)
    yr, target = _as_row_writer(y)
    block = next_power_of_2(n)
    KernelLaunch("layer_norm_modulate", _ln_modulate_kernel, (batch * length,),
                 (xr, sc, sh, yr, length, xr.stride(0), yr.stride(0), *sc.stride(), *sh.stride(), n, float(eps)),
                 dict(BLOCK=block, SOFT_BF16=soft_bf16(x.dtype, INTERPRETED), num_warps=row_num_warps(block))).run()
    return _finish(yr, target, x.shape)


def gated_residual_triton(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, *,
                          out: torch.Tensor | None = None) -> torch.Tensor:
    """``x + y * gate``; x, y ``(B, L, C)``, gate broadcastable (``(B, 1, C)`` or ``(B, L, C)``)."""
    _require(x, y, gate)
    if x.dim() != 3 or y.shape != x.shape:
        raise ValueError(f"x and y must both be (batch, seq, channels), got {tuple(x.shape)}, {tuple(y.shape)}")
    batch, length, n = x.shape
    g = _broadcast_3d(gate, x, "gate")
    res = _output(x, out)
    if x.numel() == 0:
        return res
    xr, rr = _rows(x), _rows(y)
    yr, target = _as_row_writer(res)
    block = min(next_power_of_2(n), _GATED_BLOCK)
    grid = (batch * length, triton.cdiv(n, block))
    KernelLaunch("gated_residual", _gated_residual_kernel, grid,
                 (xr, rr, g, yr, length, xr.stride(0), rr.stride(0), yr.stride(0), *g.stride(), n),
                 dict(BLOCK=block, SOFT_BF16=soft_bf16(x.dtype, INTERPRETED), num_warps=4)).run()
    return _finish(yr, target, x.shape)


def rope_tables_2d(cos: torch.Tensor, sin: torch.Tensor, length: int, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """View ``cos``/``sin`` (``(L, D/2)`` or any shape holding ``L*D/2`` values, e.g. the DiT's
    ``(1, L, 1, D/2)``) as ``(L, D/2)``."""
    if cos.shape != sin.shape or cos.numel() != length * half:
        raise ValueError(f"cos/sin must hold (L={length}, D/2={half}) values, got {tuple(cos.shape)}, "
                         f"{tuple(sin.shape)}")
    return cos.reshape(length, half), sin.reshape(length, half)


def apply_rope_triton(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate channel pairs ``(2i, 2i+1)`` of x ``(B, L, H, D)`` by ``cos``/``sin`` ``(L, D/2)``:
    ``(x0 c - x1 s, x0 s + x1 c)``."""
    _require(x, cos, sin)
    if x.dim() != 4 or x.shape[-1] % 2:
        raise ValueError(f"x must be (batch, seq, heads, head_dim) with even head_dim, got {tuple(x.shape)}")
    batch, length, heads, dim = x.shape
    c, s = rope_tables_2d(cos, sin, length, dim // 2)
    y = _output(x, out)
    if x.numel() == 0:
        return y
    block_j = next_power_of_2(dim // 2)
    block_h = max(1, min(next_power_of_2(heads), 4096 // block_j))
    grid = (batch * length, triton.cdiv(heads, block_h))
    KernelLaunch("apply_rope", _rope_kernel, grid,
                 (x, c, s, y, length, heads, dim // 2, *x.stride(), *y.stride(), *c.stride(), *s.stride()),
                 dict(BLOCK_H=block_h, BLOCK_J=block_j, SOFT_BF16=soft_bf16(x.dtype, INTERPRETED),
                      num_warps=row_num_warps(block_h * block_j))).run()
    return y
