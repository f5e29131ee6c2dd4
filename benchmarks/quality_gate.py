"""Quality gate: each speed lever off and on, same prompts and seeds, its eval deltas next to its speed-up.

A *lever* trades quality for speed or memory (precision, kernels; later sequence parallelism, step caching,
FP8, offload). It is a :class:`Lever` in :data:`LEVERS`: generator-config overrides (dotted, e.g.
``engine.dtype``) and request overrides (dotted, e.g. ``sampling.seed`` or a per-request cache setting)
for its *off* and *on* settings, plus a check saying why it cannot run on a device. New levers call
:func:`register_lever` (sequence parallelism registers here when it lands; ``fp8`` and
``fp8.bf16`` are FP8 DiT weights, engine/fp8.py; ``teacache.<t>`` / ``teacache.raw.<t>`` are TeaCache step caching at
threshold ``t``, engine/step_cache.py).

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
``<!-- quality-gate:begin -->`` / ``<!-- quality-gate:end -->`` markers (``quality-gate-dit`` ones for the
latent level). Exit status: 0 when every lever
that ran passes, 1 when one fails, 2 for bad input (an unknown lever lists the known ones).

``--dit-config tiny|wan2.1-1.3b`` gates at the latent level instead: one DiT forward (random weights of that
config, the built-in model's or the real Wan2.1-T2V-1.3B shapes) per seed with the lever off and on, from the
same random latents, timestep and text embeddings. Levers whose settings are ``engine.dtype``,
``engine.ops_backend``, ``engine.attention_backend`` and ``engine.quantization.transformer_quant`` apply there;
others are skipped with that reason.
Latent PSNR takes the peak-to-peak range of the off output as the peak; SSIM, flicker and motion do not
apply; the speed-up is the DiT step's (median of ``--repeats`` interleaved forwards after the warmup).

Default workload: the built-in tiny model (random weights: its videos are noise-like, which makes PSNR and
SSIM strict), 64x64, 9 frames, 4 steps, 2 prompts x 2 seeds, on ``--device auto``. ``--model-path`` takes a
real model folder (e.g. Wan2.1-T2V-1.3B-Diffusers) on a GPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.wan_configs import WAN_1_3B_DIT  # noqa: E402
from fastvideo.api import FastVideoError, apply_overrides  # noqa: E402
from fastvideo.eval import evaluate  # noqa: E402
from fastvideo.eval.runner import json_safe  # noqa: E402
from fastvideo.fileio import write_atomic

logger = logging.getLogger("quality_gate")

README_BEGIN = "<!-- quality-gate:begin -->"
README_END = "<!-- quality-gate:end -->"
#: The README block of the latent-level (``--dit-config``) table.
README_DIT_BEGIN = "<!-- quality-gate-dit:begin -->"
README_DIT_END = "<!-- quality-gate-dit:end -->"
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
register_lever(Lever("fp8", "FP8 (e4m3, per-row scales) weights for the DiT block linears, activations quantized "
                            "per token (torch._scaled_mm on sm_90 CUDA in bf16, the float32 emulation elsewhere)",
                     off={"engine.quantization.transformer_quant": None},
                     on={"engine.quantization.transformer_quant": "FP8"}))
register_lever(Lever("fp8.bf16", "FP8 weights against bf16 weights, both in a bf16 DiT (the GPU speed comparison)",
                     off={"engine.dtype": "bf16", "engine.quantization.transformer_quant": None},
                     on={"engine.dtype": "bf16", "engine.quantization.transformer_quant": "FP8"}))
register_lever(Lever("attention.triton", "our Triton attention kernel instead of torch SDPA",
                     off={"engine.attention_backend": "sdpa"}, on={"engine.attention_backend": "triton"},
                     unavailable=needs_cuda_triton))

#: TeaCache (fastvideo.engine.step_cache). ``teacache.<t>``: FastVideo's Wan settings (Wan2.1-T2V-1.3B's fitted
#: polynomial, first 5 steps computed): for a real Wan 1.3B folder and ~50 steps. ``teacache.raw.<t>``: the identity
#: polynomial (the raw relative change of the time embedding), first and last step computed: for the built-in model,
#: whose random weights change that input by ~100% a step, outside the range the Wan polynomial was fitted on.
for _thresh in (0.08, 0.2):
    register_lever(Lever(f"teacache.{_thresh:g}", f"TeaCache at threshold {_thresh:g}, Wan 1.3B polynomial "
                                                  "(real Wan 1.3B models, many steps)",
                         request_off={"runtime.enable_teacache": False},
                         request_on={"runtime.enable_teacache": True, "runtime.teacache_thresh": _thresh}))
for _thresh in (0.5, 1.0, 2.0):
    register_lever(Lever(f"teacache.raw.{_thresh:g}", f"TeaCache at threshold {_thresh:g}, identity polynomial, "
                                                      "first/last step computed (the built-in model)",
                         request_off={"runtime.enable_teacache": False},
                         request_on={"runtime.enable_teacache": True, "runtime.teacache_thresh": _thresh,
                                     "runtime.teacache_use_ret_steps": False,
                                     "runtime.teacache_coefficients": [1.0, 0.0]}))


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
    #: None: whole pipeline, frame level; else a DiT config name (latent level, see the module docstring).
    dit_config: str | None = None
    #: Text tokens of the DiT-level inputs.
    text_len: int = 32


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
        cache_skips: list[int] = []  # TeaCache levers: steps skipped per "on" generation
        for round_index in range(workload.repeats):
            for i in range(len(requests["off"])):
                for side in ("off", "on"):
                    result = generators[side].generate(requests[side][i])
                    total_s[side].append(result.generation_time)
                    denoise_s[side].append(float(result.metadata.get("timings", {}).get("denoise_s", math.nan)))
                    if round_index == 0:
                        frames[side].append(result.frames)
                    if side == "on" and "teacache" in result.metadata:
                        cache_skips.append(int(result.metadata["teacache"]["skipped_steps"]))
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
        **({"steps_skipped_mean": statistics.fmean(cache_skips)} if cache_skips else {}),
    }


# ---------------------------------------------------------------------------------------- DiT level
def _builtin_dit_config() -> dict[str, Any]:
    from fastvideo.engine.builtin_model import TRANSFORMER_CONFIG

    return {k: v for k, v in TRANSFORMER_CONFIG.items() if not k.startswith("_")}


DIT_CONFIGS: dict[str, Callable[[], dict[str, Any]]] = {"tiny": _builtin_dit_config,
                                                        "wan2.1-1.3b": lambda: dict(WAN_1_3B_DIT)}
#: The generator settings a DiT forward can express.
DIT_KEYS = ("engine.dtype", "engine.ops_backend", "engine.attention_backend", "engine.quantization.transformer_quant")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def latent_psnr(out: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR of ``out`` against ``ref`` in dB, the peak being the range (max - min) of ``ref``; inf if equal."""
    out, ref = out.double(), ref.double()
    mse = float(((out - ref) ** 2).mean())
    peak = float(ref.max() - ref.min())
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def run_lever_dit(lever: Lever, workload: Workload, thresholds: Thresholds) -> dict[str, Any]:
    """One DiT forward per seed with the lever off and on, compared at the latent level; timed step."""
    from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel, inference_param_dtype
    from fastvideo.engine.fp8 import parse_transformer_quant, quantize_dit
    from fastvideo.kernels.fused import select_ops_backend
    from fastvideo.kernels.registry import select_attention_backend

    row: dict[str, Any] = {"lever": lever.name, "description": lever.description, "change": lever.change()}
    foreign = sorted({k for k in [*lever.off, *lever.on] if k not in DIT_KEYS} | {*lever.request_off,
                                                                                   *lever.request_on})
    reason = (f"not a DiT-level setting ({', '.join(foreign)}); run it on the whole pipeline" if foreign
              else lever.unavailable(workload.device))
    if reason is not None:
        return {**row, "status": "skipped", "reason": reason}
    assert workload.dit_config is not None
    config = DIT_CONFIGS[workload.dit_config]()
    device = torch.device(workload.device)
    torch.manual_seed(0)
    with torch.device(device):  # random init on the device (seconds for 1.3B parameters on a GPU)
        base = WanTransformer3DModel(WanDiTConfig.from_dict(config)).eval()
    models: dict[tuple[torch.dtype, str | None], Any] = {(torch.float32, None): base}
    sides: dict[str, tuple[Any, torch.dtype, Any, Any]] = {}
    try:
        for side, overrides in (("off", lever.off), ("on", lever.on)):
            dtype = DTYPES[str(overrides.get("engine.dtype") or "fp32")]
            quant = overrides.get("engine.quantization.transformer_quant")
            key = (dtype, quant)
            if key not in models:
                models[key] = copy.deepcopy(base)
                with torch.no_grad():
                    for name, param in models[key].named_parameters():
                        param.data = param.data.to(inference_param_dtype(name, dtype))
                granularity = parse_transformer_quant(quant)
                if granularity is not None:  # FP8 weights, as the pipeline quantizes them at load
                    quantize_dit(models[key], granularity)
            attention = select_attention_backend(str(overrides.get("engine.attention_backend") or "sdpa"),
                                                 dtype=dtype, head_dim=config["attention_head_dim"], device=device)
            ops_name = overrides.get("engine.ops_backend")
            ops = select_ops_backend(str(ops_name), dtype=dtype, device=device) if ops_name else None
            sides[side] = (models[key], dtype, attention, ops)
    except (FastVideoError, ValueError) as exc:
        return {**row, "status": "skipped", "reason": f"{exc.__class__.__name__}: {exc}"}

    latent = (1, config["in_channels"], (workload.num_frames - 1) // 4 + 1, workload.height // 8,
              workload.width // 8)

    @torch.no_grad()
    def forward(side: str, inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, float]:
        model, dtype, attention, ops = sides[side]
        model.set_attention_backend(attention)
        model.set_ops_backend(ops)
        x, t, ctx = inputs
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = model(x.to(dtype), t, ctx.to(dtype))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out.float(), time.perf_counter() - start

    samples = []
    step_s: dict[str, list[float]] = {"off": [], "on": []}
    for seed in workload.seeds:
        gen = torch.Generator().manual_seed(seed)
        inputs = (torch.randn(latent, generator=gen).to(device), torch.full((1,), 500.0, device=device),
                  torch.randn(1, workload.text_len, config["text_dim"], generator=gen).to(device))
        for _ in range(workload.warmup):
            forward("off", inputs)
            forward("on", inputs)
        outputs: dict[str, torch.Tensor] = {}
        for _ in range(workload.repeats):
            for side in ("off", "on"):
                outputs[side], seconds = forward(side, inputs)
                step_s[side].append(seconds)
        off, on = outputs["off"], outputs["on"]
        samples.append({"seed": seed, "psnr_db": latent_psnr(on, off), "mse": float(((on - off) ** 2).mean()),
                        "cosine": float(torch.nn.functional.cosine_similarity(on.flatten(), off.flatten(), dim=0)),
                        "max_abs_diff": float((on - off).abs().max())})
    psnr_min = min(s["psnr_db"] for s in samples)
    failures = [f"latent PSNR {psnr_min:.2f} dB < {thresholds.min_psnr:g}"] if psnr_min < thresholds.min_psnr else []
    return {
        **row, "status": "fail" if failures else "pass", "failures": failures, "level": "dit",
        "psnr_db_min": psnr_min, "psnr_db_mean": statistics.fmean(s["psnr_db"] for s in samples),
        "ssim_min": None, "mse_mean": statistics.fmean(s["mse"] for s in samples),
        "cosine_min": min(s["cosine"] for s in samples), "flicker_delta": None, "motion_delta": None,
        "speedup_total": None, "speedup_denoise": _speedup(step_s["off"], step_s["on"]),
        "seconds": {"dit_step": step_s}, "samples": samples, "latent_shape": list(latent),
    }


# ---------------------------------------------------------------------------------------------- output
def _num(value: Any, fmt: str, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf (identical)" if value > 0 else "-inf"
    return format(value, fmt) + suffix


def markdown_table(rows: list[dict[str, Any]], workload: Workload, thresholds: Thresholds) -> str:
    if workload.dit_config:
        head = [
            f"Gate: lever on vs off at the latent level: one DiT forward of the {workload.dit_config} config (random "
            f"weights) per seed from the same inputs; worst case over {len(workload.seeds)} seeds must reach "
            f"PSNR >= {thresholds.min_psnr:g} dB (peak: the range of the off output).",
            f"Workload: device {workload.device}, latents of a {workload.width}x{workload.height}x"
            f"{workload.num_frames} video, {workload.text_len} text tokens; speed-up = median DiT step off / on "
            f"over {workload.repeats} round(s) (`python benchmarks/quality_gate.py --dit-config "
            f"{workload.dit_config}`).",
        ]
        columns = "| lever | change | latent PSNR dB (worst) | cosine (worst) | speed-up (DiT step) | gate |"
    else:
        model = workload.model_path or "built-in tiny model (random weights)"
        head = [
            f"Gate: lever on vs off, same prompts and seeds, frame level; worst case over "
            f"{len(workload.prompts)} prompts x {len(workload.seeds)} seeds must reach {thresholds.describe()}.",
            f"Workload: {model}, device {workload.device}, {workload.width}x{workload.height}, "
            f"{workload.num_frames} frames, {workload.steps} steps; speed-up = median seconds off / on over "
            f"{workload.repeats} round(s) (`python benchmarks/quality_gate.py`).",
        ]
        columns = "| lever | change | PSNR dB (worst) | SSIM (worst) | Δ flicker | Δ motion | speed-up (total) "
        columns += "| speed-up (denoise) | gate |"
    width = columns.count("|") - 1
    lines = [*head, "", columns, "|" + "---|" * width]
    for row in rows:
        if row["status"] == "skipped":
            dashes = " - |" * (width - 3)
            lines.append(f"| {row['lever']} | {row['change']} |{dashes} skipped: {row['reason']} |")
            continue
        gate = "pass" if row["status"] == "pass" else "FAIL: " + "; ".join(row["failures"])
        if workload.dit_config:
            cells = [_num(row["psnr_db_min"], ".2f"), _num(row["cosine_min"], ".6f"),
                     _num(row["speedup_denoise"], ".2f", "x")]
        else:
            cells = [_num(row["psnr_db_min"], ".2f"), _num(row["ssim_min"], ".4f"), _num(row["flicker_delta"], "+.3g"),
                     _num(row["motion_delta"], "+.3g"), _num(row["speedup_total"], ".2f", "x"),
                     _num(row["speedup_denoise"], ".2f", "x")]
        change = row["change"]
        if "steps_skipped_mean" in row:
            change += f" (skips {row['steps_skipped_mean']:.2g} of {workload.steps} steps)"
        lines.append(f"| {row['lever']} | {change} | " + " | ".join(cells) + f" | {gate} |")
    return "\n".join(lines) + "\n"


def update_readme(path: Path, table: str, *, dit: bool = False) -> None:
    """Replace the text between the quality-gate markers of ``path`` (the DiT-level ones when ``dit``) with
    ``table``."""
    begin, end_marker = (README_DIT_BEGIN, README_DIT_END) if dit else (README_BEGIN, README_END)
    text = path.read_text(encoding="utf-8")
    start, end = text.find(begin), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"{path}: no '{begin}' ... '{end_marker}' block to fill")
    write_atomic(path, text[:start + len(begin)] + "\n" + table + text[end:])


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
    p.add_argument("--dit-config", default=None, choices=sorted(DIT_CONFIGS),
                   help="gate at the latent level: one DiT forward of this config (random weights) per seed "
                        "instead of the whole pipeline (wan2.1-1.3b: the real 1.3B shapes)")
    p.add_argument("--text-len", type=int, default=32, help="text tokens of the DiT-level inputs (default 32)")
    p.add_argument("--min-psnr", type=float, default=30.0, help="gate: worst PSNR in dB (default 30)")
    p.add_argument("--min-ssim", type=float, default=0.95, help="gate: worst SSIM (default 0.95; 0 disables)")
    p.add_argument("--json", default=None, metavar="PATH", help="write every figure and the workload as JSON")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write the table as markdown")
    p.add_argument("--update-readme", default=None, metavar="README.md",
                   help=f"rewrite the table between {README_BEGIN} and {README_END} in this file (with "
                        f"--dit-config: between {README_DIT_BEGIN} and {README_DIT_END})")
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
                        device=device, model_path=args.model_path, dit_config=args.dit_config,
                        text_len=args.text_len)
    thresholds = Thresholds(min_psnr=args.min_psnr, min_ssim=args.min_ssim)
    try:
        run = run_lever_dit if workload.dit_config else run_lever
        rows = [run(lever, workload, thresholds) for lever in levers]
    except (FastVideoError, ValueError) as exc:  # a bad workload (size, frames, model folder): one line
        print(f"quality_gate: {exc}", file=sys.stderr)
        return 2
    table = markdown_table(rows, workload, thresholds)
    print(table)
    if args.markdown:
        write_atomic(Path(args.markdown), table)
    if args.json:
        payload = {"workload": asdict(workload), "thresholds": asdict(thresholds), "levers": rows,
                   "torch": torch.__version__,
                   "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
        write_atomic(Path(args.json), json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n")
    if args.update_readme:
        update_readme(Path(args.update_readme), table, dit=bool(workload.dit_config))
    return 1 if any(row["status"] == "fail" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
