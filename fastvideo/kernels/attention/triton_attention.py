"""FlashAttention-style forward kernel in Triton, exposed as ``torch.ops.fastvideo.flash_attention``.

Contract:
- ``flash_attention(q, k, v, scale=None) -> out``: non-causal, unmasked
  ``softmax(q k^T * scale) v`` with ``scale = 1/sqrt(head_dim)`` by default. Layout
  ``(batch, seq, heads, head_dim)`` for all tensors; q has ``Lq`` rows, k/v ``Lk`` rows (cross
  attention when they differ; any lengths >= 1); q, k, v share batch, heads, head_dim, dtype and
  device; any strides. The output is a new contiguous ``(B, Lq, H, D)`` tensor of q's dtype.
- Numerics: bf16/fp16 inputs (fp32 too, only under the Triton interpreter), fp32 accumulation and
  fp32 online softmax (exp2 form); the probabilities are rounded to the input dtype before the
  ``P @ V`` matmul, as in FlashAttention. Never materializes the ``Lq x Lk`` matrix: one program
  owns a ``BLOCK_M`` tile of queries of one (batch, head) and streams ``BLOCK_N`` key/value tiles;
  when ``Lk`` is not a multiple of ``BLOCK_N`` the partial last tile is processed first, masked,
  ahead of the unmasked pipelined loop; query rows past ``Lq`` are computed on zeros and not
  stored. Tile base offsets are 64-bit (no 2**31-element limit).
- Block sizes come from :mod:`fastvideo.kernels.attention.tuning` (JSON per GPU), looked up once per
  (head_dim, device); callers may pass an explicit :class:`AttentionConfig` (tests and the tuner
  do). A JSON config that does not fit the GPU (Triton ``OutOfResources``) is replaced, with a
  warning, by :data:`FALLBACK_CONFIG` for the rest of the process.
- The custom op has a fake (meta) implementation, so ``torch.compile(fullgraph=True)`` and
  ``torch.export`` trace it as one node. Forward only (no autograd): this is an inference engine.
- Under ``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors (tests). Because the interpreter
  mishandles bfloat16 matmuls and rounding, bf16 there takes a ``SOFT_BF16`` path: operands are
  widened to fp32 (exact) and roundings to bf16 are emulated bit-exactly, which matches the GPU's
  arithmetic up to summation order. The compiled GPU path does not contain those instructions.
"""

import logging
import math

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from fastvideo.kernels.attention.tuning import AttentionConfig, load_attention_config
from fastvideo.kernels.triton_utils import (KernelLaunch, current_gpu_name, interpreter_mode_error, is_interpreted,
                                            rne_bf16, row_max, row_sum, soft_bf16, triton_device_reason)

logger = logging.getLogger(__name__)

#: Head dims the kernel is built and tested for (powers of two; 64/128 are the real models').
SUPPORTED_HEAD_DIMS: tuple[int, ...] = (16, 32, 64, 128)
_LOG2E = 1.4426950408889634


@triton.jit
def _attn_tile(acc, l_i, m_i, q, k_ptrs, v_ptrs, start_n, offs_n, Lk, qk_scale,
               MASK: tl.constexpr, SOFT_BF16: tl.constexpr):
    """One kv tile of the online softmax: update (acc, l_i, m_i) with keys/values at start_n."""
    if MASK:
        valid = (start_n + offs_n) < Lk
        k = tl.load(k_ptrs, mask=valid[None, :], other=0.0)  # (D, BLOCK_N)
        v = tl.load(v_ptrs, mask=valid[:, None], other=0.0)  # (BLOCK_N, D)
    else:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    if SOFT_BF16:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    s = tl.dot(q, k) * qk_scale  # fp32 logits in log2 units
    if MASK:
        s = tl.where(valid[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, row_max(s, 1))
    p = tl.math.exp2(s - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + row_sum(p, 1)
    acc = acc * alpha[:, None]
    if SOFT_BF16:
        p = rne_bf16(p)
    else:
        p = p.to(v.dtype)
    acc = tl.dot(p, v, acc)
    return acc, l_i, m_new


@triton.jit
def _load_rows(Q, b, h, start_m, offs_m, offs_d, stride_qb, stride_ql, stride_qh, stride_qd, Lq):
    """This program's ``BLOCK_M`` query rows of (b, h) from ``start_m`` (rows past Lq read as 0) and their
    validity mask; the tile base offset is 64-bit."""
    q_base = Q + b * stride_qb + h * stride_qh + start_m.to(tl.int64) * stride_ql
    q_ptrs = q_base + offs_m[:, None] * stride_ql + offs_d[None, :] * stride_qd
    row_valid = (start_m + offs_m) < Lq
    q = tl.load(q_ptrs, mask=row_valid[:, None], other=0.0)
    return q, row_valid


@triton.jit
def _attn_rows(q, K, V, b, h, offs_n, offs_d,
               stride_kb, stride_kl, stride_kh, stride_kd,
               stride_vb, stride_vl, stride_vh, stride_vd,
               Lk, qk_scale,
               HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               EVEN_N: tl.constexpr, SOFT_BF16: tl.constexpr):
    """Online softmax of the rows ``q`` over all ``Lk`` keys/values of (b, h); returns (acc, l_i, m_i)
    (unnormalized output, row sums, row maxima in log2 units). Shared by the bf16 and fp8 kernels."""
    # K is read transposed, (HEAD_DIM, BLOCK_N), so the logits are a plain q @ k.
    k_ptrs = K + b * stride_kb + h * stride_kh + offs_n[None, :] * stride_kl + offs_d[:, None] * stride_kd
    v_ptrs = V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vl + offs_d[None, :] * stride_vd

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.full([BLOCK_M], 0.0, dtype=tl.float32)
    acc = tl.full([BLOCK_M, HEAD_DIM], 0.0, dtype=tl.float32)

    # The partial kv tile (Lk not a multiple of BLOCK_N) goes first, masked and outside the loop, so
    # the main loop stays unmasked and software-pipelined: a masked tile after the loop made ptxas
    # serialize the sm_90 wgmma pipeline (C7515) and spill on sm_80 (tests/kernels/test_gpu_compile.py).
    n_full = (Lk // BLOCK_N) * BLOCK_N
    if not EVEN_N:
        tail = tl.full([], 0, tl.int64) + n_full  # 64-bit offsets (Lk may be specialized to a constant)
        acc, l_i, m_i = _attn_tile(acc, l_i, m_i, q, k_ptrs + tail * stride_kl, v_ptrs + tail * stride_vl,
                                   n_full, offs_n, Lk, qk_scale, MASK=True, SOFT_BF16=SOFT_BF16)
    for start_n in range(0, n_full, BLOCK_N):
        acc, l_i, m_i = _attn_tile(acc, l_i, m_i, q, k_ptrs, v_ptrs, start_n, offs_n, Lk, qk_scale,
                                   MASK=False, SOFT_BF16=SOFT_BF16)
        k_ptrs += BLOCK_N * stride_kl
        v_ptrs += BLOCK_N * stride_vl
    return acc, l_i, m_i


@triton.jit
def _store_rows(O, acc, l_i, row_valid, b, h, start_m, offs_m, offs_d, stride_ob, stride_ol, stride_oh, stride_od,
                SOFT_BF16: tl.constexpr):
    """Normalize ``acc / l_i`` and store the valid rows in O's dtype (64-bit tile base offset)."""
    out = acc / l_i[:, None]
    if SOFT_BF16:
        out = rne_bf16(out)
    o_base = O + b * stride_ob + h * stride_oh + start_m.to(tl.int64) * stride_ol
    o_ptrs = o_base + offs_m[:, None] * stride_ol + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_valid[:, None])


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O,
    stride_qb, stride_ql, stride_qh, stride_qd,
    stride_kb, stride_kl, stride_kh, stride_kd,
    stride_vb, stride_vl, stride_vh, stride_vd,
    stride_ob, stride_ol, stride_oh, stride_od,
    H, Lq, Lk, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    EVEN_N: tl.constexpr, SOFT_BF16: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    start_m = pid_m * BLOCK_M

    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q, row_valid = _load_rows(Q, b, h, start_m, offs_m, offs_d, stride_qb, stride_ql, stride_qh, stride_qd, Lq)
    if SOFT_BF16:
        q = q.to(tl.float32)
    acc, l_i, m_i = _attn_rows(q, K, V, b, h, offs_n, offs_d, stride_kb, stride_kl, stride_kh, stride_kd,
                               stride_vb, stride_vl, stride_vh, stride_vd, Lk, qk_scale,
                               HEAD_DIM, BLOCK_M, BLOCK_N, EVEN_N, SOFT_BF16)
    _store_rows(O, acc, l_i, row_valid, b, h, start_m, offs_m, offs_d, stride_ob, stride_ol, stride_oh, stride_od,
                SOFT_BF16)


#: True when this module's kernels were built for the Triton interpreter (TRITON_INTERPRET=1).
INTERPRETED: bool = is_interpreted(_attn_fwd_kernel)
_MODE_ERROR: str | None = interpreter_mode_error(_attn_fwd_kernel)


def attention_check(dtype: torch.dtype, head_dim: int, device: torch.device) -> str | None:
    """Why the Triton kernel cannot run this configuration, or ``None`` (registry ``check``)."""
    reason = _MODE_ERROR or triton_device_reason(dtype, torch.device(device), interpreted=INTERPRETED)
    if reason is not None:
        return reason
    if head_dim not in SUPPORTED_HEAD_DIMS:
        return f"head_dim {head_dim} not supported (supported: {', '.join(map(str, SUPPORTED_HEAD_DIMS))})"
    return None


_CONFIGS: dict[tuple[int, str, int | None], AttentionConfig] = {}
#: Used when a JSON config does not fit this GPU (e.g. shared memory): fits every sm_80+ GPU's shared
#: memory and spills no registers at head dims 64/128 (checked by ``fastvideo.kernels.aot`` in CI).
FALLBACK_CONFIG = AttentionConfig(128, 32, num_warps=8, num_stages=2, source="fallback")
#: Compute capabilities FALLBACK_CONFIG is compiled and checked for.
FALLBACK_CAPABILITIES: tuple[int, ...] = (80, 86, 89, 90)


def _config_key(head_dim: int, device: torch.device) -> tuple[int, str, int | None]:
    if device.type == "cuda":
        return head_dim, "cuda", device.index if device.index is not None else torch.cuda.current_device()
    return head_dim, device.type, None


def default_config(head_dim: int, device: torch.device) -> AttentionConfig:
    """Block sizes from the JSON configs for this GPU (or the interpreter) and head dim; looked up
    once per (head_dim, device) and cached."""
    key = _config_key(head_dim, device)
    config = _CONFIGS.get(key)
    if config is None:
        gpu = current_gpu_name(key[2] if device.type == "cuda" else None, interpreted=INTERPRETED)
        config = _CONFIGS[key] = load_attention_config(head_dim, gpu)
        logger.info("triton attention on %s, head_dim=%d: %s", gpu, head_dim, config)
    return config


def _validate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"q, k, v must be (batch, seq, heads, head_dim); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v shapes differ: {tuple(k.shape)} vs {tuple(v.shape)}")
    b, _, h, d = q.shape
    if (k.shape[0], k.shape[2], k.shape[3]) != (b, h, d):
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must share batch, heads, head_dim")
    if k.shape[1] < 1:
        raise ValueError("kv length must be >= 1")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v devices differ: {q.device}, {k.device}, {v.device}")
    reason = attention_check(q.dtype, d, q.device)
    if reason is not None:
        raise ValueError(f"triton attention cannot run: {reason}")


def _output_for(q: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """A new ``(B, Lq, H, D)`` tensor of q's dtype, or ``out`` once checked to match q's shape, dtype, device."""
    if out is None:
        return torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if out.shape != q.shape or out.dtype != q.dtype or out.device != q.device:
        raise ValueError(f"out must be {tuple(q.shape)} {q.dtype} on {q.device}, got "
                         f"{tuple(out.shape)} {out.dtype} on {out.device}")
    return out


def _launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, sm_scale: float,
            cfg: AttentionConfig) -> None:
    batch, len_q, heads, head_dim = q.shape
    len_k = k.shape[1]
    KernelLaunch(
        f"attention[{cfg.source}]", _attn_fwd_kernel, (triton.cdiv(len_q, cfg.block_m), batch * heads),
        (q, k, v, out, *q.stride(), *k.stride(), *v.stride(), *out.stride(), heads, len_q, len_k,
         sm_scale * _LOG2E),
        dict(HEAD_DIM=head_dim, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, EVEN_N=len_k % cfg.block_n == 0,
             SOFT_BF16=soft_bf16(q.dtype, INTERPRETED), num_warps=cfg.num_warps, num_stages=cfg.num_stages),
    ).run()


def flash_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    out: torch.Tensor | None = None,
    config: AttentionConfig | None = None,
) -> torch.Tensor:
    """Launch the kernel (see module doc). ``out`` (``(B, Lq, H, D)``, q's dtype, any strides) is
    written in place when given; ``config`` overrides the JSON block sizes."""
    _validate(q, k, v)
    batch, len_q, heads, head_dim = q.shape
    out = _output_for(q, out)
    if len_q == 0 or batch == 0 or heads == 0:
        return out
    sm_scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    cfg = config or default_config(head_dim, q.device)
    try:
        _launch(q, k, v, out, sm_scale, cfg)
    except OutOfResources as exc:
        if config is not None or cfg == FALLBACK_CONFIG:
            raise
        logger.warning("attention config %s does not fit this GPU (%s); using %s from now on",
                       cfg, exc, FALLBACK_CONFIG)
        _CONFIGS[_config_key(head_dim, q.device)] = FALLBACK_CONFIG
        _launch(q, k, v, out, sm_scale, FALLBACK_CONFIG)
    return out


@torch.library.custom_op("fastvideo::flash_attention", mutates_args=())
def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """``torch.ops.fastvideo.flash_attention``: Triton attention, ``(B, L, H, D)`` layout."""
    return flash_attention_triton(q, k, v, scale=scale)


@flash_attention.register_fake
def _flash_attention_fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          scale: float | None = None) -> torch.Tensor:
    torch._check(q.dim() == 4 and k.dim() == 4 and v.dim() == 4,
                 lambda: "q, k, v must be (batch, seq, heads, head_dim)")
    torch._check(k.shape[0] == q.shape[0] and k.shape[2] == q.shape[2] and k.shape[3] == q.shape[3],
                 lambda: "q and k must share batch, heads, head_dim")
    torch._check(v.shape[0] == k.shape[0] and v.shape[1] == k.shape[1] and v.shape[2] == k.shape[2]
                 and v.shape[3] == k.shape[3], lambda: "k and v shapes differ")
    return q.new_empty(q.shape)


def triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Registry ``forward`` for the ``triton`` backend (default scale ``1/sqrt(head_dim)``)."""
    return flash_attention(q, k, v)
