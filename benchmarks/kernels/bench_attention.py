#!/usr/bin/env python
"""Benchmark FastVideo's Triton attention against torch SDPA backends and flash-attn.

Contract:
- On CUDA: for each shape (Wan 1.3B self-attention B=1, H=12, D=128, L=32760; Wan 14B H=40,
  L=75600; Wan 1.3B cross-attention Lk=512 text tokens) times ``fastvideo::flash_attention`` and
  ``F.scaled_dot_product_attention`` under each SDPA backend that runs (flash, cuDNN, efficient;
  ``torch.nn.attention.sdpa_kernel``) and ``flash_attn_func`` when installed. Prints a table of
  median milliseconds, TFLOP/s with ``FLOPs = 4 * B * H * Lq * Lk * D`` (two matmuls, 2 FLOPs per
  multiply-add), ``ours/them`` = our TFLOP/s over theirs (> 1: ours is faster), and the max
  |difference| of each output from ours. ``fastvideo-triton-fp8`` (``fastvideo::flash_attention_fp8``:
  q/k quantized to e4m3 per head inside the call, which the time includes) runs on sm_89+ only
  (e4m3 tensor cores), and in ``--smoke``; its ``ours/them`` is against the bf16 kernel.
- ``--json PATH`` writes the same rows. ``--tune PATH`` sweeps block sizes per head dim on this
  GPU and writes a config file in the format of ``fastvideo/kernels/attention/configs/``.
- Without a CUDA device it prints "no CUDA device" and exits 0, unless ``--smoke``: tiny shapes on
  CPU through the Triton interpreter, to exercise the script (timings there mean nothing).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.timing import kernel_bench_cuda, median_ms  # noqa: E402

logger = logging.getLogger("bench_attention")

FLOP_FORMULA = "FLOPs = 4 * B * H * Lq * Lk * D"


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    heads: int
    len_q: int
    len_k: int
    head_dim: int

    @property
    def flops(self) -> int:
        return 4 * self.batch * self.heads * self.len_q * self.len_k * self.head_dim


GPU_SHAPES = (
    Shape("wan1.3b-self", 1, 12, 32760, 32760, 128),
    Shape("wan14b-self", 1, 40, 75600, 75600, 128),
    Shape("wan1.3b-cross", 1, 12, 32760, 512, 128),
)
SMOKE_SHAPES = (
    Shape("smoke-self", 1, 2, 67, 67, 32),
    Shape("smoke-cross", 1, 2, 33, 7, 32),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FLOP_FORMULA)
    p.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    p.add_argument("--shapes", nargs="*", default=None,
                   help=f"subset of {[s.name for s in GPU_SHAPES]} (default: all)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per implementation")
    p.add_argument("--iters", type=int, default=5, help="timed runs per implementation (median reported)")
    p.add_argument("--json", type=Path, default=None, help="write results as JSON")
    p.add_argument("--tune", type=Path, default=None,
                   help="sweep block sizes on this GPU and write a config JSON here")
    p.add_argument("--match", default=None,
                   help="with --tune: GPU-name substring the written file matches (default: this GPU's full name)")
    p.add_argument("--smoke", action="store_true",
                   help="no GPU needed: tiny shapes on CPU with TRITON_INTERPRET=1 (exercises the script)")
    return p.parse_args(argv)


def _implementations(cuda: bool) -> dict[str, Callable]:
    """name -> fn(q, k, v) in (B, L, H, D) layout; SDPA variants pinned to one backend each."""
    import importlib.util

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from fastvideo.kernels.attention.triton_attention import flash_attention
    from fastvideo.kernels.attention.triton_fp8_attention import MIN_CAPABILITY, flash_attention_fp8

    def sdpa_with(backend: "SDPBackend") -> Callable:
        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                      v.transpose(1, 2)).transpose(1, 2)
        return run

    impls: dict[str, Callable] = {"fastvideo-triton": flash_attention}
    if not cuda or torch.cuda.get_device_capability() >= MIN_CAPABILITY:
        impls["fastvideo-triton-fp8"] = flash_attention_fp8
    if cuda:
        impls["sdpa-flash"] = sdpa_with(SDPBackend.FLASH_ATTENTION)
        impls["sdpa-cudnn"] = sdpa_with(SDPBackend.CUDNN_ATTENTION)
        impls["sdpa-efficient"] = sdpa_with(SDPBackend.EFFICIENT_ATTENTION)
        if importlib.util.find_spec("flash_attn") is not None:
            from flash_attn import flash_attn_func

            impls["flash-attn"] = flash_attn_func
    else:
        impls["sdpa-math"] = sdpa_with(SDPBackend.MATH)
    return impls


def bench(shapes: tuple[Shape, ...], dtype_name: str, warmup: int, iters: int, cuda: bool) -> list[dict]:
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    device = "cuda" if cuda else "cpu"
    rows: list[dict] = []
    for shape in shapes:
        gen = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(shape.batch, n, shape.heads, shape.head_dim, device=device, dtype=dtype,
                               generator=gen) for n in (shape.len_q, shape.len_k, shape.len_k))
        ours_out = None
        ours_ms = None
        for name, fn in _implementations(cuda).items():
            row = {"shape": shape.name, "impl": name, **asdict(shape), "dtype": dtype_name, "flops": shape.flops}
            try:
                out = fn(q, k, v)
                ms = median_ms(lambda: fn(q, k, v), warmup, iters, cuda)  # noqa: F821 - q/k/v are del'd later
            except (RuntimeError, ValueError) as exc:  # an SDPA backend that cannot run this shape
                row.update(ms=None, tflops=None, error=str(exc).splitlines()[0][:120])
                rows.append(row)
                continue
            if ours_out is None:
                ours_out, ours_ms = out, ms
            row.update(ms=ms, tflops=shape.flops / (ms * 1e-3) / 1e12,
                       ours_over_theirs=ms / ours_ms,
                       max_abs_diff_vs_ours=(out.float() - ours_out.float()).abs().max().item())
            rows.append(row)
            del out
        del q, k, v, ours_out
        if cuda:
            torch.cuda.empty_cache()
    return rows


def print_table(rows: list[dict], device_name: str) -> None:
    print(f"device: {device_name}")
    print(f"{FLOP_FORMULA}; ours/them = our TFLOP/s / their TFLOP/s (> 1: ours is faster)")
    header = f"{'shape':<15} {'impl':<21} {'Lq':>6} {'Lk':>6} {'H':>3} {'D':>4} {'ms':>10} {'TFLOP/s':>9} " \
             f"{'ours/them':>9} {'max|diff|':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.get("ms") is None:
            print(f"{r['shape']:<15} {r['impl']:<21} unavailable: {r.get('error', '')}")
            continue
        print(f"{r['shape']:<15} {r['impl']:<21} {r['len_q']:>6} {r['len_k']:>6} {r['heads']:>3} {r['head_dim']:>4} "
              f"{r['ms']:>10.3f} {r['tflops']:>9.2f} {r['ours_over_theirs']:>9.2f} {r['max_abs_diff_vs_ours']:>10.2e}")


def tune(path: Path, dtype_name: str, warmup: int, iters: int, match: str | None) -> dict:
    """Sweep (block_m, block_n, warps, stages) on a Wan-like shape per head dim; write the JSON."""
    import torch

    from fastvideo.kernels.attention import triton_attention as ta
    from fastvideo.kernels.attention.tuning import AttentionConfig, config_to_json
    from fastvideo.kernels.triton_utils import current_gpu_name

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    gpu = current_gpu_name()
    best: dict[str, AttentionConfig] = {}
    for head_dim in (64, 128):
        # Wan2.1-1.3B self-attention length: not a multiple of any block, so the masked tail is timed too.
        q, k, v = (torch.randn(1, 32760, 12, head_dim, device="cuda", dtype=dtype) for _ in range(3))
        results = []
        for bm in (64, 128):
            for bn in (32, 64, 128):
                for warps in (4, 8):
                    for stages in (2, 3, 4):
                        cfg = AttentionConfig(bm, bn, warps, stages, source="tune")
                        try:
                            ms = median_ms(lambda: ta.flash_attention_triton(q, k, v, config=cfg), warmup, iters, True)
                        except Exception as exc:  # noqa: BLE001 - e.g. out of shared memory: skip config
                            logger.info("skip %s: %s", cfg, str(exc).splitlines()[0][:80])
                            continue
                        results.append((ms, cfg))
                        print(f"d={head_dim} bm={bm} bn={bn} warps={warps} stages={stages}: {ms:.3f} ms")
        ms, cfg = min(results, key=lambda r: r[0])
        best[str(head_dim)] = cfg
        print(f"best d={head_dim}: {cfg} ({ms:.3f} ms)")
    token = (match or gpu).lower()
    major, minor = torch.cuda.get_device_capability()
    text = config_to_json(torch.cuda.get_device_name(), [token], {"default": best["64"], **best},
                          f"tuned with bench_attention.py --tune ({dtype_name}, L=32760, H=12)",
                          capabilities=(10 * major + minor,))
    path.write_text(text + "\n")
    print(f"wrote {path} (match token {token!r}); copy it to fastvideo/kernels/attention/configs/")
    return json.loads(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = kernel_bench_cuda(args.smoke)
    if cuda is None:
        return 0
    import torch

    if args.tune:
        if not cuda:
            print("no CUDA device: --tune needs a GPU")
            return 0
        tune(args.tune, args.dtype, args.warmup, args.iters, args.match)
        return 0
    shapes = SMOKE_SHAPES if args.smoke else GPU_SHAPES
    if args.shapes:
        shapes = tuple(s for s in shapes if s.name in args.shapes)
    rows = bench(shapes, args.dtype, 0 if args.smoke else args.warmup, 1 if args.smoke else args.iters, cuda)
    device_name = torch.cuda.get_device_name() if cuda else "cpu (TRITON_INTERPRET=1, smoke: timings meaningless)"
    print_table(rows, device_name)
    if args.json:
        args.json.write_text(json.dumps({"device": device_name, "flop_formula": FLOP_FORMULA,
                                         "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    diffs = [r["max_abs_diff_vs_ours"] for r in rows if r.get("max_abs_diff_vs_ours") is not None]
    return 0 if all(math.isfinite(d) for d in diffs) else 1


if __name__ == "__main__":
    sys.exit(main())
