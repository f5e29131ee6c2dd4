"""Model code on the GPU: the DiT's Triton fast path against SDPA, VAE decode, an AOTI build served on CUDA.

- DiT: two blocks of the real Wan2.1-1.3B geometry (12 heads x 128, FFN 8960, text 4096), deterministic
  random weights, bf16, 1,170 tokens (not a multiple of any attention tile). Against the same model in
  float32 with SDPA, the Triton attention + fused ops path must be at most 2x as far off as the bf16
  SDPA path (the kernels' error rule, at model level).
- VAE: the real Wan VAE config decoding a 3x8x8 latent; on the device in float32 it must match the CPU
  within 1e-4 (relative to the output's scale), and diffusers' ``AutoencoderKLWan`` on the same weights
  and device when diffusers is importable.
- AOTI: ``fastvideo-build --backend aoti`` for the device (DiT, batches 1 and 2, 64x64x5) in the
  precision ``auto`` picks there, then a VideoGenerator serving from it: every DiT step runs the
  compiled program (no eager fallback) and the final latents match the eager generator within the
  build's verification tolerance. On a GPU the CUDA-graph runner is then put over the compiled step
  for two shapes (with and without CFG), its replays must equal the compiled step run without graphs,
  and an eager compiled call after the captures must still work (a program recording its own
  completion event inside a capture used to fail every later call).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.wan_configs import WAN_1_3B_DIT, WAN_VAE
from fastvideo.engine import builtin_model as bm

ATOL = 1e-6


def _dit(config: dict, device: torch.device):
    from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(WanDiTConfig.from_dict(config))
    model.load_state_dict(bm.synthesize_state_dict(model, 7), assign=True)
    return model.to(device).eval()


def test_dit_triton_fast_path_matches_sdpa(gpu) -> None:
    from fastvideo.kernels.fused import select_ops_backend
    from fastvideo.kernels.registry import select_attention_backend

    config = gpu.pick(dict(WAN_1_3B_DIT, num_layers=2),
                      dict(WAN_1_3B_DIT, num_layers=2, num_attention_heads=2, attention_head_dim=32, ffn_dim=96,
                           text_dim=48, freq_dim=32))
    latent = gpu.pick((2, 16, 3, 30, 52), (2, 16, 2, 6, 10))
    text_len = gpu.pick(512, 7)
    dtype, dev = torch.bfloat16, gpu.device
    reference = _dit(config, dev)
    model = _dit(config, dev).to_inference_dtype(dtype)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(latent, generator=g).to(dev)
    t = torch.tensor([700.0, 700.0], device=dev)
    text = torch.randn(latent[0], text_len, config["text_dim"], generator=g).to(dev)
    head_dim = config["attention_head_dim"]
    with torch.no_grad():
        ref = reference(x, t, text).double()
        sdpa = model(x.to(dtype), t, text.to(dtype))
        model.set_attention_backend(select_attention_backend("triton", dtype=dtype, head_dim=head_dim, device=dev))
        model.set_ops_backend(select_ops_backend("triton", dtype=dtype, device=dev))
        fast = model(x.to(dtype), t, text.to(dtype))
    assert torch.isfinite(fast).all()
    err_fast = (fast.double() - ref).abs().max().item()
    err_sdpa = (sdpa.double() - ref).abs().max().item()
    assert err_fast <= 2 * err_sdpa + ATOL, f"triton+fused max|err| {err_fast:.3e} vs sdpa bf16 {err_sdpa:.3e}"


def test_vae_decode_on_device_matches_cpu_and_diffusers(gpu) -> None:
    from fastvideo.engine.models.wan.vae import WanVAE, WanVAEConfig

    config = gpu.pick(WAN_VAE, dict(WAN_VAE, base_dim=8, z_dim=16))
    with torch.device("meta"):
        vae = WanVAE(WanVAEConfig.from_dict(config))
    state = bm.synthesize_state_dict(vae, 11)
    vae.load_state_dict(state, assign=True)
    vae = vae.eval()
    z = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        on_cpu = vae.decode(z)
        on_device = vae.to(gpu.device).decode(z.to(gpu.device)).cpu()
    scale = max(1.0, on_cpu.abs().max().item())
    assert on_device.shape == on_cpu.shape == (1, 3, 9, 64, 64)
    assert (on_device - on_cpu).abs().max().item() <= 1e-4 * scale
    try:
        from diffusers import AutoencoderKLWan
    except ImportError:
        return  # the GPU image may lack diffusers; scripts/gpu_check.sh carries it
    ref = AutoencoderKLWan(**{k: v for k, v in config.items() if not k.startswith("_")})
    ref.load_state_dict(state, strict=True)
    with torch.no_grad():
        theirs = ref.to(gpu.device).eval().decode(z.to(gpu.device)).sample.cpu()
    assert (on_device - theirs).abs().max().item() <= 1e-4 * scale


def _build(model_cache: Path, out: Path, device: torch.device, precision: str) -> Path:
    env = dict(os.environ, FASTVIDEO_CACHE_DIR=str(model_cache))
    argv = [sys.executable, "-m", "fastvideo.build.cli", "--backend", "aoti", "--profile", "64x64x5", "--cfg", "both",
            "--components", "dit", "--precision", precision, "--device", device.type, "--out", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"build failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    builds = [p for p in out.iterdir() if (p / "manifest.json").is_file()]
    assert len(builds) == 1
    return builds[0]


def test_aoti_build_served_on_device(gpu, tiny_model_dir: Path, fastvideo_cache: Path, tmp_path: Path) -> None:
    from fastvideo import VideoGenerator
    from fastvideo.build.exportable import TOLERANCES
    from fastvideo.engine.models.wan.pipeline import model_dtype
    from fastvideo.runtime.cuda_graphs import GraphBucket, GraphConfig
    from fastvideo.runtime.executor import ExecutorConfig
    from fastvideo.engine.state_codec import decode_latent_state
    from fastvideo.runtime.worker import BatchWorker, WorkerConfig

    dtype = model_dtype("auto", gpu.device)
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]
    folder = _build(fastvideo_cache, tmp_path / "artifacts", gpu.device, precision)
    request = {"prompt": "a red kite over the sea", "sampling": {"width": 64, "height": 64, "num_frames": 5,
                                                                 "num_inference_steps": 2, "guidance_scale": 5.0,
                                                                 "seed": 7},
               "output": {"save_video": False, "return_frames": True, "return_state": True}}
    compiled = VideoGenerator.from_pretrained(str(tiny_model_dir), device=str(gpu.device), dtype=precision,
                                              artifacts_path=str(folder))
    eager = VideoGenerator.from_pretrained(str(tiny_model_dir), device=str(gpu.device), dtype=precision)
    try:
        got, want = compiled.generate(request), eager.generate(request)
        dispatch = compiled.pipeline.dit._dispatch
        assert dispatch.calls == 2 and dispatch.misses == 0  # both steps ran the compiled program
        tail, _ = decode_latent_state(got.state)
        ref, _ = decode_latent_state(want.state)
        tol = TOLERANCES[dtype] * max(1.0, ref.abs().max().item())
        assert (tail.float() - ref.float()).abs().max().item() <= tol

        graphs = GraphConfig(enabled=True, buckets=(GraphBucket(width=64, height=64, num_frames=5, cfg=True),
                                                    GraphBucket(width=64, height=64, num_frames=5, cfg=False)))
        worker = BatchWorker(compiled, WorkerConfig(executor=ExecutorConfig(graphs=graphs)),
                             graph_backend=gpu.graph_backend())
        worker.start()
        try:
            info = worker.warmup()
            assert info["graphs"] == ["64x64x5/initial/b1/cfg", "64x64x5/initial/b1/nocfg"]
            assert info["branches"] == ["initial"]
            if gpu.rehearsal:  # the CPU stand-in graph records aten ops, not a compiled program's kernels
                return
            replayed = worker.generate(request)
            assert worker.executor.runner.stats["replays"] >= 2
        finally:
            worker.stop()
        scale = max(1.0, tail.abs().max().item())
        again, _ = decode_latent_state(replayed.state)
        assert (again.float() - tail.float()).abs().max().item() <= 1e-3 * scale
        after, _ = decode_latent_state(compiled.generate(request).state)  # eager compiled call after captures
        assert (after.float() - tail.float()).abs().max().item() <= 1e-3 * scale
    finally:
        compiled.shutdown()
        eager.shutdown()
