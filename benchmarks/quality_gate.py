"""Quality gate: each speed lever off and on, same prompts and seeds, its eval deltas next to its speed-up.

A *lever* trades quality for speed or memory (precision, kernels; later sequence parallelism, step caching,
FP8, offload). It is a :class:`Lever` in :data:`LEVERS`: generator-config overrides (dotted, e.g.
``engine.dtype``) and request overrides (dotted, e.g. ``sampling.seed`` or a per-request cache setting)
for its *off* and *on* settings, plus a check saying why it cannot run on a device. New levers call
:func:`register_lever` (sequence parallelism, TeaCache thresholds and FP8 register here when they land).

For every selected lever the script loads the model twice (off, on), warms each up, then generates every
(prompt, seed) of the workload with both, interleaved (off, on, off, on ...) for ``--repeats`` rounds so
load drift hits both alike. It scores each *on* video against the *off* video of the same prompt and seed
with ``fastvideo.eval`` (``common.psnr``, ``common.ssim``, ``common.mse`` at the frame level) and the change
of ``temporal.flicker`` / ``temporal.motion``, and reports the speed-up: median seconds off / on, of the
whole generation and of the denoising loop alone.

The gate: a lever passes when its *worst* (prompt, seed) PSNR is >= ``--min-psnr`` (default 30 dB) and its
worst SSIM is >= ``--min-ssim`` (default 0.95; 0 turns the SSIM check off). Identical output is PSNR ``inf``.
A lever that cannot run here (no CUDA for a Triton kernel; a setting the engine refuses) is listed as
skipped with the reason and does not fail the gate.

Output: a markdown table on stdout (and ``--markdown PATH``), every figure and the exact workload as JSON
(``--json PATH``), and ``--update-readme README.md`` rewrites the table between the
``<!-- quality-gate:begin -->`` / ``<!-- quality-gate:end -->`` markers. Exit status: 0 when every lever
that ran passes, 1 when one fails, 2 for bad input (an unknown lever lists the known ones).

Default workload: the built-in tiny model (random weights: its videos are noise-like, which makes PSNR and
SSIM strict), 64x64, 9 frames, 4 steps, 2 prompts x 2 seeds, on ``--device auto``. ``--model-path`` takes a
real model folder (e.g. Wan2.1-T2V-1.3B-Diffusers) on a GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastvideo.api import FastVideoError, apply_overrides  # noqa: E402
from fastvideo.eval import evaluate  # noqa: E402
from fastvideo.eval.runner import json_safe  # noqa: E402

logger = logging.getLogger("quality_gate")

README_BEGIN = "<!-- quality-gate:begin -->"
README_END = "<!-- quality-gate:end -->"
DEFAULT_PROMPTS = ("a red fox running through snow", "waves breaking on a rocky shore at sunset")


# -------------------------------------------------------------------------------------------- levers
def runs_anywhere(device: str) -> str | None:
    return None


def needs_cuda_triton(device: str) -> str | None:
    """Why a Triton-kernel lever cannot run on ``device`` (None when it can)."""
    if not torch.cuda.is_available() or device == "cpu" or device.startswith("cpu"):
        return "needs a CUDA device (Triton kernels)"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "needs triton (pip install -e .[kernels])"
    return None


@dataclass(frozen=True)
class Lever:
    """A setting that trades quality for speed: what changes between off and on, and where it can run."""

    name: str
    description: str
    #: Dotted GeneratorConfig overrides (e.g. ``{"engine.dtype": "fp32"}``) of the off / on setting.
    off: Mapping[str, Any] = field(default_factory=dict)
    on: Mapping[str, Any] = field(default_factory=dict)
    #: Dotted GenerationRequest overrides (e.g. ``{"sampling.seed": 1}``) of the off / on setting.
    request_off: Mapping[str, Any] = field(default_factory=dict)
    request_on: Mapping[str, Any] = field(default_factory=dict)
    #: Why the lever cannot run on a device (None: it can).
    unavailable: Callable[[str], str | None] = runs_anywhere

    def change(self) -> str:
        """``key off -> on`` for every setting the lever changes."""
        parts = []
        for off, on in ((self.off, self.on), (self.request_off, self.request_on)):
            for key in dict.fromkeys([*off, *on]):
                parts.append(f"{key} {_show(off.get(key))} -> {_show(on.get(key))}")
        return "; ".join(parts)


def _show(value: Any) -> str:
    return "default" if value is None else str(value)


LEVERS: dict[str, Lever] = {}


def register_lever(lever: Lever) -> Lever:
    if lever.name in LEVERS:
        raise ValueError(f"lever {lever.name} is already registered")
    LEVERS[lever.name] = lever
    return lever


register_lever(Lever("dtype.bf16", "DiT and text encoder in bf16 instead of fp32",
                     off={"engine.dtype": "fp32"}, on={"engine.dtype": "bf16"}))
register_lever(Lever("ops_backend.torch", "fused DiT ops (norms, AdaLN, RoPE, gated residual) through their torch "
                                          "references instead of the eager model code",
                     off={"engine.ops_backend": None}, on={"engine.ops_backend": "torch"}))
register_lever(Lever("ops_backend.triton", "fused DiT ops as Triton kernels instead of the eager model code",
                     off={"engine.ops_backend": None}, on={"engine.ops_backend": "triton"},
                     unavailable=needs_cuda_triton))
register_lever(Lever("attention.triton", "our Triton attention kernel instead of torch SDPA",
                     off={"engine.attention_backend": "sdpa"}, on={"engine.attention_backend": "triton"},
                     unavailable=needs_cuda_triton))


# ------------------------------------------------------------------------------------------ workload
@dataclass
class Workload:
    prompts: list[str]
    seeds: list[int]
    width: int = 64
    height: int = 64
    num_frames: int = 9
    steps: int = 4
    repeats: int = 1
    warmup: int = 1
    device: str = "auto"
    model_path: str | None = None


@dataclass
class Thresholds:
    #: Worst (prompt, seed) PSNR of on against off, dB.
    min_psnr: float = 30.0
    #: Worst SSIM; 0 disables the check.
    min_ssim: float = 0.95

    def describe(self) -> str:
        parts = [f"PSNR >= {self.min_psnr:g} dB"]
        if self.min_ssim > 0:
            parts.append(f"SSIM >= {self.min_ssim:g}")
        return " and ".join(parts)


def _request(workload: Workload, prompt: str, seed: int, overrides: Mapping[str, Any]) -> dict[str, Any]:
    base = {"prompt": prompt, "sampling": {"width": workload.width, "height": workload.height,
                                           "num_frames": workload.num_frames, "num_inference_steps": workload.steps,
                                           "seed": seed},
            "output": {"return_frames": True, "save_video": False}}
    return apply_overrides(base, overrides)


def _generator_config(workload: Workload, overrides: Mapping[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {"engine": {"device": workload.device}}
    if workload.model_path:
        base["model_path"] = workload.model_path
    return apply_overrides(base, overrides)


def _speedup(off: list[float], on: list[float]) -> float | None:
    if not off or not on or statistics.median(on) <= 0:
        return None
    return statistics.median(off) / statistics.median(on)


def run_lever(lever: Lever, workload: Workload, thresholds: Thresholds) -> dict[str, Any]:
    """Generate the workload with the lever off and on; score on against off; apply the gate."""
    from fastvideo import VideoGenerator

    row: dict[str, Any] = {"lever": lever.name, "description": lever.description, "change": lever.change()}
    reason = lever.unavailable(workload.device)
    generators: dict[str, Any] = {}
    try:
        if reason is None:
            for side, overrides in (("off", lever.off), ("on", lever.on)):
                generators[side] = VideoGenerator.from_config(_generator_config(workload, overrides))
    except (FastVideoError, ValueError) as exc:  # the engine refuses the setting here: say why, skip
        reason = f"{exc.__class__.__name__}: {exc}"
    if reason is not None:
        for generator in generators.values():
            generator.shutdown()
        logger.info("%s: skipped (%s)", lever.name, reason)
        return {**row, "status": "skipped", "reason": reason}
    try:
        requests = {side: [_request(workload, p, s, over) for p in workload.prompts for s in workload.seeds]
                    for side, over in (("off", lever.request_off), ("on", lever.request_on))}
        for _ in range(workload.warmup):
            for side in ("off", "on"):
                generators[side].generate(requests[side][0])
        frames: dict[str, list[np.ndarray]] = {"off": [], "on": []}
        total_s: dict[str, list[float]] = {"off": [], "on": []}
        denoise_s: dict[str, list[float]] = {"off": [], "on": []}
        for round_index in range(workload.repeats):
            for i in range(len(requests["off"])):
                for side in ("off", "on"):
                    result = generators[side].generate(requests[side][i])
                    total_s[side].append(result.generation_time)
                    denoise_s[side].append(float(result.metadata.get("timings", {}).get("denoise_s", math.nan)))
                    if round_index == 0:
                        frames[side].append(result.frames)
    finally:
        for generator in generators.values():
            generator.shutdown()

    samples = []
    keys = [(p, s) for p in workload.prompts for s in workload.seeds]
    for (prompt, seed), off, on in zip(keys, frames["off"], frames["on"]):
        ref = evaluate(on, "common.psnr,common.ssim,common.mse", reference=off).videos[0]
        temporal = evaluate([off, on], "temporal").videos
        samples.append({
            "prompt": prompt, "seed": seed,
            "psnr_db": ref.score("common.psnr"), "ssim": ref.score("common.ssim"), "mse": ref.score("common.mse"),
            "flicker_off": temporal[0].score("temporal.flicker"), "flicker_on": temporal[1].score("temporal.flicker"),
            "motion_off": temporal[0].score("temporal.motion"), "motion_on": temporal[1].score("temporal.motion"),
        })
    psnr_min = min(s["psnr_db"] for s in samples)
    ssim_min = min(s["ssim"] for s in samples)
    failures = []
    if psnr_min < thresholds.min_psnr:
        failures.append(f"PSNR {psnr_min:.2f} dB < {thresholds.min_psnr:g}")
    if thresholds.min_ssim > 0 and ssim_min < thresholds.min_ssim:
        failures.append(f"SSIM {ssim_min:.4f} < {thresholds.min_ssim:g}")
    return {
        **row, "status": "fail" if failures else "pass", "failures": failures,
        "psnr_db_min": psnr_min, "psnr_db_mean": statistics.fmean(s["psnr_db"] for s in samples),
        "ssim_min": ssim_min, "ssim_mean": statistics.fmean(s["ssim"] for s in samples),
        "mse_mean": statistics.fmean(s["mse"] for s in samples),
        "flicker_delta": statistics.fmean(s["flicker_on"] - s["flicker_off"] for s in samples),
        "motion_delta": statistics.fmean(s["motion_on"] - s["motion_off"] for s in samples),
        "speedup_total": _speedup(total_s["off"], total_s["on"]),
        "speedup_denoise": _speedup(denoise_s["off"], denoise_s["on"]),
        "seconds": {"total": total_s, "denoise": denoise_s}, "samples": samples,
    }


# ---------------------------------------------------------------------------------------------- output
def _num(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf (identical)" if value > 0 else "-inf"
    return format(value, fmt)


def markdown_table(rows: list[dict[str, Any]], workload: Workload, thresholds: Thresholds) -> str:
    model = workload.model_path or "built-in tiny model (random weights)"
    lines = [
        f"Gate: lever on vs off, same prompts and seeds, frame level; worst case over "
        f"{len(workload.prompts)} prompts x {len(workload.seeds)} seeds must reach {thresholds.describe()}.",
        f"Workload: {model}, device {workload.device}, {workload.width}x{workload.height}, {workload.num_frames} "
        f"frames, {workload.steps} steps; speed-up = median seconds off / on over {workload.repeats} round(s) "
        "(`python benchmarks/quality_gate.py`).",
        "",
        "| lever | change | PSNR dB (worst) | SSIM (worst) | Δ flicker | Δ motion | speed-up (total) "
        "| speed-up (denoise) | gate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["status"] == "skipped":
            lines.append(f"| {row['lever']} | {row['change']} | - | - | - | - | - | - | skipped: {row['reason']} |")
            continue
        gate = "pass" if row["status"] == "pass" else "FAIL: " + "; ".join(row["failures"])
        lines.append(
            f"| {row['lever']} | {row['change']} | {_num(row['psnr_db_min'], '.2f')} | {_num(row['ssim_min'], '.4f')} "
            f"| {_num(row['flicker_delta'], '+.3g')} | {_num(row['motion_delta'], '+.3g')} "
            f"| {_num(row['speedup_total'], '.2f')}x | {_num(row['speedup_denoise'], '.2f')}x | {gate} |")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_readme(path: Path, table: str) -> None:
    """Replace the text between the quality-gate markers of ``path`` with ``table``."""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{path}: no '{README_BEGIN}' ... '{README_END}' block to fill")
    _write_atomic(path, text[:start + len(README_BEGIN)] + "\n" + table + text[end:])


# ------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quality_gate.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the same prompts and seeds with each speed lever off and on; report PSNR/SSIM/MSE of on "
                    "against off, the change of flicker and motion, and the speed-up; fail (exit 1) when a lever "
                    "falls below the thresholds.",
        epilog="levers:\n" + "\n".join(f"  {lv.name:<20} {lv.description}" for lv in LEVERS.values()))
    p.add_argument("--levers", default="all", help="comma-separated lever names, or 'all' (default)")
    p.add_argument("--model-path", default=None, help="model folder (default: the built-in tiny model)")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1")
    p.add_argument("--prompts", nargs="+", default=list(DEFAULT_PROMPTS), metavar="TEXT", help="prompts")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], metavar="N", help="seeds (default 0 1)")
    p.add_argument("--width", type=int, default=64, help="width, a multiple of 16 (default 64)")
    p.add_argument("--height", type=int, default=64, help="height, a multiple of 16 (default 64)")
    p.add_argument("--num-frames", type=int, default=9, help="frames (default 9)")
    p.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    p.add_argument("--repeats", type=int, default=1, help="timed rounds over the workload (default 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed generations per setting first (default 1)")
    p.add_argument("--min-psnr", type=float, default=30.0, help="gate: worst PSNR in dB (default 30)")
    p.add_argument("--min-ssim", type=float, default=0.95, help="gate: worst SSIM (default 0.95; 0 disables)")
    p.add_argument("--json", default=None, metavar="PATH", help="write every figure and the workload as JSON")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write the table as markdown")
    p.add_argument("--update-readme", default=None, metavar="README.md",
                   help=f"rewrite the table between {README_BEGIN} and {README_END} in this file")
    return p


def select_levers(spec: str) -> list[Lever]:
    names = list(LEVERS) if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in LEVERS]
    if unknown or not names:
        raise ValueError(f"unknown lever(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(LEVERS)}")
    return [LEVERS[n] for n in names]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        levers = select_levers(args.levers)
        if args.update_readme and not Path(args.update_readme).is_file():
            raise ValueError(f"--update-readme {args.update_readme}: no such file")
        if args.repeats < 1 or args.warmup < 0:
            raise ValueError("--repeats must be >= 1 and --warmup >= 0")
    except ValueError as exc:
        print(f"quality_gate: {exc}", file=sys.stderr)
        return 2
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    workload = Workload(prompts=args.prompts, seeds=args.seeds, width=args.width, height=args.height,
                        num_frames=args.num_frames, steps=args.steps, repeats=args.repeats, warmup=args.warmup,
                        device=device, model_path=args.model_path)
    thresholds = Thresholds(min_psnr=args.min_psnr, min_ssim=args.min_ssim)
    try:
        rows = [run_lever(lever, workload, thresholds) for lever in levers]
    except (FastVideoError, ValueError) as exc:  # a bad workload (size, frames, model folder): one line
        print(f"quality_gate: {exc}", file=sys.stderr)
        return 2
    table = markdown_table(rows, workload, thresholds)
    print(table)
    if args.markdown:
        _write_atomic(Path(args.markdown), table)
    if args.json:
        payload = {"workload": asdict(workload), "thresholds": asdict(thresholds), "levers": rows,
                   "torch": torch.__version__,
                   "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
        _write_atomic(Path(args.json), json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n")
    if args.update_readme:
        update_readme(Path(args.update_readme), table)
    return 1 if any(row["status"] == "fail" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
