"""Text-encoder and VAE CPU offload on a CUDA engine, and peak_memory_mb: what only a GPU can check.

On CUDA: with ``text_encoder_cpu_offload`` / ``vae_cpu_offload`` both components live on the CPU (pinned)
between uses, visit the GPU once per request, and the video equals the one without offload;
``peak_memory_mb`` is a positive float. In the CPU rehearsal the flags are a no-op (nothing to move) and
``peak_memory_mb`` is None.
"""

from __future__ import annotations

import numpy as np

SMALL = {"width": 64, "height": 32, "num_frames": 5, "num_inference_steps": 2, "seed": 9}


def test_text_encoder_and_vae_offload_between_uses(gpu, gpu_generator, tiny_model_dir) -> None:
    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained(str(tiny_model_dir), device=str(gpu.device), dtype="fp32",
                                               text_encoder_cpu_offload=True, vae_cpu_offload=True)
    try:
        result = generator.generate({"prompt": "a lighthouse", "sampling": SMALL})
        want = gpu_generator.generate({"prompt": "a lighthouse", "sampling": SMALL})
        assert np.array_equal(result.frames, want.frames)
        pipe = generator.pipeline
        if gpu.rehearsal:
            assert pipe.offloaders == {} and result.peak_memory_mb is None
            return
        assert set(pipe.offloaders) == {"text_encoder", "vae"}
        for offloader in pipe.offloaders.values():
            assert (offloader.moves_to_device, offloader.moves_to_cpu) == (1, 1) and offloader.pinned
        assert all(p.device.type == "cpu" for p in pipe.text_encoder.model.parameters())
        assert all(p.device.type == "cpu" for p in pipe.vae.parameters())
        assert all(p.device.type == "cuda" for p in pipe.dit.parameters())
        assert isinstance(result.peak_memory_mb, float) and result.peak_memory_mb > 0
        assert result.metadata["peak_memory_mb"] == result.peak_memory_mb
    finally:
        generator.shutdown()
