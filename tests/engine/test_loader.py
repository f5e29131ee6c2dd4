"""Model folder checks, sharded/corrupt safetensors, the built-in model's determinism, bf16 sanity."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fastvideo.api import ModelLoadError
from fastvideo.engine.builtin_model import write_builtin_model
from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel
from fastvideo.engine.loader import inspect_model_folder, load_module_weights


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_and_incomplete_folders(tiny_model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        inspect_model_folder(tmp_path / "nope")
    broken = copy_model(tiny_model_dir, tmp_path / "m")
    shutil.rmtree(broken / "vae")
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as err:
        inspect_model_folder(broken)
    msg = str(err.value)
    assert "vae/ is missing" in msg and "transformer/ has no *.safetensors" in msg


def test_corrupt_safetensors_named(tiny_model_dir, tmp_path):
    from fastvideo import VideoGenerator

    model = copy_model(tiny_model_dir, tmp_path / "m")
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="diffusion_pytorch_model.safetensors.*corrupt"):
        VideoGenerator.from_pretrained(str(model), device="cpu")


def test_sharded_weights_load_identically(tiny_model_dir, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    folder = model / "transformer"
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    keys = sorted(state)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    weight_map = {}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = WanDiTConfig.from_dict(json.loads((folder / "config.json").read_text()))
    with torch.device("meta"):
        sharded = WanTransformer3DModel(config)
    load_module_weights(sharded, folder, dtype=torch.float32, device=torch.device("cpu"))
    for key, value in sharded.state_dict().items():
        assert torch.equal(value, state[key]), key
    # a shard listed in the index but missing is reported by the folder check
    (folder / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="listed in the shard index but missing"):
        inspect_model_folder(model)


def test_mismatched_weights_rejected(tiny_model_dir, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    cfg_path = model / "transformer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["num_layers"] = 3
    config = WanDiTConfig.from_dict(cfg)
    with torch.device("meta"):
        bigger = WanTransformer3DModel(config)
    with pytest.raises(ModelLoadError, match="missing"):
        load_module_weights(bigger, model / "transformer", dtype=torch.float32, device=torch.device("cpu"))


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_builtin_model_is_deterministic(tiny_model_dir, tmp_path):
    again = write_builtin_model(tmp_path / "again")
    assert _digest(again) == _digest(tiny_model_dir)


def test_bf16_pipeline_is_finite(tiny_model_dir):
    """bf16 DiT and VAE on the CPU, through the engine core's denoising loop: finite, non-constant output."""
    from core_testing import core_latents
    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained({"model_path": str(tiny_model_dir),
                                                "engine": {"device": "cpu", "dtype": "bf16"},
                                                "pipeline": {"experimental": {"vae_dtype": "bf16"}}})
    try:
        pipe = generator.pipeline
        assert pipe.encode_prompts("x", "", True).dtype == torch.bfloat16
        latents, _ = core_latents(generator, {"prompt": "x", "sampling": {"width": 32, "height": 32, "num_frames": 5,
                                                                          "num_inference_steps": 2, "seed": 0}})
        with torch.no_grad():
            video = pipe.vae.decode(pipe.vae.denormalize_latents(latents.to(torch.bfloat16)))
        assert torch.isfinite(latents).all() and torch.isfinite(video.float()).all()
        assert latents.float().std() > 0
    finally:
        generator.shutdown()
