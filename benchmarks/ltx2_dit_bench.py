"""``bench_dit.py --family ltx2``: our LTX-2 audio+video DiT step against diffusers' on identical weights.

Contract:
- Both models share the very same parameter tensors (ours is built on the meta device and loaded from the
  reference's ``state_dict`` with ``assign=True``), so the weights are identical by construction and the full
  config needs one copy of them: :data:`LTX2_DIT` (the published Lightricks/LTX-2 transformer, ~19B parameters,
  ~38 GB in bf16) fits a 80+ GB GPU with room for one step's activations. Random weights with these shapes time
  exactly like the trained checkpoint.
- The workload is one denoising step as ``LTX2Pipeline`` runs it: packed video tokens for
  ``HEIGHTxWIDTHxFRAMES`` (VAE 32x spatial, 8x temporal, causal first frame), the matching audio latent frames
  (``frames / fps`` seconds at 25 latents/s), ``--text-len`` connector tokens for each stream, the same timestep
  for both streams, CFG batch 2, no text mask (a mask that keeps every token is passed as ``None``, so our model
  uses the selected attention backend). ``--full`` is 512x768x121 (the pipeline default) in bf16; the default is a
  tiny config that runs on a CPU in seconds.
- Timing: :func:`benchmarks.timing.interleaved_seconds` (variants alternate, medians reported), max |diff| of
  video and audio outputs, peak memory on CUDA; ``--json PATH`` writes the workload and figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks.timing import interleaved_seconds, peak_memory

#: The published LTX-2 (2.0) transformer: diffusers' defaults with the split RoPE layout.
LTX2_DIT: dict[str, Any] = {
    "in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1, "num_attention_heads": 32,
    "attention_head_dim": 128, "cross_attention_dim": 4096, "vae_scale_factors": [8, 32, 32],
    "pos_embed_max_pos": 20, "base_height": 2048, "base_width": 2048, "audio_in_channels": 128,
    "audio_out_channels": 128, "audio_patch_size": 1, "audio_patch_size_t": 1, "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64, "audio_cross_attention_dim": 2048, "audio_scale_factor": 4,
    "audio_pos_embed_max_pos": 20, "audio_sampling_rate": 16000, "audio_hop_length": 160, "num_layers": 48,
    "activation_fn": "gelu-approximate", "qk_norm": "rms_norm_across_heads", "norm_elementwise_affine": False,
    "norm_eps": 1e-6, "caption_channels": 3840, "attention_bias": True, "attention_out_bias": True,
    "rope_theta": 10000.0, "rope_double_precision": True, "causal_offset": 1, "timestep_scale_multiplier": 1000,
    "cross_attn_timestep_scale_multiplier": 1000, "rope_type": "split",
}
TINY_LTX2: dict[str, Any] = {**LTX2_DIT, "num_attention_heads": 4, "attention_head_dim": 32,
                             "cross_attention_dim": 128, "audio_num_attention_heads": 4,
                             "audio_attention_head_dim": 16, "audio_cross_attention_dim": 64, "num_layers": 2,
                             "caption_channels": 64}
AUDIO_LATENTS_PER_SECOND = 16000 / 160 / 4


def run(args: argparse.Namespace) -> int:
    from diffusers import LTX2VideoTransformer3DModel as RefModel

    from fastvideo.engine.models.ltx2 import LTX2DiTConfig, LTX2Transformer
    from fastvideo.kernels.registry import select_attention_backend

    if args.fast_path or args.compile:
        raise SystemExit("--fast-path / --compile are Wan-only for now (the LTX-2 DiT has no fused-ops path yet)")
    config = LTX2_DIT if args.full else TINY_LTX2
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if args.full else "fp32")]
    device = torch.device(args.device)
    h, w, f = (int(v) for v in (args.size or ("512x768x121" if args.full else "256x256x17")).split("x"))
    grid = ((f - 1) // 8 + 1, h // 32, w // 32)
    tokens = grid[0] * grid[1] * grid[2]
    fps = 24.0
    audio_frames = round(f / fps * AUDIO_LATENTS_PER_SECOND)
    text_len = args.text_len if args.text_len is not None else (1024 if args.full else 64)
    batch = args.batch

    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random init straight in the compute dtype: one copy of the weights
    try:
        with torch.device(device):
            ref = RefModel(**config).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    backend = select_attention_backend(args.attention_backend, dtype=dtype, head_dim=config["attention_head_dim"],
                                       device=device)
    with torch.device("meta"):
        ours = LTX2Transformer(LTX2DiTConfig.from_dict(config), attention_backend=backend).eval()
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)  # shares the reference's tensors

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype)

    inputs = dict(hidden_states=randn(batch, tokens, config["in_channels"]),
                  audio_hidden_states=randn(batch, audio_frames, config["audio_in_channels"]),
                  encoder_hidden_states=randn(batch, text_len, config["caption_channels"]),
                  audio_encoder_hidden_states=randn(batch, text_len, config["caption_channels"]),
                  timestep=torch.full((batch,), 500.0, device=device), num_frames=grid[0], height=grid[1],
                  width=grid[2], fps=fps, audio_num_frames=audio_frames)

    def run_ours() -> tuple[torch.Tensor, torch.Tensor]:
        return ours(**inputs)

    def run_ref() -> tuple[torch.Tensor, torch.Tensor]:
        return ref(**inputs, return_dict=False)

    params = sum(p.numel() for p in ref.parameters())
    result: dict[str, Any] = {"workload": {
        "family": "ltx2", "config": "ltx2-published" if args.full else "tiny", "parameters": params,
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype), "video": f"{h}x{w}x{f}", "latent_grid": list(grid), "video_tokens": tokens,
        "audio_tokens": audio_frames, "text_len": text_len, "batch": batch, "attention_backend": backend.name,
        "iters": args.iters, "warmup": args.warmup, "torch": torch.__version__, "threads": torch.get_num_threads()}}
    with torch.no_grad():
        expected, got = run_ref(), run_ours()
        video_err = (got[0].float() - expected[0].float()).abs().max().item()
        audio_err = (got[1].float() - expected[1].float()).abs().max().item()
        del expected, got
        runs = {"ours": run_ours, "diffusers": run_ref}
        times = interleaved_seconds(runs, args.warmup, args.iters, device.type == "cuda")
        memory = {name: peak_memory(fn, device) for name, fn in runs.items()}
    ours_med, ref_med = statistics.median(times["ours"]), statistics.median(times["diffusers"])
    result.update({"ours_median_s": ours_med, "diffusers_median_s": ref_med,
                   "speedup_vs_diffusers": ref_med / ours_med, "max_abs_diff_video": video_err,
                   "max_abs_diff_audio": audio_err, "peak_memory": memory})
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"LTX-2 DiT forward {result['workload']['config']} ({params / 1e6:,.1f}M params) {h}x{w}x{f} "
          f"({tokens} video + {audio_frames} audio tokens, text {text_len}, batch {batch}, {dtype}) "
          f"on {result['workload']['device_name']}")
    print(f"  ours      {ours_med * 1e3:10.2f} ms")
    print(f"  diffusers {ref_med * 1e3:10.2f} ms")
    print(f"  speedup   {ref_med / ours_med:10.3f}x   (max |diff| video {video_err:.2e}, audio {audio_err:.2e})")
    return 0
