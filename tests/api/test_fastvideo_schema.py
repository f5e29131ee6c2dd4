"""FastVideo's ``fastvideo.api`` schema, field by field (issue 14 item 1), written from its documented contract
(zeyuanyin/FastVideo@1c4c97ba ``fastvideo/api/schema.py``): every public name, every FastVideo field with its
type and default (or, where ours differs on purpose, the documented divergence), and every field this engine
cannot honour accepted by the parser and refused by name when it is used (never ignored)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

import fastvideo.api as api
from schema_defaults import REQUIRED, field_defaults
from fastvideo.api import ConfigError, GenerationRequest, GeneratorConfig, RequestError, parse_config
from fastvideo.engine.request_support import REQUEST_FIELD_SUPPORT, check_request_fields
from fastvideo.runtime.config_support import FIELD_SUPPORT, check_generator_config

FASTVIDEO_API_NAMES = [
    "CompileConfig", "ComponentConfig", "ContinuationState", "EngineConfig", "GenerationPlan", "GenerationRequest",
    "GeneratorConfig", "InputConfig", "OffloadConfig", "OutputConfig", "ParallelismConfig",
    "PipelineSelection", "PlannedStage", "QuantizationConfig",
    "RequestRuntimeConfig", "RunConfig", "SamplingConfig", "ConfigValidationError", "apply_overrides",
    "parse_cli_overrides", "config_to_dict", "load_config", "load_raw_config", "load_run_config", "parse_config",
]  # the serve schema names: tests/api/test_fastvideo_serve.py


@pytest.mark.parametrize("name", FASTVIDEO_API_NAMES)
def test_every_schema_name_of_fastvideo_api_is_exported(name):
    assert name in api.__all__ and getattr(api, name) is not None


# FastVideo's field -> default, per class; a class's fields must all exist with these defaults (ours may add more).
FASTVIDEO_DEFAULTS: dict[str, dict[str, object]] = {
    "EngineConfig": {"num_gpus": 1, "execution_backend": "mp", "enable_stage_verification": True,
                     "use_fsdp_inference": False, "disable_autocast": False, "quantization": None},
    "ParallelismConfig": {"tp_size": -1, "sp_size": -1, "hsdp_replicate_dim": 1, "hsdp_shard_dim": -1,
                          "dist_timeout": None},
    "CompileConfig": {"enabled": False, "mode": None, "dynamic": None, "extras": {}, "text_encoder_enabled": None,
                      "vae_enabled": None, "audio_vae_enabled": None, "dit_kwargs": {}, "text_encoder_kwargs": {},
                      "vae_kwargs": {}, "audio_vae_kwargs": {}},
    "QuantizationConfig": {"text_encoder_quant": None, "transformer_quant": None},
    "PipelineSelection": {"workload_type": None, "preset": None, "preset_version": None, "vae_tiling": None,
                          "preset_overrides": {}, "experimental": {}},
    "ComponentConfig": {"config_root": None, "pipeline_config_path": None, "text_encoder_weights": None,
                        "transformer_weights": None, "transformer_2_weights": None, "vae_weights": None,
                        "upsampler_weights": None, "lora_path": None, "lora_nickname": "default",
                        "lora_strength": 1.0, "override_pipeline_cls_name": None,
                        "override_transformer_cls_name": None},
    "GeneratorConfig": {"revision": None, "trust_remote_code": False},
    "GenerationRequest": {"prompt": None, "negative_prompt": None, "stage_overrides": {}, "state": None,
                          "plan": None, "extensions": {}},
    "InputConfig": {name: None for name in (
        "prompt_path", "image_path", "video_path", "pil_image", "last_image", "references", "latents",
        "audio_latents", "pose", "mouse_cond", "keyboard_cond", "grid_sizes", "c2ws_plucker_emb", "action_path",
        "refine_from", "stage1_video")},
    "SamplingConfig": {"num_videos_per_prompt": 1, "max_sequence_length": None, "height_sr": 1072,
                       "width_sr": 1920, "num_inference_steps_sr": 50, "batch_cfg": False,
                       "guidance_scale_2": None, "cfg_normalization": False, "cfg_truncation": 1.0,
                       "guidance_rescale": 0.0, "true_cfg_scale": None, "use_embedded_guidance": None,
                       "boundary_ratio": None, "sigmas": None},
    "RequestRuntimeConfig": {"enable_teacache": False, "return_trajectory_latents": False,
                             "return_trajectory_decoded": False},
    "OutputConfig": {"output_video_name": None, "return_frames": True, "return_state": False},
    "PlannedStage": {"name": REQUIRED, "kind": REQUIRED, "source": None, "overrides": {}},
    "GenerationPlan": {"stages": REQUIRED, "final_stage": None},
}

# Where our default differs from FastVideo's on purpose (README "Coming from FastVideo"): field -> (ours, theirs).
DIVERGENT_DEFAULTS: dict[str, dict[str, tuple[object, object]]] = {
    # None: the model preset's value (FastVideo's parsed documents behave so too: unwritten fields take the preset)
    "SamplingConfig": {"seed": (None, 1024), "num_frames": (None, 125), "height": (None, 720), "width": (None, 1280),
                       "fps": (None, 24), "num_inference_steps": (None, 50), "guidance_scale": (None, 1.0)},
    # No file unless asked (library calls and servers do not litter the working directory); None means outputs/
    "OutputConfig": {"save_video": (False, True), "output_path": (None, "outputs/")},
    # Everything stays on the device unless asked
    "OffloadConfig": {"dit": (False, True), "dit_layerwise": (False, True), "text_encoder": (False, True),
                      "image_encoder": (False, True), "vae": (False, True)},
    # torch.compile's own defaults, written out (FastVideo writes null for them; null parses to these)
    "CompileConfig": {"backend": ("inductor", None), "fullgraph": (False, None)},
    # The built-in tiny model (FastVideo requires model_path)
    "GeneratorConfig": {"model_path": (None, REQUIRED)},
}


@pytest.mark.parametrize("name", sorted(FASTVIDEO_DEFAULTS))
def test_every_fastvideo_field_exists_with_its_default(name):
    got = field_defaults(getattr(api, name))
    for field, default in FASTVIDEO_DEFAULTS[name].items():
        assert field in got, f"{name}.{field} is missing"
        assert got[field] == default, f"{name}.{field}: {got[field]!r} != FastVideo's {default!r}"
    for field, (ours, _theirs) in DIVERGENT_DEFAULTS.get(name, {}).items():
        assert got[field] == ours, f"{name}.{field}: {got[field]!r} (documented divergence: {ours!r})"


def test_nesting_and_types_follow_fastvideo():
    hints = typing.get_type_hints(api.EngineConfig)
    assert hints["parallelism"] is api.ParallelismConfig and hints["offload"] is api.OffloadConfig
    assert hints["quantization"] == api.QuantizationConfig | None
    assert typing.get_type_hints(api.GenerationRequest)["runtime"] is api.RequestRuntimeConfig
    assert typing.get_type_hints(api.GenerationRequest)["plan"] == api.GenerationPlan | None
    assert typing.get_type_hints(api.GenerationPlan)["stages"] == list[api.PlannedStage]
    assert GenerationRequest().sampling.sigmas is None and GenerationRequest().runtime == api.RequestRuntimeConfig()


def test_workload_type_is_checked_against_fastvideos_fixed_list():
    for workload in ("t2v", "i2v", "t2i", "i2i", "v2a", "t2a", None):
        assert parse_config(GeneratorConfig, {"pipeline": {"workload_type": workload}}).pipeline.workload_type \
            == workload
    with pytest.raises(ConfigError) as info:
        parse_config(GeneratorConfig, {"pipeline": {"workload_type": "t2x"}})
    assert info.value.path == "pipeline.workload_type"
    assert info.value.message.startswith("expected one of ['i2i', 'i2v', 't2a', 't2i', 't2v', 'v2a']")
    with pytest.raises(ConfigError) as info:
        parse_config(GeneratorConfig, {"engine": {"execution_backend": "slurm"}})
    assert str(info.value).startswith("engine.execution_backend: expected one of ['mp', 'ray']")


@pytest.mark.parametrize("data,path,start", [
    ({"sampling": {"num_videos_per_prompt": None}}, "sampling.num_videos_per_prompt",
     "expected int, got null (the field is not optional)"),
    ({"inputs": None}, "inputs", "expected mapping for InputConfig, got null"),
    ({"runtime": {"enable_teacache": None}}, "runtime.enable_teacache", "expected bool, got null"),
    ({"stage_overrides": None}, "stage_overrides", "expected mapping, got null"),
    ({"sampling": {"height_sr": None}}, "sampling.height_sr", "expected int, got null"),
    ({"plan": {"final_stage": "x"}}, "plan.stages", "missing required field"),
    ({"plan": {"stages": [{"name": "a"}]}}, "plan.stages[0].kind", "missing required field"),
])
def test_null_is_refused_where_the_field_is_not_optional(data, path, start):
    with pytest.raises(ConfigError) as info:
        parse_config(GenerationRequest, data)
    assert info.value.path == path and info.value.message.startswith(start), str(info.value)


def test_optional_fields_take_null_and_list_prompts_parse():
    req = parse_config(GenerationRequest, {"prompt": ["a", "b"], "negative_prompt": None, "plan": None,
                                           "sampling": {"sigmas": [1.0, 0.5], "cfg_truncation": None},
                                           "inputs": {"image_path": ["a.png", "b.png"]}})
    assert req.prompt == ["a", "b"] and req.sampling.sigmas == [1.0, 0.5] and req.sampling.cfg_truncation is None
    assert req.inputs.image_path == ["a.png", "b.png"]


# ----------------------------------------------------------------------------------------------- generator fields
def leaf_paths(cls: type, prefix: str = "") -> set[str]:
    out: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        inner = [t for t in typing.get_args(hints[f.name]) if t is not type(None)] or [hints[f.name]]
        nested = [t for t in inner if dataclasses.is_dataclass(t)]
        out |= leaf_paths(nested[0], path + ".") if nested else {path}
    return out


# (GeneratorConfig data, refused path, words of the message)
GENERATOR_REFUSED = [
    ({"revision": "main"}, "revision", "download that revision"),
    ({"engine": {"execution_backend": "ray"}}, "engine.execution_backend", "not supported yet"),
    ({"engine": {"parallelism": {"hsdp_replicate_dim": 2}}}, "engine.parallelism.hsdp_replicate_dim", "HSDP"),
    ({"engine": {"parallelism": {"hsdp_shard_dim": 4}}}, "engine.parallelism.hsdp_shard_dim", "HSDP"),
    ({"engine": {"offload": {"lazy_module_load": True}}}, "engine.offload.lazy_module_load", "not supported yet"),
    ({"engine": {"compile": {"extras": {"options": {}}}}}, "engine.compile.extras", "not supported yet"),
    ({"engine": {"compile": {"dit_kwargs": {"mode": "x"}}}}, "engine.compile.dit_kwargs", "not supported yet"),
    ({"engine": {"compile": {"vae_enabled": True}}}, "engine.compile.vae_enabled", "only the DiT"),
    ({"engine": {"compile": {"text_encoder_enabled": True}}}, "engine.compile.text_encoder_enabled", "only the DiT"),
    ({"engine": {"compile": {"audio_vae_enabled": True}}}, "engine.compile.audio_vae_enabled", "no audio VAE"),
    ({"engine": {"compile": {"vae_kwargs": {"a": 1}}}}, "engine.compile.vae_kwargs", "only the DiT"),
    ({"engine": {"quantization": {"text_encoder_quant": "FP8"}}}, "engine.quantization.text_encoder_quant",
     "not supported yet"),
    ({"pipeline": {"workload_type": "t2i"}}, "pipeline.workload_type", "use 't2v'"),
    ({"pipeline": {"preset_version": 1}}, "pipeline.preset_version", "one version"),
    ({"pipeline": {"vae_tiling": True}}, "pipeline.vae_tiling", "not supported yet"),
    ({"pipeline": {"preset_overrides": {"refine": {}}}}, "pipeline.preset_overrides", "not supported yet"),
    ({"pipeline": {"components": {"transformer_weights": "/w.safetensors"}}},
     "pipeline.components.transformer_weights", "transformer_path"),
    ({"pipeline": {"components": {"vae_weights": "/v"}}}, "pipeline.components.vae_weights", "vae_path"),
    ({"pipeline": {"components": {"text_encoder_weights": "/t"}}}, "pipeline.components.text_encoder_weights",
     "text_encoder_path"),
    ({"pipeline": {"components": {"transformer_2_weights": "/t"}}}, "pipeline.components.transformer_2_weights",
     "one transformer"),
    ({"pipeline": {"components": {"config_root": "/c"}}}, "pipeline.components.config_root", "not supported yet"),
    ({"pipeline": {"components": {"pipeline_config_path": "/p.json"}}}, "pipeline.components.pipeline_config_path",
     "not supported yet"),
    ({"pipeline": {"components": {"lora_nickname": "x"}}}, "pipeline.components.lora_nickname", "lora_path"),
    ({"pipeline": {"components": {"lora_strength": 0.5}}}, "pipeline.components.lora_strength", "lora_path"),
    ({"pipeline": {"components": {"override_pipeline_cls_name": "P"}}},
     "pipeline.components.override_pipeline_cls_name", "not supported yet"),
    ({"pipeline": {"components": {"override_transformer_cls_name": "T"}}},
     "pipeline.components.override_transformer_cls_name", "not supported yet"),
]


def test_every_generator_field_is_classified():
    assert set(FIELD_SUPPORT) == leaf_paths(GeneratorConfig)


@pytest.mark.parametrize("data,path,words", GENERATOR_REFUSED, ids=[r[1] for r in GENERATOR_REFUSED])
def test_a_fastvideo_generator_field_we_cannot_honour_is_refused_by_name(data, path, words):
    config = parse_config(GeneratorConfig, data)  # the parser accepts it...
    with pytest.raises(ConfigError) as info:  # ...and from_config refuses it, naming it
        check_generator_config(config, device_type="cpu")
    assert info.value.path == path and words in str(info.value), str(info.value)


def test_fastvideo_generator_values_that_change_nothing_pass():
    """Values FastVideo users write that are honoured here (defaults, auto, no-ops with a reason in the table)."""
    check_generator_config(parse_config(GeneratorConfig, {
        "revision": None, "trust_remote_code": True,
        "engine": {"execution_backend": "mp", "enable_stage_verification": False,
                   "parallelism": {"tp_size": -1, "sp_size": 1, "hsdp_replicate_dim": 1, "hsdp_shard_dim": 1,
                                   "dist_timeout": 600},
                   "offload": {"lazy_module_load": False},
                   "compile": {"backend": None, "fullgraph": None, "text_encoder_enabled": False,
                               "vae_enabled": None},
                   "quantization": {"text_encoder_quant": None, "transformer_quant": None}},
        "pipeline": {"workload_type": "t2v", "vae_tiling": False,
                     "components": {"lora_nickname": "default", "lora_strength": 1.0}}}), device_type="cpu")
    compile_cfg = parse_config(api.CompileConfig, {"backend": None, "fullgraph": None})
    assert (compile_cfg.backend, compile_cfg.fullgraph) == ("inductor", False)  # torch.compile's defaults


def test_from_config_refuses_a_fastvideo_field_before_reading_weights(tmp_path):
    with pytest.raises(ConfigError) as info:
        from fastvideo import VideoGenerator

        VideoGenerator.from_config({"model_path": str(tmp_path / "none"), "engine": {"device": "cpu"},
                                    "revision": "v1.0"})
    assert info.value.path == "revision"


# ------------------------------------------------------------------------------------------------- request fields
def request_leaf_paths() -> set[str]:
    return leaf_paths(GenerationRequest)


def test_every_request_field_is_classified():
    assert set(REQUEST_FIELD_SUPPORT) == request_leaf_paths()


REQUEST_REFUSED = [
    ({"prompt": ["a", "b"]}, "prompt", "one request per prompt"),
    ({"inputs": {"prompt_path": "prompts.txt"}}, "inputs.prompt_path", "not supported yet"),
    ({"inputs": {"last_image": "x.png"}}, "inputs.last_image", "text-to-video"),
    ({"inputs": {"pose": "p"}}, "inputs.pose", "not supported yet"),
    ({"sampling": {"guidance_scale_2": 3.0}}, "sampling.guidance_scale_2", "has one expert"),
    ({"sampling": {"boundary_ratio": 0.875}}, "sampling.boundary_ratio", "has one expert"),
    ({"sampling": {"sigmas": [1.0, 0.5, 0.0]}}, "sampling.sigmas", "sampling.shift"),
    ({"sampling": {"num_videos_per_prompt": 2}}, "sampling.num_videos_per_prompt", "one request per video"),
    ({"sampling": {"max_sequence_length": 226}}, "sampling.max_sequence_length", "512 tokens"),
    ({"sampling": {"height_sr": 2160}}, "sampling.height_sr", "super-resolution"),
    ({"sampling": {"width_sr": 3840}}, "sampling.width_sr", "super-resolution"),
    ({"sampling": {"num_inference_steps_sr": 8}}, "sampling.num_inference_steps_sr", "super-resolution"),
    ({"sampling": {"cfg_normalization": True}}, "sampling.cfg_normalization", "not supported yet"),
    ({"sampling": {"cfg_truncation": 0.5}}, "sampling.cfg_truncation", "not supported yet"),
    ({"sampling": {"guidance_rescale": 0.7}}, "sampling.guidance_rescale", "not supported yet"),
    ({"sampling": {"use_embedded_guidance": True}}, "sampling.use_embedded_guidance", "embedded guidance"),
    ({"runtime": {"enable_teacache": True, "teacache_thresh": -0.1}}, "runtime.teacache_thresh", "finite number >= 0"),
    ({"runtime": {"enable_teacache": True, "teacache_coefficients": []}}, "runtime.teacache_coefficients",
     "non-empty list"),
    ({"runtime": {"return_trajectory_latents": True}}, "runtime.return_trajectory_latents", "not supported yet"),
    ({"runtime": {"return_trajectory_decoded": True}}, "runtime.return_trajectory_decoded", "not supported yet"),
    ({"output": {"output_video_name": "fox"}}, "output.output_video_name", "output.output_path"),
    ({"stage_overrides": {"denoise": {"num_inference_steps": 4}}}, "stage_overrides.denoise", "not supported yet"),
    ({"plan": {"stages": [{"name": "denoise", "kind": "denoising"}]}}, "plan", "not supported yet"),
    ({"extensions": {"mouse_sensitivity": 2}}, "extensions.mouse_sensitivity", "not supported yet"),
]


@pytest.mark.parametrize("data,path,words", REQUEST_REFUSED, ids=[r[1] for r in REQUEST_REFUSED])
def test_a_fastvideo_request_field_we_cannot_honour_is_refused_by_name(data, path, words):
    request = parse_config(GenerationRequest, {"prompt": "a fox", **data})
    with pytest.raises(RequestError) as info:
        check_request_fields(request, "wan2.1-t2v-1.3b")
    assert info.value.field == path and words in str(info.value), str(info.value)


def test_fastvideo_request_defaults_and_no_op_values_pass():
    check_request_fields(GenerationRequest(prompt="a fox"), "m")
    check_request_fields(parse_config(GenerationRequest, {
        "prompt": "a fox", "sampling": {"batch_cfg": True, "cfg_truncation": None, "max_sequence_length": 512,
                                        "use_embedded_guidance": False, "true_cfg_scale": 1.0},
        "runtime": {"enable_teacache": False}, "stage_overrides": {}, "extensions": {}, "plan": None}), "m")


@pytest.mark.parametrize("data,path", [({"sampling": {"sigmas": [1.0, 0.0]}}, "sampling.sigmas"),
                                       ({"sampling": {"guidance_scale_2": 3.0}}, "sampling.guidance_scale_2"),
                                       ({"runtime": {"enable_teacache": True, "teacache_thresh": float("nan")}},
                                        "runtime.teacache_thresh")])
def test_the_generator_refuses_them_before_any_compute(tiny_generator, data, path):
    """Through the real entry point: the refusal names the field (and the single-expert model)."""
    with pytest.raises(RequestError) as info:
        tiny_generator.generate({"prompt": "a fox", "sampling": {"num_inference_steps": 1}, **data})
    assert info.value.field == path
