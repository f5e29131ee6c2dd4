"""The runtime's artifact loader refuses every mismatch and every corrupt folder, clearly.

Mismatches are made the way they happen: another model folder (changed weights / config), another
requested precision or backend, or a folder built elsewhere (its manifest rewritten consistently:
identity, descriptive fields, identity hash and folder name, exactly as a build on that machine
would write them). Each refusal must name the field, what the artifact was built for, what this
run has, and the ``fastvideo-build`` command that rebuilds it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from build_helpers import LATENT, PROFILE, CliRun, clone_build as _clone
from fastvideo.build import manifest as mf
from fastvideo.build.loading import ArtifactCorruptError, ArtifactError, ArtifactMismatchError, load_artifacts

KEY = f"f{LATENT[0]}h{LATENT[1]}w{LATENT[2]}"


def _load(folder: Path, model: Path, **kwargs: Any):
    options = {"device": "cpu", "dtype": torch.float32, "vae_dtype": torch.float32, **kwargs}
    return load_artifacts(folder, model_folder=model, **options)


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data[field] = value
        data["identity"][field] = value
    return edit


def _set_env(**values: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["environment"].update(values)
        data["identity"]["environment"].update(values)
    return edit


def _expect_mismatch(excinfo: pytest.ExceptionInfo[ArtifactMismatchError], field: str, built: Any,
                     current: Any) -> str:
    err = excinfo.value
    message = str(err)
    assert err.field == field
    assert err.built == built and err.current == current
    assert repr(built) in message and repr(current) in message
    assert "Rebuild with: fastvideo-build " in message
    assert err.rebuild_command.startswith("fastvideo-build --model-path ")
    assert f"--profile {PROFILE}" in err.rebuild_command and "--device cpu" in err.rebuild_command
    return message


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    path = tmp_path / "artifacts"
    path.mkdir()
    return path


def test_matching_artifacts_load(aoti_build: CliRun, tiny_model_dir: Path) -> None:
    """The baseline every refusal below departs from: the untouched build loads (also via its parent)."""
    loaded = _load(aoti_build.folder, tiny_model_dir)
    assert sorted(loaded.cases) == [f"dit-{KEY}", f"vae_decoder-{KEY}"]
    assert loaded.backend == "aoti"
    assert _load(aoti_build.out, tiny_model_dir).path == aoti_build.folder
    assert _load(aoti_build.folder, tiny_model_dir, backend="aoti", components=("dit", "vae_decoder")).cases


def test_other_weights_are_refused(aoti_build: CliRun, tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (weights,) = sorted((model / "transformer").glob("*.safetensors"))
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, weights)
    built = mf.read_manifest(aoti_build.folder).model["weights_digest"]
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(aoti_build.folder, model)
    current = mf.compute_weights_digest(model).digest
    message = _expect_mismatch(excinfo, "weights_digest", built, current)
    assert f"(transformer/{weights.name} differ)" in message  # names the file that differs, and only it
    assert f"--model-path {model}" in excinfo.value.rebuild_command


def test_other_model_config_is_refused(aoti_build: CliRun, tiny_model_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = model / "vae" / "config.json"
    config.write_text(config.read_text() + "\n")
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(aoti_build.folder, model)
    assert excinfo.value.field == "config_digest"
    assert "config.json" in str(excinfo.value) and "Rebuild with: fastvideo-build" in str(excinfo.value)


def test_other_precision_is_refused(aoti_build: CliRun, tiny_model_dir: Path) -> None:
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(aoti_build.folder, tiny_model_dir, dtype=torch.bfloat16)
    message = _expect_mismatch(excinfo, "precision", "fp32", "bf16")
    assert "--precision bf16" in excinfo.value.rebuild_command and "compiled for fp32" in message
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(aoti_build.folder, tiny_model_dir, vae_dtype=torch.float16)
    _expect_mismatch(excinfo, "vae_precision", "fp32", "fp16")
    assert "--vae-precision fp16" in excinfo.value.rebuild_command


def test_other_backend_is_refused(aoti_build: CliRun, tiny_model_dir: Path, parent: Path) -> None:
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(aoti_build.folder, tiny_model_dir, backend="inductor")
    _expect_mismatch(excinfo, "backend", "aoti", "inductor")
    assert "--backend inductor" in excinfo.value.rebuild_command
    folder = _clone(aoti_build.folder, parent, _set("backend", "openvino"))
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(folder, tiny_model_dir)
    assert excinfo.value.field == "backend" and "'openvino' is unknown" in str(excinfo.value)


def test_missing_component_is_refused(aoti_build: CliRun, tiny_model_dir: Path, parent: Path) -> None:
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(aoti_build.folder, tiny_model_dir, components=("dit", "vae_encoder"))
    message = _expect_mismatch(excinfo, "component", ["dit", "vae_decoder"], ["dit", "vae_encoder"])
    assert "holds no compiled vae_encoder" in message
    assert "--components dit,vae_encoder,vae_decoder" in excinfo.value.rebuild_command

    def vae_only(data: dict[str, Any]) -> None:  # a build made with --components vae_decoder
        data["components"] = [c for c in data["components"] if c["name"] != "dit"]
        data["identity"]["components"] = ["vae_decoder"]
        data["files"].pop(f"aoti/dit-{KEY}.pt2")

    folder = _clone(aoti_build.folder, parent, vae_only)
    (folder / "aoti" / f"dit-{KEY}.pt2").unlink()
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(folder, tiny_model_dir)
    _expect_mismatch(excinfo, "component", ["vae_decoder"], ["dit"])
    assert "holds no compiled dit" in str(excinfo.value)


def test_unknown_branch_is_refused(aoti_build: CliRun, tiny_model_dir: Path, parent: Path) -> None:
    folder = _clone(aoti_build.folder, parent, _set("branches", ["initial", "sideways"]))
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(folder, tiny_model_dir)
    _expect_mismatch(excinfo, "branch", ["initial", "sideways"], ["initial", "continuation"])
    assert "'sideways' is unknown" in str(excinfo.value)


def test_other_torch_version_is_refused(aoti_build: CliRun, tiny_model_dir: Path, parent: Path) -> None:
    folder = _clone(aoti_build.folder, parent, _set_env(torch="2.12.0+cpu"))
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(folder, tiny_model_dir)
    message = _expect_mismatch(excinfo, "torch", "2.12.0+cpu", torch.__version__)
    assert "torch version differs" in message


def test_other_cpu_isa_is_refused(aoti_build: CliRun, tiny_model_dir: Path, parent: Path) -> None:
    folder = _clone(aoti_build.folder, parent, _set_env(cpu_isa="VecAMX"))
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(folder, tiny_model_dir)
    assert excinfo.value.field == "cpu_isa" and "CPU vector ISA differs" in str(excinfo.value)


@pytest.fixture
def on_a100(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process fingerprint itself as an A100 (sm_80) with triton 3.5.0 and no TensorRT."""
    def environment_info(device: Any, backend: str, *, with_tensorrt: bool | None = None) -> mf.EnvironmentInfo:
        compiled = backend in ("aoti", "inductor")
        return mf.EnvironmentInfo(torch=torch.__version__, device_type="cuda", gpu_arch="sm_80",
                                  gpu_name="NVIDIA A100", triton="3.5.0" if compiled else None, tensorrt=None)

    monkeypatch.setattr(mf, "environment_info", environment_info)


def test_other_gpu_arch_is_refused(aoti_build: CliRun, tiny_model_dir: Path, parent: Path, on_a100: None) -> None:
    folder = _clone(aoti_build.folder, parent,
                    _set_env(device_type="cuda", gpu_arch="sm_90", cpu_isa=None, triton="3.5.0"))
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(folder, tiny_model_dir)
    message = _expect_mismatch(excinfo, "gpu_arch", "sm_90", "sm_80")
    assert "GPU architecture differs" in message


def test_other_triton_version_is_refused(aoti_build: CliRun, tiny_model_dir: Path, parent: Path,
                                         on_a100: None) -> None:
    folder = _clone(aoti_build.folder, parent,
                    _set_env(device_type="cuda", gpu_arch="sm_80", cpu_isa=None, triton="3.4.0"))
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(folder, tiny_model_dir)
    message = _expect_mismatch(excinfo, "triton", "3.4.0", "3.5.0")
    assert "triton version differs" in message


def test_other_tensorrt_version_is_refused(aoti_build: CliRun, tiny_model_dir: Path, parent: Path,
                                          on_a100: None) -> None:
    def trt_build(data: dict[str, Any]) -> None:  # engines built with TensorRT 10.3 on an A100
        _set("backend", "tensorrt")(data)
        _set_env(device_type="cuda", gpu_arch="sm_80", cpu_isa=None, triton=None, tensorrt="10.3.0")(data)

    folder = _clone(aoti_build.folder, parent, trt_build)
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(folder, tiny_model_dir)
    message = _expect_mismatch(excinfo, "tensorrt", "10.3.0", "not installed / not used")
    assert "TensorRT version differs" in message and "--backend tensorrt" in message


def test_onnx_only_stage_is_refused(onnx_build: CliRun, tiny_model_dir: Path) -> None:
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(onnx_build.folder, tiny_model_dir)
    assert excinfo.value.field == "stage"
    assert "holds only the verified ONNX stage" in str(excinfo.value)
    assert "--backend tensorrt" in excinfo.value.rebuild_command


@pytest.mark.parametrize("damage, message", [
    ("flip", "does not match its recorded sha256"),
    ("truncate", "bytes, the manifest recorded"),
    ("delete", "is missing"),
])
def test_corrupt_program_is_refused(damage: str, message: str, aoti_build: CliRun, tiny_model_dir: Path,
                                    parent: Path) -> None:
    folder = _clone(aoti_build.folder, parent)
    target = folder / "aoti" / f"dit-{KEY}.pt2"
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(bytes(data[: len(data) // 3]))
    else:
        target.unlink()
    with pytest.raises(ArtifactCorruptError) as excinfo:
        _load(folder, tiny_model_dir)
    text = str(excinfo.value)
    assert f"aoti/dit-{KEY}.pt2" in text and message in text
    assert "Rebuild with: fastvideo-build" in text and text.endswith("--force")


def test_corrupt_manifest_is_refused(aoti_build: CliRun, tiny_model_dir: Path, parent: Path) -> None:
    folder = _clone(aoti_build.folder, parent)
    (folder / "manifest.json").write_text('{"format": "fastvideo-artifacts", "format_ver')
    with pytest.raises(ArtifactCorruptError, match="cannot be read"):
        _load(folder, tiny_model_dir)


@pytest.mark.parametrize("where", ["description", "identity"])
def test_hand_edited_manifest_is_refused(where: str, aoti_build: CliRun, tiny_model_dir: Path,
                                         parent: Path) -> None:
    """Editing the manifest (not rebuilding) is caught: the identity no longer matches its hash/fields."""
    folder = _clone(aoti_build.folder, parent)
    data = json.loads((folder / "manifest.json").read_text())
    if where == "description":
        data["profiles"] = ["64x64x5", "480x832x81"]  # claim a profile that was never compiled
    else:
        data["identity"]["environment"]["torch"] = "9.9.9"
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactCorruptError, match="was altered"):
        _load(folder, tiny_model_dir)


def test_folder_without_a_finished_build_is_refused(tmp_path: Path, tiny_model_dir: Path,
                                                    aoti_build: CliRun) -> None:
    partial = tmp_path / "artifacts" / f".{aoti_build.folder.name}.x.partial"
    shutil.copytree(aoti_build.folder, partial)  # a leftover of an interrupted build is never used
    with pytest.raises(ArtifactError, match="holds no finished fastvideo-build output"):
        _load(tmp_path / "artifacts", tiny_model_dir)
    with pytest.raises(ArtifactError, match="does not exist"):
        _load(tmp_path / "nowhere", tiny_model_dir)
