"""``engine.quantization.transformer_quant = "FP8"`` end to end on the built-in model (CPU reference path)."""

from __future__ import annotations

import numpy as np
import pytest

from fastvideo import VideoGenerator
from fastvideo.api import ConfigError
from fastvideo.engine.fp8 import FP8Linear

SMALL = {"width": 64, "height": 32, "num_frames": 5, "num_inference_steps": 2, "seed": 3}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("scheme, granularity", [("FP8", "row"), ("fp8_per_tensor", "tensor")])
def test_fp8_generator_quantizes_the_dit_and_stays_close(tiny_model_dir, tiny_generator, scheme, granularity):
    generator = VideoGenerator.from_config({"model_path": str(tiny_model_dir), "engine": {
        "device": "cpu", "dtype": "fp32", "quantization": {"transformer_quant": scheme}}})
    try:
        spec = generator.pipeline.quantization
        assert spec is not None and spec.granularity == granularity and spec.layers == 20
        assert sum(isinstance(m, FP8Linear) for m in generator.pipeline.dit.modules()) == 20
        got = generator.generate({"prompt": "a lighthouse", "sampling": SMALL}).frames
        want = tiny_generator.generate({"prompt": "a lighthouse", "sampling": SMALL}).frames
        assert got.shape == want.shape
        assert not (got == want).all()  # the quantized DiT really ran
        assert _psnr(got, want) >= 24.0  # the frame-level gate measures ~27.5 dB on this model (README)
    finally:
        generator.shutdown()


def test_unknown_scheme_is_refused_by_name(tiny_model_dir):
    with pytest.raises(ConfigError) as err:
        VideoGenerator.from_config({"model_path": str(tiny_model_dir), "engine": {
            "device": "cpu", "quantization": {"transformer_quant": "nf4"}}})
    assert err.value.path == "engine.quantization.transformer_quant" and "'FP8'" in str(err.value)
