"""FastVideo's preset API: registry, lookups, FastVideo names resolving to ours, one source for the engine."""

from __future__ import annotations

import pytest

from fastvideo.api import (
    ConfigValidationError,
    InferencePreset,
    PresetStageSpec,
    get_all_preset_names,
    get_preset,
    get_presets_for_family,
    register_preset,
    validate_preset_selection,
    validate_stage_overrides,
)
from fastvideo.api import presets as api_presets
from fastvideo.engine import presets as engine_presets


def test_fastvideo_names_and_ours_resolve_to_the_same_preset():
    for fastvideo_name, ours in (("wan_t2v_1_3b", "wan2.1-t2v-1.3b"), ("wan_t2v_14b", "wan2.1-t2v-14b")):
        preset = get_preset(fastvideo_name, "wan")
        assert get_preset(ours, "wan") is preset and get_preset(ours) is preset
        assert preset.version == 1 and preset.model_family == "wan" and preset.workload_type == "t2v"
        assert engine_presets.get_preset(fastvideo_name) == engine_presets.get_preset(ours)
        assert engine_presets.get_preset(fastvideo_name).name == ours  # what metadata and states carry
    small = get_preset("wan_t2v_1_3b", "wan").defaults
    assert (small["height"], small["width"], small["num_frames"], small["fps"]) == (480, 832, 81, 16)
    assert {"wan_t2v_1_3b", "wan_t2v_14b", "fastvideo-tiny"} <= set(get_all_preset_names())
    assert get_all_preset_names() == sorted(set(get_all_preset_names()))
    assert [p.name for p in get_presets_for_family("wan")][:3] == ["wan_t2v_1_3b", "wan_t2v_14b", "fastvideo-tiny"]


def test_engine_presets_are_built_from_the_api_list():
    assert set(engine_presets.PRESETS) == {p.engine_name for p in get_presets_for_family("wan")}
    tiny = engine_presets.get_preset("fastvideo-tiny")
    api_tiny = get_preset("fastvideo-tiny")
    assert tiny.width == api_tiny.defaults["width"] and tiny.shift == api_tiny.model_defaults["flow_shift"]
    assert tiny.text_length == api_tiny.model_defaults["text_length"]


def test_unknown_preset_and_duplicate_registration():
    with pytest.raises(ConfigValidationError) as err:
        get_preset("wan9", "wan")
    assert err.value.path == "pipeline.preset" and "unknown preset 'wan9' for model family 'wan'" in str(err.value)
    assert "'wan_t2v_1_3b'" in str(err.value)
    with pytest.raises(ConfigValidationError, match=r"registered: \(none\)"):
        get_preset("x", "hunyuan")
    with pytest.raises(ConfigValidationError, match="version 7"):
        get_preset("wan_t2v_1_3b", "wan", 7)
    with pytest.raises(ValueError, match="Duplicate preset registration"):
        register_preset(get_preset("wan_t2v_1_3b", "wan"))


def test_register_versions_and_stage_validation(monkeypatch):
    monkeypatch.setattr(api_presets, "_REGISTRY", dict(api_presets._REGISTRY))
    stage = PresetStageSpec("denoise", "denoising", allowed_overrides=frozenset({"guidance_scale"}))
    register_preset(InferencePreset("mine", 1, "fam", stage_schemas=(stage,)))
    register_preset(InferencePreset("mine", 2, "fam", stage_schemas=(stage,)))
    assert get_preset("mine", "fam").version == 2 and get_preset("mine", "fam", 1).version == 1
    preset = validate_preset_selection("mine", "fam", stage_overrides={"denoise": {"guidance_scale": 3.0}})
    assert preset is not None and validate_preset_selection(None, "fam") is None
    with pytest.raises(ConfigValidationError) as err:
        validate_stage_overrides(preset, {"decode": {}})
    assert err.value.path == "stage_overrides.decode" and "valid stages: ['denoise']" in str(err.value)
    with pytest.raises(ConfigValidationError) as err:
        validate_stage_overrides(preset, {"denoise": {"seed": 1}})
    assert err.value.path == "stage_overrides.denoise.seed" and "allowed: ['guidance_scale']" in str(err.value)
    with pytest.raises(ConfigValidationError, match="must be a mapping"):
        validate_stage_overrides(preset, {"denoise": 3})


def test_a_built_in_model_name_gives_its_preset_like_from_pretrained_loads_it(tmp_path, monkeypatch):
    """``SamplingParam.from_pretrained("fastvideo-tiny")`` works as ``VideoGenerator.from_pretrained`` does (it
    said the folder does not exist); the api's list of built-in names is the engine's."""
    from fastvideo import SamplingParam
    from fastvideo.engine.builtin_model import BUILTIN_MODELS

    assert set(api_presets.BUILTIN_MODEL_NAMES) == set(BUILTIN_MODELS)
    monkeypatch.chdir(tmp_path)  # no folder of that name here
    for name in api_presets.BUILTIN_MODEL_NAMES:
        assert api_presets.infer_preset_for_path(name).name == get_preset(name).name
    tiny = get_preset("fastvideo-tiny")
    param = SamplingParam.from_pretrained("fastvideo-tiny")
    assert (param.width, param.height, param.num_frames) == (tiny.defaults["width"], tiny.defaults["height"],
                                                             tiny.defaults["num_frames"])
