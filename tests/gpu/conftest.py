"""The GPU suite: what only a CUDA GPU can check, in under 4 minutes on an H100/H200.

- Every test under ``tests/gpu`` gets the ``gpu`` marker (``pytest -m gpu`` selects them) and is
  collected everywhere. Without a CUDA GPU each one is skipped with the reason below, unless
  ``FASTVIDEO_GPU_REHEARSAL=1``: then the same tests run on the CPU at tiny shapes (kernels under
  the Triton interpreter, the CPU stand-in graph backend, no CUDA streams), so the tests' own logic
  is exercised without a GPU. The prepared GPU check's dry run (``bash scripts/gpu_check.sh
  --dry-run``, run in CI) rehearses them this way.
- :class:`GpuSetup` (fixture ``gpu``) is what a test asks instead of hard-coding CUDA: the device,
  real-vs-tiny shapes (``gpu.pick(real, tiny)``), the graph backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch

from kernel_testing import import_kernels

REHEARSAL_VAR = "FASTVIDEO_GPU_REHEARSAL"
HERE = Path(__file__).resolve().parent
SKIP_REASON = ("needs a CUDA GPU (none here): run `bash scripts/gpu_check.sh` on a GPU machine, or set "
               f"{REHEARSAL_VAR}=1 to rehearse these tests on the CPU at tiny shapes")
T = TypeVar("T")


def rehearsal() -> bool:
    return os.environ.get(REHEARSAL_VAR) == "1" and not torch.cuda.is_available()


import_kernels()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    runnable = torch.cuda.is_available() or rehearsal()
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
            if not runnable:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@dataclass(frozen=True)
class GpuSetup:
    """Where the GPU tests run and at which sizes (see module doc)."""

    device: torch.device
    rehearsal: bool

    def pick(self, real: T, tiny: T) -> T:
        return tiny if self.rehearsal else real

    def graph_backend(self) -> Any:
        from fastvideo.runtime.cuda_graphs import CudaGraphBackend, RecordingGraphBackend

        return RecordingGraphBackend() if self.rehearsal else CudaGraphBackend(self.device)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@pytest.fixture(scope="session")
def gpu() -> GpuSetup:
    if torch.cuda.is_available():
        return GpuSetup(torch.device("cuda", torch.cuda.current_device()), rehearsal=False)
    return GpuSetup(torch.device("cpu"), rehearsal=True)


@pytest.fixture(autouse=True)
def _no_tf32() -> Any:
    """Full fp32 matmuls/convs wherever a test compares fp32 results (TF32 is cuDNN's default)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="session")
def gpu_generator(gpu: GpuSetup, tiny_model_dir: Path):
    """The built-in model on the test device in fp32 (exact comparisons: graphs, batching, streams)."""
    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained(str(tiny_model_dir), device=str(gpu.device), dtype="fp32")
    yield generator
    generator.shutdown()
