"""Triton attention and fused ops on the GPU at the Wan shapes, with the CPU suite's error rule.

Each kernel's max abs error against a float64 reference must be at most 2x torch's own error at the
same precision (``kernel_testing.assert_within_budget``). Attention: Wan2.1-1.3B self-attention
(32,760 tokens: not a multiple of any tile, so the masked tail runs), its 512-token cross-attention,
and head dim 64, in bf16 and fp16, with the block sizes the JSON configs pick for this GPU; the float64
reference is computed for the first and last 384 query rows (it would not fit for all of them), which
covers full tiles and the partial last query tile. Fused ops at the 1.3B and 14B widths.
"""

from __future__ import annotations

import pytest
import torch

from kernel_testing import assert_within_budget

pytest.importorskip("triton")

from fastvideo.kernels import fused  # noqa: E402
from fastvideo.kernels import fused_triton as ft  # noqa: E402
from fastvideo.kernels.attention import triton_attention as ta  # noqa: E402
from fastvideo.kernels.registry import sdpa_attention  # noqa: E402

EPS = 1e-6
ROWS = 384


def _ref64_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """float64 ``softmax(q k^T / sqrt(d)) v`` for the query rows ``rows``, (B, R, H, D) layout."""
    qd = q[:, rows].double().transpose(1, 2)
    kd, vd = k.double().transpose(1, 2), v.double().transpose(1, 2)
    scores = qd @ kd.transpose(-1, -2) * qd.shape[-1] ** -0.5
    return (scores.softmax(-1) @ vd).transpose(1, 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", ["self-d128", "cross-d128", "self-d64"])
def test_attention_at_wan_shapes(case: str, dtype: torch.dtype, gpu) -> None:
    kind, dim = case.split("-d")
    head_dim = int(dim)
    heads = 1536 // head_dim
    len_q = gpu.pick(32760, 83)
    len_k = len_q if kind == "self" else gpu.pick(512, 19)
    heads = gpu.pick(heads, 2)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, n, heads, head_dim, device=gpu.device, dtype=dtype) for n in (len_q, len_k, len_k))
    out = ta.flash_attention_triton(q, k, v)
    lowp = sdpa_attention(q, k, v)
    rows = torch.cat([torch.arange(min(ROWS, len_q)), torch.arange(max(0, len_q - ROWS), len_q)]).unique()
    rows = rows.to(gpu.device)
    ref = _ref64_rows(q, k, v, rows)
    assert_within_budget(out[:, rows], ref, lowp[:, rows], f"attention {case} {dtype} Lq={len_q} Lk={len_k}",
                         dtype=dtype)


def _rope_lowp(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotation computed entirely in x's dtype (what the eager model does), the torch baseline."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[None, :, None], sin[None, :, None]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("width,heads,tokens", [(1536, 12, 32760), (5120, 40, 75600)], ids=["1.3b", "14b"])
def test_fused_ops_at_wan_widths(width: int, heads: int, tokens: int, dtype: torch.dtype, gpu) -> None:
    tokens = gpu.pick(tokens, 37)
    width, heads = gpu.pick((width, heads), (width // 16, heads // 4))
    dev = gpu.device
    torch.manual_seed(1)
    x = (torch.randn(1, tokens, width, device=dev, dtype=torch.float32) * 2 + 0.5).to(dtype)
    y = torch.randn(1, tokens, width, device=dev, dtype=dtype)
    w = (torch.rand(width, device=dev) + 0.5).to(dtype)
    scale, shift, gate = (torch.randn(1, 6, width, device=dev) * 0.5).chunk(6, dim=1)[:3]  # (1, 1, C) views
    angles = torch.rand(tokens, width // heads // 2, device=dev, dtype=torch.float64) * 6.3
    cos, sin = angles.cos().float(), angles.sin().float()
    xh = x.unflatten(2, (heads, -1))

    cases = {
        "rms_norm": (ft.rms_norm_triton(x, w, EPS), fused.rms_norm_ref(x.double(), w.double(), EPS),
                     torch.nn.functional.rms_norm(x, (width,), w, EPS)),
        "layer_norm_modulate": (ft.layer_norm_modulate_triton(x, scale, shift, EPS),
                                fused.layer_norm_modulate_ref(x.double(), scale.double(), shift.double(), EPS),
                                torch.nn.functional.layer_norm(x, (width,), eps=EPS) * (1 + scale.to(dtype))
                                + shift.to(dtype)),
        "gated_residual": (ft.gated_residual_triton(x, y, gate), fused.gated_residual_ref(x.double(), y.double(),
                                                                                          gate.double()),
                           x + y * gate.to(dtype)),
        "apply_rope": (ft.apply_rope_triton(xh, cos, sin), fused.apply_rope_ref(xh.double(), cos.double(),
                                                                                sin.double()),
                       _rope_lowp(xh, cos.to(dtype), sin.to(dtype))),
    }
    for name, (out, ref64, lowp) in cases.items():
        assert_within_budget(out, ref64, lowp, f"{name} C={width} {dtype}", dtype=dtype)
