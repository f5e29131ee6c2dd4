"""FP8 attention (``triton_fp8``) on the GPU at Wan2.1-1.3B's attention shapes against its torch emulation.

The kernel gets q/k in float8_e4m3fn (per-head scales) and runs e4m3 tensor-core MMA; the emulation
(``fp8_attention_reference``'s arithmetic, here for the first and last 384 query rows, which cover full
tiles and the partial last query tile) multiplies the same fp8 values in fp32. They differ by fp32
summation order and the rounding of p against the running instead of the final row max (one ulp of
bf16/fp16), so the bound is ``2 ulp * max|v|``. Skipped below sm_89 (no e4m3 tensor cores; the
backend refuses it there, which is checked too).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from fastvideo.kernels.attention import triton_fp8_attention as fa  # noqa: E402
from fastvideo.kernels.registry import AttentionBackendError, select_attention_backend  # noqa: E402

ROWS = 384
ULP = {torch.bfloat16: 2.0 ** -7, torch.float16: 2.0 ** -10}


def _emulation_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The kernel's arithmetic in fp32 torch for query rows ``rows`` (quantized over all rows, as the kernel)."""
    q8, sq = fa.quantize_per_head(q)
    k8, sk = fa.quantize_per_head(k)
    qd = (q8[:, rows].float() * sq[:, None, :, None]).transpose(1, 2)
    kd = (k8.float() * sk[:, None, :, None]).transpose(1, 2)
    s = qd @ kd.transpose(-1, -2) * q.shape[-1] ** -0.5
    p = torch.exp(s - s.amax(-1, keepdim=True))
    l_sum = p.sum(-1, keepdim=True)
    out = (p.to(v.dtype).float() @ v.float().transpose(1, 2)) / l_sum
    return out.transpose(1, 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("kind", ["self", "cross"])
def test_fp8_attention_matches_its_emulation_at_wan_shapes(kind: str, dtype: torch.dtype, gpu) -> None:
    if gpu.device.type == "cuda" and torch.cuda.get_device_capability(gpu.device) < fa.MIN_CAPABILITY:
        with pytest.raises(AttentionBackendError, match="8.9"):
            select_attention_backend("triton_fp8", dtype=dtype, head_dim=128, device=gpu.device)
        pytest.skip("fp8 attention needs sm_89+ (refusal checked)")
    len_q = gpu.pick(32760, 83)
    len_k = len_q if kind == "self" else gpu.pick(512, 19)
    heads = gpu.pick(12, 2)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, n, heads, 128, device=gpu.device, dtype=dtype) for n in (len_q, len_k, len_k))
    backend = select_attention_backend("triton_fp8", dtype=dtype, head_dim=128, device=gpu.device)
    out = backend(q, k, v)
    assert out.shape == q.shape and out.dtype == dtype and torch.isfinite(out).all()
    rows = torch.cat([torch.arange(min(ROWS, len_q)), torch.arange(max(0, len_q - ROWS), len_q)]).unique()
    ref = _emulation_rows(q, k, v, rows.to(gpu.device))
    err = (out[:, rows.to(gpu.device)].float() - ref).abs().max().item()
    assert err <= ULP[dtype] * v.float().abs().max().item(), f"{kind} {dtype}: max |kernel - emulation| = {err}"
    # the distance to full-precision attention, for the record (bounded on the CPU: test_attention_fp8.py)
    full = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2).float() for t in (q, k, v)))
    print(f"fp8 {kind} {dtype}: |kernel - emulation| {err:.3g}, |kernel - fp32 SDPA| "
          f"{(out.float() - full.transpose(1, 2)).abs().max().item():.3g}")
