"""CPU offload between uses: the offloader's moves, concurrent users, tied weights, and the pipeline's use of it."""

from __future__ import annotations

import threading

import numpy as np
import torch

from fastvideo.engine.offload import ComponentOffloader

SMALL = {"width": 64, "height": 32, "num_frames": 5, "num_inference_steps": 2, "seed": 4}


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4)
        self.b.weight = self.a.weight  # tied
        self.register_buffer("scale", torch.full((4,), 2.0))


class Recording(ComponentOffloader):
    """A stand-in device: its "device copies" are fresh clones, recorded (no GPU on the test machine)."""

    def __init__(self, *args, **kwargs) -> None:
        self.copies: list[torch.Tensor] = []
        super().__init__(*args, **kwargs)

    def _to_device(self, cpu: torch.Tensor) -> torch.Tensor:
        copy = cpu.clone()
        self.copies.append(copy)
        return copy


def ptrs(module: torch.nn.Module) -> set[int]:
    return {t.data_ptr() for t in [*module.parameters(), *module.buffers()]}


def test_weights_visit_the_device_only_inside_the_block_and_come_back_unchanged():
    module = Tied()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    offloader = Recording(module, torch.device("cpu"), name="tied", pin_memory=False)
    home = ptrs(module)
    with offloader.on_device():
        assert ptrs(module) == {c.data_ptr() for c in offloader.copies}  # every tensor is a device copy
        assert module.b.weight is module.a.weight
        with offloader.on_device():  # nested use: no second move
            pass
        assert len(offloader.copies) == 4  # a.weight (tied with b.weight) once, two biases, the buffer
        assert torch.equal(module.scale, before["scale"])
    assert ptrs(module) == home and (offloader.moves_to_device, offloader.moves_to_cpu) == (1, 1)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    with offloader.on_device():
        pass
    assert (offloader.moves_to_device, offloader.moves_to_cpu) == (2, 2) and len(offloader.copies) == 8


def test_concurrent_users_keep_the_weights_on_the_device():
    offloader = Recording(Tied(), torch.device("cpu"), name="tied", pin_memory=False)
    home = ptrs(offloader.module)
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with offloader.on_device():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(5)
    with offloader.on_device():
        pass
    assert ptrs(offloader.module) != home  # the other user still holds the device copies
    release.set()
    thread.join(5)
    assert ptrs(offloader.module) == home and offloader.moves_to_device == 1


def test_pipeline_moves_text_encoder_and_vae_for_each_use(tiny_model_dir):
    from fastvideo import VideoGenerator

    reference = VideoGenerator.from_pretrained(str(tiny_model_dir), device="cpu")
    generator = VideoGenerator.from_pretrained(str(tiny_model_dir), device="cpu", text_encoder_cpu_offload=True,
                                               vae_cpu_offload=True)
    try:
        pipe = generator.pipeline
        assert pipe.offloaders == {}  # a CPU engine: everything already lives on the CPU, nothing to move
        encoder = pipe.offload("text_encoder", pipe.text_encoder.model, pin_memory=False)
        vae = pipe.offload("vae", pipe.vae, pin_memory=False)
        got = generator.generate({"prompt": "a lighthouse", "sampling": SMALL}).frames
        want = reference.generate({"prompt": "a lighthouse", "sampling": SMALL}).frames
        assert np.array_equal(got, want)
        assert (encoder.moves_to_device, encoder.moves_to_cpu) == (1, 1)
        assert (vae.moves_to_device, vae.moves_to_cpu) == (1, 1)
    finally:
        generator.shutdown()
        reference.shutdown()
