"""``fastvideo-build`` on a tiny Wan2.2 A14B folder: both experts are exported, into one artifact folder.

The folder is the built-in tiny model plus a second expert with other random weights (``build_helpers.
write_tiny_a14b``, ``boundary_ratio`` 0.875). Builds run through the real CLI:

- ONNX stage (``--backend tensorrt --device cpu --components dit``, exit 3): the manifest names both DiT
  components (``dit`` = ``transformer``, ``dit_2`` = ``transformer_2``), the weights digest covers
  ``transformer_2/``, and each expert's ONNX program run by onnxruntime equals that expert's eager forward (fp32,
  ``|onnx - eager| <= 1e-4 + 1e-4 |eager|``) and differs from the other expert's;
- AOTInductor (``--cfg off --components dit``; the two experts share one compiled graph, copied and verified per
  expert): the runtime's loader gives a generator's pipeline both compiled experts, which serve every step (step 0
  on ``transformer``, step 1 on ``transformer_2``, no eager fallback), and its video equals the eager generator's
  (uint8 within 1 level, final latents within 1e-4);
- loading refuses the two-expert build for a one-expert model (``experts``), and ``dit_2`` is refused for a
  one-expert model at build time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from build_helpers import LATENT, PROFILE, CliRun, run_cli, write_tiny_a14b
from fastvideo.build import manifest as mf
from fastvideo.build.loading import ArtifactMismatchError, load_artifacts
from fastvideo.build.specs import ModelDims, SpecError, VideoProfile, derive_specs

SUFFIX = f"f{LATENT[0]}h{LATENT[1]}w{LATENT[2]}"
ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def a14b_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_a14b(tiny_model_dir, tmp_path_factory.mktemp("a14b") / "tiny-a14b")


@pytest.fixture(scope="module")
def a14b_onnx(a14b_model: Path, fastvideo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    out = tmp_path_factory.mktemp("a14b-onnx") / "artifacts"
    run = run_cli(["--backend", "tensorrt", "--device", "cpu", "--profile", PROFILE, "--precision", "fp32",
                   "--components", "dit", "--quiet", "--model-path", str(a14b_model)], out, fastvideo_cache)
    assert run.returncode == 3, f"a14b onnx build: {run.returncode}\n{run.stdout}\n{run.stderr}"
    return run


@pytest.fixture(scope="module")
def a14b_aoti(a14b_model: Path, fastvideo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    out = tmp_path_factory.mktemp("a14b-aoti") / "artifacts"
    run = run_cli(["--backend", "aoti", "--profile", PROFILE, "--precision", "fp32", "--cfg", "off",
                   "--components", "dit", "--quiet", "--model-path", str(a14b_model)], out, fastvideo_cache)
    assert run.returncode == 0, f"a14b aoti build: {run.returncode}\n{run.stdout}\n{run.stderr}"
    return run


@pytest.fixture(scope="module")
def experts(a14b_model: Path):
    from fastvideo.build.exportable import load_build_models
    from fastvideo.engine.loader import inspect_model_folder

    return load_build_models(inspect_model_folder(a14b_model), device=torch.device("cpu"), dtype=torch.float32,
                             vae_dtype=torch.float32)


def test_manifest_names_both_experts(a14b_onnx: CliRun) -> None:
    manifest = mf.read_manifest(a14b_onnx.folder)
    assert [c["name"] for c in manifest.components] == ["dit", "dit_2"]
    assert manifest.model["experts"] == {"dit": "transformer", "dit_2": "transformer_2"}
    assert manifest.identity["experts"] == 2 and manifest.identity["components"] == ["dit", "dit_2"]
    assert any(name.startswith("transformer_2/") for name in manifest.model["weight_files"])
    assert manifest.case(f"dit-{SUFFIX}") is not None and manifest.case(f"dit_2-{SUFFIX}") is not None


def test_each_expert_onnx_matches_its_eager_expert(a14b_onnx: CliRun, experts) -> None:
    import onnxruntime as ort

    g = torch.Generator().manual_seed(5)
    inputs = (torch.randn(2, 16, *LATENT, generator=g), torch.tensor([901.0, 77.0]),
              torch.randn(2, 64, experts.dit.config.text_dim, generator=g))  # the tiny preset's text length
    feeds = {n: t.numpy() for n, t in zip(("hidden_states", "timestep", "encoder_hidden_states"), inputs)}
    outs = {}
    for component in ("dit", "dit_2"):
        session = ort.InferenceSession(str(a14b_onnx.folder / "onnx" / f"{component}-{SUFFIX}.onnx"),
                                       providers=["CPUExecutionProvider"])
        with torch.no_grad():
            expected = experts.expert(component)(*inputs)
        outs[component] = torch.from_numpy(session.run(None, feeds)[0])
        torch.testing.assert_close(outs[component], expected, atol=ATOL, rtol=RTOL)
    assert (outs["dit"] - outs["dit_2"]).abs().max() > 1e-2  # two programs, two experts


def _generate(generator: Any) -> Any:
    return generator.generate({
        "prompt": "a lighthouse at dusk", "sampling": {"width": 64, "height": 64, "num_frames": 5,
                                                       "num_inference_steps": 2, "guidance_scale": 1.0, "seed": 3},
        "output": {"save_video": False, "return_frames": True, "return_state": True}})


def test_runtime_serves_both_compiled_experts(a14b_aoti: CliRun, a14b_model: Path) -> None:
    """The runtime's loader (``load_artifacts`` + ``apply_artifacts``, what ``engine.artifacts_path`` runs) gives a
    generator's pipeline both compiled experts. ``runtime.config_support.check_model_config`` still refuses
    ``engine.artifacts_path`` for two-expert models at config time, so the loader is applied to a loaded generator's
    pipeline here, as ``VideoGenerator.from_pretrained`` would."""
    from fastvideo import VideoGenerator
    from fastvideo.build.artifact_modules import ArtifactDiT, apply_artifacts
    from fastvideo.engine.state_codec import decode_latent_state

    second = mf.read_manifest(a14b_aoti.folder).case(f"dit_2-{SUFFIX}")
    assert second is not None and second["graph_of"] == f"dit-{SUFFIX}"  # compiled once, verified per expert
    assert set(second["max_abs_diff"]) == {"1"}
    generator = VideoGenerator.from_pretrained(str(a14b_model), device="cpu", dtype="fp32")
    try:
        pipe = generator.pipeline
        before = generator.counters.snapshot()
        expected = _generate(generator)  # eager experts
        middle = generator.counters.snapshot()
        loaded = load_artifacts(a14b_aoti.folder, model_folder=a14b_model, device="cpu", dtype=torch.float32,
                                vae_dtype=torch.float32)
        apply_artifacts(pipe, loaded)
        assert isinstance(pipe.dit, ArtifactDiT) and isinstance(pipe.dit_2, ArtifactDiT)
        assert pipe.experts.experts == [pipe.dit, pipe.dit_2]
        assert (pipe.dit.component, pipe.dit_2.component) == ("dit", "dit_2")
        dits = (pipe.dit, pipe.dit_2)
        got = _generate(generator)  # compiled experts
        after = generator.counters.snapshot()
    finally:
        generator.shutdown()
    for k, dit in enumerate(dits):
        name = f"expert_{k}_forwards"
        assert after.get(name, 0) - middle.get(name, 0) == middle.get(name, 0) - before.get(name, 0) == 1  # step k
        assert dit._dispatch.calls == 1 and dit._dispatch.misses == 0
    a, b = np.asarray(got.frames).astype(np.int16), np.asarray(expected.frames).astype(np.int16)
    assert a.shape == b.shape == (5, 64, 64, 3) and np.abs(a - b).max() <= 1
    tail, _ = decode_latent_state(got.state)
    ref, _ = decode_latent_state(expected.state)
    torch.testing.assert_close(tail, ref, atol=1e-4, rtol=1e-4)


def test_two_expert_build_refused_for_one_expert_model(a14b_onnx: CliRun, tiny_model_dir: Path) -> None:
    with pytest.raises(ArtifactMismatchError) as excinfo:
        load_artifacts(a14b_onnx.folder, model_folder=tiny_model_dir, device="cpu", dtype=torch.float32)
    assert excinfo.value.field == "experts" and (excinfo.value.built, excinfo.value.current) == (2, 1)
    assert "transformer_2" in str(excinfo.value)


def test_dit_2_is_refused_for_a_one_expert_model() -> None:
    dims = ModelDims(in_channels=16, out_channels=16, text_dim=64, text_length=64, z_dim=16, video_channels=3,
                     spatial_factor=8, temporal_factor=4, patch_size=(1, 2, 2))
    with pytest.raises(SpecError, match="two-expert"):
        derive_specs(dims, [VideoProfile(64, 64, 5)], components=("dit_2",))
    two = derive_specs(ModelDims(**{**dims.__dict__, "experts": 2}), [VideoProfile(64, 64, 5)], components=("dit",))
    assert [s.name for s in two] == ["dit", "dit_2"]
    assert [c.inputs for c in two[0].cases] == [c.inputs for c in two[1].cases]
