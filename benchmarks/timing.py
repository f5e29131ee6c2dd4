"""Timing helper shared by the benchmark scripts.

Contract: :func:`median_ms` runs ``fn`` ``warmup`` times untimed, then ``iters`` times timed, and
returns the median in milliseconds: CUDA events around each call on a GPU (so only device time of the
enqueued work counts, synchronised after each), ``time.perf_counter`` on a CPU.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable


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
