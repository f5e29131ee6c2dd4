"""``fastvideo-build``: the offline builder's command line.

Contract: parses and validates a build request (model, backend, shape profiles, branches, CFG
batches, precision, output folder), runs :func:`fastvideo.build.builder.run_build` with a tqdm
progress bar on stderr, and prints a summary (folder, programs, sizes, verification, timings) on
stdout. Errors are one clear line on stderr, never a traceback (``--log-level DEBUG`` logs it).

Exit status: 0 built or already up to date; 1 the build failed (nothing written); 2 bad options,
an unusable model, or a backend / precision this machine cannot build (nothing written); 3
``--backend tensorrt`` without TensorRT or a CUDA GPU: the ONNX stage was exported, checked with
onnxruntime and kept as a complete ``stage=onnx`` folder, the engine stage still needs to run on a
GPU machine; 130 interrupted (nothing written).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from fastvideo.build.builder import (
    BACKENDS,
    EXIT_FAILED,
    EXIT_USAGE,
    PRECISIONS,
    BuildError,
    BuildRequest,
    BuildResult,
    run_build,
)
from fastvideo.build.specs import COMPONENTS, SpecError, VideoProfile

logger = logging.getLogger("fastvideo.build")

EPILOG = """\
exit status:
  0    built, or an identical build already exists (use --force to rebuild)
  1    the build failed (compile/export error or outputs differing from eager); nothing written
  2    bad options, unusable model, or a backend/precision this machine cannot build; nothing written
  3    tensorrt without TensorRT or a CUDA GPU: the ONNX stage was written and verified (stage=onnx);
       run the same command on a GPU machine with TensorRT to build the engines
  130  interrupted; nothing written

examples:
  fastvideo-build --backend aoti --profile 256x256x9 --precision fp32 --out artifacts/
  fastvideo-build --model-path Wan2.1-T2V-1.3B-Diffusers --backend tensorrt \\
      --profile 480x832x81 --branch initial,continuation --precision bf16 --out /models/artifacts
"""


def parse_profile(text: str) -> VideoProfile:
    """``HEIGHTxWIDTHxFRAMES`` -> :class:`VideoProfile` (argparse type)."""
    try:
        return VideoProfile.parse(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _csv(choices: Sequence[str], what: str):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{what} {bad[0] if bad else text!r} is unknown; use a comma list of "
                                             f"{', '.join(choices)}")
        return items
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastvideo-build", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Build compiled artifacts of a Wan model's DiT and VAE (Wan2.1 T2V and I2V, Wan2.2 A14B's two "
                    "experts) or an LTX-2 model's audio+video DiT (aoti / inductor; AOTInductor packages, a warm "
                    "torch.compile cache, or TensorRT engines) for declared video shapes, into a self-describing, "
                    "content-addressed folder <out>/<backend>-<precision>-<hash>/ with manifest.json. The runtime "
                    "loads it with engine.artifacts_path (fastvideo.build.loading.load_artifacts) and refuses "
                    "it if the weights, GPU, torch version or files differ.")
    p.add_argument("--model-path", type=Path, default=None,
                   help="diffusers-format Wan or LTX-2 folder (model_index.json, transformer/, vae/, ...); "
                        "default: the built-in tiny model")
    p.add_argument("--backend", required=True, choices=BACKENDS,
                   help="aoti: torch.export + AOTInductor .pt2 packages (CPU or CUDA); inductor: torch.compile with a "
                        "cache warmed for every shape; tensorrt: ONNX (checked with onnxruntime) then TensorRT engines "
                        "(needs TensorRT and a CUDA GPU for the engine stage)")
    p.add_argument("--profile", action="append", type=parse_profile, required=True, metavar="HxWxF",
                   help="a served video shape HEIGHTxWIDTHxFRAMES, e.g. 480x832x81; height and width must be "
                        "multiples of 16; frame counts that are not 4k+1 are served at the next 4k+1 (as requests "
                        "are). Repeat for several shapes; each becomes its own compiled program")
    p.add_argument("--branch", type=_csv(("initial", "continuation"), "branch"), default=("initial",),
                   help="comma list of segment branches to serve: initial (a fresh video) and/or continuation "
                        "(a segment continuing a previous one: one more latent frame of overlap, and the VAE "
                        "encoder). Default: initial")
    p.add_argument("--cfg", choices=("both", "on", "off"), default="both",
                   help="DiT batch sizes: on = batch 2 (guidance_scale > 1 runs cond+uncond together), off = batch 1 "
                        "(guidance_scale <= 1), both = either (default)")
    p.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                   help="DiT compute precision; must match the runtime's engine.dtype. auto (default) is what the "
                        "runtime's engine.dtype auto uses on the build device: bf16 on sm_80+ GPUs, fp16 on older "
                        "ones, fp32 on the CPU")
    p.add_argument("--vae-precision", choices=PRECISIONS, default="fp32",
                   help="VAE precision; must match the runtime's vae_dtype (default fp32, the runtime default)")
    p.add_argument("--transformer-quant", choices=("FP8", "FP8_PER_TENSOR"), default=None,
                   help="FP8 (e4m3) DiT weights, per-row scales (FP8) or one per tensor; must match the runtime's "
                        "engine.quantization.transformer_quant (default: none, weights in --precision)")
    p.add_argument("--lora", default=None, metavar="FILE",
                   help="a LoRA .safetensors file fused into the DiT before compiling (diffusers/PEFT layout or the "
                        "model's original one: Wan/ComfyUI, LTX-2's Lightricks); the runtime must set the same "
                        "pipeline.components.lora_path (the manifest records its sha256)")
    p.add_argument("--lora-strength", type=float, default=1.0,
                   help="the strength --lora is fused at; must equal the runtime's lora_strength (default 1.0)")
    p.add_argument("--components", type=_csv(COMPONENTS, "component"), default=None,
                   help="comma list of dit, dit_2, vae_decoder, vae_encoder (default: dit,vae_decoder, plus "
                        "vae_encoder with the continuation branch; dit_2 is Wan2.2 A14B's second expert, "
                        "transformer_2, always built together with dit)")
    p.add_argument("--device", default="auto", help="build device: auto (cuda if available), cpu, cuda, cuda:N; "
                                                    "artifacts only run on the device type/GPU arch they were built on")
    p.add_argument("--out", type=Path, required=True,
                   help="parent folder of the artifacts; the build goes to <out>/<backend>-<precision>-<hash>/")
    p.add_argument("--force", action="store_true", help="rebuild even if an identical verified build exists")
    p.add_argument("--onnx-only", action="store_true", help="tensorrt: stop after the verified ONNX stage (exit 0)")
    p.add_argument("--keep-onnx", action="store_true", help="tensorrt: keep the ONNX files next to the engines")
    p.add_argument("--onnx-check", choices=("ort", "checker"), default="ort",
                   help="tensorrt: ort = compare onnxruntime (CPU) with eager PyTorch at every shape (default; slow "
                        "for full-size models), checker = onnx.checker only")
    p.add_argument("--workspace-gib", type=float, default=8.0, help="tensorrt: builder workspace limit in GiB")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--log-level", default="WARNING", help="logging level on stderr (DEBUG shows tracebacks)")
    return p


class TqdmProgress:
    """A tqdm bar on stderr: one tick per build step, labelled with the step running."""

    def __init__(self, disable: bool) -> None:
        self.disable = disable
        self.bar: Any = None
        self.started = False

    def begin(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, file=sys.stderr, disable=self.disable, unit="step", dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")

    def step(self, label: str) -> None:
        if self.bar is None:
            return
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_description_str(label)

    def close(self, ok: bool) -> None:
        if self.bar is None:
            return
        if ok:
            self.bar.update(self.bar.total - self.bar.n)
            self.bar.set_description_str("done")
        self.bar.close()


def _size(num: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num < 1024 or unit == "GB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num:.1f} GB"  # pragma: no cover


def format_summary(result: BuildResult) -> str:
    """The human-readable summary printed after a build."""
    m = result.manifest
    verbs = {"built": "built", "up-to-date": "already up to date:", "onnx-only": "built the ONNX stage of"}
    verb = verbs[result.status]
    total = sum(f["bytes"] for f in m.files.values())
    lines = [f"fastvideo-build: {verb} {m.backend} artifacts in {result.seconds:.1f}s",
             f"  folder      {result.path}",
             f"  model       {m.model['path']} (weights sha256 {m.model['weights_digest'][:16]}...)",
             f"  backend     {m.backend}, stage {m.stage}, DiT {m.precision}, VAE {m.vae_precision}, "
             f"on {m.environment['device_type']} ({m.environment['gpu_arch']}), torch {m.environment['torch']}",
             f"  profiles    {', '.join(m.profiles)}; branches {','.join(m.branches)}; DiT batch "
             f"{'/'.join(str(b) for b in m.batches)}",
             "  programs"]
    for component in m.components:
        for case in component["cases"]:
            file = case.get("file") or case.get("onnx") or "-"
            size = m.files.get(file, {}).get("bytes")
            diffs = case.get("max_abs_diff") or (case.get("onnx_check") or {}).get("max_abs_diff") or {}
            worst = max(diffs.values()) if diffs else None
            covers = ", ".join(f"{c['profile']}/{c['branch']}" for c in case["covers"])
            lines.append(f"    {case['key']:<24} {file:<34} {_size(size) if size is not None else '':>9}  "
                         f"batch {'/'.join(str(b) for b in case['batches'])}  "
                         f"{'max|diff| %.2g' % worst if worst is not None else ''}  [{covers}]")
    lines.append(f"  size        {_size(total)} in {len(m.files)} files")
    if result.steps:
        lines.append("  steps       " + ", ".join(f"{label} {sec:.1f}s" for label, sec in result.steps))
    if m.stage == "complete":
        lines.append(f"  use         GeneratorConfig.engine.artifacts_path = {str(result.path)!r}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, message already printed)
        return int(exc.code or 0)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if logger.getEffectiveLevel() > logging.DEBUG:
        warnings.filterwarnings("ignore", category=FutureWarning)
        # The ONNX exporter warns about every optional torchvision op it cannot register: noise here.
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    request = BuildRequest(backend=args.backend, profiles=list(args.profile), out=args.out, model_path=args.model_path,
                           branches=tuple(args.branch), precision=args.precision, vae_precision=args.vae_precision,
                           cfg=args.cfg, components=args.components, device=args.device, force=args.force,
                           onnx_only=args.onnx_only, keep_onnx=args.keep_onnx, onnx_check=args.onnx_check,
                           workspace_gib=args.workspace_gib, transformer_quant=args.transformer_quant,
                           lora_path=args.lora, lora_strength=args.lora_strength)
    progress = TqdmProgress(disable=args.quiet)
    try:
        result = run_build(request, progress)
    except BuildError as exc:
        progress.close(ok=False)
        print(f"fastvideo-build: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        progress.close(ok=False)
        print("fastvideo-build: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI reports, never tracebacks
        progress.close(ok=False)
        logger.debug("unexpected failure", exc_info=True)
        print(f"fastvideo-build: error: {type(exc).__name__}: {exc} (re-run with --log-level DEBUG for details)",
              file=sys.stderr)
        return EXIT_FAILED if not isinstance(exc, (ValueError, OSError)) else EXIT_USAGE
    progress.close(ok=True)
    print(format_summary(result))
    if result.message:
        print(f"fastvideo-build: {result.message}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
