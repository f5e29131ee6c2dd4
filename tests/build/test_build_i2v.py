"""``fastvideo-build`` on the tiny Wan2.1 image-to-video model: the DiT is exported with its image inputs.

One build (module-scoped, the real CLI): ``--backend tensorrt --device cpu --components dit`` on the built-in
``fastvideo-tiny-i2v`` (36 latent channels = 16 noise + 20 condition, 17 CLIP tokens of width 32), the ONNX stage
only (no TensorRT here: exit 3), checked by onnxruntime. Then:

- the specs / manifest declare the four DiT inputs at their shapes and record the build as image-conditioned;
- the ONNX DiT run by onnxruntime equals the eager DiT on fresh inputs (batch 1 and 2; fp32,
  ``|onnx - eager| <= 1e-4 + 1e-4 |eager|``), and the image tokens really reach it (other tokens, other output);
- :class:`ArtifactDiT` serving that program takes the image tokens as the eager DiT does and refuses a call
  without them;
- loading refuses an image-conditioned build for a text-to-video model and a text-to-video build for an
  image-to-video model (``ArtifactMismatchError`` on ``image_conditioned``);
- what still does not export is refused, exit 2, nothing written: a Wan2.2 TI2V-5B folder
  (``expand_timesteps``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from build_helpers import LATENT, PROFILE, CliRun, clone_build, run_cli
from fastvideo.build import cli
from fastvideo.build import manifest as mf
from fastvideo.build.loading import ArtifactMismatchError, LoadedArtifacts, load_artifacts
from fastvideo.build.specs import ShapeCase

KEY = f"dit-f{LATENT[0]}h{LATENT[1]}w{LATENT[2]}"
NAMES = ("hidden_states", "timestep", "encoder_hidden_states", "encoder_hidden_states_image")
ATOL = RTOL = 1e-4
TOKENS, IMAGE_DIM = 17, 32  # the tiny CLIP: (32 / 8)^2 patches + its class token, width 32
TEXT_LENGTH, TEXT_DIM = 512, 64  # the tiny I2V preset's text length, the tiny DiT's text_dim


@pytest.fixture(scope="module")
def i2v_model(fastvideo_cache: Path) -> Path:
    from fastvideo.engine.builtin_model import ensure_builtin_model

    return ensure_builtin_model(fastvideo_cache, "fastvideo-tiny-i2v")


@pytest.fixture(scope="module")
def i2v_build(i2v_model: Path, fastvideo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    out = tmp_path_factory.mktemp("i2v") / "artifacts"
    run = run_cli(["--backend", "tensorrt", "--device", "cpu", "--profile", PROFILE, "--precision", "fp32",
                   "--components", "dit", "--quiet", "--model-path", str(i2v_model)], out, fastvideo_cache)
    assert run.returncode == 3, f"i2v onnx build: {run.returncode}\n{run.stdout}\n{run.stderr}"
    return run


@pytest.fixture(scope="module")
def i2v_dit(i2v_model: Path):
    from fastvideo.build.exportable import load_build_models
    from fastvideo.engine.loader import inspect_model_folder

    models = load_build_models(inspect_model_folder(i2v_model), device=torch.device("cpu"), dtype=torch.float32,
                               vae_dtype=torch.float32)
    return models.dit


def _inputs(batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 36, *LATENT, generator=g), torch.tensor([911.0, 87.0][:batch]),
            torch.randn(batch, TEXT_LENGTH, TEXT_DIM, generator=g), torch.randn(batch, TOKENS, IMAGE_DIM, generator=g))


def _session(build: CliRun):
    import onnxruntime as ort

    return ort.InferenceSession(str(build.folder / "onnx" / f"{KEY}.onnx"), providers=["CPUExecutionProvider"])


def _ort_run(session, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.from_numpy(session.run(None, {n: t.numpy() for n, t in zip(NAMES, inputs)})[0])


def test_specs_and_manifest_declare_the_image_inputs(i2v_build: CliRun) -> None:
    manifest = mf.read_manifest(i2v_build.folder)
    assert manifest.model["image_conditioned"] is True
    assert (manifest.model["image_tokens"], manifest.model["image_dim"]) == (TOKENS, IMAGE_DIM)
    assert manifest.identity["image_conditioned"] is True
    assert [c["name"] for c in manifest.components] == ["dit"]
    assert manifest.components[0]["input_names"] == list(NAMES)
    data = manifest.case(KEY)
    assert data is not None
    case = ShapeCase.from_dict(data)
    shapes = {t.name: (t.min_shape, t.opt_shape) for t in case.inputs}
    assert shapes["hidden_states"] == ((1, 36, *LATENT), (2, 36, *LATENT))  # 16 noise + 20 condition channels
    assert shapes["encoder_hidden_states_image"] == ((1, TOKENS, IMAGE_DIM), (2, TOKENS, IMAGE_DIM))
    assert shapes["encoder_hidden_states"][1] == (2, TEXT_LENGTH, TEXT_DIM)
    assert case.outputs[0].opt_shape == (2, 16, *LATENT)
    assert set(data["onnx_check"]["max_abs_diff"]) == {"1", "2"}


def test_onnx_i2v_dit_matches_eager(i2v_build: CliRun, i2v_dit) -> None:
    session = _session(i2v_build)
    assert tuple(i.name for i in session.get_inputs()) == NAMES
    for batch in (1, 2):
        inputs = _inputs(batch, seed=50 + batch)
        with torch.no_grad():
            expected = i2v_dit(*inputs)
        got = _ort_run(session, inputs)
        assert got.shape == expected.shape == (batch, 16, *LATENT)
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)
        assert expected.abs().max() > 0.1
    inputs = _inputs(1, seed=60)
    other = (*inputs[:3], torch.randn(1, TOKENS, IMAGE_DIM, generator=torch.Generator().manual_seed(61)))
    assert (_ort_run(session, inputs) - _ort_run(session, other)).abs().max() > 1e-3  # the image tokens are read


def test_artifact_dit_takes_the_image_tokens(i2v_build: CliRun, i2v_dit, i2v_model: Path) -> None:
    from fastvideo.build.artifact_modules import ArtifactDiT

    session = _session(i2v_build)
    loaded = LoadedArtifacts(path=i2v_build.folder, manifest=mf.read_manifest(i2v_build.folder),
                             device=torch.device("cpu"), dtype=torch.float32, model_folder=i2v_model, cases={})
    calls = []

    def program(*inputs: torch.Tensor) -> torch.Tensor:
        calls.append(len(inputs))
        return _ort_run(session, inputs)

    dit = ArtifactDiT(i2v_dit, loaded, {LATENT: ((1, 2), program)})
    inputs = _inputs(2, seed=70)
    with torch.no_grad():
        torch.testing.assert_close(dit(*inputs), i2v_dit(*inputs), atol=ATOL, rtol=RTOL)
    assert calls == [4] and dit._dispatch.misses == 0
    with pytest.raises(ValueError, match="encoder_hidden_states_image is required"):
        dit(*inputs[:3])


def test_loading_refuses_the_other_kind_of_model(i2v_build: CliRun, i2v_model: Path, tiny_model_dir: Path,
                                                 tmp_path: Path) -> None:
    with pytest.raises(ArtifactMismatchError) as excinfo:
        load_artifacts(i2v_build.folder, model_folder=tiny_model_dir, device="cpu", dtype=torch.float32)
    assert excinfo.value.field == "image_conditioned"
    assert (excinfo.value.built, excinfo.value.current) == (True, False)
    assert "image-to-video DiT" in str(excinfo.value) and "fastvideo-build" in str(excinfo.value)

    def as_t2v(data: dict) -> None:  # what a text-to-video build's manifest says
        data["identity"].pop("image_conditioned")
        data["model"]["image_conditioned"] = False

    t2v = clone_build(i2v_build.folder, tmp_path / "t2v", as_t2v)
    with pytest.raises(ArtifactMismatchError) as excinfo:
        load_artifacts(t2v, model_folder=i2v_model, device="cpu", dtype=torch.float32)
    assert excinfo.value.field == "image_conditioned"
    assert (excinfo.value.built, excinfo.value.current) == (False, True)
    assert "text-to-video DiT" in str(excinfo.value)


def test_ti2v_5b_folder_is_still_refused(tiny_model_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Wan2.2 TI2V-5B (``expand_timesteps``: per-token timesteps) does not export yet: exit 2, nothing written."""
    model = tmp_path / "ti2v"
    shutil.copytree(tiny_model_dir, model)
    index = json.loads((model / "model_index.json").read_text())
    (model / "model_index.json").write_text(json.dumps({**index, "expand_timesteps": True}))
    out = tmp_path / "artifacts"
    code = cli.main(["--backend", "aoti", "--profile", PROFILE, "--precision", "fp32", "--quiet",
                     "--model-path", str(model), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "expand_timesteps" in err and "Traceback" not in err, err
    assert not out.exists()
