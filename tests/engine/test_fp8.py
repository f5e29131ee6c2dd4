"""FP8 (e4m3) DiT weights on the CPU reference path: exact emulation, the derived error bounds, the DiT swap.

The CUDA ``torch._scaled_mm`` path is checked against the same emulation in tests/gpu/test_fp8_cuda.py.
"""

from __future__ import annotations

import copy

import pytest
import torch

from fastvideo.engine.builtin_model import TRANSFORMER_CONFIG
from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel
from fastvideo.engine.fp8 import (
    DIT_RELATIVE_ERROR_BOUND,
    E4M3,
    EXPECTED_RELATIVE_ERROR,
    FP8_MAX,
    QUANT_TARGETS,
    FP8Linear,
    dot_error_bound,
    fp8_path,
    parse_transformer_quant,
    quantize_dit,
)

GRANULARITIES = ("row", "tensor")


def independent_e4m3(t: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize-dequantize without torch's float8 dtype: scale = amax / 448 (float32), then round ``t / scale``
    to the e4m3 grid by hand (3 mantissa bits for |v| >= 2**-6, a fixed 2**-9 step below), ties to even.
    Returns ``(the e4m3 values v_q as float64, scale)``."""
    a = t.float().abs()
    amax = a.amax() if granularity == "tensor" else a.amax(dim=-1, keepdim=True)
    scale = amax.clamp(min=1e-12) / 448.0
    v = (t.float() / scale).clamp(-448.0, 448.0).double()
    _, exp = torch.frexp(v)  # v = m * 2**exp, 0.5 <= |m| < 1 -> leading bit at 2**(exp - 1)
    step = torch.where(v.abs() >= 2.0 ** -6, torch.ldexp(torch.ones_like(v), exp - 4), torch.full_like(v, 2.0 ** -9))
    return torch.round(v / step) * step, scale  # torch.round rounds half to even


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_quantization_matches_an_independent_e4m3_rounding_exactly(granularity: str) -> None:
    torch.manual_seed(0)
    w = torch.randn(48, 80) * torch.logspace(-3, 1, 48).unsqueeze(1)  # rows over 4 decades: subnormals too
    w[3, :5] = torch.tensor([0.0, 1e-9, -1e-9, 0.5, -0.5])
    linear = torch.nn.Linear(80, 48)
    with torch.no_grad():
        linear.weight.copy_(w)
    layer = FP8Linear.from_linear(linear, granularity)
    expected, scale = independent_e4m3(w, granularity)
    assert layer.weight.dtype == E4M3
    assert torch.equal(layer.weight.double(), expected)
    assert torch.equal(layer.weight_scale.reshape(scale.shape), scale)
    assert layer.weight.float().abs().max() <= FP8_MAX


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_reference_forward_is_the_independent_quantize_dequantize_matmul(granularity: str) -> None:
    """The CPU emulation equals: independently rounded codes, float32 matmul, float32 scales, + bias."""
    torch.manual_seed(1)
    linear = torch.nn.Linear(96, 32)
    x = torch.randn(2, 7, 96) * 3
    layer = FP8Linear.from_linear(linear, granularity)
    assert layer.path == "reference"
    xq, sx = independent_e4m3(x.reshape(-1, 96), granularity)
    wq, sw = independent_e4m3(linear.weight.detach(), granularity)
    scales = sx * sw.reshape(1, -1) if granularity == "row" else sx * sw
    expected = ((xq.float() @ wq.float().T) * scales + linear.bias.detach()).reshape(2, 7, 32)
    assert torch.equal(layer(x), expected)
    # ... and float64 dequantize-then-matmul agrees within float32 accumulation of K terms
    exact = (xq * sx.double()) @ (wq * sw.double()).T + linear.bias.detach().double()
    tolerance = 96 * 2.0 ** -24 * ((xq * sx.double()).abs() @ (wq * sw.double()).abs().T + 1)
    assert ((layer(x).reshape(-1, 32).double() - exact).abs() <= tolerance).all()


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_linear_is_within_the_derived_bound_of_the_unquantized_linear(granularity: str,
                                                                          dtype: torch.dtype) -> None:
    torch.manual_seed(2)
    linear = torch.nn.Linear(512, 128).to(dtype)
    x = (torch.randn(64, 512) * torch.logspace(-2, 1, 64).unsqueeze(1)).to(dtype)  # token rows of mixed size
    layer = FP8Linear.from_linear(linear, granularity)
    y = layer(x)
    assert y.dtype == dtype
    reference = x.double() @ linear.weight.double().T + linear.bias.double()
    bound = dot_error_bound(x, linear.weight, granularity=granularity, out_dtype=dtype, bias=linear.bias)
    assert ((y.double() - reference).abs() <= bound).all()
    # the expected (RMS) relative error of a dot product, sqrt(2) * 0.49 * 2**-4 ~= 4.4 %, on Gaussian rows
    x = torch.randn(256, 512).to(dtype)
    reference = x.double() @ linear.weight.double().T
    err = (layer(x).double() - linear.bias.double()) - reference
    relative = (err.norm() / reference.norm()).item()
    assert relative <= 1.25 * EXPECTED_RELATIVE_ERROR
    assert relative >= 0.25 * EXPECTED_RELATIVE_ERROR  # the quantization really happened


def test_bound_is_not_vacuous() -> None:
    """The worst-case bound is about 2u of the absolute sum: a tenth of it would be broken."""
    torch.manual_seed(3)
    linear = torch.nn.Linear(64, 64, bias=False)
    x = torch.randn(128, 64)
    layer = FP8Linear.from_linear(linear, "tensor")
    err = (layer(x).double() - x.double() @ linear.weight.double().T).abs()
    bound = dot_error_bound(x, linear.weight, granularity="tensor")
    assert (err > bound / 10).any()


def test_zero_rows_and_inputs_give_zero_not_nan() -> None:
    linear = torch.nn.Linear(32, 16)
    with torch.no_grad():
        linear.weight[:4] = 0
    layer = FP8Linear.from_linear(linear, "row")
    y = layer(torch.zeros(3, 32))
    assert torch.equal(y, linear.bias.detach().expand(3, 16))
    assert torch.isfinite(layer(torch.randn(3, 32))).all()


def _dit(seed: int) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(WanDiTConfig.from_dict(TRANSFORMER_CONFIG)).eval()


def test_quantize_dit_swaps_the_block_linears_and_keeps_the_rest() -> None:
    dit = _dit(0)
    spec = quantize_dit(dit)
    assert (spec.granularity, spec.layers) == ("row", len(QUANT_TARGETS) * len(dit.blocks))
    fp8 = {name for name, m in dit.named_modules() if isinstance(m, FP8Linear)}
    assert fp8 == {f"blocks.{i}.{t}" for i in range(len(dit.blocks)) for t in QUANT_TARGETS}
    kept = {name for name, m in dit.named_modules() if isinstance(m, torch.nn.Linear)}
    assert kept == {"condition_embedder.time_embedder.linear_1", "condition_embedder.time_embedder.linear_2",
                    "condition_embedder.time_proj", "condition_embedder.text_embedder.linear_1",
                    "condition_embedder.text_embedder.linear_2", "proj_out"}
    assert quantize_dit(dit).layers == 0  # idempotent
    with torch.device("meta"):
        meta = WanTransformer3DModel(WanDiTConfig.from_dict(TRANSFORMER_CONFIG))
    with pytest.raises(ValueError, match="meta device"):
        quantize_dit(meta)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_whole_dit_fp8_is_within_the_documented_bound(granularity: str, dtype: torch.dtype) -> None:
    dit = _dit(4)
    fp32 = copy.deepcopy(dit)
    if dtype != torch.float32:
        dit.to_inference_dtype(dtype)
    fp8 = copy.deepcopy(dit)
    quantize_dit(fp8, granularity)  # type: ignore[arg-type]
    torch.manual_seed(5)
    x, t, text = torch.randn(2, 16, 3, 8, 8), torch.tensor([700.0, 300.0]), torch.randn(2, 12, 64)
    with torch.no_grad():
        reference = fp32(x, t, text).double()
        plain = dit(x.to(dtype), t, text.to(dtype)).double()
        out = fp8(x.to(dtype), t, text.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    relative = ((out.double() - reference).norm() / reference.norm()).item()
    assert relative <= DIT_RELATIVE_ERROR_BOUND
    assert not torch.equal(out.double(), plain)


def test_transformer_quant_values() -> None:
    assert parse_transformer_quant(None) is None
    assert parse_transformer_quant("FP8") == "row"
    assert parse_transformer_quant("fp8") == "row"
    assert parse_transformer_quant("FP8_PER_TENSOR") == "tensor"
    assert parse_transformer_quant("fp8-per-row") == "row"
    with pytest.raises(ValueError, match="'int8'"):
        parse_transformer_quant("int8")


def test_cpu_and_unsupported_shapes_take_the_reference_path() -> None:
    cpu = torch.device("cpu")
    assert fp8_path(cpu, torch.bfloat16, "row", 64, 64) == "reference"
    assert fp8_path(torch.device("cuda"), torch.bfloat16, "row", 40, 64) == "reference"  # K not a multiple of 16
