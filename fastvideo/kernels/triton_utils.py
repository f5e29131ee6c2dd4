"""Helpers shared by the Triton kernels (attention and fused ops). Imports ``triton``.

Contract:
- Triton decorates its own library (``tl.sum``, ``tl.max``, ``tl.zeros``...) interpreted or
  compiled at ``import triton``, and our kernels when their module is imported. Our kernels use
  only builtins plus the helpers here (:func:`row_sum`, :func:`row_max`, ``tl.full``), never a
  ``@triton.jit`` function of triton's library, so they can be built for the interpreter even in
  a process that imported triton compiled (the CPU test suite does this). The reverse mix is
  reported by :func:`interpreter_mode_error`.
- Only the Triton kernel modules (``attention/triton_attention.py``, ``fused_triton.py``) and the
  capability checks that have already imported one of them import this module. Triton decides
  compiled vs interpreted when a kernel is *decorated*, so we ask the kernel itself
  (:func:`is_interpreted`) instead of reading ``TRITON_INTERPRET``.
- :func:`triton_device_reason` is the one device/dtype rule: CUDA with the dtypes the caller
  allows, or CPU only when the kernels run under the Triton interpreter (``TRITON_INTERPRET=1``,
  used by the CPU test suite), where float32 is also accepted so algorithms can be checked with
  tight tolerances.
- Every launch goes through a :class:`KernelLaunch` (kernel, grid, arguments, compile-time
  options, all decided by the op's wrapper from its tensors) and :meth:`KernelLaunch.run`, which
  launches under :func:`~fastvideo.kernels.device.device_guard` for the tensors' device (Triton
  launches on the *current* device, so ``cuda:1`` tensors from a thread whose current device is 0
  would otherwise run on the wrong GPU). Inside :func:`planning_launches`, ops accept ``meta``
  tensors and ``run`` records the launch instead: :mod:`fastvideo.kernels.aot` compiles exactly
  what a real call would launch, ahead of time, for a named GPU.
- :func:`rne_bf16` works around the Triton interpreter's float32->bfloat16 cast, which truncates
  instead of rounding to nearest even; kernels call it only when ``SOFT_BF16`` (interpreted and
  bfloat16), so the compiled GPU path is unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import triton
import triton.language as tl

from fastvideo.kernels.device import device_guard

#: Oldest GPU the compiled kernels are built and checked for (Ampere: bf16 tensor cores, cp.async).
MIN_CAPABILITY: tuple[int, int] = (8, 0)
#: Dtypes a compiled (GPU) kernel accepts by default.
LOW_PRECISION_DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)


def is_interpreted(kernel: object) -> bool:
    """True when ``kernel`` (a ``@triton.jit`` object) was built for the Triton interpreter."""
    return type(kernel).__name__ == "InterpretedFunction"


#: Whether triton's own library (decorated at ``import triton``) is interpreted.
_TRITON_INTERPRETED = is_interpreted(tl.standard.sum)


def interpreter_mode_error(kernel: object) -> str | None:
    """A reason string when ``kernel`` cannot run: triton itself was imported interpreted but our
    kernels were built compiled (TRITON_INTERPRET unset in between). The other mix (triton
    compiled, our kernels interpreted) works because our kernels call no ``@triton.jit`` function
    of triton's library (see :func:`row_sum`)."""
    if _TRITON_INTERPRETED and not is_interpreted(kernel):
        return ("TRITON_INTERPRET was unset between `import triton` and importing the fastvideo "
                "kernels; set it once, before anything imports triton")
    return None


def triton_device_reason(
    dtype: torch.dtype,
    device: torch.device,
    *,
    interpreted: bool,
    cuda_dtypes: tuple[torch.dtype, ...] = LOW_PRECISION_DTYPES,
) -> str | None:
    """Why a Triton kernel cannot run on ``device`` with ``dtype``; ``None`` when it can.

    On CUDA ``cuda_dtypes`` are accepted. On CPU the kernels run only when interpreted, and then
    float32 is accepted too (testing only: the interpreter is slow).
    """
    device = torch.device(device)
    if device.type == "meta":
        if _PLANNED.get() is None:
            return "device meta not supported outside launch planning (fastvideo.kernels.aot)"
        if interpreted:
            return "kernels built for the interpreter (TRITON_INTERPRET=1) cannot be planned for a GPU"
        if dtype not in cuda_dtypes:
            return f"dtype {dtype} not supported on cuda (supported: {_names(cuda_dtypes)})"
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "device is cuda but torch.cuda.is_available() is False"
        if interpreted:
            return ("triton kernels were built for the interpreter (TRITON_INTERPRET=1) and "
                    "cannot run on cuda tensors; unset TRITON_INTERPRET")
        capability = torch.cuda.get_device_capability(device)
        if capability < MIN_CAPABILITY:
            return (f"{torch.cuda.get_device_name(device)} is sm_{capability[0]}{capability[1]}; the triton "
                    f"kernels need sm_{MIN_CAPABILITY[0]}{MIN_CAPABILITY[1]} or newer (Ampere+); use the sdpa "
                    "attention backend and the torch ops backend on this GPU")
        if dtype not in cuda_dtypes:
            return f"dtype {dtype} not supported on cuda (supported: {_names(cuda_dtypes)})"
        return None
    if device.type == "cpu":
        if not interpreted:
            return ("device cpu needs the Triton interpreter (TRITON_INTERPRET=1 set before "
                    "triton kernels are imported; testing only)")
        allowed = tuple(dict.fromkeys(cuda_dtypes + (torch.float32,)))
        if dtype not in allowed:
            return f"dtype {dtype} not supported (supported: {_names(allowed)})"
        return None
    return f"device {device.type} not supported (cuda, or cpu with TRITON_INTERPRET=1)"


def _names(dtypes: tuple[torch.dtype, ...]) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


_PLANNED: contextvars.ContextVar[list["KernelLaunch"] | None] = contextvars.ContextVar("fastvideo_planned",
                                                                                      default=None)


@dataclass(frozen=True)
class KernelLaunch:
    """One fully decided kernel launch (see module doc)."""

    name: str
    kernel: Any
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(a.device for a in self.args if isinstance(a, torch.Tensor))

    def run(self) -> None:
        """Launch on the tensors' device (recorded instead inside :func:`planning_launches`)."""
        planned = _PLANNED.get()
        if planned is not None:
            planned.append(self)
            return
        with device_guard(self.device):
            self.kernel[self.grid](*self.args, **self.options)


@contextlib.contextmanager
def planning_launches() -> Iterator[list[KernelLaunch]]:
    """Record the launches ops make (on ``meta`` tensors too) instead of running them."""
    planned: list[KernelLaunch] = []
    token = _PLANNED.set(planned)
    try:
        yield planned
    finally:
        _PLANNED.reset(token)


def soft_bf16(dtype: torch.dtype, interpreted: bool) -> bool:
    """Whether kernels must emulate bfloat16 rounding/matmul (interpreter + bfloat16)."""
    return interpreted and dtype == torch.bfloat16


def normalize_gpu_name(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"`` (lowercase, ``-`` separated)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def current_gpu_name(device: torch.device | int | None = None, *, interpreted: bool = False) -> str:
    """Normalized name of the GPU kernels will run on; ``"interpreter"`` under TRITON_INTERPRET,
    ``"cpu"`` when no CUDA device is present."""
    if interpreted:
        return "interpreter"
    if not torch.cuda.is_available():
        return "cpu"
    return normalize_gpu_name(torch.cuda.get_device_name(device))


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= ``n`` (``n >= 1``)."""
    return int(triton.next_power_of_2(n))


def row_num_warps(block: int) -> int:
    """Warps for a one-row-per-program kernel whose row tile has ``block`` elements."""
    if block >= 8192:
        return 16
    if block >= 2048:
        return 8
    return 4


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _maximum(a, b):
    return tl.maximum(a, b)


# triton's own combine functions are what the interpreter recognizes for its numpy fast path (it
# compares them by identity and never calls them, so their mode does not matter); our copies are
# the fallback if a triton release renames them (same GPU code, slower interpreter).
_SUM_COMBINE = getattr(tl.standard, "_sum_combine", _add)
_MAX_COMBINE = getattr(tl.standard, "_elementwise_max", _maximum)


@triton.jit
def row_sum(x, axis: tl.constexpr):
    """``tl.sum`` without calling triton's ``@jit`` library (see module doc)."""
    return tl.reduce(x, axis, _SUM_COMBINE)


@triton.jit
def row_max(x, axis: tl.constexpr):
    """``tl.max`` without calling triton's ``@jit`` library (see module doc)."""
    return tl.reduce(x, axis, _MAX_COMBINE)


@triton.jit
def rne_bf16(x):
    """Round float32 ``x`` to the nearest bfloat16 value (ties to even), kept as float32.

    A later ``.to(tl.bfloat16)`` is then exact even where the cast truncates (interpreter).
    """
    bits = x.to(tl.uint32, bitcast=True)
    bits = bits + 0x7FFF + ((bits >> 16) & 1)
    bits = bits & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)
