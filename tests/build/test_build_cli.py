"""``fastvideo-build`` end to end: aoti and inductor builds, tensorrt without TensorRT, bad input.

Every failing invocation must exit non-zero with one clear line and leave nothing half-written in
``--out`` (no ``*.partial`` folder, no build folder, and no ``--out`` folder it created itself).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from build_helpers import LATENT, PROFILE, CliRun
from fastvideo.build import cli
from fastvideo.build import manifest as mf

KEY = f"f{LATENT[0]}h{LATENT[1]}w{LATENT[2]}"


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def _check_complete(run: CliRun, backend: str, components: list[str], batches: list[int]) -> mf.Manifest:
    folder = run.folder
    assert folder.name.startswith(f"{backend}-fp32-")
    manifest = mf.read_manifest(folder)
    assert manifest.backend == backend and manifest.stage == "complete"
    assert manifest.profiles == [PROFILE] and manifest.branches == ["initial"] and manifest.batches == batches
    assert [c["name"] for c in manifest.components] == components
    assert folder.name.endswith(mf.identity_hash(manifest.identity))  # content-addressed
    assert mf.verify_files(folder, manifest.files) == []
    assert manifest.files and sum(entry["bytes"] for entry in manifest.files.values()) > 0
    assert [p.name for p in run.out.iterdir()] == [folder.name]  # nothing else (no partial folder)
    # The summary names what was built, how long it took and how big it is.
    assert f"built {backend} artifacts in" in run.stdout
    assert str(folder) in run.stdout
    for component in components:
        assert f"{component}-{KEY}" in run.stdout
    assert "size" in run.stdout and " files" in run.stdout and "steps" in run.stdout
    assert f"artifacts_path = {str(folder)!r}" in run.stdout
    return manifest


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    parser = cli.build_parser()
    for action in parser._actions:
        if not action.option_strings:
            continue
        assert action.help and len(action.help) > 10, f"{action.option_strings} has no help"
        assert action.option_strings[-1] in text
    for backend in ("aoti", "inductor", "tensorrt"):
        assert f"{backend}:" in text
    assert "exit status" in text and "--profile 480x832x81" in text


def test_aoti_cli_end_to_end(aoti_build: CliRun) -> None:
    manifest = _check_complete(aoti_build, "aoti", ["dit", "vae_decoder"], [1, 2])
    assert sorted(manifest.files) == [f"aoti/dit-{KEY}.pt2", f"aoti/vae_decoder-{KEY}.pt2"]
    assert all(entry["bytes"] > 100_000 for entry in manifest.files.values())  # real compiled packages
    # The progress display ran on stderr, one label per step.
    for label in ("hash weights", "load models", f"aoti dit-{KEY}", f"verify vae_decoder-{KEY}", "write manifest"):
        assert label in aoti_build.stderr
    dit_case = manifest.case(f"dit-{KEY}")
    assert dit_case is not None and sorted(dit_case["max_abs_diff"]) == ["1", "2"]
    assert all(v < 1e-3 for v in dit_case["max_abs_diff"].values())
    assert manifest.build["command"].startswith("fastvideo-build --backend aoti --profile 64x64x5")
    assert manifest.environment["device_type"] == "cpu" and manifest.environment["gpu_arch"] == "cpu"


def test_second_identical_build_is_up_to_date(aoti_build: CliRun, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p: p.stat().st_mtime_ns for p in aoti_build.folder.rglob("*")}
    code = cli.main(["--backend", "aoti", "--profile", PROFILE, "--precision", "fp32", "--quiet",
                     "--out", str(aoti_build.out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "already up to date" in captured.out
    assert {p: p.stat().st_mtime_ns for p in aoti_build.folder.rglob("*")} == before


def test_inductor_cli_end_to_end(inductor_build: CliRun) -> None:
    manifest = _check_complete(inductor_build, "inductor", ["dit"], [1])
    assert all(name.startswith("inductor_cache/") for name in manifest.files)
    assert len(manifest.files) > 1
    assert f"compile dit-{KEY} batch 1" in inductor_build.stderr


def test_tensorrt_without_tensorrt_says_so_and_keeps_only_a_complete_onnx_stage(onnx_build: CliRun) -> None:
    run = onnx_build
    assert run.returncode == 3, run.stderr  # non-zero: no engines were built
    assert "TensorRT cannot be imported" in run.stderr or "CUDA" in run.stderr
    assert "pip install tensorrt" in run.stderr and "Traceback" not in run.stderr
    assert "built the ONNX stage of tensorrt artifacts" in run.stdout
    folder = run.folder
    manifest = mf.read_manifest(folder)
    assert manifest.stage == "onnx"
    assert sorted(n for n in manifest.files if n.endswith(".onnx")) == [f"onnx/dit-{KEY}.onnx",
                                                                         f"onnx/vae_decoder-{KEY}.onnx"]
    assert not any(n.endswith(".engine") for n in manifest.files)
    assert mf.verify_files(folder, manifest.files) == []
    assert [p.name for p in run.out.iterdir()] == [folder.name]
    for component in manifest.components:
        for case in component["cases"]:
            assert case["onnx_check"]["kind"] == "onnxruntime"
            assert all(v < 1e-3 for v in case["onnx_check"]["max_abs_diff"].values())


@pytest.mark.parametrize("args, message", [
    (["--backend", "aoti", "--profile", "64x64"], "must look like 480x832x81"),
    (["--backend", "aoti", "--profile", "sixtyfour"], "must look like 480x832x81"),
    (["--backend", "openvino", "--profile", PROFILE], "invalid choice: 'openvino'"),
    (["--backend", "aoti", "--profile", "72x64x5"], "height 72 is not a positive multiple of 16"),
    (["--backend", "inductor", "--profile", "64x100x5"],
     "width 100 is not a positive multiple of 16 (the VAE's 8x downsampling times the DiT's 2x2 patches); "
     "use 96 or 112"),
    (["--backend", "aoti", "--profile", PROFILE, "--branch", "sideways"], "branch 'sideways' is unknown"),
    (["--backend", "aoti", "--profile", PROFILE, "--components", "dit,unet"], "component 'unet' is unknown"),
    (["--backend", "aoti", "--profile", PROFILE, "--precision", "fp8"], "invalid choice: 'fp8'"),
    (["--backend", "aoti", "--profile", PROFILE, "--device", "cuda:0"], "CUDA is not available"),
    (["--backend", "aoti", "--profile", PROFILE, "--model-path", "/nonexistent/model"], "cannot use the model"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(args: list[str], message: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if "cuda:0" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "artifacts"
    precision = [] if "--precision" in args else ["--precision", "fp32"]
    code = cli.main([*args, *precision, "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not out.exists()


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "artifacts"
    out.write_text("not a folder")
    assert cli.main(["--backend", "aoti", "--profile", PROFILE, "--precision", "fp32", "--out", str(out)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("failure, code, message", [
    (RuntimeError("C++ compiler exploded"), 1, "building aoti artifacts failed: RuntimeError: C++ compiler exploded"),
    (KeyboardInterrupt(), 130, "interrupted; nothing was written"),
])
def test_failure_during_a_build_leaves_nothing(failure: BaseException, code: int, message: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A compile step that dies after writing part of its output: the partial folder is removed."""
    import fastvideo.build.aoti as aoti

    def half_written(module, case, inputs, out_dir):  # noqa: ANN001 - signature of build_aoti_case
        target = Path(out_dir) / "aoti" / f"{case.key}.pt2"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"half a package")
        raise failure

    monkeypatch.setattr(aoti, "build_aoti_case", half_written)
    out = tmp_path / "artifacts"
    result = cli.main(["--backend", "aoti", "--profile", PROFILE, "--precision", "fp32", "--quiet",
                       "--out", str(out)])
    assert result == code
    assert message in capsys.readouterr().err
    assert not out.exists(), _leftovers(out)

    # An --out folder that already existed is kept, with only what was there before.
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli.main(["--backend", "aoti", "--profile", PROFILE, "--precision", "fp32", "--quiet",
                     "--out", str(out)]) == code
    assert _leftovers(out) == ["keep.txt"]


def test_manifest_records_every_identity_field(aoti_build: CliRun) -> None:
    data = json.loads((aoti_build.folder / "manifest.json").read_text())
    identity = data["identity"]
    for name in ("weights_digest", "config_digest", "backend", "stage", "precision", "vae_precision", "profiles",
                 "branches", "batches", "components", "environment"):
        assert name in identity, name
    for name in ("torch", "device_type", "gpu_arch", "cpu_isa", "triton", "tensorrt"):
        assert name in identity["environment"], name
    assert len(identity["weights_digest"]) == 64


def test_every_registered_backend_has_a_build_side() -> None:
    """fastvideo-build dispatches on a table keyed like the artifact backend registry: a backend registered for
    loading but unknown to the builder (or the reverse) would be a KeyError at build time."""
    from fastvideo.build import builder
    from fastvideo.build.backends import artifact_backend_names

    assert set(builder._BUILD_SIDES) == set(artifact_backend_names()) == set(builder.BACKENDS)
