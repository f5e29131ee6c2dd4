#!/usr/bin/env python
"""Benchmark FastVideo's fused DiT ops (Triton) against their torch references, in GB/s.

Contract:
- On CUDA, at Wan shapes (B=1, L=32760, C=1536, H=12 for 1.3B; L=75600, C=5120, H=40 for 14B; bf16
  activations, float32 modulation and RoPE tables), times each op's Triton version and torch
  reference (eager; ``--compile`` adds the reference under ``torch.compile``), and a
  device-to-device copy of the activation as the bandwidth ceiling. Bandwidth = bytes counted /
  median time, where bytes = every tensor the op must read once + the output written once:

  * rms_norm: read x (B*L*C) + weight (C), write out (B*L*C)
  * layer_norm_modulate: read x + scale + shift (B*C each, float32), write out
  * apply_rope: read x (B*L*H*D) + cos + sin (L*D/2 each, float32), write out
  * gated_residual: read x + y (B*L*C each) + gate (B*C, float32), write out
  * copy: read x + write x (2 * B*L*C*itemsize)

  The table prints those byte counts, GB/s (1e9 bytes/s), each implementation's time over
  Triton's, its GB/s as a fraction of the copy's, and its max |difference| from torch eager.
- ``--json PATH`` writes the rows. No CUDA device: prints "no CUDA device" and exits 0, unless
  ``--smoke`` (tiny shapes on CPU through TRITON_INTERPRET=1; timings mean nothing).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.timing import kernel_bench_cuda, median_ms  # noqa: E402

logger = logging.getLogger("bench_fused")


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    length: int
    heads: int
    head_dim: int

    @property
    def channels(self) -> int:
        return self.heads * self.head_dim


GPU_SHAPES = (Shape("wan1.3b", 1, 32760, 12, 128), Shape("wan14b", 1, 75600, 40, 128))
SMOKE_SHAPES = (Shape("smoke", 1, 17, 3, 16),)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16", help="activation dtype")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20, help="timed runs (median reported)")
    p.add_argument("--compile", action="store_true", help="also time the torch reference under torch.compile")
    p.add_argument("--json", type=Path, default=None, help="write results as JSON")
    p.add_argument("--smoke", action="store_true",
                   help="no GPU needed: tiny shapes on CPU with TRITON_INTERPRET=1 (exercises the script)")
    return p.parse_args(argv)


def _cases(shape: Shape, dtype: "object", device: str) -> list[tuple[str, tuple, int]]:
    """(op name, args, bytes counted) for each fused op at ``shape``."""
    import torch

    b, length, h, d, c = shape.batch, shape.length, shape.heads, shape.head_dim, shape.channels
    act = torch.empty(0, dtype=dtype).element_size()
    x = torch.randn(b, length, c, device=device, dtype=dtype)
    y = torch.randn(b, length, c, device=device, dtype=dtype)
    weight = torch.rand(c, device=device, dtype=dtype) + 0.5
    mod = torch.randn(b, 1, c, device=device, dtype=torch.float32)
    angles = torch.rand(length, d // 2, device=device, dtype=torch.float32)
    cos, sin = angles.cos(), angles.sin()
    n = b * length * c
    return [
        ("rms_norm", (x, weight, 1e-6), 2 * n * act + c * act),
        ("layer_norm_modulate", (x, mod, mod, 1e-6), 2 * n * act + 2 * b * c * 4),
        ("apply_rope", (x.view(b, length, h, d), cos, sin), 2 * n * act + 2 * length * (d // 2) * 4),
        ("gated_residual", (x, y, mod), 3 * n * act + b * c * 4),
    ]


def bench(shapes: tuple[Shape, ...], dtype_name: str, warmup: int, iters: int, cuda: bool,
          compile_ref: bool) -> list[dict]:
    import torch

    from fastvideo.kernels import fused

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    device = "cuda" if cuda else "cpu"
    rows: list[dict] = []
    for shape in shapes:
        cases = _cases(shape, dtype, device)
        x = cases[0][1][0]
        dst = torch.empty_like(x)
        copy_bytes = 2 * x.numel() * x.element_size()
        copy_ms = median_ms(lambda: dst.copy_(x), warmup, iters, cuda)  # noqa: F821 - dst/x are del'd later
        copy_gbs = copy_bytes / (copy_ms * 1e-3) / 1e9
        rows.append({"shape": shape.name, "op": "copy", "impl": "d2d-copy", "bytes": copy_bytes,
                     "ms": copy_ms, "gbps": copy_gbs, "of_copy": 1.0})
        for op, args, nbytes in cases:
            impls: dict[str, Callable] = {
                "triton": getattr(fused.TRITON_OPS, op),
                "torch": getattr(fused.TORCH_OPS, op),
            }
            if compile_ref:
                impls["torch.compile"] = torch.compile(getattr(fused.TORCH_OPS, op), fullgraph=True)
            results, diffs = {}, {}
            expected = impls["torch"](*args).float()
            for impl, fn in impls.items():
                diffs[impl] = (fn(*args).float() - expected).abs().max().item()  # also compiles / warms up
                results[impl] = median_ms(lambda: fn(*args), warmup, iters, cuda)
            del expected
            for impl, ms in results.items():
                gbps = nbytes / (ms * 1e-3) / 1e9
                rows.append({"shape": shape.name, "op": op, "impl": impl, "bytes": nbytes, "ms": ms, "gbps": gbps,
                             "time_over_triton": ms / results["triton"], "of_copy": gbps / copy_gbs,
                             "max_abs_diff_vs_torch": diffs[impl]})
        del cases, x, dst
        if cuda:
            torch.cuda.empty_cache()
    return rows


def print_table(rows: list[dict], device_name: str) -> None:
    print(f"device: {device_name}")
    print("GB/s = bytes counted (inputs read once + output written once, see --help) / median time; "
          "of_copy = GB/s / d2d-copy GB/s; t/triton = this impl's time / triton's time (> 1: triton faster)")
    header = (f"{'shape':<9} {'op':<20} {'impl':<14} {'bytes':>14} {'ms':>9} {'GB/s':>8} {'of_copy':>8} "
              f"{'t/triton':>9} {'max|diff|':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        speed, diff = r.get("time_over_triton"), r.get("max_abs_diff_vs_torch")
        print(f"{r['shape']:<9} {r['op']:<20} {r['impl']:<14} {r['bytes']:>14,} {r['ms']:>9.4f} {r['gbps']:>8.1f} "
              f"{r['of_copy']:>8.2f} {'' if speed is None else f'{speed:.2f}':>9} "
              f"{'' if diff is None else f'{diff:.2e}':>10}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = kernel_bench_cuda(args.smoke)
    if cuda is None:
        return 0
    import torch

    shapes = SMOKE_SHAPES if args.smoke else GPU_SHAPES
    rows = bench(shapes, args.dtype, 0 if args.smoke else args.warmup, 1 if args.smoke else args.iters, cuda,
                 args.compile and cuda)
    device_name = torch.cuda.get_device_name() if cuda else "cpu (TRITON_INTERPRET=1, smoke: timings meaningless)"
    print_table(rows, device_name)
    if args.json:
        args.json.write_text(json.dumps({"device": device_name, "torch": torch.__version__, "rows": rows},
                                        indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
