"""The Dynamo worker's ``--variant``: ``pipeline.variant`` as ``fastvideo serve --variant`` sets it.

The flag maps to the typed GeneratorConfig through the worker's one translation (``build_generator_config``), and
the worker's own loader (``load_generator``) picks the weight files it names: a copy of the built-in model whose
components hold only ``fp16`` and (truncated, unloadable) ``bf16`` files is refused without the flag, naming
``--variant``, fails on ``--variant bf16`` and loads and generates on ``--variant fp16``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fastvideo.api import ModelLoadError
from fastvideo.serving.dynamo.args import build_generator_config, build_parser, parse_args
from fastvideo.serving.dynamo.main import load_generator

COMPONENTS = (("transformer", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
              ("text_encoder", "model"))


def test_variant_flag_maps_to_pipeline_variant() -> None:
    assert build_generator_config(parse_args(["--variant", "fp16"])).pipeline.variant == "fp16"
    assert parse_args([]).variant is None and build_generator_config(parse_args([])).pipeline.variant is None
    text = " ".join(build_parser().format_help().split())
    assert "--variant" in text and "pipeline.variant" in text


@pytest.fixture(scope="module")
def two_variant_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tmp_path_factory.mktemp("variants") / "m"
    shutil.copytree(tiny_model_dir, model)
    for sub, stem in COMPONENTS:
        plain = model / sub / f"{stem}.safetensors"
        data = plain.read_bytes()
        (model / sub / f"{stem}.bf16.safetensors").write_bytes(data[: len(data) // 2])  # not loadable
        plain.rename(model / sub / f"{stem}.fp16.safetensors")
    return model


def _args(model: Path, *extra: str):
    return parse_args(["--model-path", str(model), "--device", "cpu", "--dtype", "fp32", "--no-warmup", *extra])


def test_the_worker_loads_the_variant_it_is_given(two_variant_model: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        load_generator(_args(two_variant_model))  # two variants, no plain files: ambiguous
    assert "--variant" in str(err.value) and "['bf16', 'fp16']" in str(err.value)
    with pytest.raises(ModelLoadError):
        load_generator(_args(two_variant_model, "--variant", "bf16")).shutdown()  # the truncated files
    generator = load_generator(_args(two_variant_model, "--variant", "fp16"))
    try:
        assert generator.config.pipeline.variant == "fp16"
        result = generator.generate({"prompt": "a fox", "sampling": {"width": 32, "height": 32, "num_frames": 5,
                                                                     "num_inference_steps": 1, "seed": 1},
                                     "output": {"save_video": False, "return_frames": True}})
        assert result.frames.shape == (5, 32, 32, 3)
    finally:
        generator.shutdown()
