"""Layerwise DiT offload on a CUDA GPU: exact outputs, the memory it saves, and the time per step it costs.

- DiT level: eight blocks of the real Wan2.1-1.3B geometry in bf16 (deterministic random weights), 1,024 tokens.
  The same model run resident and offloaded layerwise (window 2, pinned CPU copies, a side copy stream) gives
  bitwise-equal outputs over two steps; the peak allocated memory of an offloaded step is lower than a resident
  one's by (blocks - window) x block bytes (within 5% + 8 MiB: allocator rounding); at rest no block weight is on
  the GPU and every non-block weight is. The milliseconds per step of both are printed (no timing assertion).
- Generator level: ``dit_layerwise_offload=True`` on the built-in model gives the same video as the resident
  generator, with the blocks on pinned CPU memory and one offloader.
- In the CPU rehearsal the DiT check runs at tiny shapes on the recording stand-in backend (no memory figures)
  and the generator flag is a no-op (nothing to offload from the CPU).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from benchmarks.wan_configs import WAN_1_3B_DIT
from fastvideo.engine import builtin_model as bm

SMALL = {"width": 64, "height": 32, "num_frames": 5, "num_inference_steps": 2, "seed": 9}
WINDOW = 2


def _dit(config: dict):
    from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(WanDiTConfig.from_dict(config))
    model.load_state_dict(bm.synthesize_state_dict(model, 11), assign=True)
    return model.eval()


def _inputs(config: dict, latent: tuple[int, ...], device: torch.device, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(latent, generator=gen).to(device, dtype)
    text = torch.randn(latent[0], 32, config["text_dim"], generator=gen).to(device, dtype)
    return x, torch.tensor([900.0, 400.0][: latent[0]], device=device), text


def _step_ms(model, args, device: torch.device, steps: int = 3) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            model(*args)
    sync()
    return (time.perf_counter() - t0) / steps * 1e3


def _peak_step(model, args, device: torch.device) -> tuple[torch.Tensor, int]:
    """One forward's output and the peak bytes allocated on the device during it (weights included)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        out = model(*args)
    torch.cuda.synchronize(device)
    return out, torch.cuda.max_memory_allocated(device)


def test_layerwise_dit_equals_resident_and_saves_the_offloaded_blocks(gpu, capsys) -> None:
    from fastvideo.engine.layer_offload import RecordingTransferBackend, module_tensors, offload_layerwise

    config = gpu.pick(dict(WAN_1_3B_DIT, num_layers=8),
                      dict(WAN_1_3B_DIT, num_layers=4, num_attention_heads=2, attention_head_dim=32, ffn_dim=96,
                           text_dim=48, freq_dim=32))
    latent = gpu.pick((1, 16, 4, 32, 32), (1, 16, 2, 4, 4))
    dtype = gpu.pick(torch.bfloat16, torch.float32)
    device = gpu.device
    model = _dit(config).to(dtype)
    resident = copy.deepcopy(model).to(device)
    args = _inputs(config, latent, device, dtype)
    with torch.no_grad():
        resident(*args)  # warm-up: RoPE tables, cuBLAS handles and workspaces
    want_ms = _step_ms(resident, args, device)
    with torch.no_grad():
        wants = [resident(*args), resident(args[0] * 0.5, *args[1:])]
    if not gpu.rehearsal:
        _, peak_resident = _peak_step(resident, args, device)
        resident.to("cpu")  # only one copy of the weights on the GPU while the offloaded one is measured
        torch.cuda.empty_cache()

    backend = RecordingTransferBackend() if gpu.rehearsal else None
    offloader = offload_layerwise(model, device, window=WINDOW, backend=backend)
    blocks = {id(t) for t in module_tensors(model.blocks)}
    assert all((t.device.type == "cpu") == (id(t) in blocks) or gpu.rehearsal for t in module_tensors(model))
    if not gpu.rehearsal:
        assert all(t.is_pinned() for t in module_tensors(model.blocks))
    with torch.no_grad():
        model(*args)  # warm-up: the slots are allocated once
    got_ms = _step_ms(model, args, device)
    with torch.no_grad():
        gots = [model(*args), model(args[0] * 0.5, *args[1:])]
    for got, want in zip(gots, wants):
        assert torch.equal(got, want)
    assert offloader.resident == [] and offloader.peak_resident_bytes == WINDOW * max(offloader.block_bytes)
    assert {t.data_ptr() for t in module_tensors(model.blocks)}.isdisjoint(
        {b.data_ptr() for s in offloader._slots for b in (s.buffers or [])})
    block = max(offloader.block_bytes)
    saved_mib = None
    if not gpu.rehearsal:
        _, peak_offloaded = _peak_step(model, args, device)
        expected = (offloader.num_blocks - WINDOW) * block
        saved = peak_resident - peak_offloaded
        saved_mib = saved / 2**20
        assert abs(saved - expected) <= 0.05 * expected + 8 * 2**20, (saved, expected)
    with capsys.disabled():
        print(f"\nlayerwise offload, {offloader.num_blocks} blocks of {block / 2**20:.1f} MiB, window {WINDOW}: "
              f"resident {want_ms:.2f} ms/step, offloaded {got_ms:.2f} ms/step"
              + (f", peak memory saved {saved_mib:.1f} MiB" if saved_mib is not None else " (CPU rehearsal)"))


def test_generator_dit_layerwise_offload_gives_the_same_video(gpu, gpu_generator, tiny_model_dir) -> None:
    from fastvideo import VideoGenerator
    from fastvideo.engine.layer_offload import module_tensors

    generator = VideoGenerator.from_pretrained(str(tiny_model_dir), device=str(gpu.device), dtype="fp32",
                                               dit_layerwise_offload=True)
    try:
        got = generator.generate({"prompt": "a lighthouse", "sampling": SMALL}).frames
        want = gpu_generator.generate({"prompt": "a lighthouse", "sampling": SMALL}).frames
        assert np.array_equal(got, want)
        pipe = generator.pipeline
        if gpu.rehearsal:
            assert pipe.layerwise_offloaders == []
            return
        (offloader,) = pipe.layerwise_offloaders
        assert offloader.copies > 0 and offloader.resident == []
        blocks = {id(t) for t in module_tensors(pipe.dit.blocks)}
        for tensor in module_tensors(pipe.dit):
            assert (tensor.device.type, tensor.is_pinned()) == (("cpu", True) if id(tensor) in blocks else
                                                                 ("cuda", False))
    finally:
        generator.shutdown()
