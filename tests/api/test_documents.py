"""Config documents as FastVideo's ``fastvideo.api`` has them: RunConfig, YAML/JSON files, dotted CLI overrides, and
the parser's error wording (``unknown field``, ``missing required field``, ``expected one of [...]``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastvideo.api import ConfigError, GeneratorConfig, GenerationRequest, config_to_dict, parse_config
from fastvideo.api.documents import RunConfig, apply_overrides, load_raw_config, load_run_config, parse_cli_overrides
from fastvideo.api.parse import ConfigValidationError

RUN_YAML = """
generator:
  model_path: /models/wan
  engine: {dtype: bf16}
request:
  prompt: a fox in snow
  sampling: {num_frames: 9, seed: 7}
"""


def test_config_validation_error_is_the_one_config_error_with_path_and_message():
    assert ConfigError is ConfigValidationError and issubclass(ConfigValidationError, ValueError)
    err = ConfigValidationError("request.sampling.seed", "expected int")
    assert (err.path, err.message, str(err)) == ("request.sampling.seed", "expected int",
                                                 "request.sampling.seed: expected int")
    assert str(ConfigValidationError("", "expected mapping for RunConfig")) == "expected mapping for RunConfig"


@pytest.mark.parametrize("data,path,start", [
    ({"generator": {}, "request": {"prompt": "p", "sampling": {"sedd": 1}}}, "request.sampling.sedd",
     "unknown field"),
    ({"generator": {}}, "request", "missing required field"),
    ({"generator": {"pipeline": {"workload_type": "t2v"}, "engine": {"dtype": "fp8"}}, "request": {}},
     "generator.engine.dtype", "expected one of ['auto', 'bf16', 'fp16', 'fp32']"),
    ({"generator": {}, "request": {"prompt": "p", "sampling": {"seed": None}, "output": None}}, "request.output",
     "expected mapping for OutputConfig"),  # null for a field that is not optional
    ({"generator": {"engine": {1: 2}}, "request": {}}, "generator.engine", "expected mapping keys to be strings"),
])
def test_parser_errors_use_the_reference_wording_at_the_dotted_path(data, path, start):
    with pytest.raises(ConfigValidationError) as info:
        parse_config(RunConfig, data)
    assert info.value.path == path and info.value.message.startswith(start), str(info.value)


def test_cli_overrides_cast_like_the_reference():
    tokens = ["--request.sampling.seed", "3", "--generator.engine.dtype=bf16", "--a.flag", "TRUE", "--a.none", "null",
              "--a.ratio", "1e-3", "--a.list", "[1, 2]", "--a.map={x: 1}", "--a.text", "[not yaml", "--a.dash-key", "x",
              "--request.sampling.seed", "4"]
    assert parse_cli_overrides(tokens) == {
        "request.sampling.seed": 4, "generator.engine.dtype": "bf16", "a.flag": True, "a.none": None,
        "a.ratio": 1e-3, "a.list": [1, 2], "a.map": {"x": 1}, "a.text": "[not yaml", "a.dash_key": "x"}
    for bad, message in ((["seed", "3"], "Expected --dotted.key, got 'seed'"), (["--=3"], "key cannot be empty"),
                         (["--request.sampling.seed"], "Missing value for override '--request.sampling.seed'")):
        with pytest.raises(ValueError, match=message):
            parse_cli_overrides(bad)


def test_apply_overrides_sets_dotted_keys_on_a_copy():
    base = {"request": {"prompt": "p", "sampling": None}, "generator": {"model_path": "x"}}
    out = apply_overrides(base, {"request.sampling.seed": 3, "generator.engine.dtype": "bf16"})
    assert out["request"]["sampling"] == {"seed": 3} and out["generator"]["engine"] == {"dtype": "bf16"}
    assert base["request"]["sampling"] is None  # the input is untouched
    with pytest.raises(ConfigValidationError) as info:
        apply_overrides(base, {"generator.model_path.deep": 1})
    assert info.value.path == "generator.model_path" and "non-mapping" in info.value.message
    with pytest.raises(ValueError, match="Invalid override path"):
        apply_overrides(base, {"a..b": 1})


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json", ".YAML"])
def test_run_config_files_with_overrides(tmp_path: Path, suffix: str):
    import yaml

    path = tmp_path / f"run{suffix}"
    data = yaml.safe_load(RUN_YAML)
    path.write_text(json.dumps(data) if suffix == ".json" else RUN_YAML)
    run = load_run_config(path, ["--request.sampling.seed", "3", "--generator.engine.device=cpu"])
    assert isinstance(run.generator, GeneratorConfig) and isinstance(run.request, GenerationRequest)
    assert (run.generator.model_path, run.generator.engine.dtype, run.generator.engine.device) == (
        "/models/wan", "bf16", "cpu")
    assert (run.request.prompt, run.request.sampling.num_frames, run.request.sampling.seed) == ("a fox in snow", 9, 3)
    assert parse_config(RunConfig, config_to_dict(run)) == run  # round trip
    assert load_run_config(path, {"request.prompt": "waves"}).request.prompt == "waves"


def test_bad_config_files_say_what_is_wrong(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="Config file not found"):
        load_raw_config(tmp_path / "missing.yaml")
    (tmp_path / "run.toml").write_text("x = 1")
    with pytest.raises(ValueError, match="Unsupported config file format"):
        load_raw_config(tmp_path / "run.toml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_raw_config(tmp_path / "empty.yaml") == {}
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigValidationError, match="must contain a top-level mapping"):
        load_raw_config(tmp_path / "list.json")
    (tmp_path / "broken.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigValidationError, match="is not valid YAML"):
        load_raw_config(tmp_path / "broken.yaml")
    (tmp_path / "run.yaml").write_text(RUN_YAML)
    with pytest.raises(ConfigValidationError) as info:
        load_run_config(tmp_path / "run.yaml", ["--request.sampling.sedd", "1"])
    assert str(info.value).startswith("request.sampling.sedd: unknown field")
