"""VideoGenerator's LoRA adapters on LTX-2: the built-in tiny LTX-2 (``fastvideo-tiny-ltx2``), CPU fp32.

The adapters are random LoRAs written by hand in the diffusers/PEFT layout (``transformer.<module>.lora_A.weight`` /
``lora_B.weight``, no metadata: scale 1) for the tiny LTX-2 DiT, over both streams. A generation with the adapter
merged differs from one without (frames and audio) and equals a generation on the merged weights computed by hand
(``W + strength * B @ A`` in float32, copied into the DiT); unmerging gives the original weights bit-exactly and the
original video; ``pipeline.components.lora_path`` merges the adapter at load (the family no longer refuses it); a
request's ``extensions.lora`` must name the merged adapter. The engine-level parity with diffusers' ``fuse_lora`` is
tests/engine/test_ltx2_lora.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fastvideo.api import RequestError

PROMPT = "a fox runs through snow"
MODULES = ("attn1.to_q", "attn1.to_v", "audio_attn1.to_out.0", "attn2.to_out.0", "audio_attn2.to_k",
           "audio_to_video_attn.to_v", "video_to_audio_attn.to_q", "ff.net.0.proj", "audio_ff.net.2")


def _request(**extra: Any) -> dict:
    return {"prompt": PROMPT, "sampling": {"seed": 7, "num_inference_steps": 2},
            "output": {"save_video": False, "return_frames": True}, **extra}


def write_lora(path: Path, dit: torch.nn.Module, seed: int, scale: float = 0.5) -> Path:
    params = dict(dit.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for block in range(len(dit.transformer_blocks)):
        for module in MODULES:
            out_dim, in_dim = params[f"transformer_blocks.{block}.{module}.weight"].shape
            key = f"transformer.transformer_blocks.{block}.{module}"
            tensors[f"{key}.lora_A.weight"] = scale * torch.randn(4, in_dim, generator=gen)
            tensors[f"{key}.lora_B.weight"] = scale * torch.randn(out_dim, 4, generator=gen)
    save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def loras(ltx2_generator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ltx2_loras")
    return {name: write_lora(folder / f"{name}.safetensors", ltx2_generator.pipeline.dit, seed)
            for name, seed in (("style", 1), ("other", 2))}


def _run(generator: Any, **extra: Any) -> tuple[np.ndarray, np.ndarray]:
    result = generator.generate(_request(**extra))
    return result.frames, np.asarray(result.audio)


def _weights(generator: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in generator.pipeline.dit.state_dict().items()}


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@torch.no_grad()
def _merge_by_hand(dit: torch.nn.Module, path: Path, strength: float) -> None:
    params = dict(dit.named_parameters())
    tensors = load_file(str(path))
    for key, a in tensors.items():
        if key.endswith(".lora_A.weight"):
            module = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            param = params[f"{module}.weight"]
            param.copy_(param.float() + strength * (b.float() @ a.float()))


@torch.no_grad()
def _restore(dit: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    for name, param in dit.named_parameters():
        param.copy_(weights[name])


def test_a_merged_adapter_equals_the_merged_weights_and_unmerges_exactly(ltx2_generator, loras) -> None:
    gen = ltx2_generator
    assert gen.pipeline.dit is gen.pipeline.components.transformer
    base_weights = _weights(gen)
    base = _run(gen)
    gen.set_lora_adapter("style", str(loras["style"]))
    assert gen.lora.merged == "style"
    style_weights = _weights(gen)
    style = _run(gen)
    assert not np.array_equal(style[0], base[0]) and not np.array_equal(style[1], base[1])  # video and audio
    gen.unmerge_lora_weights()
    assert gen.lora.merged is None
    assert all(torch.equal(v, base_weights[k]) for k, v in _weights(gen).items())
    assert _same(_run(gen), base)  # the original video and audio, exactly
    _merge_by_hand(gen.pipeline.dit, loras["style"], 1.0)  # the reference: merged weights by hand
    try:
        assert all(torch.equal(v, style_weights[k]) for k, v in _weights(gen).items())
        assert _same(_run(gen), style)
    finally:
        _restore(gen.pipeline.dit, base_weights)
    gen.merge_lora_weights()
    assert all(torch.equal(v, style_weights[k]) for k, v in _weights(gen).items())
    # switching unmerges "style" first (never stacked); a registered nickname needs no path
    for name, strength in (("other", 1.0), ("style", 0.4)):
        gen.set_lora_adapter(name, str(loras[name]) if name == "other" else None, strength=strength)
        assert gen.lora.merged == name
        merged = _weights(gen)
        _restore(gen.pipeline.dit, base_weights)
        _merge_by_hand(gen.pipeline.dit, loras[name], strength)
        assert all(torch.equal(v, merged[k]) for k, v in _weights(gen).items()), name
        _restore(gen.pipeline.dit, merged)
    gen.unmerge_lora_weights()
    assert all(torch.equal(v, base_weights[k]) for k, v in _weights(gen).items())


def test_request_extensions_lora_must_name_the_merged_adapter(ltx2_generator, loras) -> None:
    with pytest.raises(RequestError) as err:
        _run(ltx2_generator, extensions={"lora": "style"})
    assert err.value.field == "extensions.lora" and "set_lora_adapter" in str(err.value)
    ltx2_generator.set_lora_adapter("style", str(loras["style"]))
    try:
        assert _run(ltx2_generator, extensions={"lora": "style"})[0] is not None
        with pytest.raises(RequestError) as err:
            _run(ltx2_generator, extensions={"lora": "other"})
        assert err.value.field == "extensions.lora" and "'style'" in str(err.value)
    finally:
        ltx2_generator.unmerge_lora_weights()


def test_lora_path_at_load_merges_the_adapter(ltx2_generator, loras) -> None:
    from fastvideo import VideoGenerator

    base_weights = _weights(ltx2_generator)
    _merge_by_hand(ltx2_generator.pipeline.dit, loras["other"], 0.7)
    try:
        want = _run(ltx2_generator)
    finally:
        _restore(ltx2_generator.pipeline.dit, base_weights)
    loaded = VideoGenerator.from_config({
        "model_path": "fastvideo-tiny-ltx2", "engine": {"device": "cpu", "dtype": "fp32"},
        "pipeline": {"components": {"lora_path": str(loras["other"]), "lora_nickname": "other",
                                    "lora_strength": 0.7}}})
    try:
        assert loaded.lora.merged == "other" and loaded.lora.strength == 0.7
        assert _same(_run(loaded), want)
        loaded.unmerge_lora_weights()
        assert all(torch.equal(v, base_weights[k]) for k, v in _weights(loaded).items())
    finally:
        loaded.shutdown()
