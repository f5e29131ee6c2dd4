"""Build fixtures: each artifact the build tests need is built ONCE per session by the real CLI.

``fastvideo-build`` runs as a subprocess (``python -m fastvideo.build.cli``, the console script's
entry point) on the built-in tiny model at the smallest profile, 64x64x5 (latent 2x8x8), fp32:

- ``aoti_build``: ``--backend aoti`` with both CFG batch sizes (DiT batch axis dynamic 1..2),
  DiT + VAE decoder;
- ``inductor_build``: ``--backend inductor --cfg off --components dit`` (the cheapest warm cache),
  with the default ``--precision auto`` (fp32 here);
- ``onnx_build``: ``--backend tensorrt`` on the CPU: the ONNX stage is exported and checked, the
  engine stage cannot run here (exit status 3).
- ``ltx2_dir`` / ``ltx2_aoti_build``: the built-in tiny LTX-2 (``fastvideo-tiny-ltx2``) and its ``--backend aoti``
  build at ``LTX2_PROFILE`` (32x32x5), both branches, both CFG batch sizes, fp32 (test_build_ltx2.py and
  test_ltx2_artifact_serving.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from build_helpers import LTX2_PROFILE, PROFILE, CliRun, run_cli


@pytest.fixture(scope="session")
def aoti_build(tiny_model_dir: Path, fastvideo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    out = tmp_path_factory.mktemp("aoti") / "artifacts"
    run = run_cli(["--backend", "aoti", "--profile", PROFILE, "--precision", "fp32"], out, fastvideo_cache)
    assert run.returncode == 0, f"aoti build failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    return run


@pytest.fixture(scope="session")
def inductor_build(tiny_model_dir: Path, fastvideo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    out = tmp_path_factory.mktemp("inductor") / "artifacts"
    # No --precision: "auto" is fp32 on the CPU, what the runtime computes in there.
    run = run_cli(["--backend", "inductor", "--profile", PROFILE, "--cfg", "off", "--components", "dit"], out,
                  fastvideo_cache)
    assert run.returncode == 0, f"inductor build failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    return run


@pytest.fixture(scope="session")
def onnx_build(tiny_model_dir: Path, fastvideo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    out = tmp_path_factory.mktemp("onnx") / "artifacts"
    return run_cli(["--backend", "tensorrt", "--device", "cpu", "--profile", PROFILE, "--precision", "fp32",
                    "--quiet"], out, fastvideo_cache)


@pytest.fixture(scope="session")
def build_models(tiny_model_dir: Path):
    """The tiny model's eager DiT and VAE (fp32, CPU), as the builder loads them."""
    from fastvideo.build.exportable import load_build_models
    from fastvideo.engine.loader import inspect_model_folder

    import torch

    return load_build_models(inspect_model_folder(tiny_model_dir), device=torch.device("cpu"), dtype=torch.float32,
                             vae_dtype=torch.float32)


@pytest.fixture(scope="session")
def ltx2_dir(fastvideo_cache: Path) -> Path:
    from fastvideo.engine.builtin_model import ensure_builtin_model

    return ensure_builtin_model(fastvideo_cache, "fastvideo-tiny-ltx2")


@pytest.fixture(scope="session")
def ltx2_aoti_build(ltx2_dir: Path, fastvideo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    out = tmp_path_factory.mktemp("ltx2-aoti") / "artifacts"
    run = run_cli(["--model-path", str(ltx2_dir), "--backend", "aoti", "--profile", LTX2_PROFILE, "--branch",
                   "initial,continuation", "--precision", "fp32"], out, fastvideo_cache)
    assert run.returncode == 0, f"aoti build failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    return run
