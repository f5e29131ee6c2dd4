"""FastVideo's serve schema and config documents (issue 14 items 1-3), written from its documented contract
(zeyuanyin/FastVideo@1c4c97ba ``fastvideo/api/{schema,parser,overrides}.py``, ``entrypoints/cli``):

- one public ``ServeConfig`` (FastVideo's ``generator``/``server``/``default_request``/``streaming`` plus this
  server's ``queue``/``pool``/``state``), the same class in ``fastvideo.api`` and ``fastvideo.serving.config``;
- every serve field classified, and FastVideo values this server cannot honour refused by name when it starts;
- ``load_serve_config`` for YAML and JSON with dotted overrides; ``fastvideo serve --config serve.yaml
  --server.port 8001`` alongside today's flags (flags win), parsed end to end through the CLI's ``main``;
- round trips both ways: ``config_to_dict`` output parses back, and documents in FastVideo's own shape (its
  ``config_to_dict`` output, its documented YAML/JSON examples) parse with ours.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from pathlib import Path

import pytest

import fastvideo.api as api
from schema_defaults import REQUIRED, field_defaults
from fastvideo.api import (
    ConfigError,
    GenerationRequest,
    GeneratorConfig,
    RunConfig,
    ServeConfig,
    config_to_dict,
    load_run_config,
    load_serve_config,
    parse_config,
)

@pytest.fixture(autouse=True)
def _restore_root_logging():
    """``fastvideo.serving.cli.main`` configures logging on the stream it sees (here a capture that closes after
    the test): take those handlers away again, so later tests do not log into a closed stream."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)
    root.setLevel(level)


SERVE_NAMES = ["ServeConfig", "ServerConfig", "StreamingConfig", "WarmupConfig", "GpuPoolConfig",
               "PromptEnhancerConfig", "PromptSafetyConfig", "load_serve_config"]

FASTVIDEO_SERVE_DEFAULTS: dict[str, dict[str, object]] = {
    "ServeConfig": {"default_request": GenerationRequest()},
    "ServerConfig": {"port": 8000, "served_model_name": None},
    "WarmupConfig": {"enabled": True, "timeout_seconds": 2400,
                     "prompt": "A cinematic drone shot over coastal cliffs at sunrise, golden light, gentle ocean "
                               "waves, ultra detailed"},
    "GpuPoolConfig": {"num_workers": None, "enable_audio_reencode": True, "conditioning_num_frames": 9,
                      "conditioning_end_offset": 0},
    "PromptEnhancerConfig": {"enabled": False, "provider": "cerebras", "model": "gpt-oss-120b", "timeout_ms": 20000,
                             "system_prompt_dir": None},
    "PromptSafetyConfig": {"enabled": False, "classifier_path": None},
    "StreamingConfig": {"session_timeout_seconds": 300, "generation_segment_cap": 6, "stream_mode": "av_fmp4",
                        "warmup": api.WarmupConfig(), "pool": api.GpuPoolConfig(),
                        "prompt": api.PromptEnhancerConfig(), "safety": api.PromptSafetyConfig()},
}
# Documented divergences (README "Coming from FastVideo"): field -> (ours, FastVideo's).
DIVERGENT = {"ServerConfig": {"host": ("127.0.0.1", "0.0.0.0"), "output_dir": ("outputs/serving", "outputs/")},
             "ServeConfig": {"generator": (GeneratorConfig(), REQUIRED), "streaming": (api.StreamingConfig(), None)}}


@pytest.mark.parametrize("name", SERVE_NAMES)
def test_serve_names_are_exported(name):
    assert name in api.__all__ and getattr(api, name) is not None


@pytest.mark.parametrize("name", sorted(FASTVIDEO_SERVE_DEFAULTS))
def test_every_fastvideo_serve_field_exists_with_its_default(name):
    got = field_defaults(getattr(api, name))
    for field, default in FASTVIDEO_SERVE_DEFAULTS[name].items():
        assert field in got and got[field] == default, f"{name}.{field}: {got.get(field)!r} != {default!r}"
    for field, (ours, _theirs) in DIVERGENT.get(name, {}).items():
        assert got[field] == ours, f"{name}.{field}"


def test_nesting_follows_fastvideo_and_the_serve_config_is_one_class():
    from fastvideo.runtime.pool import PoolConfig
    from fastvideo.runtime.scheduler import SchedulerConfig
    from fastvideo.serving import config as serving_config

    hints = typing.get_type_hints(ServeConfig)
    assert (hints["generator"], hints["server"], hints["default_request"], hints["streaming"]) == (
        GeneratorConfig, api.ServerConfig, GenerationRequest, api.StreamingConfig)
    streaming = typing.get_type_hints(api.StreamingConfig)
    assert (streaming["warmup"], streaming["pool"], streaming["prompt"], streaming["safety"]) == (
        api.WarmupConfig, api.GpuPoolConfig, api.PromptEnhancerConfig, api.PromptSafetyConfig)
    # one class each: the serving module and the runtime re-export the public ones
    assert serving_config.ServeConfig is ServeConfig and serving_config.ServerConfig is api.ServerConfig
    assert serving_config.StreamingConfig is api.StreamingConfig
    assert hints["queue"] is SchedulerConfig is serving_config.QueueConfig and hints["pool"] is PoolConfig
    assert hints["state"] is serving_config.StateConfig
    # the limits of the HTTP edge live on in the public ServerConfig
    assert api.ServerConfig().max_prompt_chars == api.MAX_PROMPT_CHARS and api.ServerConfig().max_body_bytes > 0


def test_streaming_null_reads_as_the_defaults():
    """FastVideo's config_to_dict(ServeConfig(...)) writes ``streaming: null`` when there is no streaming section."""
    config = parse_config(ServeConfig, {"generator": {"model_path": "/m"}, "streaming": None})
    assert config.streaming == api.StreamingConfig()


# ------------------------------------------------------------------------------------------- field support
def _leaves(cls: type, prefix: str = "") -> set[str]:
    out: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner = [t for t in typing.get_args(hints[f.name]) if t is not type(None)] or [hints[f.name]]
        nested = [t for t in inner if dataclasses.is_dataclass(t)]
        out |= _leaves(nested[0], f"{prefix}{f.name}.") if nested else {prefix + f.name}
    return out


def test_every_serve_field_is_classified():
    from fastvideo.serving.config import SERVE_FIELD_SUPPORT

    expected = {p for p in _leaves(ServeConfig) if not p.startswith(("generator.", "default_request."))}
    assert set(SERVE_FIELD_SUPPORT) == expected | {"default_request"}


SERVE_REFUSED = [
    ({"streaming": {"stream_mode": "legacy_jpeg"}}, "streaming.stream_mode", "av_fmp4"),
    ({"streaming": {"session_timeout_seconds": 60}}, "streaming.session_timeout_seconds", "idle_timeout_s"),
    ({"streaming": {"generation_segment_cap": 0}}, "streaming.generation_segment_cap", ">= 1"),
    ({"streaming": {"warmup": {"enabled": False}}}, "streaming.warmup.enabled", "server.warmup"),
    ({"streaming": {"warmup": {"prompt": "x"}}}, "streaming.warmup.prompt", "health-check"),
    ({"streaming": {"warmup": {"timeout_seconds": 60}}}, "streaming.warmup.timeout_seconds", "not supported yet"),
    ({"streaming": {"pool": {"num_workers": 2}}}, "streaming.pool.num_workers", "pool.devices"),
    ({"streaming": {"pool": {"conditioning_num_frames": 5}}}, "streaming.pool.conditioning_num_frames",
     "continuation state"),
    ({"streaming": {"prompt": {"enabled": True, "provider": "openai_compatible"}}}, "streaming.prompt.base_url",
     "needs the base URL"),  # the prompt enhancer's other refusals: tests/serving/test_prompt_enhancer.py
    ({"streaming": {"safety": {"enabled": True}}}, "streaming.safety.classifier_path", "is required"),
    ({"default_request": {"sampling": {"guidance_scale_2": 3.0}}}, "default_request.sampling.guidance_scale_2",
     "not supported yet"),
    ({"default_request": {"runtime": {"enable_teacache": True}}}, "default_request.runtime.enable_teacache",
     "each request"),
]  # the default_request fields honoured: tests/serving/test_serve_default_request.py


@pytest.mark.parametrize("data,path,words", SERVE_REFUSED, ids=[r[1] for r in SERVE_REFUSED])
def test_a_fastvideo_serve_value_we_cannot_honour_parses_and_is_refused_at_load_by_name(data, path, words):
    from fastvideo.serving.config import check_serve_config

    config = parse_config(ServeConfig, data)  # FastVideo's parser would take it, so does ours
    with pytest.raises(ConfigError) as info:
        check_serve_config(config)
    assert info.value.path == path and words in str(info.value), str(info.value)


def test_fastvideo_serve_values_that_change_nothing_pass():
    from fastvideo.serving.config import check_serve_config

    check_serve_config(parse_config(ServeConfig, {
        "default_request": {"negative_prompt": "blurry", "sampling": {"num_frames": 81, "seed": 1024},
                            "output": {"save_video": False, "return_frames": False}},
        "streaming": {"pool": {"enable_audio_reencode": False},
                      "prompt": {"enabled": False, "provider": "groq", "model": "m", "timeout_ms": 5},
                      "safety": {"enabled": False, "classifier_path": "/c"}}}))


# ------------------------------------------------------------------------------------------- round trips
def test_config_to_dict_parses_back_for_every_document():
    run = RunConfig(generator=GeneratorConfig(model_path="/m"), request=GenerationRequest(prompt=["a", "b"]))
    run.request.sampling.sigmas = [1.0, 0.5]
    run.request.plan = api.GenerationPlan(stages=[api.PlannedStage(name="denoise", kind="denoising")])
    run.generator.engine.compile.extras = {"options": {"x": 1}}
    serve = ServeConfig(generator=GeneratorConfig(model_path="/m"))
    serve.streaming.warmup.timeout_seconds = 10
    serve.queue.max_batch = 2
    for obj in (run, serve, run.generator, run.request, serve.streaming):
        data = json.loads(json.dumps(config_to_dict(obj)))
        assert parse_config(type(obj), data) == obj


def fastvideo_generator_dict(model_path: str) -> dict:
    """What FastVideo's ``config_to_dict(GeneratorConfig(model_path=...))`` writes: every field at its default."""
    return {
        "model_path": model_path, "revision": None, "trust_remote_code": False,
        "engine": {"num_gpus": 1, "execution_backend": "mp",
                   "parallelism": {"tp_size": -1, "sp_size": -1, "hsdp_replicate_dim": 1, "hsdp_shard_dim": -1,
                                   "dist_timeout": None},
                   "offload": {"dit": True, "dit_layerwise": True, "text_encoder": True, "image_encoder": True,
                               "vae": True, "pin_cpu_memory": True, "lazy_module_load": None},
                   "compile": {"enabled": False, "backend": None, "fullgraph": None, "mode": None, "dynamic": None,
                               "extras": {}, "text_encoder_enabled": None, "vae_enabled": None,
                               "audio_vae_enabled": None, "dit_kwargs": {}, "text_encoder_kwargs": {},
                               "vae_kwargs": {}, "audio_vae_kwargs": {}},
                   "enable_stage_verification": True, "use_fsdp_inference": False, "disable_autocast": False,
                   "quantization": None},
        "pipeline": {"workload_type": None, "preset": None, "preset_version": None,
                     "components": {"config_root": None, "pipeline_config_path": None, "text_encoder_weights": None,
                                    "transformer_weights": None, "transformer_2_weights": None, "vae_weights": None,
                                    "upsampler_weights": None, "lora_path": None, "lora_nickname": "default",
                                    "lora_strength": 1.0, "override_pipeline_cls_name": None,
                                    "override_transformer_cls_name": None},
                     "vae_tiling": None, "preset_overrides": {}, "experimental": {}},
    }


def fastvideo_request_dict(prompt: str) -> dict:
    """What FastVideo's ``config_to_dict(GenerationRequest(prompt=...))`` writes (its schema defaults)."""
    return {
        "prompt": prompt, "negative_prompt": None,
        "inputs": {name: None for name in api.InputConfig.__dataclass_fields__},
        "sampling": {"num_videos_per_prompt": 1, "seed": 1024, "max_sequence_length": None, "num_frames": 125,
                     "height": 720, "width": 1280, "height_sr": 1072, "width_sr": 1920, "fps": 24,
                     "num_inference_steps": 50, "num_inference_steps_sr": 50, "guidance_scale": 1.0,
                     "batch_cfg": False, "guidance_scale_2": None, "cfg_normalization": False,
                     "cfg_truncation": 1.0, "guidance_rescale": 0.0, "true_cfg_scale": None,
                     "use_embedded_guidance": None, "boundary_ratio": None, "sigmas": None},
        "runtime": {"enable_teacache": False, "return_trajectory_latents": False, "return_trajectory_decoded": False},
        "output": {"output_path": "outputs/", "output_video_name": None, "save_video": True, "return_frames": True,
                   "return_state": False},
        "stage_overrides": {}, "state": None, "plan": None, "extensions": {},
    }


def test_documents_in_fastvideos_shape_parse_with_ours():
    """FastVideo's config_to_dict output (every field written, its defaults) parses with our parse_config."""
    generator = parse_config(GeneratorConfig, fastvideo_generator_dict("/models/wan"))
    assert generator.model_path == "/models/wan" and generator.engine.offload.vae is True
    assert (generator.engine.compile.backend, generator.engine.compile.fullgraph) == ("inductor", False)
    request = parse_config(GenerationRequest, fastvideo_request_dict("a fox"))
    assert (request.sampling.seed, request.sampling.num_frames, request.output.save_video) == (1024, 125, True)
    serve = parse_config(ServeConfig, {"generator": fastvideo_generator_dict("/m"),
                                       "server": {"host": "0.0.0.0", "port": 8000, "output_dir": "outputs/",
                                                  "served_model_name": None},
                                       "default_request": fastvideo_request_dict("x"), "streaming": None})
    assert serve.server.host == "0.0.0.0" and serve.streaming == api.StreamingConfig()
    run = parse_config(RunConfig, {"generator": fastvideo_generator_dict("/m"), "request": fastvideo_request_dict("p")})
    assert parse_config(RunConfig, config_to_dict(run)) == run  # and back again


# Documents written the way FastVideo's docs and examples write them (examples/serving/*.yaml, inference YAMLs).
FASTVIDEO_SERVE_YAML = """
# an OpenAI-compatible server for a Wan 2.1 1.3B folder
generator:
  model_path: /models/Wan2.1-T2V-1.3B-Diffusers
  engine:
    num_gpus: 1
    parallelism: {tp_size: 1, sp_size: 1}
    offload: {dit: false, vae: false, pin_cpu_memory: false}
    compile: {enabled: false}
  pipeline:
    workload_type: t2v
server:
  host: 0.0.0.0
  port: 8000
  output_dir: outputs/wan21
  served_model_name: wan21-1.3b
streaming:
  session_timeout_seconds: 300
  generation_segment_cap: 6
  stream_mode: av_fmp4
  warmup: {enabled: true, timeout_seconds: 2400}
  pool: {num_workers: null, enable_audio_reencode: true, conditioning_num_frames: 9, conditioning_end_offset: 0}
  prompt: {enabled: false, provider: cerebras, model: gpt-oss-120b, timeout_ms: 20000}
  safety: {enabled: false}
"""

FASTVIDEO_RUN_JSON = {
    "generator": {"model_path": "/models/Wan2.1-T2V-1.3B-Diffusers", "engine": {"num_gpus": 1},
                  "pipeline": {"workload_type": "t2v"}},
    "request": {"prompt": "A drone shot over cliffs at sunrise.",
                "sampling": {"height": 480, "width": 832, "num_frames": 81, "fps": 16, "guidance_scale": 3.0,
                             "num_inference_steps": 50, "seed": 1024},
                "output": {"output_path": "outputs/cliffs.mp4", "save_video": True}},
}


def test_fastvideo_serve_yaml_loads_with_overrides(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(FASTVIDEO_SERVE_YAML)
    config = load_serve_config(path, ["--server.port", "8001", "--generator.engine.dtype=bf16",
                                      "--queue.max_batch", "2", "--engine.device", "cpu"])
    assert (config.server.port, config.server.host, config.server.served_model_name) == (8001, "0.0.0.0",
                                                                                        "wan21-1.3b")
    assert config.generator.model_path == "/models/Wan2.1-T2V-1.3B-Diffusers"
    assert (config.generator.engine.dtype, config.generator.engine.device, config.queue.max_batch) == ("bf16", "cpu",
                                                                                                       2)
    assert config.streaming.stream_mode == "av_fmp4" and config.streaming.warmup == api.WarmupConfig()
    from fastvideo.serving.config import check_serve_config

    check_serve_config(config)  # nothing in it this server cannot honour
    with pytest.raises(ConfigError) as info:
        load_serve_config(path, {"server.prot": 1})
    assert info.value.path == "server.prot" and info.value.message.startswith("unknown field")


def test_serve_json_and_top_level_generator_keys(tmp_path):
    path = tmp_path / "serve.JSON"
    path.write_text(json.dumps({"model_path": "/m", "engine": {"dtype": "fp16"}, "server": {"port": 9}}))
    config = load_serve_config(path)
    assert (config.generator.model_path, config.generator.engine.dtype, config.server.port) == ("/m", "fp16", 9)


def test_fastvideo_run_json_loads_with_overrides(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(FASTVIDEO_RUN_JSON))
    run = load_run_config(path, ["--request.sampling.seed", "3"])
    assert run.request.sampling.seed == 3 and run.request.sampling.num_frames == 81
    assert run.generator.pipeline.workload_type == "t2v"


# ---------------------------------------------------------------------------------- fastvideo serve on the CLI
@pytest.fixture
def captured_serve(monkeypatch):
    """``fastvideo serve`` up to the point it would start the server: the ServeConfig it built."""
    got: dict = {}

    def fake_run_server(config):
        got["config"] = config
        return 0

    import fastvideo.serving.server as server

    monkeypatch.setattr(server, "run_server", fake_run_server)
    monkeypatch.setattr("fastvideo.serving.observability.setup_server_logging", lambda *a, **k: None)
    return got


def test_serve_dotted_flags_end_to_end(tmp_path, captured_serve, capsys):
    from fastvideo.serving.cli import main

    path = tmp_path / "serve.yaml"
    path.write_text(FASTVIDEO_SERVE_YAML)
    assert main(["serve", "--config", str(path), "--server.port", "8001", "--streaming.max_sessions=2"]) == 0
    config = captured_serve["config"]
    assert isinstance(config, ServeConfig) and config.server.port == 8001 and config.streaming.max_sessions == 2
    assert config.generator.model_path == "/models/Wan2.1-T2V-1.3B-Diffusers"
    # today's flags win over the file and the dotted flags; KEY=VALUE overrides win over the flags
    assert main(["serve", "--config", str(path), "--server.port", "8001", "--port", "8002", "--host", "127.0.0.1",
                 "--generator.engine.dtype", "bf16", "--dtype", "fp16"]) == 0
    config = captured_serve["config"]
    assert (config.server.port, config.server.host, config.generator.engine.dtype) == (8002, "127.0.0.1", "fp16")
    assert main(["serve", "--config", str(path), "--port", "8002", "server.port=8003"]) == 0
    assert captured_serve["config"].server.port == 8003


@pytest.mark.parametrize("argv,words", [
    (["--server.prot", "1"], "server.prot: unknown field"),
    (["--streaming.prompt.enabled", "true", "--streaming.prompt.provider", "openai_compatible"],
     "streaming.prompt.base_url: an openai_compatible provider needs"),
    (["--server.port", "eighty"], "server.port: expected an integer"),
    (["--default_request.extensions.k", "3"], "default_request.extensions.k: is not supported yet"),
])
def test_serve_dotted_flag_errors_exit_2_naming_the_key(tmp_path, captured_serve, capsys, argv, words):
    from fastvideo.serving.cli import main

    path = tmp_path / "serve.yaml"
    path.write_text(FASTVIDEO_SERVE_YAML)
    assert main(["serve", "--config", str(path), *argv]) == 2
    assert words in capsys.readouterr().err and "config" not in captured_serve


def test_serve_config_file_errors_exit_2(tmp_path, captured_serve, capsys):
    from fastvideo.serving.cli import main

    assert main(["serve", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "config: Config file not found" in capsys.readouterr().err
    (tmp_path / "serve.toml").write_text("x = 1")
    assert main(["serve", "--config", str(tmp_path / "serve.toml")]) == 2
    assert "Unsupported config file format" in capsys.readouterr().err


def test_other_commands_refuse_dotted_flags(tmp_path):
    from fastvideo.serving.cli import main

    with pytest.raises(SystemExit) as info:
        main(["router-serve", "--config", str(tmp_path / "r.yaml"), "--server.port", "1"])
    assert info.value.code == 2


def test_split_dotted_overrides_keeps_flags_and_values_apart():
    from fastvideo.serving.cli import split_dotted_overrides

    rest, dotted = split_dotted_overrides(["serve", "--config", "s.yaml", "--server.port", "8001", "--port", "1",
                                           "--a.b=-3", "--c.d", "-3", "x=1"])
    assert rest == ["serve", "--config", "s.yaml", "--port", "1", "x=1"]
    assert dotted == ["--server.port", "8001", "--a.b=-3", "--c.d", "-3"]


def test_router_config_uses_the_same_loader_and_override_parser(tmp_path):
    from fastvideo.serving.config import load_router_config

    path = tmp_path / "router.yaml"
    path.write_text("router:\n  replicas: [{url: 'http://127.0.0.1:8000'}]\n")
    config = load_router_config(path, ["port=9001", "health_check.interval_s=1e-1"])
    assert config.port == 9001 and config.health_check.interval_s == 0.1  # 1e-1 is a float, as FastVideo casts
    with pytest.raises(ConfigError) as info:
        load_router_config(path, ["port"])
    assert info.value.path == "overrides"
    with pytest.raises(ConfigError) as info:
        load_router_config(Path(tmp_path / "none.yaml"))
    assert info.value.path == "config" and "Config file not found" in str(info.value)


# ------------------------------------------------------------------------ fastvideo generate: several prompts
def _run_file(tmp_path: Path, model_dir: Path, request: dict) -> Path:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({
        "generator": {"model_path": str(model_dir), "engine": {"device": "cpu", "dtype": "fp32"}},
        "request": {"sampling": {"width": 32, "height": 32, "num_frames": 1, "num_inference_steps": 1, "seed": 1},
                    "output": {"output_path": str(tmp_path / "clip.mp4")}, **request}}))
    return path


@pytest.mark.parametrize("kind", ["list", "prompt_path"])
def test_generate_runs_a_fastvideo_run_config_with_several_prompts(tiny_model_dir, tmp_path, capsys, kind):
    """FastVideo's run configs may give a prompt list or ``inputs.prompt_path`` (one prompt per line): one video
    each, numbered after the output file."""
    from fastvideo.serving.cli import main

    if kind == "list":
        request: dict = {"prompt": ["a fox", "a boat"]}
    else:
        (tmp_path / "prompts.txt").write_text("a fox\n\na boat\n")
        request = {"inputs": {"prompt_path": str(tmp_path / "prompts.txt")}}
    assert main(["generate", "--config", str(_run_file(tmp_path, tiny_model_dir, request)), "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert [Path(r["video_path"]).name for r in reports] == ["clip_0.mp4", "clip_1.mp4"]
    assert all(Path(r["video_path"]).stat().st_size > 0 for r in reports)


def test_generate_prompt_flag_replaces_the_files_prompts(tiny_model_dir, tmp_path, capsys):
    from fastvideo.serving.cli import main

    (tmp_path / "prompts.txt").write_text("a fox\na boat\n")
    path = _run_file(tmp_path, tiny_model_dir, {"inputs": {"prompt_path": str(tmp_path / "prompts.txt")}})
    assert main(["generate", "--config", str(path), "--prompt", "a cat", "--json"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["video_path"]).name == "clip.mp4"
    assert main(["generate", "--config", str(_run_file(tmp_path, tiny_model_dir, {}))]) == 2
    assert "request.prompt: is required" in capsys.readouterr().err


def test_run_server_refuses_a_programmatic_config_before_loading_the_model(tmp_path):
    """A ServeConfig built in Python (no loader) is checked too, before any model loads (the folder does not
    exist, else this would be a ModelLoadError)."""
    from fastvideo.serving.server import run_server

    config = ServeConfig(generator=GeneratorConfig(model_path=str(tmp_path / "no-model")),
                         default_request=GenerationRequest(stage_overrides={"denoise": {"guidance_scale": 2}}))
    config.server.output_dir = str(tmp_path / "out")
    with pytest.raises(ConfigError) as info:
        run_server(config)
    assert info.value.path == "default_request.stage_overrides.denoise"
