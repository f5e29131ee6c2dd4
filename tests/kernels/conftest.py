"""Kernel-test setup: Triton interpreter on CPU, a fresh random seed per test, error budgets.

- The kernels are imported interpreted without a GPU, compiled with one
  (:func:`kernel_testing.import_kernels`).
- Every test gets a new seed (``time_ns``); a failing test prints ``FASTVIDEO_TEST_SEED=<n>``,
  and setting that variable replays the same inputs.
- :func:`check_error` is the accuracy rule used throughout (``tests/kernel_testing.py``, shared
  with the GPU suite): the kernel's max abs error against a float64 reference must be at most
  ``2 x`` torch's own error at the same low precision, plus ``ATOL = 1e-6``.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import pytest
import torch

from kernel_testing import assert_within_budget, import_kernels

import_kernels()

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


@pytest.fixture
def check_error(seed: int) -> Callable[..., None]:
    """``check_error(out, ref64, torch_lowp, what)``: finite, right shape/dtype, within budget
    (:func:`kernel_testing.assert_within_budget`)."""

    def check(out: torch.Tensor, ref64: torch.Tensor, torch_lowp: torch.Tensor, what: str,
              *, dtype: torch.dtype | None = None) -> None:
        assert_within_budget(out, ref64.cpu(), torch_lowp, what, dtype=dtype, seed=seed)

    return check
