"""The session fixture ``ltx2_diffusers_folders`` (tests/conftest.py) is safe to share between modules: each call
hands out its own copy of the built diffusers ``LTX2Pipeline`` (same weights and settings, no shared tensor,
module or scheduler), so one test changing its pipeline (bf16, a scheduler config) leaves the next call's pipeline
as built; the folder itself is written once and handed out unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

FolderOf = Callable[..., tuple[Any, Path]]


def _modules(pipe: Any) -> dict[str, torch.nn.Module]:
    return {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}


def test_each_call_gets_its_own_pipeline_and_a_change_does_not_leak(ltx2_diffusers_folders: FolderOf) -> None:
    first, folder = ltx2_diffusers_folders()
    second, same_folder = ltx2_diffusers_folders()
    assert same_folder == folder and (folder / "model_index.json").is_file()
    assert first is not second and first.scheduler is not second.scheduler
    assert set(_modules(first)) >= {"transformer", "vae", "audio_vae", "text_encoder", "connectors", "vocoder"}
    for name, module in _modules(first).items():
        other = _modules(second)[name]
        assert module is not other, name
        for (key, a), b in zip(module.state_dict().items(), other.state_dict().values()):
            assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), (name, key)
    assert first.vae.use_framewise_decoding is False  # attributes set on the built pipeline survive the copy

    shift = first.scheduler.config.shift
    first.to(torch.bfloat16)
    first.scheduler.register_to_config(shift=shift + 1.0)
    first.vae.use_framewise_decoding = True

    third, _ = ltx2_diffusers_folders()
    assert {p.dtype for m in _modules(third).values() for p in m.parameters()} == {torch.float32}
    assert third.scheduler.config.shift == shift and third.vae.use_framewise_decoding is False
    for name, module in _modules(third).items():  # the weights are still the built ones, bit for bit
        for a, b in zip(module.state_dict().values(), _modules(second)[name].state_dict().values()):
            assert torch.equal(a, b), name
