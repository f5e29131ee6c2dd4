"""A VideoGenerator configured with ``engine.artifacts_path`` serves requests from the compiled programs.

The same request (64x64x5, 2 steps, fixed seed) runs on the eager tiny generator and on a generator
loaded from the session's aoti (DiT + VAE decoder, CFG batches 1 and 2) and inductor (DiT, batch 1)
builds. The videos must be the same: uint8 frames within 1 level (rounding of float outputs that
differ by ~1e-5), at most 1% of values differing, and the final latents (the continuation state)
within 1e-4. Every DiT step and the decode must have run the compiled programs (no eager fallback).
Shapes, branches and precisions the build does not cover are refused before any compute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from build_helpers import LATENT, CliRun, clone_build
from fastvideo import VideoGenerator
from fastvideo.api import GeneratorConfig, RequestError, parse_config
from fastvideo.build.artifact_modules import ArtifactDiT, ArtifactVAE
from fastvideo.build.loading import ArtifactMismatchError, ArtifactShapeError
from fastvideo.engine.state_codec import decode_latent_state

KEY = f"f{LATENT[0]}h{LATENT[1]}w{LATENT[2]}"


def _request(guidance: float, **sampling: Any) -> dict[str, Any]:
    base = {"width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2, "guidance_scale": guidance,
            "seed": 7}
    return {"prompt": "a red kite over the sea", "sampling": {**base, **sampling},
            "output": {"save_video": False, "return_frames": True, "return_state": True}}


def _generator(model: Path, artifacts: Path, dtype: str = "fp32") -> VideoGenerator:
    config = parse_config(GeneratorConfig, {"model_path": str(model), "engine": {
        "device": "cpu", "dtype": dtype, "artifacts_path": str(artifacts)}})
    return VideoGenerator.from_pretrained(config=config)


def _assert_same_video(got: Any, expected: Any) -> None:
    a, b = np.asarray(got.frames).astype(np.int16), np.asarray(expected.frames).astype(np.int16)
    assert a.shape == b.shape == (5, 64, 64, 3)
    assert np.abs(a - b).max() <= 1
    assert (a != b).mean() <= 0.01
    tail, _ = decode_latent_state(got.state)
    ref, _ = decode_latent_state(expected.state)
    torch.testing.assert_close(tail, ref, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def aoti_generator(aoti_build: CliRun, tiny_model_dir: Path):
    generator = _generator(tiny_model_dir, aoti_build.folder)
    yield generator
    generator.shutdown()


@pytest.mark.parametrize("guidance", [5.0, 1.0], ids=["cfg-batch2", "no-cfg-batch1"])
def test_request_served_from_aoti_artifacts_equals_eager(guidance: float, aoti_generator: VideoGenerator,
                                                         tiny_generator: VideoGenerator) -> None:
    dit, vae = aoti_generator.pipeline.dit, aoti_generator.pipeline.vae
    assert isinstance(dit, ArtifactDiT) and isinstance(vae, ArtifactVAE)
    assert aoti_generator.artifacts.backend == "aoti"
    calls, decodes = dit._dispatch.calls, vae._decode_dispatch.calls
    got = aoti_generator.generate(_request(guidance))
    expected = tiny_generator.generate(_request(guidance))
    _assert_same_video(got, expected)
    assert dit._dispatch.calls - calls == 2 and dit._dispatch.misses == 0
    assert vae._decode_dispatch.calls - decodes == 1 and vae._decode_dispatch.misses == 0


def test_request_outside_every_profile_is_refused_before_compute(aoti_generator: VideoGenerator) -> None:
    dit = aoti_generator.pipeline.dit
    calls = dit._dispatch.calls
    for sampling, label in (({"width": 96}, "64x96x5"), ({"num_frames": 9}, "64x64x9")):
        with pytest.raises(RequestError) as excinfo:
            aoti_generator.generate(_request(5.0, **sampling))
        message = str(excinfo.value)
        assert excinfo.value.field == "sampling"
        assert f"{label} (initial branch" in message and "which serve: 64x64x5 (initial)" in message
        assert f"rebuild with: fastvideo-build --model-path {aoti_generator.model_path} --backend aoti " \
               f"--profile 64x64x5 --profile {label}" in message
    assert dit._dispatch.calls == calls  # refused before the DiT ran


def test_direct_call_at_an_unbuilt_shape_raises(aoti_generator: VideoGenerator) -> None:
    dit = aoti_generator.pipeline.dit
    x = torch.zeros(1, 16, 2, 8, 12)
    with pytest.raises(ArtifactShapeError, match=r"latent shape \(1, 16, 2, 8, 12\).*not covered"):
        dit(x, torch.tensor([500]), torch.zeros(1, 64, 64))


def test_continuation_on_an_initial_only_build_is_refused(aoti_generator: VideoGenerator) -> None:
    first = aoti_generator.generate(_request(1.0))
    with pytest.raises(RequestError) as excinfo:
        aoti_generator.generate({**_request(1.0), "state": first.state})
    assert excinfo.value.field == "state"
    assert "not the continuation branch" in str(excinfo.value)
    assert "--branch initial,continuation" in str(excinfo.value)


def test_teacache_on_built_artifacts_is_refused_by_name(aoti_generator: VideoGenerator) -> None:
    """Artifacts run the whole DiT step, so TeaCache (which skips the blocks) is refused, not a crash."""
    with pytest.raises(RequestError) as excinfo:
        aoti_generator.generate({**_request(1.0), "runtime": {"enable_teacache": True}})
    assert excinfo.value.field == "runtime.enable_teacache"
    assert "artifacts" in str(excinfo.value)


def test_generator_precision_other_than_the_build_is_refused(aoti_build: CliRun, tiny_model_dir: Path) -> None:
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _generator(tiny_model_dir, aoti_build.folder, dtype="bf16")
    assert excinfo.value.field == "precision"
    assert "--precision bf16" in str(excinfo.value)


def test_programs_that_do_not_fit_their_component_are_refused(aoti_build: CliRun, tiny_model_dir: Path,
                                                              tmp_path: Path) -> None:
    """A manifest pointing the DiT case at the VAE's package (and back) cannot bind to the model."""
    def swapped(data: dict[str, Any]) -> None:
        cases = {c["key"]: c for component in data["components"] for c in component["cases"]}
        dit, vae = cases[f"dit-{KEY}"], cases[f"vae_decoder-{KEY}"]
        dit["file"], vae["file"] = vae["file"], dit["file"]

    (tmp_path / "a").mkdir()
    folder = clone_build(aoti_build.folder, tmp_path / "a", swapped)
    with pytest.raises(ArtifactMismatchError) as excinfo:
        _generator(tiny_model_dir, folder)
    assert excinfo.value.field == "component"
    assert f"dit-{KEY} does not fit this model's dit" in str(excinfo.value)


def test_request_served_from_inductor_artifacts_equals_eager(inductor_build: CliRun, tiny_model_dir: Path,
                                                             tiny_generator: VideoGenerator) -> None:
    generator = _generator(tiny_model_dir, inductor_build.folder)
    try:
        stats = generator.artifacts.stats
        assert stats["inductor_cache_misses"] == 0 and stats["inductor_cache_hits"] >= 1  # nothing new compiled
        dit = generator.pipeline.dit
        assert isinstance(dit, ArtifactDiT)
        got = generator.generate(_request(1.0))
        _assert_same_video(got, tiny_generator.generate(_request(1.0)))
        assert dit._dispatch.calls == 2 and dit._dispatch.misses == 0
        with pytest.raises(RequestError) as excinfo:  # only batch 1 was built (--cfg off)
            generator.generate(_request(5.0))
        assert excinfo.value.field == "sampling.guidance_scale"
        assert "only without CFG" in str(excinfo.value) and "--backend inductor" in str(excinfo.value)
        assert "--cfg off" not in str(excinfo.value)  # the rebuild serves both batch sizes
    finally:
        generator.shutdown()


def test_cuda_graph_runner_warms_up_over_aoti_artifacts(aoti_generator: VideoGenerator) -> None:
    """The graph runner captures the compiled DiT step (it used to ask ArtifactDiT for rope tables it lacks);
    warmup runs only the branches the build serves (this build: initial only), by default at a size the build
    serves (the health-check size, 256x256x8, is not one)."""
    from fastvideo.runtime.cuda_graphs import GraphBucket, GraphConfig, RecordingGraphBackend
    from fastvideo.runtime.executor import ExecutorConfig
    from fastvideo.runtime.worker import BatchWorker, WorkerConfig

    probe = aoti_generator.warmup_request().sampling
    assert (probe.width, probe.height, probe.num_frames, probe.guidance_scale > 1) == (64, 64, 5, True)
    graphs = GraphConfig(enabled=True, buckets=(GraphBucket(width=64, height=64, num_frames=5, cfg=True),))
    worker = BatchWorker(aoti_generator, WorkerConfig(executor=ExecutorConfig(graphs=graphs)),
                         graph_backend=RecordingGraphBackend())
    worker.start()
    try:
        info = worker.warmup()
    finally:
        worker.stop()
    assert info["graphs"] == ["64x64x5/initial/b1/cfg"] and info["branches"] == ["initial"]
    entry = next(iter(worker.executor.runner.graphs.values()))
    dit = aoti_generator.pipeline.dit
    assert isinstance(dit, ArtifactDiT)
    (cos, sin), blocks_io = entry.keep_alive  # the rope tables, and no blocks pair: artifacts run the whole step
    assert blocks_io is None
    ref_cos, ref_sin = dit.eager.rope_tables((LATENT[0], LATENT[1] // 2, LATENT[2] // 2), cos.device)
    assert cos is ref_cos and sin is ref_sin
