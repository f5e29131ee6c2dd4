"""Real diffusers folders and broken copies of the built-in one: what is honoured and what is refused.

- Scheduler precedence: a folder written by diffusers' ``save_pretrained`` whose scheduler says
  ``flow_shift: 5.0`` runs with 5.0 (request > folder > preset) and matches diffusers' ``WanPipeline``.
- Weight variants written by diffusers (``variant="fp16"``, sharded with an index) load; ambiguous ones
  are refused naming the variants.
- Broken folders (truncated text encoder, mismatched configs, I2V, Flux, a tokenizer that cannot
  tokenize) are ``ModelLoadError``s; the CLI prints one line and exits 2, never a traceback.
- Garbage weights (header intact) fail the request with ``GenerationFailed``: no MP4, exit 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core_testing import core_latents
from fastvideo import VideoGenerator
from fastvideo.api import ConfigError, GenerationFailed, GenerationRequest, ModelLoadError, SamplingConfig
from fastvideo.engine.presets import get_preset

diffusers = pytest.importorskip("diffusers")

FRAME_TOLERANCE = 1e-4  # as tests/engine/test_pipeline_parity.py
SMALL = {"width": 32, "height": 32, "num_frames": 1, "num_inference_steps": 2, "seed": 3}


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def load(path: Path, **kwargs) -> VideoGenerator:
    return VideoGenerator.from_pretrained(str(path), device="cpu", dtype="fp32", **kwargs)


def small_frames(generator: VideoGenerator, **sampling) -> np.ndarray:
    return generator.generate({"prompt": "a fox", "sampling": {**SMALL, **sampling},
                               "output": {"save_video": False}}).frames


def frames_of_variant(model: Path, variant: str | None = None) -> np.ndarray:
    """The small video of the model folder loaded (with ``pipeline.variant``), the generator shut down after."""
    config = {"model_path": str(model), "engine": {"device": "cpu", "dtype": "fp32"}, "pipeline": {"variant": variant}}
    generator = VideoGenerator.from_pretrained(config)
    try:
        return small_frames(generator)
    finally:
        generator.shutdown()


@pytest.fixture(scope="module")
def reference_pipe(tiny_model_dir):
    return diffusers.WanPipeline.from_pretrained(str(tiny_model_dir), torch_dtype=torch.float32)


@pytest.fixture(scope="module")
def shift5_folder(reference_pipe, tmp_path_factory) -> Path:
    """The built-in model saved by diffusers with its scheduler's flow_shift set to 5.0 (the preset says 3.0)."""
    pipe = diffusers.WanPipeline(**{**reference_pipe.components, "scheduler": diffusers.UniPCMultistepScheduler
                                    .from_config(reference_pipe.scheduler.config, flow_shift=5.0)})
    target = tmp_path_factory.mktemp("shift5") / "model"
    pipe.save_pretrained(str(target))
    return target


# ----------------------------------------------------------------------------- item 9: scheduler shift
def test_folder_flow_shift_matches_diffusers(shift5_folder):
    assert json.loads((shift5_folder / "scheduler" / "scheduler_config.json").read_text())["flow_shift"] == 5.0
    assert get_preset("fastvideo-tiny").shift == 3.0
    reference = diffusers.WanPipeline.from_pretrained(str(shift5_folder), torch_dtype=torch.float32)
    ours = load(shift5_folder)
    try:
        width, height, frames, steps, seed = 64, 48, 5, 3, 1234
        prompt, negative = "a red fox running through snow", "blurry, low quality"
        request = GenerationRequest(prompt=prompt, negative_prompt=negative, sampling=SamplingConfig(
            width=width, height=height, num_frames=frames, num_inference_steps=steps, guidance_scale=5.0, seed=seed))
        latents, resolved = core_latents(ours, request)
        assert resolved.shift == 5.0
        pipe = ours.pipeline
        with torch.no_grad():
            video = pipe.vae.decode(pipe.vae.denormalize_latents(latents))[0]
        mine = (video / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()
        theirs = reference(prompt=prompt, negative_prompt=negative, height=height, width=width, num_frames=frames,
                           num_inference_steps=steps, guidance_scale=5.0, output_type="np",
                           generator=torch.Generator("cpu").manual_seed(seed),
                           max_sequence_length=get_preset("fastvideo-tiny").text_length).frames[0]
        assert float(mine.std()) > 1e-3
        err = float(np.abs(mine - theirs).max())
        assert err <= FRAME_TOLERANCE, f"max abs frame error {err:.2e} > {FRAME_TOLERANCE}"

        folder_run = ours.generate({"prompt": "a fox", "sampling": SMALL, "output": {"save_video": False}})
        assert (folder_run.metadata["shift"], folder_run.metadata["shift_source"]) == (5.0, "model_folder")
        asked = ours.generate({"prompt": "a fox", "sampling": {**SMALL, "shift": 2.0}, "output": {"save_video": False}})
        assert (asked.metadata["shift"], asked.metadata["shift_source"]) == (2.0, "request")
    finally:
        ours.shutdown()


def test_preset_shift_when_the_folder_sets_none(tiny_model_dir, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    config_path = model / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    del config["flow_shift"]
    config_path.write_text(json.dumps(config))
    generator = load(model)
    try:
        result = generator.generate({"prompt": "a fox", "sampling": SMALL, "output": {"save_video": False}})
        assert (result.metadata["shift"], result.metadata["shift_source"]) == (3.0, "preset")
    finally:
        generator.shutdown()


# ----------------------------------------------------------------------------- item 12: variants
@pytest.fixture(scope="module")
def plain_frames(tiny_generator) -> np.ndarray:
    return small_frames(tiny_generator)


def test_diffusers_fp16_variant_sharded_loads(reference_pipe, plain_frames, tmp_path):
    target = tmp_path / "fp16"
    reference_pipe.save_pretrained(str(target), variant="fp16", max_shard_size="100KB")
    assert (target / "transformer" / "diffusion_pytorch_model.safetensors.index.fp16.json").exists()
    assert (target / "transformer" / "diffusion_pytorch_model.fp16-00001-of-00008.safetensors").exists()
    assert (target / "text_encoder" / "model.safetensors.index.fp16.json").exists()
    assert np.array_equal(frames_of_variant(target), plain_frames)  # the only variant there is: chosen unasked


def test_single_file_variants_and_choice(tiny_model_dir, plain_frames, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    for sub, stem in (("transformer", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                      ("text_encoder", "model")):
        plain = model / sub / f"{stem}.safetensors"
        shutil.copy(plain, model / sub / f"{stem}.bf16.safetensors")
        plain.rename(model / sub / f"{stem}.fp16.safetensors")
    with pytest.raises(ModelLoadError) as err:
        load(model)
    message = str(err.value)
    assert "['bf16', 'fp16']" in message and "--variant bf16" in message and "pipeline.variant" in message
    assert np.array_equal(frames_of_variant(model, "fp16"), plain_frames)


def test_requested_variant_falls_back_to_plain_files(tiny_model_dir, plain_frames, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_name("diffusion_pytorch_model.fp16.safetensors"))  # the others stay plain
    assert np.array_equal(frames_of_variant(model, "fp16"), plain_frames)


def test_bad_variant_names_refused(tiny_model_dir):
    with pytest.raises(ConfigError) as err:
        VideoGenerator.from_pretrained({"model_path": str(tiny_model_dir), "engine": {"device": "cpu"},
                                        "pipeline": {"variant": "../fp16"}})
    assert err.value.path == "pipeline.variant"


# ----------------------------------------------------------------------------- item 10: clear load errors
def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_truncated_text_encoder_is_a_model_load_error(tiny_model_dir, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    truncate(model / "text_encoder" / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"text_encoder/model\.safetensors.*corrupt or truncated; re-download"):
        load(model)


@pytest.mark.parametrize("change,expect", [
    ({"num_layers": 3},
     r"text_encoder do not match the model built from its config\.json: missing \['encoder\.block\.2"),
    ({"d_ff": 256}, r"text_encoder: tensor '.*DenseReluDense.*' has shape \(128, 64\), its config\.json expects "
                    r"\(256, 64\)"),
])
def test_text_encoder_config_not_matching_weights(tiny_model_dir, tmp_path, change, expect):
    """num_layers=3 used to load with a randomly initialized third block (a silently wrong video); a
    wider d_ff raised transformers' RuntimeError."""
    model = copy_model(tiny_model_dir, tmp_path / "m")
    edit_json(model / "text_encoder" / "config.json", **change)
    with pytest.raises(ModelLoadError, match=expect) as err:
        load(model)
    assert "use the config.json shipped with these weights" in str(err.value)


def run_cli(model: Path, tmp_path: Path, fastvideo_cache: Path) -> subprocess.CompletedProcess:
    output = tmp_path / "out.mp4"
    env = {**os.environ, "FASTVIDEO_CACHE_DIR": str(fastvideo_cache)}
    proc = subprocess.run([sys.executable, "-m", "fastvideo", "generate", "--prompt", "a fox", "--model-path",
                           str(model), "--device", "cpu", "--width", "32", "--height", "32", "--num-frames", "1",
                           "--steps", "2", "--seed", "1", "--output", str(output)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not output.exists() and not list(tmp_path.glob(".*out*")), "a failed run left an output file"
    return proc


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("fastvideo generate:")]


@pytest.mark.parametrize("case", ["truncated_text_encoder", "i2v_transformer"])
def test_cli_prints_one_line_and_exits_2(tiny_model_dir, tmp_path, fastvideo_cache, case):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    if case == "truncated_text_encoder":
        truncate(model / "text_encoder" / "model.safetensors")
        expect = "text_encoder/model.safetensors"
    else:
        edit_json(model / "transformer" / "config.json", image_dim=1280)
        expect = "transformer/config.json sets image_dim=1280, added_kv_proj_dim=None (an image-to-video " \
                 "transformer), but"
    proc = run_cli(model, tmp_path, fastvideo_cache)
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and "cannot load the model" in lines[0] and expect in lines[0], proc.stderr


# ----------------------------------------------------------------------------- item 11: refused, not run wrongly
@pytest.mark.parametrize("file,change,expect", [
    ("model_index.json", {"_class_name": "FluxPipeline"}, r"_class_name is 'FluxPipeline'.*supported pipelines: .*"
                                                         r"WanPipeline"),
    # An I2V pipeline class over a T2V transformer (the I2V family itself runs: tests/engine/test_wan_i2v.py).
    ("model_index.json", {"_class_name": "WanImageToVideoPipeline"},
     r"has no image_dim \(a text-to-video transformer\), but .*WanImageToVideoPipeline"),
    ("model_index.json", {"transformer": ["diffusers", "FluxTransformer2DModel"]},
     r"transformer is FluxTransformer2DModel; .* supports WanTransformer3DModel"),
    ("model_index.json", {"image_encoder": ["transformers", "CLIPVisionModel"]}, r"'image_encoder' component"),
    ("model_index.json", {"boundary_ratio": 0.875}, r"boundary_ratio=0\.875"),
    ("transformer/config.json", {"_class_name": "FluxTransformer2DModel"},
     r"transformer/config\.json: _class_name is 'FluxTransformer2DModel'; .* supports WanTransformer3DModel"),
])
def test_unknown_classes_refused(tiny_model_dir, tmp_path, file, change, expect):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    edit_json(model / file, **change)
    with pytest.raises(ModelLoadError, match=expect):
        load(model)


def test_tokenizer_without_vocabulary_refused(tiny_model_dir, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    (model / "tokenizer" / "tokenizer.json").unlink()
    edit_json(model / "tokenizer" / "tokenizer_config.json", tokenizer_class="T5TokenizerFast")
    with pytest.raises(ModelLoadError, match=r"tokenizer/ has no tokenizer\.json or spiece\.model"):
        load(model)


def test_tokenizer_that_cannot_tokenize_refused(tiny_model_dir, tmp_path):
    """A tokenizer.json whose vocabulary holds only the special tokens: every word is the unknown token."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    model = copy_model(tiny_model_dir, tmp_path / "m")
    tok = Tokenizer(models.WordLevel(vocab={"<pad>": 0, "</s>": 1, "<unk>": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(model / "tokenizer" / "tokenizer.json"))
    with pytest.raises(ModelLoadError, match=r"tokenizer.* cannot tokenize: 'a red fox runs through the snow' became "
                                             r"\[2, 2, 2"):
        load(model)


def garbage_weights(path: Path) -> None:
    """Overwrite every tensor byte with random bits, keeping the header (the file still parses)."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header:] = np.random.default_rng(0).integers(0, 256, len(data) - header, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def test_garbage_weights_fail_the_request(tiny_model_dir, tmp_path, fastvideo_cache):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    garbage_weights(model / "transformer" / "diffusion_pytorch_model.safetensors")
    generator = load(model)
    output = tmp_path / "api.mp4"
    try:
        with pytest.raises(GenerationFailed, match=r"non-finite values \(NaN/Inf\) at denoising step 1/2") as err:
            generator.generate({"prompt": "a fox", "sampling": SMALL, "output": {"output_path": str(output)}})
        assert err.value.step == 1
        assert generator.counters.snapshot()["generations_failed"] == 1
        assert not output.exists()
    finally:
        generator.shutdown()
    proc = run_cli(model, tmp_path, fastvideo_cache)
    assert proc.returncode == 1, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and "generation failed" in lines[0] and "re-download" in lines[0], proc.stderr


def test_non_finite_latents_at_the_last_step_fail_the_request(tiny_model_dir, tmp_path):
    """NaN that appears only in the last step's prediction is caught by the final check."""
    generator = load(tiny_model_dir)
    dit = generator.pipeline.dit
    real_forward, calls = dit.forward, []

    def forward(*args, **kwargs):
        calls.append(1)
        out = real_forward(*args, **kwargs)
        return out * float("nan") if len(calls) == 3 else out

    dit.forward = forward
    output = tmp_path / "late.mp4"
    try:
        with pytest.raises(GenerationFailed, match=r"denoising step 3/3"):
            generator.generate({"prompt": "a fox", "sampling": {**SMALL, "num_inference_steps": 3},
                                "output": {"output_path": str(output)}})
        assert len(calls) == 3 and not output.exists()
    finally:
        generator.shutdown()
