"""VideoGenerator's LoRA methods (FastVideo's names) on the tiny built-in model, CPU fp32.

The adapters are random LoRAs written by hand in the diffusers/PEFT layout (``transformer.<module>.lora_A.weight``
/ ``lora_B.weight``) for the tiny DiT. The engine-level parity with diffusers' fuse_lora is
tests/engine/test_lora.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fastvideo.api import ConfigError, RequestError

SMALL = {"width": 64, "height": 32, "num_frames": 5, "num_inference_steps": 2, "seed": 7}
MODULES = ("attn1.to_q", "attn1.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")


def write_lora(path: Path, dit: torch.nn.Module, seed: int, scale: float = 0.5) -> Path:
    params = dict(dit.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for block in range(len(dit.blocks)):
        for module in MODULES:
            out_dim, in_dim = params[f"blocks.{block}.{module}.weight"].shape
            key = f"transformer.blocks.{block}.{module}"
            tensors[f"{key}.lora_A.weight"] = scale * torch.randn(4, in_dim, generator=gen)
            tensors[f"{key}.lora_B.weight"] = scale * torch.randn(out_dim, 4, generator=gen)
    save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def generator(tiny_model_dir: Path):
    from fastvideo import VideoGenerator

    gen = VideoGenerator.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")
    yield gen
    gen.shutdown()


@pytest.fixture(scope="module")
def loras(generator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loras")
    return {name: write_lora(folder / f"{name}.safetensors", generator.pipeline.dit, seed)
            for name, seed in (("style", 1), ("other", 2))}


def _frames(generator, **extra) -> np.ndarray:
    return generator.generate({"prompt": "a red fox", "sampling": SMALL, **extra}).frames


def _weights(generator) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in generator.pipeline.dit.state_dict().items()}


def test_set_merge_unmerge_switch(generator, loras) -> None:
    base_weights = _weights(generator)
    base = _frames(generator)
    generator.set_lora_adapter("style", str(loras["style"]))
    assert generator.lora.merged == "style"
    style = _frames(generator)
    assert not np.array_equal(style, base)
    generator.unmerge_lora_weights()
    assert generator.lora.merged is None
    assert np.array_equal(_frames(generator), base)  # the original video, exactly
    assert all(torch.equal(v, base_weights[k]) for k, v in _weights(generator).items())
    generator.merge_lora_weights()
    assert np.array_equal(_frames(generator), style)
    generator.set_lora_adapter("other", str(loras["other"]))  # switching unmerges "style" first
    other = _frames(generator)
    assert not np.array_equal(other, style) and not np.array_equal(other, base)
    generator.set_lora_adapter("style")  # registered: no path needed
    assert np.array_equal(_frames(generator), style)
    generator.set_lora_adapter("style", strength=0.3)
    weak = _frames(generator)
    assert not np.array_equal(weak, style) and not np.array_equal(weak, base)
    generator.unmerge_lora_weights()
    assert all(torch.equal(v, base_weights[k]) for k, v in _weights(generator).items())
    assert np.array_equal(_frames(generator), base)


def test_request_extensions_lora_must_name_the_merged_adapter(generator, loras) -> None:
    with pytest.raises(RequestError) as err:
        _frames(generator, extensions={"lora": "style"})
    assert err.value.field == "extensions.lora" and "set_lora_adapter" in str(err.value)
    generator.set_lora_adapter("style", str(loras["style"]))
    try:
        assert _frames(generator, extensions={"lora": "style"}) is not None
        with pytest.raises(RequestError) as err:
            _frames(generator, extensions={"lora": "other"})
        assert err.value.field == "extensions.lora" and "'style'" in str(err.value)
        with pytest.raises(RequestError) as err:  # other extension keys stay refused
            _frames(generator, extensions={"lora": "style", "mystery": 1})
        assert err.value.field == "extensions.mystery"
    finally:
        generator.unmerge_lora_weights()


def test_adapter_change_waits_for_the_running_request(generator, loras) -> None:
    base = _frames(generator)
    entered, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def on_step(step: int, total: int) -> None:
        entered.set()
        release.wait(10)

    def run() -> None:
        results["frames"] = generator.generate({"prompt": "a red fox", "sampling": SMALL}, on_step=on_step).frames

    worker = threading.Thread(target=run)
    worker.start()
    assert entered.wait(10)
    setter = threading.Thread(target=lambda: generator.set_lora_adapter("style", str(loras["style"])))
    setter.start()
    setter.join(0.5)
    assert setter.is_alive()  # waits for the running request to finish
    assert generator.lora.merged is None
    release.set()
    worker.join(30)
    setter.join(30)
    assert not setter.is_alive() and generator.lora.merged == "style"
    assert np.array_equal(results["frames"], base)  # the running request finished on the original weights
    generator.unmerge_lora_weights()


def test_errors_leave_the_weights_alone(generator, loras, tmp_path: Path) -> None:
    before = _weights(generator)
    with pytest.raises(ConfigError) as err:
        generator.set_lora_adapter("nobody")
    assert err.value.path == "lora_nickname" and "pass lora_path" in str(err.value)
    with pytest.raises(ConfigError) as err:
        generator.set_lora_adapter("style", str(loras["style"]), accumulate=True)
    assert err.value.path == "accumulate"
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(ConfigError) as err:
        generator.set_lora_adapter("junk", str(junk))
    assert err.value.path == "lora_path" and "safetensors" in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in _weights(generator).items())
    assert generator.lora.merged is None


def test_from_pretrained_lora_kwargs(generator, loras, tiny_model_dir: Path) -> None:
    from fastvideo import VideoGenerator

    generator.set_lora_adapter("style", str(loras["style"]), strength=0.7)
    want = _frames(generator)
    generator.unmerge_lora_weights()
    with VideoGenerator.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32", lora_path=str(loras["style"]),
                                        lora_nickname="mine", lora_strength=0.7) as loaded:
        assert loaded.lora.merged == "mine" and loaded.config.pipeline.components.lora_path == str(loras["style"])
        assert np.array_equal(_frames(loaded, extensions={"lora": "mine"}), want)
    with pytest.raises(ConfigError) as err:
        VideoGenerator.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32",
                                       lora_path=str(tiny_model_dir / "missing.safetensors"))
    assert err.value.path == "pipeline.components.lora_path"


def test_generate_async_runs_on_the_merged_adapter(generator, loras) -> None:
    import asyncio

    from fastvideo.api import VideoFinalEvent

    async def final(extensions: dict) -> VideoFinalEvent:
        events = [e async for e in generator.generate_async({"prompt": "a red fox", "sampling": SMALL,
                                                             "output": {"return_frames": True},
                                                             "extensions": extensions})]
        assert isinstance(events[-1], VideoFinalEvent)
        return events[-1]

    generator.set_lora_adapter("style", str(loras["style"]))
    try:
        style = _frames(generator)
        got = asyncio.run(final({"lora": "style"}))
        assert np.array_equal(got.result.frames, style)
        with pytest.raises(RequestError, match="extensions.lora"):
            asyncio.run(final({"lora": "other"}))
    finally:
        generator.unmerge_lora_weights()
