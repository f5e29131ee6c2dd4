"""FastVideo's documented VideoGenerator surface on the built-in tiny model: from_pretrained kwargs, Hugging Face
ids, from_file, generate_video, list prompts, SamplingParam/PipelineConfig, result fields and event metadata."""

from __future__ import annotations

import asyncio
import json
import warnings

import pytest
import torch

import fastvideo
from fastvideo import PipelineConfig, SamplingParam, VideoGenerator
from fastvideo.api import ConfigError, ConfigValidationError, FastVideoError, ModelLoadError, VideoFinalEvent
from fastvideo.runtime import pretrained_kwargs

SMALL = {"width": 64, "height": 32, "num_frames": 5, "num_inference_steps": 2, "seed": 7}


def test_public_names():
    assert {"VideoGenerator", "SamplingParam", "PipelineConfig", "__version__"} <= set(fastvideo.__all__)
    assert fastvideo.SamplingParam is SamplingParam and fastvideo.PipelineConfig is PipelineConfig


def test_from_pretrained_maps_fastvideo_kwargs_onto_the_config(tiny_model_dir, monkeypatch):
    seen = {}
    monkeypatch.setattr(VideoGenerator, "from_config", classmethod(lambda cls, config: seen.setdefault("c", config)))
    cfg = VideoGenerator.from_pretrained(
        str(tiny_model_dir), num_gpus=1, dit_cpu_offload=False, vae_cpu_offload=True, text_encoder_cpu_offload=True,
        pin_cpu_memory=False, dit_layerwise_offload=False, use_fsdp_inference=False, disable_autocast=True,
        enable_torch_compile=False, torch_compile_kwargs={"mode": "max-autotune", "fullgraph": True, "options": {}},
        tp_size=-1, sp_size=-1, lora_path=None, output_type="pil", nvfp4_fa4=False, log_queue=None)
    engine = cfg.engine
    assert (engine.offload.vae, engine.offload.text_encoder, engine.offload.pin_cpu_memory) == (True, True, False)
    assert engine.compile.mode == "max-autotune" and engine.compile.fullgraph is True
    assert engine.compile.extras == {"options": {}} and engine.disable_autocast is True


@pytest.mark.parametrize("kwargs,path", [
    ({"warp_speed": True}, "warp_speed"),
    ({"nvfp4_fa4": True}, "nvfp4_fa4"),
    ({"output_type": "latent"}, "output_type"),
    ({"torch_compile_kwargs": "fast"}, "torch_compile_kwargs"),
    ({"use_fsdp_inference": True}, "engine.use_fsdp_inference"),
    ({"dit_cpu_offload": True, "device": "cuda"}, None),
])
def test_from_pretrained_refuses_what_it_cannot_honour_by_name(tiny_model_dir, kwargs, path):
    with pytest.raises(FastVideoError) as err:
        VideoGenerator.from_pretrained(str(tiny_model_dir), **kwargs)
    if path is not None:
        assert isinstance(err.value, ConfigError) and err.value.path == path
    if "warp_speed" in kwargs:
        assert isinstance(err.value, TypeError) and "warp_speed" in str(err.value)


def test_a_hugging_face_repo_id_is_refused_with_how_to_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as err:
        VideoGenerator.from_pretrained("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", device="cpu")
    message = str(err.value)
    assert "huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --local-dir" in message
    assert "never downloads" in message
    with pytest.raises(ModelLoadError, match="does not exist"):
        VideoGenerator.from_pretrained(str(tmp_path / "missing"), device="cpu")
    with pytest.raises(ModelLoadError, match="huggingface-cli download"):
        SamplingParam.from_pretrained("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")


def test_local_folder_from_file_and_results(tiny_model_dir, tmp_path):
    gen_file = tmp_path / "gen.json"
    gen_file.write_text(json.dumps({"model_path": str(tiny_model_dir), "engine": {"device": "cuda"}}))
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps({"generator": {"model_path": str(tiny_model_dir)}, "request": {"prompt": "x"}}))
    with pytest.raises(ConfigValidationError) as err:
        VideoGenerator.from_file(run_file, ["--generator.engine.dveice", "cpu"])
    assert err.value.path == "generator.engine.dveice"
    generator = VideoGenerator.from_file(gen_file, {"generator.engine.device": "cpu"})
    try:
        assert generator.config.engine.device == "cpu"
        result = generator.generate({"prompt": "a fox", "sampling": SMALL})
        assert result.size == (32, 64, 5) and result.peak_memory_mb is None  # CPU engine: no device allocator
        assert isinstance(result.samples, torch.Tensor) and result.samples.shape == (1, 3, 5, 32, 64)
        assert result.samples.dtype == torch.uint8 and result.prompt == "a fox"
        assert {"generation_time", "peak_memory_mb", "video_path", "inference_time_s", "fps"} <= set(result.metadata)
        final = asyncio.run(_final(generator))
        assert final.tensor is final.result.samples and final.video_bytes
        assert final.metadata["generation_time"] == final.result.generation_time and "fps" in final.metadata
    finally:
        generator.shutdown()
    run = VideoGenerator.from_file(run_file, ["--generator.engine.device", "cpu"])
    assert run.config.engine.device == "cpu"
    run.shutdown()


async def _final(generator: VideoGenerator) -> VideoFinalEvent:
    events = [e async for e in generator.generate_async({"prompt": "a fox", "sampling": SMALL})]
    assert isinstance(events[-1], VideoFinalEvent)
    return events[-1]


def test_list_prompt_and_prompt_file_give_a_list_of_results(tiny_generator, tmp_path):
    results = tiny_generator.generate({"prompt": ["a cat", "a dog"], "sampling": SMALL})
    assert [(r.prompt, r.prompt_index) for r in results] == [("a cat", 0), ("a dog", 1)]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("rain\n\nsnow\n")
    results = tiny_generator.generate({"inputs": {"prompt_path": str(prompts)}, "sampling": SMALL})
    assert [r.prompt for r in results] == ["rain", "snow"]


def test_generate_video_is_the_deprecated_legacy_call(tiny_generator, tmp_path):
    with pytest.warns(DeprecationWarning, match="generate_video"):
        out = tiny_generator.generate_video("a red fox", output_path=str(tmp_path), neg_prompt="blur", **SMALL)
    assert out["video_path"] == str(tmp_path / "a red fox.mp4") and (tmp_path / "a red fox.mp4").stat().st_size
    assert out["prompts"] == "a red fox" and out["size"] == (32, 64, 5) and out["frames"].shape == (5, 32, 64, 3)
    assert {"e2e_latency", "generation_time", "peak_memory_mb", "samples", "trajectory"} <= set(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        again = tiny_generator.generate_video("a red fox", output_path=str(tmp_path), **SMALL)
        assert again["video_path"] == str(tmp_path / "a red fox_1.mp4")
        unsaved = tiny_generator.generate_video(sampling_param=SamplingParam(prompt="x", **SMALL))
        assert unsaved["video_path"] is None  # our SamplingParam default: not saved
        with pytest.raises(ConfigValidationError, match="warp"):
            tiny_generator.generate_video("x", warp=1)


def test_sampling_param_view(tiny_model_dir):
    param = SamplingParam.from_pretrained(str(tiny_model_dir))
    assert (param.width, param.height, param.num_frames, param.num_inference_steps) == (256, 256, 9, 8)
    param.update({"num_frames": 1, "neg_prompt": "blurry", "output_path": "o.mp4"})
    assert param.data_type == "image" and param.negative_prompt == "blurry"
    request = param.to_request()
    assert request.sampling.num_frames == 1 and request.output.output_path == "o.mp4"
    assert SamplingParam.from_request(request) == param
    with pytest.raises(ConfigValidationError, match="unknown field"):
        param.update({"num_frames": 3, "ltx2_refine": True})
    assert param.num_frames == 1  # nothing changed
    param.prompt_path = "prompts.csv"
    with pytest.raises(ConfigValidationError, match="txt"):
        param.check_sampling_param()


def test_pipeline_config_view(tiny_model_dir, monkeypatch):
    cfg = PipelineConfig.from_pretrained(str(tiny_model_dir))
    assert cfg.flow_shift == 3.0
    cfg.update_pipeline_config({"dit_precision": "fp32", "vae_precision": "fp32"})
    data = cfg.apply_to({})
    assert data["engine"]["dtype"] == "fp32" and data["pipeline"]["experimental"] == {"vae_dtype": "fp32"}
    cfg.flow_shift = 5.0
    with pytest.raises(ConfigValidationError) as err:
        cfg.apply_to({})
    assert err.value.path == "pipeline_config.flow_shift" and "sampling.shift" in str(err.value)
    with pytest.raises(ConfigValidationError, match="no field"):
        cfg.update_pipeline_config({"vae_config": {}})
    seen = {}
    monkeypatch.setattr(VideoGenerator, "from_config", classmethod(lambda cls, config: seen.setdefault("c", config)))
    config = VideoGenerator.from_pretrained(str(tiny_model_dir), pipeline_config=PipelineConfig(dit_precision="fp32"))
    assert config.engine.dtype == "fp32"
    assert pretrained_kwargs.UnknownKeywordError.__mro__[1] is ConfigValidationError


def test_generate_async_fans_out_a_list_and_closing_early_cancels(tiny_generator):
    async def collect():
        finals = []
        async for event in tiny_generator.generate_async({"prompt": ["a cat", "a dog"], "sampling": SMALL}):
            if isinstance(event, VideoFinalEvent):
                finals.append(event)
        return finals

    finals = asyncio.run(collect())
    assert [(f.result.prompt, f.result.prompt_index) for f in finals] == [("a cat", 0), ("a dog", 1)]

    async def close_early():
        events = tiny_generator.generate_async({"prompt": ["a", "b"], "sampling": {**SMALL, "num_inference_steps": 8}})
        first = await events.__anext__()
        await events.aclose()
        return first

    assert asyncio.run(close_early()).step == 1
    assert tiny_generator.generate({"prompt": "after", "sampling": SMALL}).frames is not None  # core still serves


def test_log_queue_refused_and_lora_errors_by_name(tiny_generator):
    with pytest.raises(ConfigError) as err:
        tiny_generator.generate({"prompt": "x", "sampling": SMALL}, log_queue=object())
    assert err.value.path == "log_queue"
    assert tiny_generator.generate({"prompt": "x", "sampling": SMALL}, log_queue=None).frames is not None
    with pytest.raises(ConfigError) as err:  # LoRA works (tests/runtime/test_lora_generator.py); errors name fields
        tiny_generator.set_lora_adapter("style", "/no/such/lora.safetensors")
    assert err.value.path == "lora_path" and "does not exist" in str(err.value)
    with pytest.raises(ConfigError) as err:
        tiny_generator.merge_lora_weights()
    assert err.value.path == "lora_nickname" and "set_lora_adapter" in str(err.value)
    tiny_generator.unmerge_lora_weights()  # nothing merged: nothing to do
