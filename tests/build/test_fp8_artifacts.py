"""The manifest records the DiT's FP8 weight quantization; an artifact is refused for an engine quantized otherwise.

A build without FP8 is refused for an FP8 engine, and an FP8 build (its manifest written as a
``--transformer-quant FP8`` build writes it) for an unquantized one, each naming the field, both values and
the ``fastvideo-build`` command with (or without) ``--transformer-quant``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from build_helpers import CliRun, clone_build
from fastvideo.build import manifest as mf
from fastvideo.build.builder import BuildError, BuildRequest, run_build
from fastvideo.build.loading import ArtifactCorruptError, ArtifactMismatchError, load_artifacts
from fastvideo.engine.fp8 import FP8Spec

FP8_ROW = FP8Spec(granularity="row").manifest_value()


def _load(folder: Path, model: Path, **kwargs: Any):
    return load_artifacts(folder, model_folder=model, device="cpu", dtype=torch.float32, check_files=False, **kwargs)


def _quantized(data: dict[str, Any]) -> None:
    data["quantization"] = dict(FP8_ROW)
    data["identity"]["quantization"] = dict(FP8_ROW)
    data["build"]["command"] += " --transformer-quant FP8"


def test_unquantized_manifest_records_none_and_keeps_its_identity(inductor_build: CliRun) -> None:
    manifest = mf.read_manifest(inductor_build.folder)
    assert manifest.quantization is None and "quantization" not in manifest.identity


def test_build_without_fp8_is_refused_for_an_fp8_engine(inductor_build: CliRun, tiny_model_dir: Path) -> None:
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(inductor_build.folder, tiny_model_dir, quantization=FP8_ROW)
    err = excinfo.value
    assert (err.field, err.built, err.current) == ("quantization", None, FP8_ROW)
    assert "transformer_quant is 'FP8'" in str(err)
    assert "--transformer-quant FP8" in err.rebuild_command


def test_fp8_build_is_refused_for_an_unquantized_engine(inductor_build: CliRun, tiny_model_dir: Path,
                                                         tmp_path: Path) -> None:
    folder = clone_build(inductor_build.folder, tmp_path, _quantized)
    assert mf.read_manifest(folder).quantization == FP8_ROW
    assert _load(folder, tiny_model_dir, quantization=FP8_ROW).cases  # the matching engine loads it
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _load(folder, tiny_model_dir)
    err = excinfo.value
    assert (err.field, err.built, err.current) == ("quantization", FP8_ROW, None)
    assert "--transformer-quant" not in err.rebuild_command
    with pytest.raises(ArtifactMismatchError) as excinfo:  # per-tensor scales are another build too
        _load(folder, tiny_model_dir, quantization=FP8Spec(granularity="tensor").manifest_value())
    assert "--transformer-quant FP8_PER_TENSOR" in excinfo.value.rebuild_command


def test_manifest_quantization_edited_by_hand_is_refused(inductor_build: CliRun, tiny_model_dir: Path,
                                                         tmp_path: Path) -> None:
    folder = clone_build(inductor_build.folder, tmp_path)
    manifest = folder / "manifest.json"
    data = json.loads(manifest.read_text())
    data["quantization"] = dict(FP8_ROW)  # the identity (and its hash) still say unquantized
    manifest.write_text(json.dumps(data))
    with pytest.raises(ArtifactCorruptError, match="quantization"):
        _load(folder, tiny_model_dir, quantization=FP8_ROW)


def test_fp8_is_refused_for_tensorrt_and_unknown_schemes(tmp_path: Path) -> None:
    from fastvideo.build.specs import VideoProfile

    profile = [VideoProfile.parse("64x64x5")]
    with pytest.raises(BuildError, match="tensorrt backend"):
        run_build(BuildRequest(backend="tensorrt", profiles=profile, out=tmp_path / "o", device="cpu",
                               transformer_quant="FP8"))
    with pytest.raises(BuildError, match="'int8'"):
        run_build(BuildRequest(backend="inductor", profiles=profile, out=tmp_path / "o", device="cpu",
                               transformer_quant="int8"))
    assert not (tmp_path / "o").exists()
