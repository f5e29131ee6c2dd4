"""LTX-2 artifacts served through VideoGenerator (``engine.artifacts_path``): equal to the eager generator.

On the built-in tiny LTX-2 at 32x32x5, fp32 on the CPU:

- aoti (the session's ``ltx2_aoti_build``, both branches, CFG both): a text-to-video generation and a continuation
  (a returned ``ltx2.v1`` state) equal the eager generator's; every CFG/STG pass ran on a compiled program (no
  miss), the modality-isolation pass eagerly by design; a batch of 4 rows (the batched executor's 2N) runs on the
  batch-2 program and equals the eager DiT (1e-4); the warmup request is the served size with the 2 steps LTX-2
  needs; an uncovered size (or another fps) is a RequestError from ``VideoGenerator`` before any compute (the text
  encoder is never called), and a DiT call at an uncovered grid an ArtifactShapeError naming the served profiles
  (on_miss "error"); an image-to-video request runs the continuation programs (per-token timesteps) and equals the
  eager generator, no miss.
- inductor (``--cfg on``, initial branch, ``--precision auto``): the same t2v parity from a warm-cache build with
  one program, the batch-1 STG pass padded onto it; that initial-only build refuses a continuation (``state``) and an
  image-to-video request (``inputs.image_path``) as a RequestError before any compute, and serves guidance 1.

Tolerance: frames within 1 uint8 level, waveform within 1e-4. fp32 programs differ from eager by float rounding
only (each verified at build time at <= 1e-3 relative; measured ~1e-5 on the packed DiT output), and two sampling
steps, the VAE and the vocoder carry that through (measured: frames <= 1 level, waveform ~1e-6): a ~1e-6 latent
difference can move a frame by one level only at the rounding edge.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from build_helpers import LTX2_PROFILE as PROFILE
from build_helpers import CliRun, run_cli

PROMPT = "a fox runs through snow"


@pytest.fixture(scope="module")
def inductor_ltx2(ltx2_dir: Path, fastvideo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    out = tmp_path_factory.mktemp("ltx2-inductor") / "artifacts"
    # one program (initial branch, batch 2 only): the batch-1 STG pass runs on it padded
    run = run_cli(["--model-path", str(ltx2_dir), "--backend", "inductor", "--profile", PROFILE, "--cfg", "on"], out,
                  fastvideo_cache)
    assert run.returncode == 0, f"inductor build failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    return run


def _request(seed: int, **extra: object) -> dict:
    return {"prompt": PROMPT, "sampling": {"seed": seed, "num_inference_steps": 2, "width": 32, "height": 32,
                                           "num_frames": 5},
            "output": {"save_video": False, "return_frames": True, "return_state": True}, **extra}


def _same(result, reference) -> None:
    assert result.frames.shape == reference.frames.shape
    assert np.abs(result.frames.astype(np.int16) - reference.frames.astype(np.int16)).max() <= 1
    np.testing.assert_allclose(result.audio, reference.audio, atol=1e-4, rtol=0)


def _batch_of_four_equals_eager(dit) -> None:
    """The batched executor's 2N rows (here 4) run on the batch-2 program, two calls, equal to the eager DiT."""
    import torch

    g = torch.Generator().manual_seed(5)
    text = torch.randn(4, 32, 16, generator=g)
    mask = torch.ones(4, 32, dtype=torch.int64)
    call = dict(hidden_states=torch.randn(4, 768, 4, generator=g),
                audio_hidden_states=torch.randn(4, 5, 4, generator=g), encoder_hidden_states=text,
                audio_encoder_hidden_states=text.flip(0), timestep=torch.tensor([900.0, 700.0, 500.0, 300.0]),
                encoder_attention_mask=mask, num_frames=3, height=16, width=16, fps=24.0, audio_num_frames=5,
                use_cross_timestep=True)
    call["sigma"] = call["timestep"]
    call["audio_encoder_attention_mask"] = call["encoder_attention_mask"]
    before = dit.compiled_calls
    with torch.no_grad():
        video, audio = dit(**call)
        ref_video, ref_audio = dit.eager(**call)
    assert dit.compiled_calls == before + 1 and dit.misses == 0
    torch.testing.assert_close(video, ref_video, atol=1e-4, rtol=0)
    torch.testing.assert_close(audio, ref_audio, atol=1e-4, rtol=0)


def _compiled_generation_equals_eager(folder: Path, ltx2_dir: Path, ltx2_generator, continuation: bool) -> None:
    from fastvideo import VideoGenerator
    from fastvideo.build.ltx2_export import ArtifactLTX2DiT
    from fastvideo.engine.families import FAMILIES

    assert "engine.artifacts_path" not in FAMILIES["ltx2"].unsupported_config  # the family serves artifacts now
    generator = VideoGenerator.from_pretrained(str(ltx2_dir), device="cpu", dtype="fp32", artifacts_path=str(folder))
    try:
        dit = generator.pipeline.components.transformer
        assert isinstance(dit, ArtifactLTX2DiT)
        _, warmup = generator.resolve(generator.warmup_request())  # the served size, with the 2 steps LTX-2 needs
        assert (warmup.width, warmup.height, warmup.num_frames, warmup.num_inference_steps) == (32, 32, 5, 2)
        first = generator.generate(_request(21))
        reference = ltx2_generator.generate(_request(21))
        _same(first, reference)
        steps = 2
        # per step: the CFG pass (batch 2) and the STG pass (batch 1; the tiny DiT has no perturbed_attn) compiled,
        # the modality-isolation pass eager by design
        assert (dit.compiled_calls, dit.eager_passes, dit.misses) == (2 * steps, steps, 0)
        if continuation:
            second = generator.generate(_request(22, state=first.state.to_dict()))
            assert second.metadata["branch"] == "continuation"
            _same(second, ltx2_generator.generate(_request(22, state=reference.state.to_dict())))
            assert (dit.compiled_calls, dit.eager_passes, dit.misses) == (4 * steps, 2 * steps, 0)
            _batch_of_four_equals_eager(dit)
    finally:
        generator.shutdown()


def test_aoti_generations_equal_eager_for_text_to_video_and_continuation(ltx2_aoti_build: CliRun, ltx2_dir: Path,
                                                                         ltx2_generator) -> None:
    _compiled_generation_equals_eager(ltx2_aoti_build.folder, ltx2_dir, ltx2_generator, continuation=True)


def _image_png(folder: Path) -> Path:
    """A structured RGB image (gradients) at a size other than the video's, as a PNG."""
    from PIL import Image

    y, x = np.mgrid[0:40, 0:48]
    image = np.stack([x * 255 // 47, y * 255 // 39, (x + y) * 255 // 86], axis=-1).astype(np.uint8)
    path = folder / "first.png"
    Image.fromarray(image).save(path)
    return path


def _count_text_encoder_calls(generator) -> list[int]:
    calls = [0]
    generator.pipeline.components.text_encoder.model.register_forward_pre_hook(  # the Gemma-3 model
        lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_an_uncovered_size_is_a_request_error_before_any_compute(ltx2_aoti_build: CliRun, ltx2_dir: Path) -> None:
    import torch

    from fastvideo import VideoGenerator
    from fastvideo.api import RequestError
    from fastvideo.build.loading import ArtifactShapeError

    generator = VideoGenerator.from_pretrained(str(ltx2_dir), device="cpu", dtype="fp32",
                                               artifacts_path=str(ltx2_aoti_build.folder))
    try:
        calls = _count_text_encoder_calls(generator)
        started = generator.counters.snapshot().get("generations_started", 0)
        wide = _request(3, sampling={"seed": 3, "num_inference_steps": 2, "width": 64, "height": 32, "num_frames": 5})
        with pytest.raises(RequestError, match=r"32x64x5 \(initial branch\) is not covered.*32x32x5 \(initial\)") \
                as info:
            generator.generate(wide)
        assert info.value.field == "sampling"
        with pytest.raises(RequestError, match=r"at fps 24\.0 only") as info:  # the programs' fps is fixed
            generator.resolve(_request(3, sampling={"seed": 3, "width": 32, "height": 32, "num_frames": 5,
                                                    "fps": 12}))
        assert info.value.field == "sampling.fps"
        assert calls[0] == 0 and generator.counters.snapshot().get("generations_started", 0) == started
        # a DiT call at a grid no program covers (past the request check) is still refused at run time
        dit = generator.pipeline.components.transformer
        g = torch.Generator().manual_seed(5)
        text = torch.randn(2, 32, 16, generator=g)
        with pytest.raises(ArtifactShapeError, match=r"32x32x5 \(initial\)"), torch.no_grad():
            dit(hidden_states=torch.randn(2, 3 * 16 * 32, 4, generator=g),
                audio_hidden_states=torch.randn(2, 5, 4, generator=g), encoder_hidden_states=text,
                audio_encoder_hidden_states=text, timestep=torch.tensor([900.0, 900.0]),
                sigma=torch.tensor([0.9, 0.9]), encoder_attention_mask=torch.ones(2, 32, dtype=torch.int64),
                num_frames=3, height=16, width=32, fps=24.0, audio_num_frames=5, use_cross_timestep=True)
    finally:
        generator.shutdown()


def test_image_to_video_with_artifacts_equals_eager(ltx2_aoti_build: CliRun, ltx2_dir: Path, ltx2_generator,
                                                    tmp_path: Path) -> None:
    """Image-to-video runs the continuation programs (per-token timesteps, ltx2_export's contract), no miss."""
    from fastvideo import VideoGenerator

    png = _image_png(tmp_path)
    generator = VideoGenerator.from_pretrained(str(ltx2_dir), device="cpu", dtype="fp32",
                                               artifacts_path=str(ltx2_aoti_build.folder))
    try:
        dit = generator.pipeline.components.transformer
        request = _request(23, inputs={"image_path": str(png)})
        result = generator.generate(request)
        reference = ltx2_generator.generate(request)
        _same(result, reference)
        text = ltx2_generator.generate(_request(23))
        assert np.abs(reference.frames.astype(np.int16) - text.frames.astype(np.int16)).max() > 1  # the image acts
        steps = 2
        assert (dit.compiled_calls, dit.eager_passes, dit.misses) == (2 * steps, steps, 0)
    finally:
        generator.shutdown()


def test_inductor_generation_equals_eager(inductor_ltx2: CliRun, ltx2_dir: Path, ltx2_generator) -> None:
    manifest = json.loads((inductor_ltx2.folder / "manifest.json").read_text())
    [case] = manifest["components"][0]["cases"]
    assert (case["variant"], case["batches"], manifest["precision"]) == ("a5-initial", [2], "fp32")  # auto: fp32
    _compiled_generation_equals_eager(inductor_ltx2.folder, ltx2_dir, ltx2_generator, continuation=False)


def test_an_initial_only_build_refuses_continuation_and_image_requests_before_compute(
        inductor_ltx2: CliRun, ltx2_dir: Path, ltx2_generator, tmp_path: Path) -> None:
    from fastvideo import VideoGenerator
    from fastvideo.api import RequestError

    state = ltx2_generator.generate(_request(24)).state.to_dict()  # a valid ltx2.v1 state (eager generator)
    generator = VideoGenerator.from_pretrained(str(ltx2_dir), device="cpu", dtype="fp32",
                                               artifacts_path=str(inductor_ltx2.folder))
    try:
        calls = _count_text_encoder_calls(generator)
        started = generator.counters.snapshot().get("generations_started", 0)
        for extra, field in (({"state": state}, "state"),
                             ({"inputs": {"image_path": str(_image_png(tmp_path))}}, "inputs.image_path")):
            with pytest.raises(RequestError, match=r"initial branch only, not the continuation branch.*--branch") \
                    as info:
                generator.generate(_request(25, **extra))
            assert info.value.field == field
        assert calls[0] == 0 and generator.counters.snapshot().get("generations_started", 0) == started
        generator.resolve(_request(25, sampling={"seed": 25, "num_inference_steps": 2, "width": 32, "height": 32,
                                                 "num_frames": 5, "guidance_scale": 1.0}))  # batch 1: padded, served
    finally:
        generator.shutdown()
