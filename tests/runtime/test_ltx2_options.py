"""LTX-2 honours engine.compile and the offload options (text encoder, VAE, DiT layerwise), as the Wan path does.

On the built-in tiny LTX-2 (``fastvideo-tiny-ltx2``, CPU, fp32). The CPU is also the "device" here, so the offload
tests make the device copies visible: a recording offloader whose device copies are fresh clones (the Wan offload
tests' stand-in) and the layerwise offloader's recording transfer backend. With each option the generation equals
the plain one exactly (frames and waveform); forward hooks check that the prompt encoder (Gemma + connectors) runs
only on its device copies, the decoders likewise, and the DiT with both groups back home on the CPU; the counters
say one visit per use. The load path for a real device (load on the CPU, then place) is checked on the ``meta``
device. ``engine.compile`` compiles the DiT through a counting dynamo backend (the graphs run as captured, so the
video is bit-equal; CPU inductor on this tiny model took ~490 s on the 2 shared cores, far past a unit test's
budget). ``engine.offload.dit`` (expert offload: one DiT has none) stays refused by name; so do the combinations
that need resident DiT weights on CUDA. The GPU twin is tests/gpu/test_ltx2_offload_cuda.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fastvideo.api import ConfigError, GeneratorConfig, parse_config
from fastvideo.engine.offload import ComponentOffloader

PROMPT = "a fox runs through snow"
STEPS = 2


def _request(image: bool = False) -> dict:
    inputs = {"pil_image": Image.new("RGB", (40, 24), (200, 80, 30))} if image else {}
    return {"prompt": PROMPT, "inputs": inputs, "sampling": {"seed": 7, "num_inference_steps": STEPS},
            "output": {"save_video": False, "return_frames": True}}


def _same(got: Any, want: Any) -> None:
    assert np.array_equal(got.frames, want.frames)
    assert np.array_equal(got.audio, want.audio)


def ptrs(module: torch.nn.Module) -> set[int]:
    return {t.data_ptr() for t in [*module.parameters(), *module.buffers()]}


class RecordingOffloader(ComponentOffloader):
    """The CPU stands in for the device: each visit's "device copies" are fresh clones, so a module computing on
    them is visibly not on its CPU home (tests/engine/test_offload.py's stand-in)."""

    def _to_device(self, cpu: torch.Tensor) -> torch.Tensor:
        return cpu.clone()


@pytest.fixture(scope="module")
def reference(ltx2_generator) -> dict[str, Any]:
    """The plain generator's text-to-video and image-to-video results."""
    return {"t2v": ltx2_generator.generate(_request()), "i2v": ltx2_generator.generate(_request(image=True))}


def test_text_encoder_and_vae_offload_visit_the_device_per_use_and_change_nothing(ltx2_generator,
                                                                                 reference) -> None:
    from fastvideo.engine.models.ltx2.served import OFFLOAD_GROUPS, offload_group

    pipe = ltx2_generator.pipeline
    comps = pipe.components
    assert pipe.offloaders == {}  # a CPU engine: nothing moves unless asked
    groups = {name: offload_group(comps, name) for name in OFFLOAD_GROUPS}
    assert set(groups["text_encoder"]) == {comps.text_encoder.model, comps.connectors}
    assert set(groups["vae"]) == {comps.vae, comps.audio_vae, comps.vocoder}
    offloaders = {name: RecordingOffloader(group, torch.device("cpu"), name=name, pin_memory=False)
                  for name, group in groups.items()}
    home = {name: ptrs(group) for name, group in groups.items()}
    seen: list[tuple[str, str, dict[str, bool]]] = []  # (request, module that ran, group -> on device copies)
    request = ["t2v"]

    def hook(label: str):
        def record(module: torch.nn.Module, args: Any) -> None:
            seen.append((request[0], label, {name: ptrs(g).isdisjoint(home[name]) for name, g in groups.items()}))
        return record

    watched = {"gemma": comps.text_encoder.model, "connectors": comps.connectors, "vae.encoder": comps.vae.encoder,
               "vae.decoder": comps.vae.decoder, "audio_vae.decoder": comps.audio_vae.decoder,
               "vocoder": comps.vocoder, "dit": comps.transformer}
    handles = [module.register_forward_pre_hook(hook(label)) for label, module in watched.items()]
    comps.offloaders.update(offloaders)
    try:
        t2v = ltx2_generator.generate(_request())
        assert [(o.moves_to_device, o.moves_to_cpu) for o in offloaders.values()] == [(1, 1), (1, 1)]
        request[0] = "i2v"
        i2v = ltx2_generator.generate(_request(image=True))  # the image is VAE-encoded in prepare: one more visit
        assert [(o.moves_to_device, o.moves_to_cpu) for o in offloaders.values()] == [(2, 2), (3, 3)]
    finally:
        for handle in handles:
            handle.remove()
        comps.offloaders.clear()
    _same(t2v, reference["t2v"])
    _same(i2v, reference["i2v"])
    assert {label for _, label, _ in seen} == set(watched)
    prepare, decode = ("gemma", "connectors", "vae.encoder"), ("vae.decoder", "audio_vae.decoder", "vocoder")
    for kind, label, placed in seen:
        # prepare: the prompt encoder on the device (and the decoders too when it encodes an image); decode: the
        # decoders only; the DiT with both groups home on the CPU
        want = {"text_encoder": label in prepare, "vae": label in decode or (kind == "i2v" and label in prepare)}
        assert placed == want, (kind, label, placed)
    assert {name: ptrs(group) for name, group in groups.items()} == home  # back on their CPU copies


def test_served_offload_registers_a_component_offloader_per_group(ltx2_generator) -> None:
    pipe = ltx2_generator.pipeline
    try:
        offloader = pipe.offload("text_encoder", pin_memory=False)
        assert pipe.offloaders == {"text_encoder": offloader} and not offloader.pinned
        assert ptrs(offloader.module) == ptrs(pipe.components.text_encoder.model) | ptrs(pipe.components.connectors)
        with pytest.raises(ValueError, match="unknown LTX-2 offload group"):
            pipe.offload("dit")
    finally:
        pipe.components.offloaders.clear()


def test_layerwise_dit_offload_streams_every_block_each_forward(ltx2_generator, reference) -> None:
    from fastvideo.engine.layer_offload import RecordingTransferBackend

    pipe = ltx2_generator.pipeline
    dit = pipe.components.transformer
    backend = RecordingTransferBackend()
    forwards: list[int] = []
    handle = dit.register_forward_pre_hook(lambda module, args: forwards.append(1))
    offloader = pipe.offload_dit_layerwise(pin_memory=False, backend=backend)
    try:
        assert pipe.layerwise_offloaders == [offloader] and offloader.num_blocks == dit.config.num_layers
        got = ltx2_generator.generate(_request())
        blocks = offloader.num_blocks
        assert len(forwards) >= STEPS  # CFG, STG and modality passes: several DiT forwards per step
        assert offloader.copies == offloader.waits == offloader.releases == len(forwards) * blocks
        assert backend.log[:3] == [("copy", 0), ("wait", 0), ("free", 0)]
        assert offloader.resident == [] and offloader.resident_bytes == 0  # between requests no block is "on device"
        slots = {b.data_ptr() for slot in offloader._slots for b in (slot.buffers or [])}
        assert slots and ptrs(dit.transformer_blocks).isdisjoint(slots)
    finally:
        handle.remove()
        offloader.remove()
        pipe.layerwise_offloaders.remove(offloader)
    _same(got, reference["t2v"])


def test_a_real_device_load_keeps_offloaded_weights_on_the_cpu_and_moves_the_rest(ltx2_generator) -> None:
    """load_served_ltx2's placement for a device (CUDA in production), on the ``meta`` device."""
    from fastvideo.engine.models.ltx2 import load_ltx2_pipeline
    from fastvideo.engine.models.ltx2.served import (LTX2ServedPipeline, OffloadableLTX2Components, offload_group,
                                                     stage_offload)
    from fastvideo.kernels.registry import select_attention_backend

    pipe = ltx2_generator.pipeline
    loaded = load_ltx2_pipeline(ltx2_generator.model_path, max_sequence_length=pipe.preset.text_length)
    meta = torch.device("meta")
    served = LTX2ServedPipeline(components=OffloadableLTX2Components.of(loaded, device=meta), preset=pipe.preset,
                                guidance=pipe.guidance, sigmas=pipe.sigmas, dtype=torch.float32)
    head_dim = loaded.transformer.config.attention_head_dim
    backend = select_attention_backend("sdpa", dtype=torch.float32, head_dim=head_dim, device="cpu")
    stage_offload(served, backend, offloaded=["text_encoder"], layerwise=False, pin_memory=False)
    comps = served.components
    assert served.device == meta and set(served.offloaders) == {"text_encoder"} and served.layerwise_offloaders == []
    assert comps.transformer.attention_backend is backend

    def devices(module: torch.nn.Module) -> set[str]:
        return {t.device.type for t in [*module.parameters(), *module.buffers()]}

    assert devices(offload_group(comps, "text_encoder")) == {"cpu"}  # offloaded: home on the CPU
    assert devices(offload_group(comps, "vae")) == {"meta"}  # not offloaded: moved to the device
    assert devices(comps.transformer) == {"meta"}
    # (layerwise placement, the blocks on the CPU and the rest on the device, is offload_layerwise's, checked on a
    # real device by tests/gpu/test_ltx2_offload_cuda.py: meta tensors cannot be swapped in through ``.data``)
    served.close()


_COMPILED: list[torch.fx.GraphModule] = []


def _counting_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
    _COMPILED.append(gm)
    return gm.forward  # the captured graph run as is: numerically the eager model


def test_compile_runs_the_dit_through_torch_compile_with_every_offload_option_accepted(fastvideo_cache: Path,
                                                                                      reference) -> None:
    from torch._dynamo import register_backend

    from fastvideo import VideoGenerator

    register_backend(_counting_backend, name="fastvideo_test_counting")
    config = {"model_path": "fastvideo-tiny-ltx2",
              "engine": {"device": "cpu", "dtype": "fp32", "compile": {"enabled": True,
                                                                        "backend": "fastvideo_test_counting"},
                         "offload": {"text_encoder": True, "vae": True, "dit_layerwise": True}}}
    generator = VideoGenerator.from_config(config)
    try:
        pipe = generator.pipeline
        assert pipe.dit is pipe.components.transformer and generator.counters.compiles == 1
        assert pipe.offloaders == {} and pipe.layerwise_offloaders == []  # a CPU engine: honoured as they are
        got = generator.generate(_request())
        assert _COMPILED, "the DiT never went through torch.compile"
    finally:
        generator.shutdown()
        torch._dynamo.reset()
    _same(got, reference["t2v"])


def test_expert_offload_stays_refused_by_name(fastvideo_cache: Path) -> None:
    from fastvideo import VideoGenerator
    from fastvideo.engine.families import FAMILIES
    from fastvideo.engine.models.ltx2.served import load_served_ltx2

    with pytest.raises(ConfigError) as info:
        VideoGenerator.from_config({"model_path": "fastvideo-tiny-ltx2", "engine": {"device": "cpu",
                                    "offload": {"dit": True}}})
    assert info.value.path == "engine.offload.dit" and "LTX-2 has one DiT" in info.value.message
    with pytest.raises(ConfigError) as info:  # a direct caller of the loader is refused too, before loading
        load_served_ltx2(None, family=FAMILIES["ltx2"], device=torch.device("cpu"), dtype=torch.float32,
                         offload_experts=True)
    assert info.value.path == "engine.offload.dit"


@pytest.mark.parametrize("config, field", [
    ({"compile": {"enabled": True}}, "engine.compile.enabled"),
    ({"cuda_graphs": {"enabled": True}}, "engine.cuda_graphs.enabled"),
])
def test_layerwise_with_what_needs_resident_dit_weights_is_refused_on_cuda(config: dict, field: str) -> None:
    from fastvideo.runtime.config_support import check_generator_config

    parsed = parse_config(GeneratorConfig, {"model_path": "fastvideo-tiny-ltx2",
                                            "engine": {"offload": {"dit_layerwise": True}, **config}})
    with pytest.raises(ConfigError) as info:
        check_generator_config(parsed, device_type="cuda")
    assert info.value.path == field and "engine.offload.dit_layerwise" in info.value.message
