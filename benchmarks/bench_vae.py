"""``bench_vae.py --family ltx2``: our LTX-2 video VAE decode (and encode) against diffusers' on identical weights.

Contract:
- Both models share the very same parameter tensors (ours is built on the meta device and loaded from the
  reference's ``state_dict`` with ``assign=True``). ``--full`` is the published Lightricks/LTX-2 ``vae/`` config
  (random weights time like trained ones) decoding the latents of ``HEIGHTxWIDTHxFRAMES`` (default 512x768x121,
  the pipeline default) in bf16, meant for a GPU; the default is a tiny config at 64x64x17 in fp32 that runs on a
  CPU in seconds. Decode is the workload ``LTX2Pipeline`` runs once per video (raw latents -> frames, no tiling,
  its ``decode_timestep`` when the config is timestep-conditioned); ``--encode`` also times encoding a video of
  that size (the conditioning path).
- Timing: :func:`benchmarks.timing.interleaved_seconds` (variants alternate, medians reported), max |diff| of the
  outputs, peak memory on CUDA; ``--json PATH`` writes the workload and figures. Only ``--family ltx2`` exists:
  the Wan VAE decode is timed by ``bench_build.py`` (its ``vae`` stage).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleaved_seconds, peak_memory  # noqa: E402

#: The published LTX-2 (2.0) video VAE (diffusers' conversion script, version 2.0).
LTX2_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 128, "block_out_channels": [256, 512, 1024, 2048],
    "decoder_block_out_channels": [256, 512, 1024], "layers_per_block": [4, 6, 6, 2, 2],
    "decoder_layers_per_block": [5, 5, 5, 5], "spatio_temporal_scaling": [True, True, True, True],
    "decoder_spatio_temporal_scaling": [True, True, True], "decoder_inject_noise": [False, False, False, False],
    "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    "upsample_type": ["spatiotemporal", "spatiotemporal", "spatiotemporal"], "upsample_residual": [True, True, True],
    "upsample_factor": [2, 2, 2], "timestep_conditioning": False, "patch_size": 4, "patch_size_t": 1,
    "resnet_norm_eps": 1e-6, "scaling_factor": 1.0, "encoder_causal": True, "decoder_causal": False,
    "encoder_spatial_padding_mode": "zeros", "decoder_spatial_padding_mode": "reflect",
    "spatial_compression_ratio": 32, "temporal_compression_ratio": 8,
}
TINY_LTX2_VAE: dict[str, Any] = {**LTX2_VAE, "latent_channels": 16, "block_out_channels": [16, 32, 64, 64],
                                 "decoder_block_out_channels": [16, 32, 64], "layers_per_block": [1, 1, 1, 1, 1],
                                 "decoder_layers_per_block": [1, 1, 1, 1]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="ltx2", choices=["ltx2"], help="which VAE to time (only ltx2)")
    p.add_argument("--full", action="store_true", help="the published LTX-2 VAE at 512x768x121 in bf16 (GPU)")
    p.add_argument("--size", default=None, help="HEIGHTxWIDTHxFRAMES of the video (default 512x768x121 / 64x64x17)")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"], help="default bf16 full / fp32 tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--encode", action="store_true", help="also time encoding a video of that size")
    p.add_argument("--timestep-conditioning", action="store_true",
                   help="build the decoder timestep-conditioned (decode_timestep 0.05)")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", default=None, help="write the workload and figures here")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from diffusers import AutoencoderKLLTX2Video as RefModel

    from fastvideo.engine.models.ltx2.vae import LTX2VideoVAE, LTX2VideoVAEConfig

    config = dict(LTX2_VAE if args.full else TINY_LTX2_VAE, timestep_conditioning=args.timestep_conditioning)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if args.full else "fp32")]
    device = torch.device(args.device)
    h, w, f = (int(v) for v in (args.size or ("512x768x121" if args.full else "64x64x17")).split("x"))
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random init straight in the compute dtype: one copy of the weights
    try:
        with torch.device(device):
            ref = RefModel(**config).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    cfg = LTX2VideoVAEConfig.from_dict(config)
    with torch.device("meta"):
        ours = LTX2VideoVAE(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)  # shares the reference's tensors
    grid = (cfg.latent_num_frames(f), h // cfg.spatial_ratio, w // cfg.spatial_ratio)
    latents = torch.randn(args.batch, cfg.latent_channels, *grid, device=device, dtype=dtype)
    timestep = torch.full((args.batch,), 0.05, device=device, dtype=dtype) if args.timestep_conditioning else None

    cases: dict[str, tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]] = {
        "decode": (lambda: ours.decode(latents, timestep), lambda: ref.decode(latents, timestep).sample)}
    if args.encode:
        video = torch.rand(args.batch, 3, f, h, w, device=device, dtype=dtype) * 2 - 1
        cases["encode"] = (lambda: ours.encode(video).mode(), lambda: ref.encode(video).latent_dist.mode())

    params = sum(p.numel() for p in ref.parameters())
    result: dict[str, Any] = {"workload": {
        "family": "ltx2", "config": "ltx2-published" if args.full else "tiny", "parameters": params,
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype), "video": f"{h}x{w}x{f}", "latent_grid": list(grid), "batch": args.batch,
        "timestep_conditioning": args.timestep_conditioning, "iters": args.iters, "warmup": args.warmup,
        "torch": torch.__version__, "threads": torch.get_num_threads()}}
    print(f"LTX-2 video VAE {result['workload']['config']} ({params / 1e6:,.1f}M params) {h}x{w}x{f} "
          f"(latents {grid}, batch {args.batch}, {dtype}) on {result['workload']['device_name']}")
    with torch.no_grad():
        for name, (run_ours, run_ref) in cases.items():
            err = (run_ours().float() - run_ref().float()).abs().max().item()
            runs = {"ours": run_ours, "diffusers": run_ref}
            times = interleaved_seconds(runs, args.warmup, args.iters, device.type == "cuda")
            memory = {k: peak_memory(fn, device) for k, fn in runs.items()}
            ours_med, ref_med = statistics.median(times["ours"]), statistics.median(times["diffusers"])
            result[name] = {"ours_median_s": ours_med, "diffusers_median_s": ref_med,
                            "speedup_vs_diffusers": ref_med / ours_med, "max_abs_diff": err, "peak_memory": memory}
            print(f"  {name:7s} ours {ours_med * 1e3:10.2f} ms   diffusers {ref_med * 1e3:10.2f} ms   "
                  f"speedup {ref_med / ours_med:6.3f}x   max |diff| {err:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
