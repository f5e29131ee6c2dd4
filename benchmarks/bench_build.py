"""Build benchmark: compiled backends against eager and diffusers, build cost, and startup from artifacts.

For one model and one video profile, in one run:

1. builds artifacts with ``fastvideo.build.builder.run_build`` for each backend (``inductor``,
   ``aoti``, ``tensorrt``; DiT at the CFG batch 2 plus the VAE decoder), recording build time and
   artifact size. Without TensorRT the tensorrt build stops at its verified ONNX stage and the ONNX
   files are timed with onnxruntime (CPU) instead;
2. times a DiT step (batch 2: CFG) and a VAE decode at the profile's latent shape for: our eager
   model, diffusers' ``WanTransformer3DModel`` / ``AutoencoderKLWan`` loaded from the same folder
   (same weights), and every built backend served the way the runtime serves it
   (``load_artifacts`` + ``apply_artifacts``). Medians over ``--iters`` after ``--warmup``, and the
   max |difference| of each output against our eager one;
3. times server startup in fresh processes: ``VideoGenerator`` construction (weights load, plus
   artifact checks/load) and its first request (1 step at the profile; the warmup), from scratch
   (eager; and eager + ``torch.compile`` with an empty cache) and from each artifact folder.

Default: the built-in tiny model on the CPU at 64x64x9, fp32 (seconds; the figures say nothing
about GPUs). ``--full``: the Wan2.1-T2V-1.3B DiT and Wan VAE configs with random weights (a
1-layer 4096-wide stand-in text encoder: text encoding is not what is measured) at 480x832x81 in
bf16 on the GPU. Prints a table; ``--json PATH`` writes every figure and the workload.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleaved_seconds, peak_memory  # noqa: E402
from benchmarks.wan_configs import WAN_1_3B_DIT, WAN_VAE  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: transformer/config.json of the full model folder (diffusers' class name and its T2V defaults added).
DIT_CONFIG_JSON = {"_class_name": "WanTransformer3DModel", **WAN_1_3B_DIT, "image_dim": None,
                   "added_kv_proj_dim": None, "pos_embed_seq_len": None}
STANDIN_TEXT = {"vocab_size": 259, "d_model": 4096, "d_kv": 64, "d_ff": 256, "num_layers": 1, "num_heads": 8,
                "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "dropout_rate": 0.0,
                "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-6, "pad_token_id": 0, "eos_token_id": 1,
                "decoder_start_token_id": 0, "tie_word_embeddings": False, "scalable_attention": True}


# ------------------------------------------------------------------------------------------------ model
def write_full_model(target: Path) -> Path:
    """A diffusers-format folder with the 1.3B DiT and Wan VAE configs and random weights (bf16 on disk)."""
    from safetensors.torch import save_file
    from transformers import UMT5Config, UMT5EncoderModel

    from fastvideo.engine import builtin_model as bm
    from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel
    from fastvideo.engine.models.wan.vae import WanVAE, WanVAEConfig

    if (target / "model_index.json").exists():
        return target
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=target.parent))
    g = torch.Generator().manual_seed(0)
    vae_cfg = dict(WAN_VAE, latents_mean=[round(float(v), 4) for v in torch.randn(16, generator=g) * 0.3],
                   latents_std=[round(float(v), 4) for v in 1.0 + 2.0 * torch.rand(16, generator=g)])
    with torch.device("meta"):
        dit = WanTransformer3DModel(WanDiTConfig.from_dict(DIT_CONFIG_JSON))
        vae = WanVAE(WanVAEConfig.from_dict(vae_cfg))
        encoder = UMT5EncoderModel(UMT5Config(**STANDIN_TEXT))
    for name, module, cfg, dtype in (("transformer", dit, DIT_CONFIG_JSON, torch.bfloat16), ("vae", vae, vae_cfg,
                                                                                          torch.float32)):
        (staging / name).mkdir(parents=True)
        (staging / name / "config.json").write_text(json.dumps(cfg, indent=2))
        state = {k: v.to(dtype) for k, v in bm.synthesize_state_dict(module, 1).items()}
        save_file(state, str(staging / name / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    state = bm.synthesize_state_dict(encoder, 3)
    state.pop("encoder.embed_tokens.weight", None)
    config = UMT5Config(**STANDIN_TEXT)
    config.architectures = ["UMT5EncoderModel"]
    config.save_pretrained(str(staging / "text_encoder"))
    save_file(state, str(staging / "text_encoder" / "model.safetensors"), metadata={"format": "pt"})
    bm.write_byte_tokenizer(staging / "tokenizer", 512)
    (staging / "scheduler").mkdir()
    (staging / "scheduler" / "scheduler_config.json").write_text(json.dumps(bm.SCHEDULER_CONFIG))
    (staging / "model_index.json").write_text(json.dumps({
        "_class_name": "WanPipeline", "_fastvideo_preset": "wan2.1-t2v-1.3b",
        "scheduler": ["diffusers", "UniPCMultistepScheduler"], "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"], "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"]}))
    os.replace(staging, target)
    return target


# ------------------------------------------------------------------------------------------------ timing
def median_time(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> float:
    with torch.no_grad():
        return statistics.median(interleaved_seconds({"fn": fn}, warmup, iters, device.type == "cuda")["fn"])


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def startup_child(args: argparse.Namespace) -> int:
    """Fresh-process startup: build a VideoGenerator, then run its warmup request; print JSON."""
    from fastvideo import VideoGenerator

    h, w, f = (int(v) for v in args.profile.split("x"))
    engine: dict[str, Any] = {"device": str(args.device), "dtype": args.precision}
    if args.artifacts:
        engine["artifacts_path"] = args.artifacts
    if args.compile:
        engine["compile"] = {"enabled": True, "backend": "inductor"}
    t0 = time.perf_counter()
    generator = VideoGenerator.from_pretrained(config={"model_path": args.model, "engine": engine})
    t1 = time.perf_counter()
    generator.generate({"prompt": "warmup", "sampling": {"width": w, "height": h, "num_frames": f,
                                                          "num_inference_steps": 1, "guidance_scale": 5.0, "seed": 0},
                        "output": {"save_video": False, "return_frames": False}})
    t2 = time.perf_counter()
    print(json.dumps({"load_s": t1 - t0, "first_request_s": t2 - t1, "total_s": t2 - t0}))
    return 0


def measure_startup(args: argparse.Namespace, model: Path, label: str, artifacts: Path | None = None,
                    compile_dit: bool = False) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--startup-child", "--model", str(model), "--profile", args.profile,
            "--device", str(args.device), "--precision", args.precision]
    if artifacts is not None:
        argv += ["--artifacts", str(artifacts)]
    if compile_dit:
        argv.append("--compile")
    env = dict(os.environ)
    scratch = tempfile.mkdtemp(prefix="bench-inductor-cache-")
    env["TORCHINDUCTOR_CACHE_DIR"] = scratch  # "from scratch" really starts with an empty compile cache
    env["TRITON_CACHE_DIR"] = os.path.join(scratch, "triton")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=args.startup_timeout)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if proc.returncode != 0:
        return {"label": label, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return {"label": label, **json.loads(proc.stdout.strip().splitlines()[-1])}


# ------------------------------------------------------------------------------------------------ main
def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="Wan2.1-1.3B DiT + Wan VAE configs, random weights, "
                                                       "480x832x81, bf16, on the GPU")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--precision", default=None, choices=sorted(DTYPES), help="DiT precision (default bf16 full, "
                                                                               "fp32 tiny); the VAE runs fp32")
    p.add_argument("--profile", default=None, help="HxWxF (default 480x832x81 full, 64x64x9 tiny)")
    p.add_argument("--backends", default="inductor,aoti,tensorrt", help="comma list of backends to build")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--no-startup", action="store_true", help="skip the startup measurements")
    p.add_argument("--startup-timeout", type=float, default=1800)
    p.add_argument("--workdir", default=None, help="where the model (--full) and artifacts go (default: a temp dir, "
                                                   "removed afterwards)")
    p.add_argument("--json", default=None, help="write all figures to this file")
    p.add_argument("--startup-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--artifacts", default=None, help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.precision = args.precision or ("bf16" if args.full else "fp32")
    args.profile = args.profile or ("480x832x81" if args.full else "64x64x9")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.startup_child:
        return startup_child(args)
    import logging

    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from fastvideo.build.builder import BuildError, BuildRequest, run_build
    from fastvideo.build.exportable import load_build_models
    from fastvideo.build.specs import VideoProfile, latent_frames_for
    from fastvideo.engine.builtin_model import ensure_builtin_model
    from fastvideo.engine.loader import inspect_model_folder
    from fastvideo.envs import read_env
    from fastvideo.build.artifact_modules import apply_artifacts
    from fastvideo.build.loading import load_artifacts

    keep = args.workdir is not None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-build-"))
    work.mkdir(parents=True, exist_ok=True)
    device, dtype, vae_dtype = args.device, DTYPES[args.precision], torch.float32
    model = write_full_model(work / "wan2.1-1.3b-random") if args.full else ensure_builtin_model(read_env().cache_dir)
    folder = inspect_model_folder(model)
    profile = VideoProfile.parse(args.profile)
    latent = (latent_frames_for(profile.frames), profile.height // 8, profile.width // 8)
    results: dict[str, Any] = {"workload": {"model": "wan2.1-1.3b config, random weights" if args.full else
                                            "built-in tiny model", "profile": profile.label, "latent": latent,
                                            "dit_batch": 2, "precision": args.precision, "vae_precision": "fp32",
                                            "device": str(device), "torch": torch.__version__,
                                            "warmup": args.warmup, "iters": args.iters},
                               "builds": {}, "dit": {}, "vae_decode": {}, "startup": []}
    def save() -> None:  # after each build and timing, so a run stopped early keeps what it measured
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")

    try:
        # Builds first (each in this process, one after another), then every timing on the same models.
        built: dict[str, Path] = {}
        for backend in [b for b in args.backends.split(",") if b]:
            request = BuildRequest(backend=backend, profiles=[profile], out=work / "artifacts",
                                   precision=args.precision, vae_precision="fp32", cfg="on",
                                   components=("dit", "vae_decoder"), device=str(device), force=True,
                                   onnx_check="ort" if not args.full else "checker")
            print(f"building {backend} ...", file=sys.stderr, flush=True)
            try:
                result = run_build(request)
            except BuildError as exc:
                results["builds"][backend] = {"error": str(exc)}
                continue
            results["builds"][backend] = {"seconds": result.seconds, "bytes": _folder_bytes(result.path),
                                          "stage": result.manifest.stage, "path": str(result.path),
                                          "note": result.message or None}
            built[backend] = result.path
            save()

        models = load_build_models(folder, device=device, dtype=dtype, vae_dtype=vae_dtype)
        ref_dit = WanTransformer3DModel.from_pretrained(str(model), subfolder="transformer", torch_dtype=dtype).to(
            device).eval()
        ref_vae = AutoencoderKLWan.from_pretrained(str(model), subfolder="vae", torch_dtype=vae_dtype).to(
            device).eval()
        g = torch.Generator().manual_seed(0)
        cfg = models.dit.config
        text_len = 512 if args.full else 64
        x = torch.randn(2, cfg.in_channels, *latent, generator=g).to(device, dtype)
        t = torch.tensor([700.0, 700.0], device=device)
        text = torch.randn(2, text_len, cfg.text_dim, generator=g).to(device, dtype)
        z = torch.randn(1, models.vae.config.z_dim, *latent, generator=g).to(device, vae_dtype)
        with torch.no_grad():
            eager_dit, eager_vae = models.dit(x, t, text), models.vae.decode(z)
        dit_fns: dict[str, Callable[[], torch.Tensor]] = {
            "eager (ours)": lambda: models.dit(x, t, text),
            "diffusers": lambda: ref_dit(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]}
        vae_fns: dict[str, Callable[[], torch.Tensor]] = {
            "eager (ours)": lambda: models.vae.decode(z), "diffusers": lambda: ref_vae.decode(z).sample}
        for backend, path in built.items():
            if results["builds"][backend]["stage"] == "complete":
                loaded = load_artifacts(path, model_folder=model, device=device, dtype=dtype, vae_dtype=vae_dtype)
                pipe = SimpleNamespace(dit=models.dit, vae=models.vae, device=device, dtype=dtype, vae_dtype=vae_dtype)
                apply_artifacts(pipe, loaded)
                dit_fns[backend] = (lambda d=pipe.dit: d(x, t, text))
                vae_fns[backend] = (lambda v=pipe.vae: v.decode(z))
            elif device.type == "cpu":  # ONNX stage only (no TensorRT here): time onnxruntime on the CPU
                import onnxruntime as ort

                onnx = {c: ort.InferenceSession(str(next(path.glob(f"onnx/{c}-*.onnx"))),
                                                providers=["CPUExecutionProvider"]) for c in ("dit", "vae_decoder")}
                feeds = {"hidden_states": x.float().cpu().numpy(), "timestep": t.cpu().numpy(),
                         "encoder_hidden_states": text.float().cpu().numpy()}
                if dtype == torch.float32:
                    dit_fns["onnxruntime (cpu)"] = lambda s=onnx["dit"]: torch.from_numpy(s.run(None, feeds)[0])
                vae_fns["onnxruntime (cpu)"] = (lambda s=onnx["vae_decoder"]: torch.from_numpy(
                    s.run(None, {"latents": z.float().cpu().numpy()})[0]))
        for table, fns, ref in (("dit", dit_fns, eager_dit), ("vae_decode", vae_fns, eager_vae)):
            for label, fn in fns.items():
                print(f"timing {table} {label} ...", file=sys.stderr, flush=True)
                seconds = median_time(fn, device, args.warmup, args.iters)
                with torch.no_grad():
                    out = fn()
                    memory = peak_memory(fn, device)
                results[table][label] = {"median_s": seconds, "max_abs_diff_vs_eager": _diff(out.to(ref.device), ref),
                                         "peak_memory": memory}
                save()
            base, ref_s = results[table]["eager (ours)"]["median_s"], results[table]["diffusers"]["median_s"]
            for row in results[table].values():
                row["speedup_vs_eager"], row["speedup_vs_diffusers"] = base / row["median_s"], ref_s / row["median_s"]

        if not args.no_startup:
            runs = [("eager (from scratch)", None, False), ("eager + torch.compile (empty cache)", None, True)]
            runs += [(f"{b} artifacts", p, False) for b, p in built.items()
                     if results["builds"][b]["stage"] == "complete"]
            for label, path, compile_dit in runs:
                print(f"startup {label} ...", file=sys.stderr, flush=True)
                results["startup"].append(measure_startup(args, model, label, path, compile_dit))
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    save()
    return 0


def print_table(results: dict[str, Any]) -> None:
    w = results["workload"]
    print(f"\nworkload: {w['model']}, {w['profile']} (latent {w['latent']}), DiT batch {w['dit_batch']} "
          f"{w['precision']}, VAE {w['vae_precision']}, on {w['device']}, torch {w['torch']}")
    print("\nbuilds")
    for backend, row in results["builds"].items():
        if "error" in row:
            print(f"  {backend:<10} failed: {row['error']}")
        else:
            print(f"  {backend:<10} {row['seconds']:8.1f} s  {row['bytes'] / 2**20:9.1f} MiB  stage {row['stage']}"
                  + (f"  ({row['note'][:90]}...)" if row.get("note") else ""))
    for table, title in (("dit", "DiT step"), ("vae_decode", "VAE decode")):
        print(f"\n{title:<28} {'median':>10} {'vs eager':>9} {'vs diffusers':>13} {'max|diff|':>10}")
        for label, row in results[table].items():
            print(f"  {label:<26} {row['median_s'] * 1e3:8.2f}ms {row['speedup_vs_eager']:8.2f}x "
                  f"{row['speedup_vs_diffusers']:12.2f}x {row['max_abs_diff_vs_eager']:10.2g}")
    if results["startup"]:
        print(f"\n{'startup (fresh process)':<38} {'load':>8} {'1st request':>12} {'total':>8}")
        for row in results["startup"]:
            if "error" in row:
                print(f"  {row['label']:<36} failed: {row['error']}")
            else:
                print(f"  {row['label']:<36} {row['load_s']:7.2f}s {row['first_request_s']:11.2f}s "
                      f"{row['total_s']:7.2f}s")


if __name__ == "__main__":
    sys.exit(main())
