"""LTX-2 offload on a CUDA engine: the weights really leave the GPU, and the video does not change.

On CUDA, the built-in tiny LTX-2 in fp32: with ``text_encoder_cpu_offload`` / ``vae_cpu_offload`` the prompt encoder
(Gemma + connectors) and the decoders (video VAE, audio VAE, vocoder) load on the CPU (pinned) and visit the GPU
once per use; with ``dit_layerwise_offload`` the DiT's blocks rest in pinned CPU memory. Each generation equals the
resident generator's (frames and waveform, bit-exact); ``torch.cuda.memory_allocated`` after loading is lower than
the resident generator's by at least the offloaded bytes, and drops by at least a group's bytes when its visit ends.
In the CPU rehearsal the flags are a no-op (nothing to move from the CPU) and only the equality is checked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

REQUEST = {"prompt": "a fox runs through snow", "sampling": {"seed": 7, "num_inference_steps": 2},
           "output": {"save_video": False, "return_frames": True}}


def _nbytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _load(gpu: Any, **flags: bool) -> tuple[Any, int]:
    """A generator on the test device and the device bytes its load allocated (0 in the rehearsal)."""
    from fastvideo import VideoGenerator

    gpu.synchronize()
    before = torch.cuda.memory_allocated(gpu.device) if not gpu.rehearsal else 0
    generator = VideoGenerator.from_pretrained("fastvideo-tiny-ltx2", device=str(gpu.device), dtype="fp32", **flags)
    gpu.synchronize()
    after = torch.cuda.memory_allocated(gpu.device) if not gpu.rehearsal else 0
    return generator, after - before


@pytest.fixture(scope="module")
def resident(gpu: Any, fastvideo_cache: Any):
    generator, loaded = _load(gpu)
    result = generator.generate(REQUEST)
    yield generator, loaded, result
    generator.shutdown()


def _same(got: Any, want: Any) -> None:
    assert np.array_equal(got.frames, want.frames)
    assert np.array_equal(got.audio, want.audio)


def test_text_encoder_and_vae_leave_the_gpu_between_uses(gpu: Any, resident: Any) -> None:
    from fastvideo.engine.models.ltx2.served import offload_group

    _, resident_bytes, want = resident
    generator, loaded = _load(gpu, text_encoder_cpu_offload=True, vae_cpu_offload=True)
    try:
        result = generator.generate(REQUEST)
        _same(result, want)
        pipe = generator.pipeline
        if gpu.rehearsal:
            assert pipe.offloaders == {}
            return
        assert set(pipe.offloaders) == {"text_encoder", "vae"}
        groups = {name: offload_group(pipe.components, name) for name in pipe.offloaders}
        for name, offloader in pipe.offloaders.items():
            assert (offloader.moves_to_device, offloader.moves_to_cpu) == (1, 1) and offloader.pinned
            assert all(p.device.type == "cpu" and p.is_pinned() for p in groups[name].parameters())
        assert all(p.device.type == "cuda" for p in pipe.dit.parameters())
        offloaded = sum(_nbytes(g) for g in groups.values())
        assert resident_bytes - loaded >= offloaded  # never loaded onto the GPU
        for name, offloader in pipe.offloaders.items():
            with offloader.on_device():
                gpu.synchronize()
                inside = torch.cuda.memory_allocated(gpu.device)
                assert all(p.device.type == "cuda" for p in groups[name].parameters())
            gpu.synchronize()
            assert inside - torch.cuda.memory_allocated(gpu.device) >= _nbytes(groups[name])
        _same(generator.generate(REQUEST), want)  # and again, from the CPU copies
    finally:
        generator.shutdown()


def test_layerwise_dit_blocks_rest_on_the_cpu(gpu: Any, resident: Any) -> None:
    _, resident_bytes, want = resident
    generator, loaded = _load(gpu, dit_layerwise_offload=True)
    try:
        result = generator.generate(REQUEST)
        _same(result, want)
        pipe = generator.pipeline
        if gpu.rehearsal:
            assert pipe.layerwise_offloaders == []
            return
        (offloader,) = pipe.layerwise_offloaders
        blocks = pipe.dit.transformer_blocks
        assert offloader.copies > 0 and offloader.resident == []
        assert all(p.device.type == "cpu" and p.is_pinned() for p in blocks.parameters())
        in_blocks = {id(p) for p in blocks.parameters()}
        assert all(p.device.type == "cuda" for p in pipe.dit.parameters() if id(p) not in in_blocks)
        assert resident_bytes - loaded >= _nbytes(blocks)
    finally:
        generator.shutdown()
