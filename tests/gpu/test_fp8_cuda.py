"""FP8 DiT weights on the GPU: ``torch._scaled_mm`` against the CPU suite's emulation, within the derived bound.

At the Wan2.1-1.3B widths (dim 1536, FFN 8960) in bf16, per-row (Hopper sm_90+) and per-tensor (Ada sm_89+)
scales. The two paths share the numerics contract of :mod:`fastvideo.engine.fp8` and differ only in the
float32 summation order, so they agree within one bf16 rounding of the output plus ``K * 2**-23`` of the
absolute sum; and ``_scaled_mm`` stays within :func:`~fastvideo.engine.fp8.dot_error_bound` of the
unquantized linear. In a CPU rehearsal ``torch._scaled_mm`` runs on the CPU at tiny widths.
"""

from __future__ import annotations

import pytest
import torch

from fastvideo.engine.fp8 import FP8Linear, dot_error_bound, quantize, scales_for

NEEDS = {"row": (9, 0), "tensor": (8, 9)}


@pytest.mark.parametrize("granularity", ["row", "tensor"])
@pytest.mark.parametrize("shape", ["qkv", "ffn_down"])
def test_scaled_mm_matches_the_emulation(granularity: str, shape: str, gpu) -> None:
    device = gpu.device
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < NEEDS[granularity]:
        major, minor = NEEDS[granularity]
        pytest.skip(f"{granularity}-wise torch._scaled_mm needs sm_{major}{minor}+")
    k, n = {"qkv": gpu.pick((1536, 1536), (64, 32)), "ffn_down": gpu.pick((8960, 1536), (128, 64))}[shape]
    tokens = gpu.pick(4096, 48)
    torch.manual_seed(0)
    linear = torch.nn.Linear(k, n).to(device=device, dtype=torch.bfloat16)
    layer = FP8Linear.from_linear(linear, granularity)  # type: ignore[arg-type]
    if device.type == "cuda":
        assert layer.path == "scaled_mm"
    x = (torch.randn(tokens, k, device=device) * torch.logspace(-2, 1, tokens, device=device).unsqueeze(1))
    x = x.to(torch.bfloat16)
    x_scale = scales_for(x, granularity)  # type: ignore[arg-type]
    x_q = quantize(x, x_scale)
    fast = layer._scaled_mm(x_q, x_scale).float()
    emulated = layer.reference(x_q, x_scale).float()
    scales = (x_scale * layer.weight_scale.reshape(1, -1)) if granularity == "row" else x_scale * layer.weight_scale
    magnitude = (x_q.float().abs() @ layer.weight.float().abs().T) * scales
    tolerance = 2.0 ** -7 * emulated.abs() + k * 2.0 ** -23 * magnitude + 1e-30
    assert ((fast - emulated).abs() <= tolerance).all()
    # the whole layer (bias included) against the unquantized float64 linear: the derived worst-case bound
    out = layer(x)
    reference = x.double() @ linear.weight.double().T + linear.bias.double()
    bound = dot_error_bound(x, linear.weight, granularity=granularity, out_dtype=torch.bfloat16,  # type: ignore
                            bias=linear.bias)
    assert ((out.double() - reference).abs() <= bound).all()
