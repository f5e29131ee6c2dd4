"""Every GeneratorConfig field works or is refused by name: the refusal table, the accepted values, and
component path overrides loading from their own folders (built-in tiny model)."""

from __future__ import annotations

import dataclasses
import shutil
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fastvideo import VideoGenerator
from fastvideo.api import ConfigError, GeneratorConfig, ModelLoadError, QuantizationConfig, parse_config
from fastvideo.runtime.config_support import FIELD_SUPPORT, check_generator_config

SMALL = {"width": 64, "height": 32, "num_frames": 5, "num_inference_steps": 2, "seed": 3}


def leaf_paths(cls: type, prefix: str = "") -> set[str]:
    """Dotted paths of every leaf field of a config dataclass (Optional dataclasses descended into)."""
    out: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        inner = [t for t in typing.get_args(hints[f.name]) if t is not type(None)] or [hints[f.name]]
        nested = [t for t in inner if dataclasses.is_dataclass(t)]
        out |= leaf_paths(nested[0], path + ".") if nested else {path}
    return out


def test_the_support_table_classifies_every_field():
    assert set(FIELD_SUPPORT) == leaf_paths(GeneratorConfig)


def config(data: dict) -> GeneratorConfig:
    return parse_config(GeneratorConfig, data)


# (config data, device type the check sees, refused field, words of the fix)
REFUSED = [
    ({"engine": {"num_gpus": 2, "parallelism": {"sp_size": 1}}}, "cpu", "engine.parallelism.sp_size",
     "sp_size < num_gpus"),
    ({"engine": {"num_gpus": 2, "cuda_graphs": {"enabled": True}}}, "cuda", "engine.cuda_graphs.enabled",
     "engine.num_gpus=2"),
    ({"engine": {"num_gpus": 0}}, "cpu", "engine.num_gpus", "set it to 1"),
    ({"engine": {"parallelism": {"tp_size": 2}}}, "cpu", "engine.parallelism.tp_size", "tensor parallelism"),
    ({"engine": {"parallelism": {"sp_size": 4}}}, "cuda", "engine.parallelism.sp_size", "sequence parallelism"),
    ({"engine": {"use_fsdp_inference": True}}, "cpu", "engine.use_fsdp_inference", "set it to false"),
    ({"engine": {"offload": {"dit_layerwise": True, "dit": True}}}, "cuda", "engine.offload.dit",
     "engine.offload.dit_layerwise"),
    ({"engine": {"offload": {"vae": True}, "artifacts_path": "/a"}}, "cuda", "engine.offload.vae",
     "engine.artifacts_path"),
    ({"engine": {"quantization": {"transformer_quant": "INT4"}}}, "cpu", "engine.quantization.transformer_quant",
     "use 'FP8'"),
    ({"engine": {"compile": {"enabled": True}, "artifacts_path": "/a"}}, "cpu", "engine.compile.enabled",
     "turn compile off"),
    ({"pipeline": {"workload_type": "i2v"}}, "cpu", "pipeline.workload_type", "use 't2v'"),
    ({"engine": {"quantization": {"transformer_quant": "FP8"}}, "pipeline": {"components": {"lora_path": "/l"}}},
     "cpu", "pipeline.components.lora_path", "FP8"),
    ({"pipeline": {"components": {"lora_nickname": "style"}}}, "cpu", "pipeline.components.lora_nickname",
     "set pipeline.components.lora_path too"),
    ({"pipeline": {"components": {"lora_strength": 0.5}}}, "cpu", "pipeline.components.lora_strength",
     "set pipeline.components.lora_path too"),
    ({"pipeline": {"components": {"upsampler_weights": "/u"}}}, "cpu", "pipeline.components.upsampler_weights",
     "no upsampler"),
    ({"engine": {"artifacts_path": "/a"}, "pipeline": {"components": {"transformer_path": "/t"}}}, "cpu",
     "pipeline.components.transformer_path", "engine.artifacts_path"),
    ({"engine": {"artifacts_path": "/a"}, "pipeline": {"components": {"vae_path": "/v"}}}, "cuda",
     "pipeline.components.vae_path", "engine.artifacts_path"),
    ({"pipeline": {"experimental": {"vae_tiling": True}}}, "cpu", "pipeline.experimental.vae_tiling",
     "unknown experimental option"),
    ({"pipeline": {"experimental": {"vae_dtype": "int8"}}}, "cpu", "pipeline.experimental.vae_dtype", "'fp32'"),
]


@pytest.mark.parametrize("data,device_type,path,hint", REFUSED, ids=[r[2] + "-" + r[1] for r in REFUSED])
def test_a_value_the_runtime_cannot_honour_is_refused_by_name(data, device_type, path, hint):
    with pytest.raises(ConfigError) as err:
        check_generator_config(config(data), device_type=device_type)
    assert err.value.path == path and hint in str(err.value)


@pytest.mark.parametrize("data,device_type,path,hint", [r for r in REFUSED if r[1] == "cpu"],
                         ids=[r[2] for r in REFUSED if r[1] == "cpu"])
def test_from_config_refuses_before_reading_any_weight(tmp_path, data, device_type, path, hint):
    """The refusal comes first: the model folder does not even exist (else this would be a ModelLoadError)."""
    data = {**data, "model_path": str(tmp_path / "no-such-model")}
    data["engine"] = {**data.get("engine", {}), "device": "cpu"}
    with pytest.raises(ConfigError) as err:
        VideoGenerator.from_config(data)
    assert err.value.path == path


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_defaults_pass_on_every_device(device_type):
    check_generator_config(GeneratorConfig(), device_type=device_type)
    check_generator_config(config({"model_path": "/m", "engine": {"quantization": {}}}), device_type=device_type)


ACCEPTED = {"engine": {"device": "cpu", "dtype": "fp32", "num_gpus": 1, "parallelism": {"tp_size": -1, "sp_size": -1},
                       "offload": {"dit": True, "dit_layerwise": True, "text_encoder": True, "image_encoder": True,
                                   "vae": True, "pin_cpu_memory": False},
                       "disable_autocast": True, "quantization": {"transformer_quant": None}},
            "pipeline": {"workload_type": "t2v", "experimental": {"vae_dtype": "fp32"}}}


def test_values_that_work_load_and_generate(tiny_model_dir, tiny_generator):
    """Non-default values that are honoured (auto parallelism, offload on a CPU engine where everything already
    lives on the CPU, pinning, autocast off, no quantization) load and give the same video as the defaults."""
    check_generator_config(config(ACCEPTED), device_type="cpu")
    check_generator_config(config({"engine": {"offload": {"image_encoder": True, "pin_cpu_memory": False}}}),
                           device_type="cuda")
    check_generator_config(config({"engine": {"offload": {"text_encoder": True, "vae": True}}}), device_type="cuda")
    generator = VideoGenerator.from_config({**ACCEPTED, "model_path": str(tiny_model_dir)})
    try:
        assert generator.config.engine.quantization == QuantizationConfig()
        got = generator.generate({"prompt": "a lighthouse", "sampling": SMALL}).frames
        want = tiny_generator.generate({"prompt": "a lighthouse", "sampling": SMALL}).frames
        assert (got == want).all()
    finally:
        generator.shutdown()


def test_a_cuda_device_without_cuda_is_a_config_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError) as err:
        VideoGenerator.from_config({"model_path": str(tmp_path), "engine": {"device": "cuda:0"}})
    assert err.value.path == "engine.device" and "not available" in str(err.value)


def test_an_unknown_preset_names_its_field(tiny_model_dir):
    with pytest.raises(ConfigError) as err:
        VideoGenerator.from_config({"model_path": str(tiny_model_dir), "engine": {"device": "cpu"},
                                    "pipeline": {"preset": "wan9"}})
    # every registered preset is listed (the list grows with each model family: read it, don't copy it)
    from fastvideo.api import get_all_preset_names

    names = sorted(get_all_preset_names())
    assert {"fastvideo-tiny", "wan_t2v_1_3b", "wan_t2v_14b"} <= set(names)
    registered = "registered: " + ", ".join(repr(name) for name in names)
    assert err.value.path == "pipeline.preset" and registered in str(err.value)


# ----------------------------------------------------------------------------- component path overrides
ALTERED = {"transformer": ("diffusion_pytorch_model.safetensors", "proj_out.bias"),
           "vae": ("diffusion_pytorch_model.safetensors", "decoder.conv_out.bias"),
           "text_encoder": ("model.safetensors", "encoder.final_layer_norm.weight")}


def _altered_copy(src: Path, dst: Path, file: str, key: str) -> torch.Tensor:
    shutil.copytree(src, dst)
    weights = load_file(str(dst / file))
    weights[key] = weights[key] + 0.25
    save_file(weights, str(dst / file))
    return weights[key]


def _loaded(generator: VideoGenerator, sub: str, key: str) -> torch.Tensor:
    pipe = generator.pipeline
    module = {"transformer": pipe.dit, "vae": pipe.vae, "text_encoder": pipe.text_encoder.model}[sub]
    return module.state_dict()[key]


def test_component_paths_load_from_their_own_folders(tiny_model_dir, tiny_generator, tmp_path):
    """A model folder holding only model_index.json and scheduler/, with every component elsewhere: each loads
    from its override (its altered weight is the one in the model), none from <model_path>/<sub>."""
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(tiny_model_dir / "model_index.json", model / "model_index.json")
    shutil.copytree(tiny_model_dir / "scheduler", model / "scheduler")
    expected = {sub: _altered_copy(tiny_model_dir / sub, tmp_path / f"my_{sub}", file, key)
                for sub, (file, key) in ALTERED.items()}
    shutil.copytree(tiny_model_dir / "tokenizer", tmp_path / "my_tokenizer")
    components = {f"{sub}_path": str(tmp_path / f"my_{sub}")
                  for sub in ("transformer", "vae", "text_encoder", "tokenizer")}
    generator = VideoGenerator.from_config({"model_path": str(model), "engine": {"device": "cpu", "dtype": "fp32"},
                                            "pipeline": {"components": components}})
    try:
        for sub, (_, key) in ALTERED.items():
            got = _loaded(generator, sub, key)
            assert torch.equal(got, expected[sub].to(got.dtype)), sub
            assert not torch.equal(got, _loaded(tiny_generator, sub, key)), sub
        result = generator.generate({"prompt": "a lighthouse", "sampling": SMALL})
        assert result.frames.shape == (5, 32, 64, 3)
    finally:
        generator.shutdown()


def test_one_component_override_leaves_the_others_in_the_model_folder(tiny_model_dir, tiny_generator, tmp_path):
    file, key = ALTERED["vae"]
    expected = _altered_copy(tiny_model_dir / "vae", tmp_path / "vae_copy", file, key)
    generator = VideoGenerator.from_config({"model_path": str(tiny_model_dir), "engine": {"device": "cpu"},
                                            "pipeline": {"components": {"vae_path": str(tmp_path / "vae_copy")}}})
    try:
        assert torch.equal(_loaded(generator, "vae", key), expected)
        t_key = ALTERED["transformer"][1]
        assert torch.equal(_loaded(generator, "transformer", t_key), _loaded(tiny_generator, "transformer", t_key))
    finally:
        generator.shutdown()


def test_a_bad_component_path_is_refused_by_name(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError) as err:
        VideoGenerator.from_config({"model_path": str(tiny_model_dir), "engine": {"device": "cpu"},
                                    "pipeline": {"components": {"text_encoder_path": str(tmp_path / "nope")}}})
    assert err.value.path == "pipeline.components.text_encoder_path" and "not a folder" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"transformer override .*empty/ has no \*\.safetensors"):
        VideoGenerator.from_config({"model_path": str(tiny_model_dir), "engine": {"device": "cpu"},
                                    "pipeline": {"components": {"transformer_path": str(tmp_path / "empty")}}})
