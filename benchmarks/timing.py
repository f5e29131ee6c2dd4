"""Timing helpers shared by the benchmark scripts.

Contract:
- :func:`median_ms` runs ``fn`` ``warmup`` times untimed, then ``iters`` times timed, and returns the
  median in milliseconds: CUDA events around each call on a GPU (so only device time of the enqueued
  work counts, synchronised after each), ``time.perf_counter`` on a CPU. For kernels.
- :func:`interleaved_seconds` times whole calls on the host clock (the device synchronised before
  and after each call, so launch overhead counts): every variant is warmed up, then the variants
  take turns, one call each per iteration, so drift and other load hit them alike. For model steps.
- :func:`peak_memory` runs ``fn`` once on a CUDA device and returns its peak allocated bytes (what
  was resident before, weights included, plus what the call added at its peak) and the added part;
  ``None`` off CUDA.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping


def median_ms(fn: Callable[[], object], warmup: int, iters: int, cuda: bool) -> float:
    """Median milliseconds of ``fn()`` over ``iters`` timed runs after ``warmup`` untimed ones."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def interleaved_seconds(runs: Mapping[str, Callable[[], object]], warmup: int, iters: int,
                        cuda: bool) -> dict[str, list[float]]:
    """Seconds of each timed call of each variant in ``runs`` (see the module contract)."""
    import torch

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for _ in range(warmup):
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(iters):
        for name, fn in runs.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def kernel_bench_cuda(smoke: bool) -> bool | None:
    """Setup shared by the kernel benchmarks: ``True`` to run on CUDA, ``False`` for a ``--smoke`` run
    on CPU through the Triton interpreter, ``None`` (after saying so) when there is nothing to measure."""
    import logging
    import os

    logging.basicConfig(level=logging.WARNING)
    if smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before any triton kernel is imported
    import torch

    if smoke:
        return False
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to benchmark (use --smoke to exercise this script on CPU)")
        return None
    return True


def peak_memory(fn: Callable[[], object], device: object) -> dict[str, int] | None:
    """Peak CUDA memory of one call of ``fn`` (see the module contract)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    resident = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_bytes": peak, "added_bytes": peak - resident}
