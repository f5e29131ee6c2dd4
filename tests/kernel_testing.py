"""Kernel-test support shared by the CPU kernel tests (tests/kernels) and the GPU suite (tests/gpu).

- :func:`import_kernels` imports the FastVideo Triton kernels the way this machine runs them: under
  the Triton interpreter (``TRITON_INTERPRET=1`` set just for that import, then removed so it does
  not leak into the session) when there is no GPU, compiled on CUDA otherwise; an explicit
  ``TRITON_INTERPRET`` from the caller is left alone. Triton decides interpreted-vs-compiled when a
  function is decorated; ``triton`` itself is imported first (compiled: other tests may already have
  imported it through diffusers/torch), and our kernels avoid triton's own ``@jit`` library
  functions, so that mix works (see ``fastvideo/kernels/triton_utils.py``).
- The accuracy rule (:func:`assert_within_budget`): a kernel's max abs error against a float64
  reference must be at most ``2 x`` torch's own error at the same low precision, plus ``ATOL``
  (covers the exact cases, e.g. Lk = 1, where both errors are ~0).
"""

from __future__ import annotations

import os

import torch


def import_kernels() -> None:
    """Import the kernel modules interpreted (no GPU) or compiled (see module doc)."""
    try:
        import triton  # noqa: F401 - library decorated in the caller's mode (compiled by default)
    except ImportError:  # no triton: the tests that need it skip (device fixture / importorskip)
        return
    interpret = "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available()
    if interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        import fastvideo.kernels.attention.triton_attention  # noqa: F401
        import fastvideo.kernels.attention.triton_fp8_attention  # noqa: F401
        import fastvideo.kernels.fused_triton  # noqa: F401
    finally:
        if interpret:
            del os.environ["TRITON_INTERPRET"]


ATOL = 1e-6


def max_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Max abs difference in float64 (operands may live on different devices; computed on ``ref``'s)."""
    if not out.numel():
        return 0.0
    return (out.detach().to(ref.device, torch.float64) - ref.detach().double()).abs().max().item()


def assert_within_budget(out: torch.Tensor, ref64: torch.Tensor, torch_lowp: torch.Tensor, what: str, *,
                         dtype: torch.dtype | None = None, seed: int | None = None) -> None:
    """Finite, right shape (and dtype), and within the error budget of the module doc."""
    assert out.shape == ref64.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref64.shape)}"
    if dtype is not None:
        assert out.dtype == dtype, f"{what}: dtype {out.dtype} != {dtype}"
    assert torch.isfinite(out).all(), f"{what}: non-finite output (seed={seed})"
    ours, theirs = max_err(out, ref64), max_err(torch_lowp, ref64)
    assert ours <= 2 * theirs + ATOL, (
        f"{what}: max|err| {ours:.3e} > 2 x torch's {theirs:.3e} + {ATOL:g} (seed={seed})")
