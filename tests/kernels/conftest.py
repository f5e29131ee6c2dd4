"""Kernel-test setup: Triton interpreter on CPU, a fresh random seed per test, error budgets.

- Without a GPU (and with ``TRITON_INTERPRET`` unset), the FastVideo kernel modules are imported
  here with ``TRITON_INTERPRET=1`` and the variable is removed again right after, so it does not
  leak into the rest of the session. Triton decides interpreted-vs-compiled when a function is
  decorated; ``triton`` itself is imported first (compiled: other tests may already have imported
  it through diffusers/torch), and our kernels avoid triton's own ``@jit`` library functions, so
  that mix works (see ``fastvideo/kernels/triton_utils.py``). With a GPU the kernels are compiled
  and tested on CUDA; an explicit ``TRITON_INTERPRET`` from the caller is left alone.
- Every test gets a new seed (``time_ns``); a failing test prints ``FASTVIDEO_TEST_SEED=<n>``,
  and setting that variable replays the same inputs.
- :func:`check_error` is the accuracy rule used throughout: the kernel's max abs error against a
  float64 reference must be at most ``2 x`` torch's own error at the same low precision, plus
  ``ATOL = 1e-6`` (covers the exact cases, e.g. Lk = 1, where both errors are ~0).
"""

from __future__ import annotations

import os
import time
from typing import Callable

import pytest
import torch


def _import_kernels() -> None:
    try:
        import triton  # noqa: F401 - library decorated in the caller's mode (compiled by default)
    except ImportError:  # no triton: the tests that need it skip (device fixture / importorskip)
        return
    interpret = "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available()
    if interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        import fastvideo.kernels.attention.triton_attention  # noqa: F401
        import fastvideo.kernels.fused_triton  # noqa: F401
    finally:
        if interpret:
            del os.environ["TRITON_INTERPRET"]


_import_kernels()

ATOL = 1e-6
SEED_VAR = "FASTVIDEO_TEST_SEED"


@pytest.fixture(autouse=True)
def seed(request: pytest.FixtureRequest) -> int:
    """Seed torch freshly for each test (or from FASTVIDEO_TEST_SEED) and remember it for the report."""
    value = int(os.environ.get(SEED_VAR) or time.time_ns() % (2**31 - 1))
    torch.manual_seed(value)
    request.node.user_properties.append(("seed", value))
    return value


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # noqa: ANN201
    report = yield
    if report.failed:
        seeds = [v for k, v in item.user_properties if k == "seed"]
        if seeds:
            report.sections.append(("seed", f"replay with {SEED_VAR}={seeds[-1]}"))
    return report


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the kernels run: CPU under the interpreter, else CUDA; fails (does not skip) when the
    kernels cannot run in this process, so coverage is never lost silently."""
    pytest.importorskip("triton")
    from fastvideo.kernels.attention import triton_attention

    if triton_attention._MODE_ERROR:
        pytest.fail(triton_attention._MODE_ERROR)
    if triton_attention.INTERPRETED:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    pytest.fail("the triton kernels were imported compiled (before this conftest, or TRITON_INTERPRET=0) "
                "and there is no GPU; unset TRITON_INTERPRET or export TRITON_INTERPRET=1")


def max_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Max abs difference, computed in float64 on the CPU (operands may live on different devices)."""
    return (out.detach().cpu().double() - ref.detach().cpu().double()).abs().max().item() if out.numel() else 0.0


@pytest.fixture
def check_error(seed: int) -> Callable[..., None]:
    """``check_error(out, ref64, torch_lowp, what)``: finite, right shape/dtype, within budget."""

    def check(out: torch.Tensor, ref64: torch.Tensor, torch_lowp: torch.Tensor, what: str,
              *, dtype: torch.dtype | None = None) -> None:
        assert out.shape == ref64.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref64.shape)}"
        if dtype is not None:
            assert out.dtype == dtype, f"{what}: dtype {out.dtype} != {dtype}"
        assert torch.isfinite(out).all(), f"{what}: non-finite output (seed={seed})"
        ours, theirs = max_err(out, ref64), max_err(torch_lowp, ref64)
        assert ours <= 2 * theirs + ATOL, (
            f"{what}: max|err| {ours:.3e} > 2 x torch's {theirs:.3e} + {ATOL:g} (seed={seed})")

    return check
