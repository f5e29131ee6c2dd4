"""The built-in tiny LTX-2 model (``fastvideo-tiny-ltx2``) and the LTX-2 presets.

The folder is synthesized by :func:`fastvideo.engine.builtin_model.write_builtin_ltx2_model` from our own classes
(no diffusers); these tests check that it is a real diffusers ``LTX2Pipeline`` folder (diffusers loads it and gives
our frames and waveform), that our pipeline runs it at the tiny preset's size, that synthesis is deterministic, and
that the family registry matches it as the ``ltx2`` family (the runtime serves it: tests/runtime/test_ltx2_runtime.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from ltx2_side_fixtures import assert_matches, run_reference  # noqa: E402

from fastvideo.api import presets as api_presets  # noqa: E402
from fastvideo.api.errors import ModelLoadError  # noqa: E402
from fastvideo.api.parse import ConfigError  # noqa: E402
from fastvideo.engine.builtin_model import (BUILTIN_LTX2_PRESET, ensure_builtin_model,  # noqa: E402
                                            write_builtin_ltx2_model)

TOL = 1e-4


def _guidance(preset: api_presets.InferencePreset) -> Any:
    from fastvideo.engine.models.ltx2.pipeline import LTX2Guidance

    g = dict(preset.model_defaults["ltx2_guidance"])
    g["stg_blocks"] = tuple(g["stg_blocks"]) or None
    return LTX2Guidance(**g)


def _request(preset: api_presets.InferencePreset, **overrides: Any) -> Any:
    from fastvideo.engine.models.ltx2.pipeline import LTX2Request

    d = preset.defaults
    values = dict(prompt="a red fox runs through the snow", negative_prompt="blurry", width=d["width"],
                  height=d["height"], num_frames=d["num_frames"], fps=float(d["fps"]),
                  steps=d["num_inference_steps"], seed=7, guidance=_guidance(preset))
    values.update(overrides)
    return LTX2Request(**values)


@pytest.fixture(scope="module")
def ltx2_folder(fastvideo_cache: Path) -> Path:
    return ensure_builtin_model(fastvideo_cache, BUILTIN_LTX2_PRESET)


def test_tiny_ltx2_generates_finite_frames_and_sound_at_its_preset_size(ltx2_folder: Path) -> None:
    from fastvideo.engine.models.ltx2.pipeline import load_ltx2_pipeline

    preset = api_presets.get_preset(BUILTIN_LTX2_PRESET)
    pipe = load_ltx2_pipeline(ltx2_folder, max_sequence_length=preset.model_defaults["text_length"])
    out = pipe.run(_request(preset))
    d = preset.defaults
    assert out.frames.shape == (d["num_frames"], d["height"], d["width"], 3) and out.frames.dtype == np.uint8
    assert np.isfinite(out.video).all() and out.frames.std() > 1.0  # not a constant picture
    wave = out.waveform.numpy()
    assert wave.ndim == 2 and wave.shape[0] == 2 and np.isfinite(wave).all() and wave.std() > 1e-3  # not silent
    # the vocoder upsamples a mel frame to its hop length: the waveform lasts about as long as the video
    assert out.sample_rate == 16000 and abs(wave.shape[1] / out.sample_rate - d["num_frames"] / d["fps"]) < 0.1


def test_tiny_ltx2_folder_is_a_diffusers_folder_with_our_outputs(ltx2_folder: Path) -> None:
    """diffusers' own ``LTX2Pipeline.from_pretrained`` loads the synthesized folder and, with the same seed and
    guidance, gives our frames and waveform (so the folder is real diffusers format, not just readable by us)."""
    pytest.importorskip("diffusers")
    from diffusers import LTX2Pipeline

    from fastvideo.engine.models.ltx2.pipeline import load_ltx2_pipeline

    preset = api_presets.get_preset(BUILTIN_LTX2_PRESET)
    max_seq = preset.model_defaults["text_length"]
    req = _request(preset, steps=2)
    ref = LTX2Pipeline.from_pretrained(str(ltx2_folder), dtype=torch.float32)
    ref_video, ref_audio = run_reference(ref, req, max_seq)
    ours = load_ltx2_pipeline(ltx2_folder, max_sequence_length=max_seq).run(req)
    assert_matches(ours, ref_video, ref_audio, TOL)
    assert ours.sample_rate == ref.vocoder.config.output_sampling_rate


def test_synthesis_is_deterministic_and_needs_no_diffusers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # importing diffusers now fails: the writer must not
    a, b = write_builtin_ltx2_model(tmp_path / "a"), write_builtin_ltx2_model(tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    weights = [f for f in files if f.suffix == ".safetensors"]
    assert {f.parts[0] for f in weights} == {"transformer", "vae", "audio_vae", "vocoder", "connectors",
                                             "text_encoder"}
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    total = sum((a / f).stat().st_size for f in weights)
    assert total < 2_000_000, total  # really tiny


def test_the_family_registry_matches_the_tiny_ltx2_folder_as_ltx2(fastvideo_cache: Path) -> None:
    from fastvideo.engine.families import FAMILIES, NOT_SERVED, family_of_folder
    from fastvideo.engine.loader import inspect_model_folder

    folder = inspect_model_folder(ensure_builtin_model(fastvideo_cache, BUILTIN_LTX2_PRESET))
    family = family_of_folder(folder)
    assert family is FAMILIES["ltx2"] and family.runtime == "ltx2" and family.continuation
    assert "LTX2Pipeline" not in NOT_SERVED
    # a component class LTX2Pipeline does not declare is still refused, naming the file and the class
    folder.model_index["vocoder"] = ["diffusers", "HifiGanVocoder"]
    with pytest.raises(ModelLoadError, match="vocoder is HifiGanVocoder"):
        family_of_folder(folder)


def test_ltx2_presets_carry_the_published_defaults_and_are_not_wan_presets() -> None:
    from fastvideo.engine.presets import get_preset as engine_preset

    base, distilled = api_presets.get_preset("ltx2_base"), api_presets.get_preset("ltx2_distilled")
    assert api_presets.get_preset("ltx-2") is base and api_presets.get_preset("ltx-2-distilled") is distilled
    assert {k: base.defaults[k] for k in ("width", "height", "num_frames", "fps", "num_inference_steps",
                                          "guidance_scale")} == dict(width=768, height=512, num_frames=121, fps=24,
                                                                     num_inference_steps=40, guidance_scale=3.0)
    assert (distilled.defaults["num_inference_steps"], distilled.defaults["guidance_scale"]) == (8, 1.0)
    for preset in (base, distilled, api_presets.get_preset(BUILTIN_LTX2_PRESET)):
        assert preset.model_family == "ltx2" and not preset.refusal  # served by the ltx2 family's loader
        with pytest.raises(ConfigError, match="flow_shift"):  # not a Wan preset: Wan's engine cannot run it
            engine_preset(preset.name)
    diffusers_utils = pytest.importorskip("diffusers.pipelines.ltx2.utils")
    assert distilled.model_defaults["sigmas"] == list(diffusers_utils.DISTILLED_SIGMA_VALUES)
    import inspect

    from diffusers import LTX2Pipeline

    defaults = {k: v.default for k, v in inspect.signature(LTX2Pipeline.__call__).parameters.items()}
    g = base.model_defaults["ltx2_guidance"]
    assert g["stg_blocks"] == defaults["spatio_temporal_guidance_blocks"]
    for key in ("guidance_scale", "stg_scale", "modality_scale", "guidance_rescale", "audio_guidance_scale",
                "audio_stg_scale", "audio_modality_scale", "audio_guidance_rescale", "use_cross_timestep"):
        assert g[key] == defaults[key], key
    assert (base.defaults["height"], base.defaults["width"]) == (defaults["height"], defaults["width"])
