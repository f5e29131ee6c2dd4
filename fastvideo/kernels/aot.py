"""Ahead-of-time compile of every Triton kernel for a named GPU, without a GPU.

Contract:
- :func:`plan_cases` calls our public op wrappers (``flash_attention_triton`` and the four fused
  ops) on ``meta`` tensors shaped like the Wan DiT's (attention: head dims 64 and 128, the
  Wan2.1-1.3B self-attention of 32,760 tokens, which is not a multiple of any block, the 14B's
  75,600 (divisible by 16, which Triton specializes differently) at d=128, and the
  512-token cross-attention, bf16 and fp16, with every shipped attention config for each compute
  capability its file declares, and the out-of-resources fallback config; fused ops at the 1.3B and 14B widths) inside
  :func:`~fastvideo.kernels.triton_utils.planning_launches`, so each recorded launch has exactly
  the arguments, constexprs, warps and stages a real call makes.
- :func:`compile_launch` compiles one launch for ``sm_<cc>`` with Triton's own JIT binder (so
  argument specialization, e.g. 16-byte divisibility, is what a real launch gets) through a
  compile-only driver, then runs the ptxas of the Triton wheel on the PTX with ``-v`` and reports
  registers, spills, shared memory, whether wgmma is used and any ptxas performance warning.
- :func:`problems` is the acceptance rule CI enforces (``tests/kernels/test_gpu_compile.py``): a
  compile error, shared memory over the target's limit, any spill, a ptxas performance warning
  (e.g. C7515, serialized wgmma) or an sm_90 attention kernel without wgmma.
- Needs the kernels imported compiled (``TRITON_INTERPRET`` unset); uses Triton's semi-internal
  driver/JIT hooks (checked with triton 3.9 in CI and 3.6 on the GPU image).
- ``python -m fastvideo.kernels.aot [--target 90 --target 80] [--json PATH]`` prints a table and
  exits 1 when any case has a problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

#: Shared memory per block (bytes) a kernel may use on each compute capability.
SHARED_LIMIT: dict[int, int] = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
#: Wan DiT geometry the cases use: (name, model width, heads).
WAN_WIDTHS: tuple[tuple[str, int, int], ...] = (("1.3b", 1536, 12), ("14b", 5120, 40))
SELF_TOKENS = 32760  # Wan2.1 480x832x81: latent 21x60x104 -> 21x30x52 patches
SELF_TOKENS_14B = 75600  # Wan2.1-14B 720x1280x81: 21x45x80 patches (divisible by 16)
TEXT_TOKENS = 512
BATCH = 2  # CFG: conditional + unconditional rows


@dataclass
class Case:
    """One planned launch and where it came from."""

    name: str
    capability: int
    launch: Any


@dataclass
class CompileReport:
    """What ptxas says of one compiled case."""

    name: str
    target: str
    kernel: str
    shared_bytes: int = 0
    registers: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    wgmma: bool = False
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    compile_s: float = 0.0


class _CompileOnlyDriver:
    """What Triton's JIT asks of a driver to compile (never to launch) for ``sm_<capability>``."""

    def __init__(self, capability: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", capability, 32)
        self.capability = capability

    def get_current_target(self) -> Any:
        return self.target

    def get_current_device(self) -> str:
        return f"aot-sm{self.capability}"  # the JIT's per-device cache key

    def get_current_stream(self, device: Any = None) -> int:
        return 0

    def is_active(self) -> bool:
        return True


def _ptxas(capability: int) -> str:
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return get_ptxas(capability).path
    except (ImportError, TypeError, AttributeError):
        import triton

        return triton.knobs.nvidia.ptxas.path


def _gpu_name(capability: int) -> str:
    return f"sm_{capability}a" if capability >= 90 else f"sm_{capability}"


def ptxas_info(ptx: str, capability: int) -> dict[str, Any]:
    """Registers, spills and warnings of ``ptx`` compiled by the Triton wheel's ptxas."""
    with tempfile.TemporaryDirectory(prefix="fastvideo-aot-") as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        proc = subprocess.run([_ptxas(capability), "-v", "--regAllocOptLevel=2", f"--gpu-name={_gpu_name(capability)}",
                               str(src), "-o", str(src.with_suffix(".cubin"))], capture_output=True, text=True)
    log = proc.stderr + proc.stdout
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed ({proc.returncode}): {log[-2000:]}")

    def first(pattern: str) -> int:
        found = re.search(pattern, log)
        return int(found.group(1)) if found else 0

    warnings = [line.strip() for line in log.splitlines()
                if "warning" in line.lower() or "Performance Loss" in line or re.search(r"\(C7\d\d\d\)", line)]
    return {"registers": first(r"Used (\d+) registers"), "spill_store_bytes": first(r"(\d+) bytes spill stores"),
            "spill_load_bytes": first(r"(\d+) bytes spill loads"), "warnings": warnings}


def compile_launch(name: str, launch: Any, capability: int) -> CompileReport:
    """Compile one planned launch for ``sm_<capability>`` (see module contract)."""
    from triton.runtime import driver

    report = CompileReport(name=name, target=f"sm_{capability}", kernel=launch.name)
    previous = getattr(driver, "_active", None)
    t0 = time.perf_counter()
    try:
        driver.set_active(_CompileOnlyDriver(capability))
        compiled = launch.kernel.warmup(*launch.args, grid=launch.grid, **launch.options)
        report.shared_bytes = int(compiled.metadata.shared)
        ptx = compiled.asm["ptx"]
        report.wgmma = "wgmma.mma_async" in ptx
        info = ptxas_info(ptx, capability)
    except Exception as exc:  # noqa: BLE001 - reported per case; the caller decides
        report.error = f"{type(exc).__name__}: {str(exc)[:2000]}"
        return report
    finally:
        driver._active = previous  # set_active() has no public undo that avoids creating a real driver
        report.compile_s = time.perf_counter() - t0
    report.registers = info["registers"]
    report.spill_store_bytes = info["spill_store_bytes"]
    report.spill_load_bytes = info["spill_load_bytes"]
    report.warnings = info["warnings"]
    return report


def problems(report: CompileReport) -> list[str]:
    """Why a compiled case is not acceptable (empty when it is; see module contract)."""
    if report.error is not None:
        return [f"compile error: {report.error}"]
    capability = int(report.target.removeprefix("sm_"))
    found = []
    limit = SHARED_LIMIT.get(capability)
    if limit is not None and report.shared_bytes > limit:
        found.append(f"needs {report.shared_bytes} bytes of shared memory (sm_{capability} has {limit})")
    if report.spill_store_bytes or report.spill_load_bytes:
        found.append(f"spills ({report.spill_store_bytes} bytes stored, {report.spill_load_bytes} loaded; "
                     f"{report.registers} registers)")
    found += [f"ptxas: {w}" for w in report.warnings]
    if capability >= 90 and report.kernel.startswith("attention") and not report.wgmma:
        found.append("attention kernel does not use wgmma on Hopper")
    return found


def _meta(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def _attention_cases(dtypes: tuple[torch.dtype, ...], capabilities: tuple[int, ...] | None) -> list[Case]:
    from fastvideo.kernels.attention import triton_attention as ta
    from fastvideo.kernels.attention.tuning import CONFIG_DIR, config_capabilities, config_entries
    from fastvideo.kernels.triton_utils import planning_launches

    sources = [(path.stem, config_entries(path), config_capabilities(path))
               for path in sorted(CONFIG_DIR.glob("*.json"))]
    sources.append(("fallback", {"default": ta.FALLBACK_CONFIG}, ta.FALLBACK_CAPABILITIES))
    cases = []
    for source, entries, declared in sources:
        for capability in declared:
            if capabilities is not None and capability not in capabilities:
                continue
            for head_dim in (64, 128):
                config = entries.get(str(head_dim), entries["default"])
                shapes = [("self", SELF_TOKENS, SELF_TOKENS, 1536), ("cross", SELF_TOKENS, TEXT_TOKENS, 1536)]
                if head_dim == 128:  # Lk divisible by 16: Triton specializes it differently
                    shapes.append(("self-14b", SELF_TOKENS_14B, SELF_TOKENS_14B, 5120))
                for dtype in dtypes:
                    for kind, len_q, len_k, width in shapes:
                        heads = width // head_dim
                        q = _meta(BATCH, len_q, heads, head_dim, dtype=dtype)
                        kv = _meta(BATCH, len_k, heads, head_dim, dtype=dtype)
                        with planning_launches() as planned:
                            ta.flash_attention_triton(q, kv, kv, config=config)
                        dt = str(dtype).removeprefix("torch.")
                        name = (f"attention {source}[{head_dim}] {kind} Lq={len_q} Lk={len_k} d={head_dim} "
                                f"{dt} {config.block_m}x{config.block_n} w{config.num_warps} s{config.num_stages}")
                        cases += [Case(name, capability, launch) for launch in planned]
    return cases


def _fused_cases(dtypes: tuple[torch.dtype, ...], capabilities: tuple[int, ...]) -> list[Case]:
    from fastvideo.kernels import fused_triton as ft
    from fastvideo.kernels.triton_utils import planning_launches

    cases = []
    for label, width, heads in WAN_WIDTHS:
        for dtype in dtypes:
            x = _meta(BATCH, SELF_TOKENS, width, dtype=dtype)
            modulation = _meta(BATCH, 6, width, dtype=torch.float32).chunk(6, dim=1)  # (B, 1, C) views, as the DiT
            cos = _meta(SELF_TOKENS, width // heads // 2, dtype=torch.float32)
            with planning_launches() as planned:
                ft.rms_norm_triton(x, _meta(width, dtype=dtype), 1e-6)
                ft.layer_norm_modulate_triton(x, modulation[1], modulation[0], 1e-6)
                ft.gated_residual_triton(x, x, modulation[2])
                ft.apply_rope_triton(x.unflatten(2, (heads, -1)), cos, cos)
            dt = str(dtype).removeprefix("torch.")
            for capability in capabilities:
                cases += [Case(f"{launch.name} wan{label} C={width} {dt}", capability, launch) for launch in planned]
    return cases


def plan_cases(capabilities: tuple[int, ...] | None = None,
               dtypes: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)) -> list[Case]:
    """Every case of the module contract (``capabilities``: restrict to these; default all declared)."""
    from fastvideo.kernels.attention import triton_attention as ta

    if ta.INTERPRETED:
        raise RuntimeError("the kernels were imported for the Triton interpreter; unset TRITON_INTERPRET to compile "
                           "them for a GPU")
    fused_targets = capabilities if capabilities is not None else (80, 90)
    return _attention_cases(dtypes, capabilities) + _fused_cases(dtypes, fused_targets)


def run_all(capabilities: tuple[int, ...] | None = None) -> list[CompileReport]:
    """Plan and compile every case; one report per case, in plan order."""
    return [compile_launch(case.name, case.launch, case.capability) for case in plan_cases(capabilities)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastvideo.kernels.aot", description=(
        "Compile every FastVideo Triton kernel at Wan shapes for named GPU targets, without a GPU, and check "
        "registers, spills, shared memory and (sm_90) wgmma. Exit status 1 when any case has a problem."))
    parser.add_argument("--target", type=int, action="append", default=None, metavar="CC",
                        help="compute capability to compile for, e.g. 90 or 80 (repeatable; default: every "
                             "capability the shipped attention configs declare, fused ops for 80 and 90)")
    parser.add_argument("--json", type=Path, default=None, help="also write the reports as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    reports = run_all(tuple(args.target) if args.target else None)
    failed = 0
    for report in reports:
        issues = problems(report)
        failed += bool(issues)
        status = "FAIL " + "; ".join(issues) if issues else "ok"
        sys.stdout.write(f"{report.target:6} {report.name:<80} regs {report.registers:>3} smem "
                         f"{report.shared_bytes:>6} wgmma {'y' if report.wgmma else 'n'}  {status}\n")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) | {"problems": problems(r)} for r in reports], indent=1))
    sys.stdout.write(f"{len(reports)} kernels compiled, {failed} with problems\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
