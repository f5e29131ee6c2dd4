"""The manifest records the LoRA fused into the DiT (``fastvideo-build --lora``); an artifact is refused for an engine
that fuses another adapter, another strength, or none (and a LoRA-less build for an engine with one), each naming the
``lora`` field and giving the ``fastvideo-build`` command with (or without) ``--lora``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from build_helpers import CliRun, clone_build
from fastvideo.build import manifest as mf
from fastvideo.build.builder import BuildError, BuildRequest, run_build
from fastvideo.build.loading import ArtifactCorruptError, ArtifactMismatchError, load_artifacts
from fastvideo.engine.lora import lora_manifest_value


def _load(folder: Path, model: Path, **kwargs: Any):
    return load_artifacts(folder, model_folder=model, device="cpu", dtype=torch.float32, check_files=False, **kwargs)


@pytest.fixture
def lora_file(tmp_path: Path) -> Path:
    path = tmp_path / "style.safetensors"
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.ones(2, 8),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.ones(8, 2)}, str(path))
    return path


def _fused(value: dict[str, Any]):
    def edit(data: dict[str, Any]) -> None:
        data["lora"] = dict(value)
        data["identity"]["lora"] = mf.lora_identity(value)
        data["build"]["command"] += f" --lora {value['path']}"
    return edit


def test_build_without_lora_records_none_and_keeps_its_identity(inductor_build: CliRun) -> None:
    manifest = mf.read_manifest(inductor_build.folder)
    assert manifest.lora is None and "lora" not in manifest.identity


def test_build_without_lora_is_refused_for_an_engine_with_one(inductor_build: CliRun, tiny_model_dir: Path,
                                                              lora_file: Path) -> None:
    value = lora_manifest_value(lora_file, 0.5)
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(inductor_build.folder, tiny_model_dir, lora=value)
    err = excinfo.value
    assert err.field == "lora" and err.built is None and err.current == mf.lora_identity(value)
    assert f"--lora {value['path']} --lora-strength 0.5" in err.rebuild_command


def test_lora_build_is_refused_for_another_adapter_strength_or_none(inductor_build: CliRun, tiny_model_dir: Path,
                                                                    lora_file: Path, tmp_path: Path) -> None:
    value = lora_manifest_value(lora_file, 1.0)
    folder = clone_build(inductor_build.folder, tmp_path, _fused(value))
    assert mf.read_manifest(folder).lora == value
    assert _load(folder, tiny_model_dir, lora=value).cases  # the same file at the same strength loads
    moved = dict(value, path="/elsewhere/style.safetensors")  # where the file lies does not matter
    assert _load(folder, tiny_model_dir, lora=moved).cases
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(folder, tiny_model_dir)
    assert (excinfo.value.field, excinfo.value.current) == ("lora", None)
    assert "--lora" not in excinfo.value.rebuild_command and "no LoRA" in str(excinfo.value)
    with pytest.raises(ArtifactMismatchError, match="strength 0.7"):
        _load(folder, tiny_model_dir, lora=dict(value, strength=0.7))
    other = tmp_path / "other.safetensors"
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 8),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.ones(8, 2)}, str(other))
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(folder, tiny_model_dir, lora=lora_manifest_value(other, 1.0))
    assert f"--lora {other.resolve()}" in excinfo.value.rebuild_command


def test_manifest_lora_edited_by_hand_is_refused(inductor_build: CliRun, tiny_model_dir: Path, lora_file: Path,
                                                 tmp_path: Path) -> None:
    folder = clone_build(inductor_build.folder, tmp_path)
    manifest = folder / "manifest.json"
    data = json.loads(manifest.read_text())
    value = lora_manifest_value(lora_file, 1.0)
    data["lora"] = value  # the identity (and its hash) still say no LoRA
    manifest.write_text(json.dumps(data))
    with pytest.raises(ArtifactCorruptError, match="lora"):
        _load(folder, tiny_model_dir, lora=value)


def test_builder_refuses_a_missing_lora_and_lora_with_fp8(tmp_path: Path, lora_file: Path) -> None:
    from fastvideo.build.specs import VideoProfile

    profile = [VideoProfile.parse("64x64x5")]
    with pytest.raises(BuildError, match="does not exist"):
        run_build(BuildRequest(backend="inductor", profiles=profile, out=tmp_path / "a", device="cpu",
                               lora_path=str(tmp_path / "missing.safetensors")))
    with pytest.raises(BuildError, match="FP8"):
        run_build(BuildRequest(backend="inductor", profiles=profile, out=tmp_path / "b", device="cpu",
                               lora_path=str(lora_file), transformer_quant="FP8"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_builder_fuses_the_lora_before_compiling_and_records_it(tmp_path: Path, tiny_model_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiling step (stubbed: what it would export) sees the DiT with the LoRA merged; the manifest says so."""
    from dataclasses import replace

    from fastvideo.build import builder
    from fastvideo.build.exportable import load_build_models
    from fastvideo.build.specs import VideoProfile
    from fastvideo.engine.loader import inspect_model_folder
    from fastvideo.engine.lora import load_lora, merge_lora

    seen: dict[str, torch.Tensor] = {}

    def fake_build(plan: Any, models: Any, tmp: Path, step: Any) -> dict[str, Any]:
        seen.update({k: v.detach().clone() for k, v in models.dit.state_dict().items()})
        return {}

    monkeypatch.setitem(builder._BUILD_SIDES, "inductor", replace(builder._BUILD_SIDES["inductor"], build=fake_build))
    eager = load_build_models(inspect_model_folder(tiny_model_dir), device=torch.device("cpu"), dtype=torch.float32,
                              vae_dtype=torch.float32).dit
    dims = {k: tuple(v.shape) for k, v in eager.named_parameters()}
    path = tmp_path / "tiny_lora.safetensors"
    gen = torch.Generator().manual_seed(0)
    out_dim, in_dim = dims["blocks.0.attn1.to_q.weight"]
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.randn(2, in_dim, generator=gen),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.randn(out_dim, 2, generator=gen)}, str(path))
    result = run_build(BuildRequest(backend="inductor", profiles=[VideoProfile.parse("32x64x5")], out=tmp_path / "o",
                                    model_path=tiny_model_dir, device="cpu", precision="fp32", cfg="off",
                                    components=("dit",), lora_path=str(path), lora_strength=0.5))
    value = lora_manifest_value(path, 0.5)
    assert result.manifest.lora == value and result.manifest.identity["lora"] == mf.lora_identity(value)
    assert f"--lora {value['path']} --lora-strength 0.5" in result.manifest.build["command"]
    merge_lora(eager, load_lora(path, eager), 0.5)
    assert seen and all(torch.equal(v, seen[k]) for k, v in eager.state_dict().items())
    assert not torch.equal(seen["blocks.0.attn1.to_q.weight"],
                           load_build_models(inspect_model_folder(tiny_model_dir), device=torch.device("cpu"),
                                             dtype=torch.float32, vae_dtype=torch.float32)
                           .dit.blocks[0].attn1.to_q.weight)


def test_generator_checks_its_lora_against_the_artifacts(inductor_build: CliRun, tiny_model_dir: Path,
                                                         tmp_path: Path) -> None:
    from fastvideo import VideoGenerator
    from fastvideo.api import ConfigError

    dit = VideoGenerator.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")
    try:
        out_dim, in_dim = dit.pipeline.dit.blocks[0].attn1.to_q.weight.shape
    finally:
        dit.shutdown()
    path = tmp_path / "tiny_lora.safetensors"
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.ones(2, in_dim),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.ones(out_dim, 2)}, str(path))
    kwargs = dict(device="cpu", dtype="fp32", lora_path=str(path), lora_nickname="style")
    with pytest.raises(ArtifactMismatchError) as excinfo:  # built without it
        VideoGenerator.from_pretrained(str(tiny_model_dir), artifacts_path=str(inductor_build.folder), **kwargs)
    assert excinfo.value.field == "lora"
    folder = clone_build(inductor_build.folder, tmp_path, _fused(lora_manifest_value(path, 1.0)))
    with VideoGenerator.from_pretrained(str(tiny_model_dir), artifacts_path=str(folder), **kwargs) as gen:
        assert gen.lora.merged == "style"
        with pytest.raises(ConfigError, match="artifacts_path"):  # the compiled programs hold the weights
            gen.set_lora_adapter("other", str(path))
    with pytest.raises(ArtifactMismatchError) as excinfo:  # built with it, engine without
        VideoGenerator.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32", artifacts_path=str(folder))
    assert excinfo.value.field == "lora"
