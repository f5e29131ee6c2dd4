"""FP8 DiT step against bf16, same run: Wan2.1-1.3B shapes (random weights), CFG batch 2, sdpa attention.

Runs on CUDA sm_89+ only (FP8 tensor cores; per-row scales, the default, need sm_90 for ``torch._scaled_mm``,
so on sm_89 the per-tensor scheme is timed instead). Anywhere else it writes ``{"skipped": reason}`` and exits
0, unless ``--smoke``: the tiny built-in config on the CPU (the float32 emulation; rehearses the script, its
ratio says nothing about speed). The two models take turns (:func:`benchmarks.timing.interleaved_seconds`) and
the latent output of the FP8 step is compared with the bf16 one (relative L2 error, latent PSNR).

    python benchmarks/bench_fp8.py --json fp8.json                   # 480x832x21 (latent 6x60x104) on a GPU
    python benchmarks/bench_fp8.py --smoke --json fp8.json           # CPU rehearsal
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleaved_seconds, peak_memory  # noqa: E402
from benchmarks.wan_configs import WAN_1_3B_DIT  # noqa: E402


def why_not(device: torch.device) -> str | None:
    if device.type != "cuda":
        return "needs a CUDA GPU (FP8 tensor cores, sm_89+)"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return f"needs sm_89+ for FP8 tensor cores; this GPU is sm_{major}{minor}"
    return None


def main(argv: list[str] | None = None) -> int:
    from fastvideo.engine.builtin_model import TRANSFORMER_CONFIG
    from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel
    from fastvideo.engine.fp8 import quantize_dit

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="480x832x21", help="HEIGHTxWIDTHxFRAMES of the video (default 480x832x21)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny config on the CPU (rehearsal)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    device = torch.device("cpu") if args.smoke else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reason = None if args.smoke else why_not(device)
    if reason is not None:
        result: dict[str, Any] = {"skipped": reason}
        print(f"FP8 DiT step: skipped ({reason})")
    else:
        granularity = "row"
        if device.type == "cuda" and torch.cuda.get_device_capability(device) < (9, 0):
            granularity = "tensor"
        config = {k: v for k, v in TRANSFORMER_CONFIG.items() if not k.startswith("_")} if args.smoke \
            else dict(WAN_1_3B_DIT)
        height, width, frames = (int(v) for v in ("64x64x5" if args.smoke else args.size).split("x"))
        dtype = torch.bfloat16
        torch.manual_seed(0)
        with torch.device(device):
            bf16 = WanTransformer3DModel(WanDiTConfig.from_dict(config)).eval().to_inference_dtype(dtype)
        fp8 = copy.deepcopy(bf16)
        spec = quantize_dit(fp8, granularity)  # type: ignore[arg-type]
        paths = sorted({m.path for m in fp8.modules() if hasattr(m, "path")})
        gen = torch.Generator().manual_seed(1)
        latent = (2, config["in_channels"], (frames - 1) // 4 + 1, height // 8, width // 8)
        x = torch.randn(latent, generator=gen).to(device, dtype)
        t = torch.full((2,), 500.0, device=device)
        text = torch.randn(2, 512 if not args.smoke else 32, config["text_dim"], generator=gen).to(device, dtype)
        with torch.no_grad():
            bf16.rope_tables(tuple(s // p for s, p in zip(latent[2:], config["patch_size"])), device)
            fp8.rope_tables(tuple(s // p for s, p in zip(latent[2:], config["patch_size"])), device)
            times = interleaved_seconds({"bf16": lambda: bf16(x, t, text), "fp8": lambda: fp8(x, t, text)},
                                        args.warmup, args.iters, device.type == "cuda")
            ref, out = bf16(x, t, text).double(), fp8(x, t, text).double()
            memory = {name: peak_memory(lambda m=m: m(x, t, text), device) for name, m in (("bf16", bf16),
                                                                                           ("fp8", fp8))}
        mse = float(((out - ref) ** 2).mean())
        peak = float(ref.max() - ref.min())
        bf16_s, fp8_s = statistics.median(times["bf16"]), statistics.median(times["fp8"])
        weights = {name: sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])
                   for name, m in (("bf16", bf16), ("fp8", fp8))}
        result = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "config": "tiny" if args.smoke else "wan2.1-1.3b", "latent": list(latent), "granularity": granularity,
            "layers": spec.layers, "paths": paths, "bf16_median_s": bf16_s, "fp8_median_s": fp8_s,
            "speedup": bf16_s / fp8_s, "seconds": times, "weight_bytes": weights, "peak_memory": memory,
            "relative_error": float((out - ref).norm() / ref.norm()),
            "latent_psnr_db": math.inf if mse == 0 else 10 * math.log10(peak * peak / mse),
        }
        print(f"FP8 DiT step ({granularity}-wise, {', '.join(paths)}): bf16 {bf16_s * 1e3:.1f} ms, fp8 "
              f"{fp8_s * 1e3:.1f} ms, speed-up {bf16_s / fp8_s:.2f}x; relative error {result['relative_error']:.4f}, "
              f"latent PSNR {result['latent_psnr_db']:.1f} dB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
