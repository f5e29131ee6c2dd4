"""A tiny Wan DiT with the ``triton`` attention backend (and the fused Triton ops) matches the same
model with ``sdpa`` and its eager code.

Self-attention runs on 45 tokens (grid 3x3x5) and cross-attention on 45 queries x 7 text tokens,
so both odd lengths and Lq != Lk go through the kernel inside a real model.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

dit = pytest.importorskip("fastvideo.engine.models.wan.transformer")

from fastvideo.kernels.fused import TORCH_OPS, select_ops_backend  # noqa: E402
from fastvideo.kernels.registry import select_attention_backend  # noqa: E402

TINY: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
    text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True, rope_max_seq_len=64,
)


def _model() -> "dit.WanTransformer3DModel":
    model = dit.WanTransformer3DModel(dit.WanDiTConfig(**TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():  # non-trivial norms/biases, as in tests/engine
            p.add_(0.2 * torch.randn_like(p))
    return model


def _inputs(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.randn(2, TINY["in_channels"], 3, 6, 10).to(device=device, dtype=dtype)
    t = torch.tensor([999.0, 421.7], device=device)
    ctx = torch.randn(2, 7, TINY["text_dim"]).to(device=device, dtype=dtype)
    return x, t, ctx


def _run(model: "dit.WanTransformer3DModel", backend_name: str, dtype: torch.dtype,
         inputs: tuple[torch.Tensor, ...], device: torch.device, ops: str | None = None) -> torch.Tensor:
    backend = select_attention_backend(backend_name, dtype=dtype, head_dim=TINY["attention_head_dim"], device=device)
    model.set_attention_backend(backend)
    model.set_ops_backend(select_ops_backend(ops, dtype=dtype, device=device) if ops else None)
    with torch.inference_mode():
        return model(*inputs)


def _bf16_case(device: torch.device) -> tuple["dit.WanTransformer3DModel", tuple[torch.Tensor, ...], torch.Tensor]:
    """A random tiny model cast to bf16, its bf16 inputs, and the float64 model's output on them."""
    model = _model()
    inputs = _inputs(torch.float32, device)
    reference = _run(model.double().to(device), "sdpa", torch.float64,
                     tuple(t.double() if t.is_floating_point() else t for t in inputs), device)
    model = model.float().to_inference_dtype(torch.bfloat16).to(device)
    return model, (inputs[0].bfloat16(), inputs[1], inputs[2].bfloat16()), reference


def test_tiny_dit_triton_matches_sdpa_bf16(device: torch.device, check_error) -> None:
    model, low_inputs, reference = _bf16_case(device)
    sdpa_out = _run(model, "sdpa", torch.bfloat16, low_inputs, device)
    triton_out = _run(model, "triton", torch.bfloat16, low_inputs, device)
    check_error(triton_out, reference, sdpa_out, "tiny DiT bf16, triton vs float64 model", dtype=torch.bfloat16)


def test_tiny_dit_triton_matches_sdpa_fp32(device: torch.device) -> None:
    if device.type == "cuda":
        pytest.skip("float32 is an interpreter-only dtype for the triton backend")
    model = _model().to(device)
    inputs = _inputs(torch.float32, device)
    torch.testing.assert_close(_run(model, "triton", torch.float32, inputs, device),
                               _run(model, "sdpa", torch.float32, inputs, device), rtol=1e-4, atol=1e-4)


def test_tiny_dit_triton_attention_and_fused_ops_bf16(device: torch.device, check_error) -> None:
    """The whole fast path (triton attention + fused triton norms/modulation/RoPE/residuals) in bf16
    is as close to a float64 model as the eager bf16 model is."""
    model, low_inputs, reference = _bf16_case(device)
    eager_out = _run(model, "sdpa", torch.bfloat16, low_inputs, device)
    fused_out = _run(model, "triton", torch.bfloat16, low_inputs, device, ops="triton")
    assert model.ops is not None and model.ops.name == "triton"
    check_error(fused_out, reference, eager_out, "tiny DiT bf16, triton attention + fused ops", dtype=torch.bfloat16)


def test_fused_ops_wiring_matches_eager_fp32(device: torch.device) -> None:
    """In float32 the fused paths (torch references and triton kernels) compute what the eager code
    does, so any wiring mistake (scale/shift swapped, a gate dropped, RoPE on cross-attention) shows."""
    if device.type == "cuda":
        pytest.skip("float32 is an interpreter-only dtype for the triton ops")
    model = _model().to(device)
    inputs = _inputs(torch.float32, device)
    eager = _run(model, "sdpa", torch.float32, inputs, device)
    torch.testing.assert_close(_run(model, "sdpa", torch.float32, inputs, device, ops="torch"), eager,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_run(model, "sdpa", torch.float32, inputs, device, ops="triton"), eager,
                               rtol=1e-4, atol=1e-4)
    model.set_ops_backend(None)
    assert model.ops is None
    with pytest.raises(TypeError, match="OpsBackend"):
        model.set_ops_backend("triton")  # type: ignore[arg-type]
    assert TORCH_OPS.name == "torch"


def test_generator_loads_with_fused_ops(tiny_model_dir, device: torch.device) -> None:
    """``engine.ops_backend`` reaches the DiT at load time and a generation runs through it."""
    if device.type == "cuda":
        pytest.skip("the built-in model runs float32 on CPU")
    from fastvideo import VideoGenerator

    gen = VideoGenerator.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32", ops_backend="torch")
    try:
        assert gen.pipeline.dit.ops is not None and gen.pipeline.dit.ops.name == "torch"
        request = {"prompt": "fused", "sampling": {"width": 32, "height": 32, "num_frames": 5,
                                                  "num_inference_steps": 2, "seed": 3},
                   "output": {"save_video": False, "return_frames": True}}
        fused = gen.generate(request)
    finally:
        gen.shutdown()
    plain = VideoGenerator.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")
    try:
        assert plain.pipeline.dit.ops is None
        eager = plain.generate(request)
    finally:
        plain.shutdown()
    assert fused.frames.shape == eager.frames.shape
    assert abs(fused.frames.astype(int) - eager.frames.astype(int)).max() <= 1
