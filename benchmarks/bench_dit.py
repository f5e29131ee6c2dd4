"""DiT forward latency: our WanTransformer3DModel against diffusers' on identical weights and inputs.

Runs both models in the same process, on the same device, dtype, weights and inputs, alternating
them over repeated timed iterations (after warmup), and prints both median times and the ratio.
``--full`` uses the real Wan2.1-T2V-1.3B config (random weights time exactly like trained ones) at
the 480x832x81 latent shape in bf16 with CFG batch 2 (meant for a GPU); the default is a tiny config
that runs on a CPU in seconds. ``--json PATH`` writes the exact workload and figures.

``--fast-path`` (default on CUDA) also times our model with the ``triton`` attention backend and the
fused Triton ops (norms, AdaLN modulation, RoPE, gated residuals) in the same run, against our eager
sdpa model and diffusers. On a CPU the Triton kernels only run in the interpreter (set
``TRITON_INTERPRET=1``), which measures nothing useful about speed. ``--compile`` (default on CUDA)
adds our model under ``torch.compile(fullgraph=True)`` (with the fast path when it is on; a second
instance, so swapping backends never invalidates its graph). On CUDA every variant's peak memory is
reported too (``peak_bytes``: resident weights included; ``added_bytes``: what one forward adds).

``--model wan2.1-i2v-14b`` times the Wan2.1 I2V DiT instead (36 input channels, 257 CLIP image tokens through the
image embedder and the added K/V cross-attention; ``--full`` is the real 14B config, 2 x ~33 GB of bf16 weights:
an H100/H200-class GPU; tiny on a CPU). ``--model wan2.2-ti2v-5b`` times the Wan2.2 TI2V-5B DiT (48 latent channels
over the Wan2.2 VAE's 16x spatial compression; ``--full`` 704x1280x121) with per-token timesteps, the first latent
frame at 0 as for an image-conditioned request (the path the engine takes for image steps: unfused modulation).

``--family ltx2`` times the LTX-2 audio+video DiT instead (``benchmarks/ltx2_dit_bench.py``: tiny on a CPU,
``--full`` the published ~19B LTX-2 transformer at 512x768x121 in bf16 on a GPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleaved_seconds, peak_memory  # noqa: E402
from benchmarks.wan_configs import WAN_1_3B_DIT, WAN_I2V_14B_DIT, WAN_TI2V_5B_DIT  # noqa: E402

TINY = {"patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 32, "in_channels": 16,
        "out_channels": 16, "text_dim": 64, "freq_dim": 64, "ffn_dim": 128, "num_layers": 2,
        "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024}
TINY_I2V = {**TINY, "in_channels": 36, "image_dim": 32, "added_kv_proj_dim": 64}
TINY_TI2V = {**TINY, "in_channels": 48, "out_channels": 48}
#: --model: (full config, tiny config, CLIP tokens per image or None for text-to-video).
MODELS = {"wan2.1-t2v-1.3b": (WAN_1_3B_DIT, TINY, None), "wan2.1-i2v-14b": (WAN_I2V_14B_DIT, TINY_I2V, 257),
          "wan2.2-ti2v-5b": (WAN_TI2V_5B_DIT, TINY_TI2V, None)}
#: --model -> (VAE spatial compression, default --full size, per-token timesteps with the first latent frame clean).
LATENT_LAYOUT = {"wan2.1-t2v-1.3b": (8, "480x832x81", False), "wan2.1-i2v-14b": (8, "480x832x81", False),
                 "wan2.2-ti2v-5b": (16, "704x1280x121", True)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="wan", choices=["wan", "ltx2"], help="which DiT to time (default wan)")
    p.add_argument("--model", default="wan2.1-t2v-1.3b", choices=sorted(MODELS),
                   help="wan: which DiT (wan2.1-i2v-14b: the image branch too, 257 CLIP tokens; 512 text tokens; "
                        "wan2.2-ti2v-5b: 48 channels, per-token timesteps, full size 704x1280x121)")
    p.add_argument("--full", action="store_true",
                   help="Wan2.1-1.3B config, 480x832x81 / LTX-2 published config, 512x768x121; bf16 (GPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"], help="default: bf16 full, fp32 tiny")
    p.add_argument("--size", default=None, help="HEIGHTxWIDTHxFRAMES of the video (default full / tiny: "
                   "wan 480x832x81 / 64x64x9, ltx2 512x768x121 / 256x256x17)")
    p.add_argument("--batch", type=int, default=2, help="DiT batch (2 = CFG)")
    p.add_argument("--text-len", type=int, default=None, help="default 512 (wan), 1024 full / 64 tiny (ltx2)")
    p.add_argument("--attention-backend", default=None, help="ltx2: attention backend of our model (default sdpa)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--json", default=None, help="write results to this file")
    p.add_argument("--fast-path", action=argparse.BooleanOptionalAction, default=None,
                   help="also time triton attention + fused triton ops (default: on for CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also time our model under torch.compile (default: on for CUDA)")
    args = p.parse_args(argv)
    if args.family == "ltx2":
        from benchmarks.ltx2_dit_bench import run
        return run(args)
    if args.text_len is None:
        args.text_len = 512

    from diffusers import WanTransformer3DModel as RefModel

    from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel, inference_param_dtype
    from fastvideo.kernels.fused import select_ops_backend
    from fastvideo.kernels.registry import select_attention_backend

    full_config, tiny_config, image_tokens = MODELS[args.model]
    config = full_config if args.full else tiny_config
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if args.full else "fp32")]
    device = torch.device(args.device)
    spatial, full_size, per_token = LATENT_LAYOUT[args.model]
    h, w, f = (int(v) for v in (args.size or (full_size if args.full else "64x64x9")).split("x"))
    latent = (args.batch, config["in_channels"], (f - 1) // 4 + 1, h // spatial, w // spatial)

    torch.manual_seed(0)
    with torch.device(device):  # random init on the device: seconds for 1.3B parameters, not minutes on a CPU
        ref = RefModel(**config).eval()
        ours = WanTransformer3DModel(WanDiTConfig.from_dict(config)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    # Both cast like diffusers' from_pretrained(torch_dtype=...): its keep-in-fp32 modules stay fp32.
    for model in (ref, ours):
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.data = param.data.to(inference_param_dtype(name, dtype))
    x = torch.randn(latent, device=device, dtype=dtype)
    t = torch.full((args.batch,), 500.0, device=device)
    if per_token:  # (B, L) timesteps, the first latent frame's tokens at 0 (a clean image frame)
        per_frame = (latent[3] // 2) * (latent[4] // 2)
        t = torch.full((args.batch, latent[2] * per_frame), 500.0, device=device)
        t[:, :per_frame] = 0.0
    ctx = torch.randn(args.batch, args.text_len, config["text_dim"], device=device, dtype=dtype)
    clip = None if image_tokens is None else torch.randn(args.batch, image_tokens, config["image_dim"],
                                                         device=device, dtype=dtype)
    extra = () if clip is None else (clip,)  # ours: the image tokens after the text states
    ref_extra = {} if clip is None else {"encoder_hidden_states_image": clip}
    if clip is not None and args.text_len != 512:
        p.error("--model wan2.1-i2v-14b needs --text-len 512 (diffusers' I2V attention assumes 512 text tokens)")

    fast_path = args.fast_path if args.fast_path is not None else device.type == "cuda"
    sdpa = select_attention_backend("sdpa", dtype=dtype, head_dim=config["attention_head_dim"], device=device)
    if fast_path:
        fast_attn = select_attention_backend("triton", dtype=dtype, head_dim=config["attention_head_dim"],
                                             device=device)
        fast_ops = select_ops_backend("triton", dtype=dtype, device=device)

    def run_ours():
        ours.set_attention_backend(sdpa)
        ours.set_ops_backend(None)
        return ours(x, t, ctx, *extra)

    def run_fast():
        ours.set_attention_backend(fast_attn)
        ours.set_ops_backend(fast_ops)
        return ours(x, t, ctx, *extra)

    def run_ref():
        return ref(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False, **ref_extra)[0]

    use_compile = args.compile if args.compile is not None else device.type == "cuda"
    tokens = latent[2] * (latent[3] // 2) * (latent[4] // 2)
    result: dict = {
        "workload": {"config": (args.model if args.full else f"tiny ({args.model} architecture)"),
                     "device": str(device),
                     "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "dtype": str(dtype), "video": f"{h}x{w}x{f}", "latent_shape": list(latent), "tokens": tokens,
                     "text_len": args.text_len, "per_token_timesteps": per_token, "iters": args.iters,
                     "warmup": args.warmup,
                     "torch": torch.__version__, "threads": torch.get_num_threads()}}

    def save() -> None:  # after each phase, so a run stopped during compilation keeps the eager figures
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))

    with torch.no_grad():
        reference = run_ref().float()
        err = (run_ours().float() - reference).abs().max().item()
        fast_err = (run_fast().float() - reference).abs().max().item() if fast_path else None
        runs = {"ours": run_ours, "diffusers": run_ref, **({"fast": run_fast} if fast_path else {})}
        times = interleaved_seconds(runs, args.warmup, args.iters, device.type == "cuda")
        memory = {name: peak_memory(fn, device) for name, fn in runs.items()}
    ours_med, ref_med = statistics.median(times["ours"]), statistics.median(times["diffusers"])
    result.update({"ours_median_s": ours_med, "diffusers_median_s": ref_med, "speedup_vs_diffusers": ref_med / ours_med,
                   "max_abs_diff": err, "peak_memory": memory})
    if fast_path:
        fast_med = statistics.median(times["fast"])
        result.update({"fast_median_s": fast_med, "fast_speedup_vs_ours_sdpa": ours_med / fast_med,
                       "fast_speedup_vs_diffusers": ref_med / fast_med, "fast_max_abs_diff": fast_err})
    save()
    print(f"DiT forward {result['workload']['config']} {h}x{w}x{f} ({tokens} tokens, batch {args.batch}, {dtype}) "
          f"on {result['workload']['device_name']}")
    print(f"  ours      {ours_med * 1e3:10.2f} ms")
    print(f"  diffusers {ref_med * 1e3:10.2f} ms")
    print(f"  speedup   {ref_med / ours_med:10.3f}x   (max |diff| {err:.2e})")
    if fast_path:
        print(f"  ours triton attention + fused ops {result['fast_median_s'] * 1e3:10.2f} ms  "
              f"({result['fast_speedup_vs_ours_sdpa']:.3f}x vs ours sdpa, "
              f"{result['fast_speedup_vs_diffusers']:.3f}x vs diffusers, max |diff| {fast_err:.2e})", flush=True)
    if use_compile:
        with torch.no_grad():
            with torch.device("meta"):
                twin = WanTransformer3DModel(WanDiTConfig.from_dict(config)).eval()
            twin.load_state_dict(ours.state_dict(), strict=True, assign=True)  # shares ours' weights: no copy
            twin.set_attention_backend(fast_attn if fast_path else sdpa)
            twin.set_ops_backend(fast_ops if fast_path else None)
            twin(x, t, ctx, *extra)  # fills the RoPE cache outside the graph
            compiled = torch.compile(twin, fullgraph=True)
            print("compiling (torch.compile, fullgraph) ...", file=sys.stderr, flush=True)
            compiled_err = (compiled(x, t, ctx, *extra).float() - reference).abs().max().item()
            again = interleaved_seconds({"compiled": lambda: compiled(x, t, ctx, *extra), "diffusers": run_ref},
                                        args.warmup, args.iters, device.type == "cuda")
            memory["compiled"] = peak_memory(lambda: compiled(x, t, ctx, *extra), device)
        comp_med, ref_again = statistics.median(again["compiled"]), statistics.median(again["diffusers"])
        result.update({"compiled_median_s": comp_med, "compiled_speedup_vs_diffusers": ref_again / comp_med,
                       "compiled_diffusers_median_s": ref_again, "compiled_max_abs_diff": compiled_err,
                       "compiled_variant": "triton+fused" if fast_path else "sdpa"})
        print(f"  ours torch.compile ({result['compiled_variant']}) {comp_med * 1e3:10.2f} ms  "
              f"({result['compiled_speedup_vs_diffusers']:.3f}x vs diffusers timed beside it, max |diff| "
              f"{compiled_err:.2e})")
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
