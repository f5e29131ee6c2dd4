"""``fastvideo-build`` on LTX-2: the audio+video DiT exported per branch, with the manifest checks Wan's builds get.

The built-in tiny LTX-2 (``fastvideo-tiny-ltx2``: 32-multiples, k*2+1 frames) at one profile, 32x32x5 (token grid
3x16x16, 5 audio latent frames at the preset's 24 fps), fp32 on the CPU (the session's ``ltx2_aoti_build``: aoti
through the real CLI, exit 0, both branches, CFG both):

- the manifest lists one DiT program per branch with its inputs (initial: a timestep per sample; continuation:
  per-token video timesteps, audio timestep, sigma and the video coordinates), the ``ltx2`` runtime and the eagerly
  served modality-isolation pass; every program was verified against eager (<= 1e-3 relative);
- a second build is "up-to-date"; a tampered program file is an ArtifactCorruptError, other transformer weights an
  ArtifactMismatchError on weights_digest;
- tensorrt on the CPU (``--cfg on``, initial branch): the ONNX stage is exported and checked with onnxruntime (exit
  3, ``stage=onnx``), and loading it is refused on ``stage``;
- bad profiles (frames not k*2+1, a side not a multiple of 32) and ``--components vae_decoder`` exit 2 naming the
  flag, with nothing on disk;
- ``--lora`` (aoti, initial branch, ``--cfg on``: one program): the manifest records the fused adapter (sha256,
  strength) in its identity, a generator with the same ``lora_path`` and strength loads the build and its generation
  equals the eager generator with that LoRA (frames within 1 level, waveform 1e-4) and differs from the one without;
  a generator without the LoRA or at another strength is refused on ``lora``.

Serving these builds through VideoGenerator: test_ltx2_artifact_serving.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from build_helpers import LTX2_PROFILE as PROFILE
from build_helpers import CliRun, run_cli


def test_the_manifest_lists_one_program_per_branch(ltx2_aoti_build: CliRun) -> None:
    manifest = json.loads((ltx2_aoti_build.folder / "manifest.json").read_text())
    assert manifest["model"]["runtime"] == "ltx2" and manifest["identity"]["runtime"] == "ltx2"
    assert manifest["model"]["eager_passes"] == ["modality_isolation"]
    assert manifest["branches"] == ["initial", "continuation"] and manifest["batches"] == [1, 2]
    [dit] = manifest["components"]
    assert dit["name"] == "dit"
    cases = {case["variant"]: case for case in dit["cases"]}
    assert sorted(cases) == ["a5-continuation", "a5-initial"]
    for branch, case in ((b, cases[f"a5-{b}"]) for b in ("initial", "continuation")):
        assert case["latent"] == [3, 16, 16] and case["params"]["audio_frames"] == 5 and case["params"]["fps"] == 24
        assert case["covers"] == [{"profile": PROFILE, "branch": branch}]
        assert case["file"] in manifest["files"] and case["file"].endswith(f"{case['key']}.pt2")
        assert max(case["max_abs_diff"].values()) < 1e-3
        inputs = {t["name"]: t for t in case["inputs"]}
        assert inputs["hidden_states"]["opt"] == [2, 768, 4] and inputs["audio_hidden_states"]["opt"] == [2, 5, 4]
        assert inputs["encoder_attention_mask"]["dtype"] == "int64"
        assert case["outputs"][0]["opt"] == [2, 768 * 4 + 5 * 4]
    assert cases["a5-initial"]["inputs"][5]["opt"] == [2]  # timestep: one per sample
    assert [t["name"] for t in cases["a5-continuation"]["inputs"]][5:] == ["timestep", "audio_timestep", "sigma",
                                                                           "video_coords"]
    assert cases["a5-continuation"]["inputs"][5]["opt"] == [2, 768]  # per-token video timesteps
    assert "fastvideo-build: built aoti artifacts" in ltx2_aoti_build.stdout


def test_a_second_build_is_up_to_date(ltx2_aoti_build: CliRun, ltx2_dir: Path) -> None:
    from fastvideo.build.builder import BuildRequest, run_build
    from fastvideo.build.specs import VideoProfile

    result = run_build(BuildRequest(backend="aoti", profiles=[VideoProfile.parse(PROFILE)], out=ltx2_aoti_build.out,
                                    model_path=ltx2_dir, branches=("initial", "continuation"), precision="fp32"))
    assert result.status == "up-to-date" and result.path == ltx2_aoti_build.folder


def test_a_tampered_program_is_refused(ltx2_aoti_build: CliRun, ltx2_dir: Path, tmp_path: Path) -> None:
    import torch

    from fastvideo.build.loading import ArtifactCorruptError, load_artifacts

    copy = tmp_path / ltx2_aoti_build.folder.name
    shutil.copytree(ltx2_aoti_build.folder, copy)
    program = next((copy / "aoti").glob("*initial.pt2"))
    data = bytearray(program.read_bytes())
    data[len(data) // 2] ^= 0xFF
    program.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorruptError, match=program.name):
        load_artifacts(copy, model_folder=ltx2_dir, device="cpu", dtype=torch.float32)


def test_other_weights_are_refused(ltx2_aoti_build: CliRun, ltx2_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from fastvideo.build.loading import ArtifactMismatchError, load_artifacts

    model = tmp_path / "ltx2"
    shutil.copytree(ltx2_dir, model)
    weights = next((model / "transformer").glob("*.safetensors"))
    state = load_file(str(weights))
    name = sorted(state)[0]
    state[name] = state[name] + 1e-3
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(ArtifactMismatchError) as info:
        load_artifacts(ltx2_aoti_build.folder, model_folder=model, device="cpu", dtype=torch.float32)
    assert info.value.field == "weights_digest" and "transformer/" in str(info.value)


def test_tensorrt_keeps_the_verified_onnx_stage_without_tensorrt(ltx2_dir: Path, fastvideo_cache: Path,
                                                                 tmp_path: Path) -> None:
    import torch

    from fastvideo.build.loading import ArtifactMismatchError, load_artifacts

    run = run_cli(["--model-path", str(ltx2_dir), "--backend", "tensorrt", "--device", "cpu", "--profile", PROFILE,
                   "--cfg", "on", "--precision", "fp32", "--quiet"], tmp_path / "artifacts", fastvideo_cache)
    assert run.returncode == 3, f"{run.returncode}:\n{run.stdout}\n{run.stderr}"
    manifest = json.loads((run.folder / "manifest.json").read_text())
    [case] = manifest["components"][0]["cases"]
    assert manifest["stage"] == "onnx" and case["variant"] == "a5-initial" and case["onnx"] in manifest["files"]
    assert case["onnx_check"]["kind"] == "onnxruntime" and case["onnx_check"]["max_abs_diff"]["2"] < 1e-3
    with pytest.raises(ArtifactMismatchError) as info:
        load_artifacts(run.folder, model_folder=ltx2_dir, device="cpu", dtype=torch.float32)
    assert info.value.field == "stage"


@pytest.mark.parametrize(("args", "flag", "words"), [
    (["--profile", "32x32x4"], "--profile", "k*2+1 frames"),
    (["--profile", "32x48x5"], "--profile", "width 48 is not a multiple of 32"),
    (["--profile", PROFILE, "--components", "dit,vae_decoder"], "--components", "DiT only"),
])
def test_what_ltx2_cannot_build_exits_2_naming_the_flag(ltx2_dir: Path, tmp_path: Path, capsys, args: list[str],
                                                        flag: str, words: str) -> None:
    from fastvideo.build.cli import main

    out = tmp_path / "artifacts"
    assert main(["--model-path", str(ltx2_dir), "--backend", "aoti", *args, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert flag in err and words in err, err
    assert not out.exists()


def _ltx2_lora(model: Path, path: Path) -> Path:
    """A random diffusers-layout LoRA (rank 2) over every attention projection of the DiT's first block."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(3)
    tensors = {}
    for weights in sorted((model / "transformer").glob("*.safetensors")):
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():
                if key.startswith("transformer_blocks.0.attn1.to_") and key.endswith(".weight") and \
                        len(shape := handle.get_slice(key).get_shape()) == 2:
                    module = f"transformer.{key.removesuffix('.weight')}"
                    tensors[f"{module}.lora_A.weight"] = 0.5 * torch.randn(2, shape[1], generator=g)
                    tensors[f"{module}.lora_B.weight"] = 0.5 * torch.randn(shape[0], 2, generator=g)
    assert tensors
    save_file(tensors, str(path))
    return path


def test_a_lora_build_records_the_adapter_and_serves_a_generator_with_it(ltx2_dir: Path, fastvideo_cache: Path,
                                                                         tmp_path: Path, ltx2_generator) -> None:
    import numpy as np

    from fastvideo import VideoGenerator
    from fastvideo.build.loading import ArtifactMismatchError
    from fastvideo.build.ltx2_export import ArtifactLTX2DiT
    from fastvideo.engine.lora import lora_manifest_value

    lora = _ltx2_lora(ltx2_dir, tmp_path / "style.safetensors")
    run = run_cli(["--model-path", str(ltx2_dir), "--backend", "aoti", "--profile", PROFILE, "--branch", "initial",
                   "--cfg", "on", "--precision", "fp32", "--lora", str(lora), "--lora-strength", "0.5", "--quiet"],
                  tmp_path / "artifacts", fastvideo_cache)
    assert run.returncode == 0, f"{run.returncode}:\n{run.stdout}\n{run.stderr}"
    manifest = json.loads((run.folder / "manifest.json").read_text())
    value = lora_manifest_value(lora, 0.5)
    assert manifest["lora"] == value and manifest["identity"]["lora"]["sha256"] == value["sha256"]
    assert f"--lora {value['path']}" in manifest["build"]["command"]

    def config(**components: object) -> dict:
        return {"model_path": str(ltx2_dir), "engine": {"device": "cpu", "dtype": "fp32"},
                "pipeline": {"components": components}}

    request = {"prompt": "a fox runs through snow", "sampling": {"seed": 5, "num_inference_steps": 2, "width": 32,
                                                                 "height": 32, "num_frames": 5},
               "output": {"save_video": False, "return_frames": True}}
    with_lora = config(lora_path=str(lora), lora_strength=0.5)
    served = VideoGenerator.from_config({**with_lora, "engine": {**with_lora["engine"],
                                                                 "artifacts_path": str(run.folder)}})
    try:
        dit = served.pipeline.components.transformer
        assert isinstance(dit, ArtifactLTX2DiT) and served.lora.merged is not None
        result = served.generate(request)
        assert dit.compiled_calls > 0 and dit.misses == 0
    finally:
        served.shutdown()
    eager = VideoGenerator.from_config(with_lora)
    try:
        reference = eager.generate(request)
    finally:
        eager.shutdown()
    assert np.abs(result.frames.astype(np.int16) - reference.frames.astype(np.int16)).max() <= 1
    np.testing.assert_allclose(result.audio, reference.audio, atol=1e-4, rtol=0)
    plain = ltx2_generator.generate(request)  # the adapter is not a no-op: without it the video differs
    assert np.abs(result.frames.astype(np.int16) - plain.frames.astype(np.int16)).max() > 1
    for other in (config(), config(lora_path=str(lora), lora_strength=0.7)):
        with pytest.raises(ArtifactMismatchError) as info:
            VideoGenerator.from_config({**other, "engine": {**other["engine"], "artifacts_path": str(run.folder)}})
        assert info.value.field == "lora"
