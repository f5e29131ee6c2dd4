"""Ahead-of-time compile of the fp8 attention kernel for sm_89 / sm_90 without a GPU.

Plans ``flash_attention_fp8_triton`` on meta tensors at Wan2.1-1.3B's self-attention shape
(B=2, 32,760 tokens, 12 heads, d=128; not a multiple of any block, so the masked tail is compiled)
and its 512-token cross attention, for the shipped per-GPU configs and the fallback config, compiles
each launch with :func:`fastvideo.kernels.aot.compile_launch` (the Triton wheel's ptxas) and reports
registers, spills, shared memory, ptxas warnings and whether fp8 (e4m3) tensor-core instructions
appear: ``wgmma.mma_async ... e4m3`` in the PTX and ``QGMMA`` in the SASS on sm_90, ``mma ... e4m3``
in the PTX (``QMMA`` in the SASS) on sm_89; p·v stays bf16 (``HGMMA`` / ``HMMA``). Exit status 1
on any problem (:func:`fastvideo.kernels.aot.problems` or fp8 MMA missing). Run with TRITON_INTERPRET
unset: ``python benchmarks/kernels/aot_attention_fp8.py [--config NAME] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from fastvideo.kernels import aot
from fastvideo.kernels.attention import triton_fp8_attention as fa
from fastvideo.kernels.attention.triton_attention import FALLBACK_CONFIG
from fastvideo.kernels.attention.tuning import AttentionConfig
from fastvideo.kernels.triton_utils import planning_launches

#: (config label, config, capabilities) compiled here.
CONFIGS: tuple[tuple[str, AttentionConfig, tuple[int, ...]], ...] = (
    ("h200[128]", AttentionConfig(128, 64, num_warps=8, num_stages=3), (90,)),
    ("default", AttentionConfig(64, 64, num_warps=4, num_stages=3), (89, 90)),
    ("fallback", FALLBACK_CONFIG, (89, 90)),
)


def _sass_fp8(ptx: str, capability: int) -> list[str]:
    """Tensor-core MMA opcodes (QGMMA / QMMA for fp8, HGMMA for bf16) in the SASS of ``ptx``
    (the wheel's ptxas and cuobjdump)."""
    bindir = Path(aot._ptxas(capability)).parent
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        subprocess.run([aot._ptxas(capability), f"--gpu-name={aot._gpu_name(capability)}", str(src), "-o",
                        str(src.with_suffix(".cubin"))], check=True, capture_output=True)
        sass = subprocess.run([str(bindir / "cuobjdump"), "-sass", str(src.with_suffix(".cubin"))],
                              capture_output=True, text=True).stdout
    return sorted({m for m in re.findall(r"\b(QGMMA[.\w]*|QMMA[.\w]*|HMMA[.\w]*E4M3[.\w]*|HGMMA[.\w]*)", sass)})


def run(labels: tuple[str, ...] | None = None) -> list[dict]:
    from triton.runtime import driver

    rows = []
    for label, cfg, capabilities in CONFIGS:
        if labels is not None and label not in labels:
            continue
        for kind, len_k in (("self", aot.SELF_TOKENS), ("cross", aot.TEXT_TOKENS)):
            q = torch.empty(aot.BATCH, aot.SELF_TOKENS, 12, 128, dtype=torch.bfloat16, device="meta")
            kv = torch.empty(aot.BATCH, len_k, 12, 128, dtype=torch.bfloat16, device="meta")
            with planning_launches() as planned:
                fa.flash_attention_fp8_triton(q, kv, kv, config=cfg)
            for capability in capabilities:
                for launch in planned:
                    name = f"attention_fp8 {label} {kind} Lk={len_k} d=128 bf16"
                    report = aot.compile_launch(name, launch, capability)
                    previous = getattr(driver, "_active", None)
                    try:
                        driver.set_active(aot._CompileOnlyDriver(capability))
                        ptx = launch.kernel.warmup(*launch.args, grid=launch.grid, **launch.options).asm["ptx"]
                    finally:
                        driver._active = previous
                    fp8_ptx = sorted(set(re.findall(r"(?:wgmma\.mma_async|mma)\.[\w.]*e4m3[\w.]*", ptx)))
                    row = asdict(report) | {"problems": aot.problems(report), "fp8_mma_ptx": fp8_ptx,
                                            "sass_mma": _sass_fp8(ptx, capability)}
                    if not fp8_ptx:
                        row["problems"].append("no e4m3 tensor-core MMA in the PTX")
                    rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--config", action="append", choices=[c[0] for c in CONFIGS],
                        help="only these configs (default: all)")
    args = parser.parse_args(argv)
    if fa.INTERPRETED:
        sys.exit("unset TRITON_INTERPRET: the kernels must be imported compiled")
    rows = run(tuple(args.config) if args.config else None)
    for r in rows:
        print(f"{r['target']:6} {r['name']:50} regs={r['registers']:3} spill={r['spill_store_bytes']}/"
              f"{r['spill_load_bytes']} smem={r['shared_bytes']:6} wgmma={r['wgmma']!s:5} "
              f"ptx_fp8={','.join(r['fp8_mma_ptx'])[:60]} sass={','.join(r['sass_mma'])[:60]} "
              f"{'; '.join(r['problems']) or 'ok'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 1 if any(r["problems"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
