"""Optional attention backends: registers ``triton``, ``triton_fp8`` and (when installed) ``flash_attn``.

Contract:
- Importing this package is cheap: it imports neither ``triton`` nor ``flash_attn``. The
  registry (:mod:`fastvideo.kernels.registry`) imports it lazily; each backend's factory imports
  its kernel when the backend is selected, and raises :class:`AttentionBackendError` when the
  package is missing.
- ``triton``: :func:`fastvideo.kernels.attention.triton_attention.flash_attention`
  (``torch.ops.fastvideo.flash_attention``). ``check`` accepts CUDA with bf16/fp16 and head_dim in
  16/32/64/128; CPU (bf16/fp16/fp32) only when the kernels run under ``TRITON_INTERPRET=1``.
- ``triton_fp8``: :func:`fastvideo.kernels.attention.triton_fp8_attention.flash_attention_fp8`
  (q/k in float8 e4m3 with per-head scales, p·v in bf16/fp16; error bound in that module). ``check``
  is the ``triton`` one plus compute capability >= 8.9 on CUDA; CPU only under ``TRITON_INTERPRET=1``.
- ``flash_attn``: registered only when the ``flash_attn`` package is importable; wraps
  ``flash_attn.flash_attn_func`` (same ``(B, L, H, D)`` layout, non-causal, default scale).
  ``check`` accepts CUDA, bf16/fp16, head_dim a multiple of 8 up to 256.
"""

from __future__ import annotations

import importlib.util

import torch

from fastvideo.kernels.registry import AttentionBackend, AttentionBackendError, register_attention_backend

__all__ = ["flash_attn_check", "make_flash_attn_backend", "make_triton_backend", "make_triton_fp8_backend"]


def make_triton_backend() -> AttentionBackend:
    """Factory of the ``triton`` backend (imports triton and compiles nothing yet)."""
    try:
        from fastvideo.kernels.attention import triton_attention
    except ImportError as exc:
        raise AttentionBackendError(f"the triton backend needs the 'triton' package ({exc}); "
                                    "install it with `pip install triton`") from exc
    return AttentionBackend("triton", triton_attention.triton_attention, triton_attention.attention_check)


def make_triton_fp8_backend() -> AttentionBackend:
    """Factory of the ``triton_fp8`` backend (imports triton and compiles nothing yet)."""
    try:
        from fastvideo.kernels.attention import triton_fp8_attention
    except ImportError as exc:
        raise AttentionBackendError(f"the triton_fp8 backend needs the 'triton' package ({exc}); "
                                    "install it with `pip install triton`") from exc
    return AttentionBackend("triton_fp8", triton_fp8_attention.triton_fp8_attention,
                            triton_fp8_attention.fp8_attention_check)


def flash_attn_check(dtype: torch.dtype, head_dim: int, device: torch.device) -> str | None:
    """Why ``flash_attn`` cannot run this configuration, or ``None``."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"flash_attn needs a CUDA device, got {device.type}"
    if dtype not in (torch.bfloat16, torch.float16):
        return f"dtype {dtype} not supported (supported: bfloat16, float16)"
    if head_dim % 8 or head_dim > 256:
        return f"head_dim {head_dim} not supported (multiple of 8, at most 256)"
    return None


def _flash_attn_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from flash_attn import flash_attn_func

    return flash_attn_func(q, k, v)


def make_flash_attn_backend() -> AttentionBackend:
    """Factory of the ``flash_attn`` backend."""
    try:
        import flash_attn  # noqa: F401
    except ImportError as exc:
        raise AttentionBackendError(f"flash_attn is not importable ({exc})") from exc
    return AttentionBackend("flash_attn", _flash_attn_forward, flash_attn_check)


register_attention_backend("triton", make_triton_backend)
register_attention_backend("triton_fp8", make_triton_fp8_backend)
if importlib.util.find_spec("flash_attn") is not None:
    register_attention_backend("flash_attn", make_flash_attn_backend)
