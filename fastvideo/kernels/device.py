"""The one device guard for work that runs on "the current CUDA device".

Contract: :func:`device_guard(device)` is a context manager that makes ``device`` the current CUDA
device for its block when ``device`` is a CUDA device other than the current one, and does nothing
otherwise (CPU, meta, or already current). Triton launches, CUDA-graph capture and TensorRT
execution all act on the current device (and its current stream), so each enters this guard for
the tensors' device: without it, work for ``cuda:1`` issued from a thread whose current device is
0 lands on GPU 0. Imports only torch.
"""

from __future__ import annotations

import contextlib

import torch


def device_guard(device: torch.device | str | None) -> contextlib.AbstractContextManager:
    """Make ``device`` current for the block when it is another CUDA device (see module contract)."""
    if device is None:
        return contextlib.nullcontext()
    device = torch.device(device)
    if device.type != "cuda" or device.index is None or device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(device.index)
