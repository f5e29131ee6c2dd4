"""FP8 (e4m3 q·k) Triton attention: equals its torch emulation, stays within the documented bound
of exact attention, and is selectable as the ``triton_fp8`` backend where the ``triton`` one is.

Runs on CPU through the Triton interpreter (see conftest.py); shapes are kept tiny.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from fastvideo.kernels.attention import triton_fp8_attention as fa
from fastvideo.kernels.attention.tuning import AttentionConfig
from fastvideo.kernels.registry import (AttentionBackendError, available_backends, sdpa_attention,
                                        select_attention_backend)

#: Rounding of p to the input dtype and of the output, in units of max|v| (module contract).
LOWP_TERM = {torch.float32: 0.0, torch.bfloat16: 2 * 2.0 ** -8, torch.float16: 2 * 2.0 ** -11}


def _qkv(b: int, lq: int, lk: int, h: int, d: int, dtype: torch.dtype, device: torch.device,
         sharpness: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = (torch.randn(b, lq, h, d) * sharpness).to(device=device, dtype=dtype)
    k = torch.randn(b, lk, h, d).to(device=device, dtype=dtype)
    v = torch.randn(b, lk, h, d).to(device=device, dtype=dtype)
    return q, k, v


def _exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Torch SDPA in float64 on CPU (the full-precision attention the bound is stated against)."""
    return sdpa_attention(*(t.detach().cpu().double() for t in (q, k, v)))


def test_quantization_is_per_head_amax_over_448() -> None:
    x = torch.randn(2, 5, 3, 8)
    x[1, :, 2] = 0.0
    x8, scale = fa.quantize_per_head(x)
    assert x8.dtype == torch.float8_e4m3fn and scale.shape == (2, 3)
    torch.testing.assert_close(scale[0], x[0].abs().amax(dim=(0, 2)) / 448.0)
    assert scale[1, 2] == 1.0 and not x8[1, :, 2].float().any()
    assert x8.float().abs().amax() == 448.0  # each head's amax lands on the largest e4m3 value
    rel = ((x8.float() * scale[:, None, :, None] - x).abs() / x.abs().clamp_min(1e-30))
    normal = x.abs() >= 2.0 ** -6 * scale[:, None, :, None]
    assert rel[normal].max() <= fa.E4M3_U


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("lq,lk,head_dim", [(37, 37, 128), (17, 67, 64), (1, 5, 32)])
def test_kernel_equals_its_emulation(dtype: torch.dtype, lq: int, lk: int, head_dim: int,
                                     device: torch.device) -> None:
    """Same quantization, same arithmetic: differences are fp32 summation order (and, in low
    precision, p rounded against the running instead of the final row max: one ulp of the dtype)."""
    q, k, v = _qkv(1, lq, lk, 2, head_dim, dtype, device, sharpness=2.0)
    out = fa.flash_attention_fp8_triton(q, k, v, config=AttentionConfig(16, 16))
    ref = fa.fp8_attention_reference(q, k, v)
    tol = {torch.float32: 1e-5, torch.bfloat16: 2.0 ** -7, torch.float16: 2.0 ** -10}[dtype]
    err = (out.float() - ref.float()).abs().max().item()
    assert err <= tol * max(1.0, v.float().abs().max().item()), f"{dtype}: max |kernel - emulation| = {err}"


def _logits(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    qd, kd = (t.double().transpose(1, 2) for t in (q, k))
    return qd @ kd.transpose(-1, -2) / q.shape[-1] ** 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lq,lk,qk_scale", [(37, 37, 1.0), (29, 50, 1.0), (29, 50, 0.25)])
def test_within_documented_bounds_of_exact_attention(dtype: torch.dtype, lq: int, lk: int, qk_scale: float,
                                                     device: torch.device) -> None:
    """Wan head dim 128, lengths that are not a multiple of any block; every level of the bound."""
    q, k, v = _qkv(2, lq, lk, 2, 128, dtype, device)
    q, k = (q.float() * qk_scale).to(dtype), (k.float() * qk_scale).to(dtype)
    out = fa.flash_attention_fp8_triton(q, k, v).cpu().double()
    qc, kc, vc = q.cpu(), k.cpu(), v.cpu()
    exact = _exact(qc, kc, vc)
    err = (out - exact).abs().amax(-1)  # (B, Lq, H)
    vmax = vc.double().abs().amax(dim=(1, 3))[:, None, :]
    lowp = (LOWP_TERM[dtype] + 1e-6) * vmax
    # 1. each logit's quantization error is within eps_ij
    q8, sq = fa.quantize_per_head(qc)
    k8, sk = fa.quantize_per_head(kc)
    dlogit = (_logits(q8.double() * sq.double()[:, None, :, None], k8.double() * sk.double()[:, None, :, None])
              - _logits(qc, kc)).abs()
    assert dlogit.max() > 0 and (dlogit <= fa.fp8_logit_error_bound(qc, kc)).all()
    # 2. the output moves no more than the measured logit error allows
    assert (err <= fa.softmax_output_bound(dlogit.amax(-1), vc) + lowp).all()
    # 3. the a-priori bound of the module contract
    bound = fa.fp8_output_bound(qc, kc, vc) + lowp
    assert (err <= bound).all(), f"worst err/bound = {(err / bound).max().item():.3f}"
    if qk_scale <= 0.25:  # softer logits: the a-priori bound is a useful one (below 20% of max|v|)
        assert (bound < 0.2 * vmax).all()


def test_logit_bound_fails_for_a_biased_quantizer() -> None:
    """The logit bound can fail: truncating q/k to a power of two (biased, as a quantizer with a
    wrong rounding mode) breaks it on the diagonal of self-similar q = k, where e4m3 stays inside."""
    q = torch.randn(1, 16, 1, 128, dtype=torch.float64)
    eps = fa.fp8_logit_error_bound(q, q).diagonal(dim1=-2, dim2=-1)
    truncated = torch.sign(q) * torch.exp2(torch.floor(torch.log2(q.abs())))
    bad = (_logits(truncated, truncated) - _logits(q, q)).abs().diagonal(dim1=-2, dim2=-1)
    assert (bad > eps).all()
    q8, sq = fa.quantize_per_head(q)
    deq = q8.double() * sq.double()[:, None, :, None]
    good = (_logits(deq, deq) - _logits(q, q)).abs().diagonal(dim1=-2, dim2=-1)
    assert (good <= eps).all()


def test_strided_inputs_and_output_buffer(device: torch.device) -> None:
    b, lq, lk, h, d = 1, 21, 30, 2, 64
    q = torch.randn(b, h, lq, d, device=device, dtype=torch.bfloat16).transpose(1, 2)
    kv = torch.randn(b, lk, 2, h, d, device=device, dtype=torch.bfloat16)
    k, v = kv[:, :, 0], kv[:, :, 1]
    out = torch.full((b, lq, h, d), float("nan"), dtype=torch.bfloat16, device=device)
    fa.flash_attention_fp8_triton(q, k, v, out=out)
    ref = fa.fp8_attention_reference(q, k, v)
    assert (out.float() - ref.float()).abs().max() <= 2.0 ** -7 * v.float().abs().max()


def test_registry_lists_and_selects_triton_fp8(device: torch.device) -> None:
    assert "triton_fp8" in available_backends()
    backend = select_attention_backend(" Triton_FP8 ", dtype=torch.bfloat16, head_dim=128, device=device)
    assert backend.name == "triton_fp8"
    q, k, v = _qkv(1, 9, 20, 2, 128, torch.bfloat16, device)
    out = backend(q, k, v)
    ref = fa.fp8_attention_reference(q, k, v)
    assert (out.float() - ref.float()).abs().max() <= 2.0 ** -7 * v.float().abs().max()
    # the custom op (what compiled graphs call) is the same kernel
    torch.testing.assert_close(torch.ops.fastvideo.flash_attention_fp8(q, k, v), out, rtol=0, atol=0)


@pytest.mark.parametrize("dtype,head_dim,dev,reason", [
    (torch.float64, 64, None, "dtype torch.float64 not supported"),
    (torch.bfloat16, 96, None, "head_dim 96 not supported"),
])
def test_triton_fp8_rejections(dtype: torch.dtype, head_dim: int, dev: str | None, reason: str,
                               device: torch.device) -> None:
    with pytest.raises(AttentionBackendError, match=f"attention backend 'triton_fp8' rejected: {reason}"):
        select_attention_backend("triton_fp8", dtype=dtype, head_dim=head_dim, device=dev or device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_triton_fp8_rejects_cuda_without_gpu() -> None:
    with pytest.raises(AttentionBackendError, match="torch.cuda.is_available"):
        select_attention_backend("triton_fp8", dtype=torch.bfloat16, head_dim=128, device="cuda")


def test_rejects_gpus_without_fp8_tensor_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """sm_80/86 have no e4m3 MMA: refused with the reason and the bf16 alternative."""
    monkeypatch.setattr("fastvideo.kernels.attention.triton_attention.attention_check", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    reason = fa.fp8_attention_check(torch.bfloat16, 128, torch.device("cuda"))
    assert reason is not None and "8.9" in reason and "sm_80" in reason and "'triton'" in reason
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert fa.fp8_attention_check(torch.bfloat16, 128, torch.device("cuda")) is None


def test_engine_attention_backend_selects_triton_fp8(tiny_model_dir, device: torch.device) -> None:
    """``engine.attention_backend = "triton_fp8"`` loads the built-in model with the fp8 kernel in its
    DiT and generates (on CPU only because the interpreter runs, as for ``triton``)."""
    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained(str(tiny_model_dir), attention_backend="triton_fp8",
                                               device=str(device), dtype="bf16")
    try:
        assert generator.pipeline.dit.attention_backend.name == "triton_fp8"
        result = generator.generate({"prompt": "a fox", "output": {"save_video": False, "return_frames": True},
                                     "sampling": {"width": 32, "height": 32, "num_frames": 5,
                                                  "num_inference_steps": 1, "seed": 3}})
        frames = torch.as_tensor(result.frames)
        assert frames.shape == (5, 32, 32, 3) and frames.float().std() > 0
    finally:
        generator.shutdown()


class _Fp8Attn(torch.nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.ops.fastvideo.flash_attention_fp8(q, k, v)


def test_custom_op_traces_as_one_node(device: torch.device) -> None:
    """``torch.compile(fullgraph=True)`` and ``torch.export`` see the fp8 op as one node (its fake impl)."""
    q, k, v = _qkv(1, 19, 23, 2, 32, torch.bfloat16, device)
    compiled = torch.compile(_Fp8Attn(), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v), _Fp8Attn()(q, k, v), rtol=0, atol=0)
    exported = torch.export.export(_Fp8Attn(), (q, k, v))
    assert "fastvideo.flash_attention_fp8" in str(exported.graph_module.code)
    torch.testing.assert_close(exported.module()(q, k, v), _Fp8Attn()(q, k, v), rtol=0, atol=0)
