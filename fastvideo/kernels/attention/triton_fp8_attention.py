"""FP8 (e4m3) q·k attention in Triton: the ``triton_fp8`` attention backend.

Contract:
- ``flash_attention_fp8_triton(q, k, v, scale=None) -> out``: the same call and layout as
  :func:`fastvideo.kernels.attention.triton_attention.flash_attention_triton` (``(B, L, H, D)``,
  non-causal, unmasked, ``scale = 1/sqrt(D)`` by default, cross attention, any strides, output a new
  contiguous tensor of q's dtype, or ``out`` written in place).
- Quantization (:func:`quantize_per_head`): q and k are quantized to ``float8_e4m3fn`` with one
  fp32 scale per (batch, head) and tensor: ``s = amax / 448`` over that head's (L, D) values
  (``s = 1`` for an all-zero head), ``x8 = round_to_e4m3(x / s)``. Per-head rather than
  per-block: one scale per program, loaded once, and Wan's q/k are RMS-normed per token so the
  per-head range is narrow. v is not quantized.
- Kernel: the bf16 kernel's online softmax, unchanged (the same ``_attn_rows`` / ``_attn_tile``): logits are
  ``dot(q8, k8)`` in fp8 with fp32 accumulation (e4m3 tensor-core MMA on sm_89 / wgmma on sm_90),
  dequantized by multiplying with ``s_q * s_k * scale * log2(e)`` (one fp32 per (batch, head)) in
  the exponent argument; ``p`` rounded to v's dtype and ``p @ v`` in bf16/fp16 with fp32
  accumulation. :func:`fp8_attention_reference` emulates it in torch (same quantization, fp32
  logits from the dequantized values).
- Error bound vs exact attention (:func:`fp8_output_bound`, tested): e4m3 rounds a normal value
  with relative error at most ``u = 2**-4`` and a subnormal one (below ``2**-6 * s``) with absolute
  error at most ``2**-10 * s``; so ``|dq_i| <= max(u|q_i|, 2**-10 s_q)`` (same for k), and the
  logit error of row i, column j is at most
  ``eps_ij = scale * sum_d(|dq||k| + |q||dk| + |dq||dk|)``. With ``eps_i = max_j eps_ij``, each
  softmax weight moves by a factor within ``exp(+-2 eps_i)``, hence
  ``|out_i - ref_i| <= (exp(2 eps_i) - 1) * max_j |v_j|`` per feature; low-precision inputs add the
  rounding of p and of the output, ``2 * 2**-8 * max|v|`` for bf16 (``2 * 2**-11`` fp16), plus fp32
  reordering. Roughly ``eps ~ 2 * 2**-4 * scale * sum|q||k|``. This worst case is loose: for
  unit-variance q, k at D=128 it is ~1 in logits (no useful output bound), while the measured logit
  errors average ~3% of it (at most ~20%), because the rounding errors have both signs and cancel;
  the output bound is useful for softer logits (q, k of scale ~0.25: ``eps ~ 0.06``, < 20% of max|v|). The tests
  check every level: logit errors <= ``eps_ij``; output error <= ``(exp(2 max|ds|) - 1) max|v|``
  from the measured logit error; output error <= the a-priori bound.
- Devices: CUDA with compute capability >= 8.9 (e4m3 tensor cores; refused below with the reason),
  bf16/fp16 inputs, head_dim in 16/32/64/128. On CPU only under ``TRITON_INTERPRET=1`` (as the
  ``triton`` backend), where the interpreter cannot multiply fp8: the quantized q/k are passed as
  their exact fp32 values (``x8.float()``) with the same scales, so the arithmetic is the same
  up to summation order; the compiled GPU path loads ``float8_e4m3fn``.
- Forward only; a custom op ``torch.ops.fastvideo.flash_attention_fp8`` with a fake implementation.
"""

from __future__ import annotations

import logging
import math

import torch
import triton
import triton.language as tl

from fastvideo.kernels.attention.triton_attention import (FALLBACK_CONFIG, SUPPORTED_HEAD_DIMS, _attn_rows, _attn_tile,
                                                          _load_rows, _output_for, _store_rows, _validate,
                                                          default_config)
from fastvideo.kernels.attention.tuning import AttentionConfig
from fastvideo.kernels.triton_utils import KernelLaunch, interpreter_mode_error, is_interpreted, soft_bf16

logger = logging.getLogger(__name__)

#: Largest finite float8_e4m3fn value; scales map each head's amax onto it.
E4M3_MAX = 448.0
#: Unit roundoff of e4m3 for normal values (3 mantissa bits).
E4M3_U = 2.0 ** -4
#: Absolute rounding error bound of e4m3 subnormals, in units of the scale (half of 2**-9).
E4M3_SUBNORMAL_ABS = 2.0 ** -10
#: Smallest compute capability with e4m3 tensor-core MMA (Ada sm_89, Hopper sm_90).
MIN_CAPABILITY = (8, 9)
_LOG2E = 1.4426950408889634


@triton.jit
def _attn_fp8_fwd_kernel(
    Q, K, V, O, QK_SCALE,
    stride_qb, stride_ql, stride_qh, stride_qd,
    stride_kb, stride_kl, stride_kh, stride_kd,
    stride_vb, stride_vl, stride_vh, stride_vd,
    stride_ob, stride_ol, stride_oh, stride_od,
    H, Lq, Lk,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    EVEN_N: tl.constexpr, SOFT_BF16: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    start_m = pid_m * BLOCK_M
    # s_q * s_k * sm_scale * log2(e) of this (batch, head): the dequantization rides in the exponent.
    qk_scale = tl.load(QK_SCALE + pid_bh)

    # fp8 (compiled) or its exact fp32 (interpreter); the online softmax, its masked partial tile first and
    # the store are the bf16 kernel's own (triton_attention._attn_rows / _store_rows).
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q, row_valid = _load_rows(Q, b, h, start_m, offs_m, offs_d, stride_qb, stride_ql, stride_qh, stride_qd, Lq)
    acc, l_i, m_i = _attn_rows(q, K, V, b, h, offs_n, offs_d, stride_kb, stride_kl, stride_kh, stride_kd,
                               stride_vb, stride_vl, stride_vh, stride_vd, Lk, qk_scale,
                               HEAD_DIM, BLOCK_M, BLOCK_N, EVEN_N, SOFT_BF16)
    _store_rows(O, acc, l_i, row_valid, b, h, start_m, offs_m, offs_d, stride_ob, stride_ol, stride_oh, stride_od,
                SOFT_BF16)


#: True when this module's kernel was built for the Triton interpreter (TRITON_INTERPRET=1).
INTERPRETED: bool = is_interpreted(_attn_fp8_fwd_kernel)
_MODE_ERROR: str | None = interpreter_mode_error(_attn_fp8_fwd_kernel) or (
    None if is_interpreted(_attn_tile) == INTERPRETED else
    "triton_attention and triton_fp8_attention were imported in different TRITON_INTERPRET modes; set it once, "
    "before anything imports them")


def fp8_attention_check(dtype: torch.dtype, head_dim: int, device: torch.device) -> str | None:
    """Why the fp8 kernel cannot run this configuration, or ``None`` (registry ``check``)."""
    from fastvideo.kernels.attention.triton_attention import attention_check

    device = torch.device(device)
    reason = _MODE_ERROR or attention_check(dtype, head_dim, device)
    if reason is not None:
        return reason
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if capability < MIN_CAPABILITY:
            return (f"fp8 attention needs e4m3 tensor cores (compute capability >= 8.9, Ada/Hopper); this GPU is "
                    f"sm_{capability[0]}{capability[1]}; use attention backend 'triton'")
    return None


def quantize_per_head(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, L, H, D)`` -> (``float8_e4m3fn`` values of ``x / s``, fp32 scales ``s`` of shape (B, H)),
    ``s = amax / 448`` per (batch, head), 1 where a head is all zeros."""
    amax = x.abs().amax(dim=(1, 3)).float()
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    x8 = (x.float() / scale[:, None, :, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return x8, scale


def fp8_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            scale: float | None = None) -> torch.Tensor:
    """Torch emulation of the kernel: the same quantization, fp32 logits of the dequantized q/k,
    fp32 softmax, p rounded to v's dtype (as the kernel does) and fp32 ``p @ v``; returns q's dtype."""
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    q8, sq = quantize_per_head(q)
    k8, sk = quantize_per_head(k)
    qd = (q8.float() * sq[:, None, :, None]).transpose(1, 2)
    kd = (k8.float() * sk[:, None, :, None]).transpose(1, 2)
    s = (qd @ kd.transpose(-1, -2)) * sm_scale
    p = torch.exp(s - s.amax(-1, keepdim=True))
    l_sum = p.sum(-1, keepdim=True)
    if v.dtype != torch.float32:
        p = p.to(v.dtype).float()
    out = (p @ v.float().transpose(1, 2)) / l_sum
    return out.transpose(1, 2).to(q.dtype)


def fp8_logit_error_bound(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """``eps_ij`` of the module contract, ``(B, H, Lq, Lk)`` float64: a bound on
    ``|scale * (deq(q8) . deq(k8) - q . k)|`` for every logit."""
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    _, sq = quantize_per_head(q)
    _, sk = quantize_per_head(k)
    qa, ka = q.double().abs(), k.double().abs()
    dq = torch.maximum(E4M3_U * qa, E4M3_SUBNORMAL_ABS * sq.double()[:, None, :, None])
    dk = torch.maximum(E4M3_U * ka, E4M3_SUBNORMAL_ABS * sk.double()[:, None, :, None])
    qa, ka, dq, dk = (t.transpose(1, 2) for t in (qa, ka, dq, dk))
    return sm_scale * (dq @ ka.transpose(-1, -2) + qa @ dk.transpose(-1, -2) + dq @ dk.transpose(-1, -2))


def softmax_output_bound(eps_row: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(exp(2 eps_i) - 1) * max_j |v_j|`` as ``(B, Lq, H)``, for row logit errors ``eps_row`` of
    shape ``(B, H, Lq)`` (float64)."""
    vmax = v.double().abs().amax(dim=(1, 3))  # (B, H)
    return ((torch.exp(2 * eps_row) - 1) * vmax[:, :, None]).transpose(1, 2)


def fp8_output_bound(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Per (B, Lq, H) bound on ``max_d |out_fp8 - exact|`` from the module contract (fp32, before the
    low-precision rounding terms, which the caller adds for bf16/fp16)."""
    return softmax_output_bound(fp8_logit_error_bound(q, k, scale).amax(-1), v)


def _launch(q8: torch.Tensor, k8: torch.Tensor, v: torch.Tensor, out: torch.Tensor, qk_scale: torch.Tensor,
            cfg: AttentionConfig) -> None:
    batch, len_q, heads, head_dim = q8.shape
    len_k = k8.shape[1]
    KernelLaunch(
        f"attention_fp8[{cfg.source}]", _attn_fp8_fwd_kernel, (triton.cdiv(len_q, cfg.block_m), batch * heads),
        (q8, k8, v, out, qk_scale, *q8.stride(), *k8.stride(), *v.stride(), *out.stride(), heads, len_q, len_k),
        dict(HEAD_DIM=head_dim, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, EVEN_N=len_k % cfg.block_n == 0,
             SOFT_BF16=soft_bf16(v.dtype, INTERPRETED), num_warps=cfg.num_warps, num_stages=cfg.num_stages),
    ).run()


def flash_attention_fp8_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    out: torch.Tensor | None = None,
    config: AttentionConfig | None = None,
) -> torch.Tensor:
    """Quantize q/k per head and launch the fp8 kernel (see module doc)."""
    _validate(q, k, v)
    batch, len_q, heads, head_dim = q.shape
    reason = fp8_attention_check(q.dtype, head_dim, q.device)
    if reason is not None:
        raise ValueError(f"triton fp8 attention cannot run: {reason}")
    out = _output_for(q, out)
    if len_q == 0 or batch == 0 or heads == 0:
        return out
    sm_scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    q8, sq = quantize_per_head(q)
    k8, sk = quantize_per_head(k)
    qk_scale = (sq * sk * (sm_scale * _LOG2E)).reshape(-1).contiguous()  # index b * H + h
    if INTERPRETED:  # the interpreter cannot dot fp8: pass the exact fp32 values of the fp8 numbers
        q8, k8 = q8.float(), k8.float()
    cfg = config or (default_config(head_dim, q.device) if q.device.type != "meta" else FALLBACK_CONFIG)
    _launch(q8, k8, v, out, qk_scale, cfg)
    return out


@torch.library.custom_op("fastvideo::flash_attention_fp8", mutates_args=())
def flash_attention_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        scale: float | None = None) -> torch.Tensor:
    """``torch.ops.fastvideo.flash_attention_fp8``: fp8 q·k Triton attention, ``(B, L, H, D)``."""
    return flash_attention_fp8_triton(q, k, v, scale=scale)


@flash_attention_fp8.register_fake
def _flash_attention_fp8_fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              scale: float | None = None) -> torch.Tensor:
    torch._check(q.dim() == 4 and k.dim() == 4 and v.dim() == 4,
                 lambda: "q, k, v must be (batch, seq, heads, head_dim)")
    return q.new_empty(q.shape)


def triton_fp8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Registry ``forward`` for the ``triton_fp8`` backend (default scale ``1/sqrt(head_dim)``)."""
    return flash_attention_fp8(q, k, v)


__all__ = ["E4M3_MAX", "SUPPORTED_HEAD_DIMS", "flash_attention_fp8", "flash_attention_fp8_triton",
           "fp8_attention_check", "fp8_attention_reference", "fp8_logit_error_bound", "fp8_output_bound",
           "quantize_per_head", "softmax_output_bound", "triton_fp8_attention"]
