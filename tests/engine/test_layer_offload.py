"""Layerwise DiT offload on the CPU stand-in backend: the copy/wait/free schedule, the window bound in bytes, exact
outputs against the resident model, robustness (an exception inside a block, edits between forwards), and the
config refusals that go with it."""

from __future__ import annotations

import copy

import pytest
import torch

from fastvideo.api import ConfigError, GeneratorConfig
from fastvideo.engine.layer_offload import (
    LayerwiseOffloader,
    RecordingTransferBackend,
    default_backend,
    module_tensors,
    offload_layerwise,
)
from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel
from fastvideo.runtime.config_support import check_generator_config

TINY = WanDiTConfig(num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4, text_dim=16,
                    freq_dim=16, ffn_dim=32, num_layers=5)


def tiny_dit(seed: int = 0) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    model = WanTransformer3DModel(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():  # off the init values (zeros / ones), so every weight matters
            p.add_(0.1 * torch.randn_like(p))
    return model


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, 3, 4, 4, generator=gen), torch.tensor([700.0, 300.0]),
            torch.randn(2, 7, 16, generator=gen))


def log_computes(offloader: LayerwiseOffloader, backend: RecordingTransferBackend) -> None:
    """Append ("compute", i) to the backend's log when block i runs, checking its weights are the slot's."""
    def hook(index: int):
        def check(module: torch.nn.Module, args: object) -> None:
            backend.log.append(("compute", index))
            slot = offloader._slots[index % offloader.window]
            assert slot.buffers is not None
            assert [t.data_ptr() for t in module_tensors(module)] == [b.data_ptr() for b in slot.buffers]
        return check

    for index, block in enumerate(offloader.blocks):
        block.register_forward_pre_hook(hook(index))  # after the offloader's own pre-hook


def offloaded(window: int = 2, seed: int = 0, log: bool = True):
    model = tiny_dit(seed)
    backend = RecordingTransferBackend()
    offloader = offload_layerwise(model, torch.device("cpu"), window=window, backend=backend)
    if log:
        log_computes(offloader, backend)
    return model, offloader, backend


def test_schedule_prefetches_the_next_block_before_computing_and_waits_before_each_compute():
    model, offloader, backend = offloaded(window=2)
    with torch.no_grad():
        model(*inputs())
    want = [("copy", 0), ("copy", 1), ("wait", 0), ("compute", 0), ("free", 0)]
    for i in range(1, 5):
        want += ([("copy", i + 1)] if i + 1 < 5 else []) + [("wait", i), ("compute", i), ("free", i)]
    assert backend.log == want
    log = backend.log
    for i in range(5):
        compute = log.index(("compute", i))
        assert log.index(("wait", i)) < compute and log.index(("copy", i)) < log.index(("wait", i))
        if i + 1 < 5:
            assert log.index(("copy", i + 1)) < compute  # block i+1's copy is in flight while block i computes
    assert (offloader.copies, offloader.waits, offloader.releases) == (5, 5, 5)
    assert offloader.resident == [] and offloader.resident_bytes == 0


@pytest.mark.parametrize("window", [1, 2, 3])
def test_at_most_window_blocks_resident_and_outputs_equal_the_resident_model(window: int):
    reference = tiny_dit()
    model, offloader, backend = offloaded(window=window)
    block = max(offloader.block_bytes)
    assert offloader.block_bytes == [block] * 5 and offloader.total_bytes == 5 * block
    seen: list[int] = []
    for b in offloader.blocks:
        b.register_forward_pre_hook(lambda m, a: seen.append(offloader.resident_bytes))
    with torch.no_grad():
        for seed in (1, 2):  # two steps: the slots are reused, never reallocated
            assert torch.equal(model(*inputs(seed)), reference(*inputs(seed)))
    assert max(seen) == offloader.peak_resident_bytes == min(window, 5) * block
    assert offloader.slot_bytes == min(window, 5) * block and backend.allocations == min(window, 5)
    copies_per_forward = [k for k, _ in backend.log].count("copy") // 2
    assert copies_per_forward == 5


def test_blocks_rest_on_their_cpu_copies_and_the_rest_of_the_model_is_not_duplicated():
    model, offloader, _ = offloaded()
    rest = {id(t) for t in module_tensors(model)} - {id(t) for t in module_tensors(model.blocks)}
    at_rest = {t.data_ptr() for t in module_tensors(model.blocks)}
    with torch.no_grad():
        model(*inputs())
    assert {t.data_ptr() for t in module_tensors(model.blocks)} == at_rest  # back on the CPU copies
    slot_ptrs = {b.data_ptr() for s in offloader._slots for b in (s.buffers or [])}
    assert not slot_ptrs & at_rest
    assert len(rest) > 0 and all(t.device.type == "cpu" for t in module_tensors(model))


def test_an_exception_inside_a_block_leaves_the_next_forward_correct():
    reference = tiny_dit()
    model, offloader, backend = offloaded()
    calls = {"n": 0}

    def boom(module: torch.nn.Module, args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected")

    handle = model.blocks[2].register_forward_pre_hook(boom)
    with torch.no_grad(), pytest.raises(RuntimeError, match="injected"):
        model(*inputs())
    assert offloader.resident == [2, 3]  # block 2 was waited on (active), block 3 in flight
    with torch.no_grad():
        assert torch.equal(model(*inputs()), reference(*inputs()))
    handle.remove()
    assert offloader.resident == [] and offloader.peak_resident_bytes <= 2 * max(offloader.block_bytes)
    offloader.release_all()
    assert offloader.slot_bytes == 0


def test_in_place_edits_between_forwards_are_picked_up_and_remove_restores_plain_blocks():
    reference = tiny_dit()
    model, offloader, _ = offloaded(log=False)
    with torch.no_grad():
        for m in (model, reference):  # a LoRA-style in-place edit of one block's weight
            m.blocks[3].attn1.to_q.weight.add_(0.5)
        assert torch.equal(model(*inputs()), reference(*inputs()))
        offloader.remove()
        copies = offloader.copies
        assert torch.equal(model(*inputs()), reference(*inputs())) and offloader.copies == copies


def test_two_experts_each_offloaded_layerwise():
    experts = [tiny_dit(0), tiny_dit(1)]
    references = [copy.deepcopy(m) for m in experts]
    offloaders = [offload_layerwise(m, torch.device("cpu"), backend=RecordingTransferBackend(), name=f"expert {k}")
                  for k, m in enumerate(experts)]
    with torch.no_grad():
        for model, reference in zip(experts, references):
            assert torch.equal(model(*inputs()), reference(*inputs()))
    assert all(o.copies == 5 and o.resident == [] for o in offloaders)


def test_bad_arguments_are_refused():
    model = tiny_dit()
    with pytest.raises(ValueError, match="window"):
        LayerwiseOffloader(model.blocks, RecordingTransferBackend(), window=0)
    with pytest.raises(TypeError, match="head"):
        offload_layerwise(model, torch.device("cpu"), blocks_attr="head", backend=RecordingTransferBackend())
    with pytest.raises(ValueError, match="CUDA"):
        default_backend(torch.device("cpu"))


def layerwise_config(**engine: object) -> GeneratorConfig:
    config = GeneratorConfig()
    config.engine.offload.dit_layerwise = True
    for dotted, value in engine.items():
        owner = config.engine
        *parents, leaf = dotted.split("__")
        for part in parents:
            owner = getattr(owner, part)
        setattr(owner, leaf, value)
    return config


def test_layerwise_offload_is_accepted_on_cuda_and_cpu():
    check_generator_config(layerwise_config(), device_type="cuda")
    check_generator_config(layerwise_config(), device_type="cpu")


@pytest.mark.parametrize(("field", "path", "value"), [
    ("compile__enabled", "engine.compile.enabled", True),
    ("cuda_graphs__enabled", "engine.cuda_graphs.enabled", True),
    ("offload__dit", "engine.offload.dit", True),
    ("artifacts_path", "engine.artifacts_path", "/nonexistent/artifacts"),
])
def test_layerwise_offload_refuses_what_needs_resident_weights_on_cuda(field: str, path: str, value: object):
    with pytest.raises(ConfigError) as info:
        check_generator_config(layerwise_config(**{field: value}), device_type="cuda")
    assert info.value.path == path and "engine.offload.dit_layerwise" in str(info.value)
