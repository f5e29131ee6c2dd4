"""Fused DiT ops: Triton vs torch reference vs float64, broadcasting, poisoned/strided outputs,
the OpsBackend dispatcher, and the custom ops under compile/export.

Runs on CPU through the Triton interpreter (see conftest.py); shapes are kept tiny.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
import torch.nn.functional as F

from fastvideo.kernels import fused
from fastvideo.kernels import fused_triton as ft

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
EPS = 1e-6


def _nan_like(x: torch.Tensor) -> torch.Tensor:
    return torch.full(x.shape, float("nan"), dtype=x.dtype, device=x.device)


def _rand(*shape: int, dtype: torch.dtype, device: torch.device, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def _same_as_reference(out: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """Triton and the torch reference do the same float32 math and one rounding: allow 1 ulp."""
    assert out.dtype == ref.dtype and out.shape == ref.shape, what
    info = torch.finfo(ref.dtype)
    tol = info.eps * ref.double().abs().clamp_min(info.tiny)
    diff = (out.double() - ref.double()).abs()
    assert (diff <= tol + 1e-6).all(), f"{what}: triton vs reference max diff {diff.max().item():.3e}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 17, 48), (1, 1, 96), (3, 67)])
def test_rms_norm(dtype: torch.dtype, shape: tuple[int, ...], device: torch.device, check_error) -> None:
    x = _rand(*shape, dtype=dtype, device=device, scale=3.0)
    w = (torch.rand(shape[-1], dtype=torch.float64) + 0.5).to(device=device, dtype=dtype)
    out = ft.rms_norm_triton(x, w, EPS, out=_nan_like(x))
    ref64 = fused.rms_norm_ref(x.double(), w.double(), EPS)
    check_error(out, ref64, F.rms_norm(x, (shape[-1],), w, EPS), f"rms_norm {dtype} {shape}", dtype=dtype)
    _same_as_reference(out, fused.rms_norm_ref(x, w, EPS), "rms_norm")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mod_shape", ["c", "bc", "b1c", "blc"])
def test_layer_norm_modulate(dtype: torch.dtype, mod_shape: str, device: torch.device, check_error) -> None:
    b, length, c = 2, 17, 40
    x = _rand(b, length, c, dtype=dtype, device=device, scale=2.0) + 0.5
    shapes = {"c": (c,), "bc": (b, c), "b1c": (b, 1, c), "blc": (b, length, c)}[mod_shape]
    scale = _rand(*shapes, dtype=torch.float32, device=device, scale=0.5)
    shift = _rand(*shapes, dtype=torch.float32, device=device, scale=0.5)
    out = ft.layer_norm_modulate_triton(x, scale, shift, EPS, out=_nan_like(x))
    ref64 = fused.layer_norm_modulate_ref(x.double(), scale.double(), shift.double(), EPS)
    s, h = fused._as_modulation(scale).to(dtype), fused._as_modulation(shift).to(dtype)
    lowp = F.layer_norm(x, (c,), eps=EPS) * (1 + s) + h
    check_error(out, ref64, lowp, f"layer_norm_modulate {dtype} {mod_shape}", dtype=dtype)
    _same_as_reference(out, fused.layer_norm_modulate_ref(x, scale, shift, EPS), "layer_norm_modulate")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gate_shape", ["b1c", "blc", "bc"])
def test_gated_residual(dtype: torch.dtype, gate_shape: str, device: torch.device, check_error) -> None:
    b, length, c = 2, 13, 1100  # c > one 1024-wide block: exercises the channel-block grid + tail
    x = _rand(b, length, c, dtype=dtype, device=device)
    y = _rand(b, length, c, dtype=dtype, device=device)
    gate = _rand(*{"b1c": (b, 1, c), "blc": (b, length, c), "bc": (b, c)}[gate_shape],
                 dtype=torch.float32, device=device)
    out = ft.gated_residual_triton(x, y, gate, out=_nan_like(x))
    ref64 = fused.gated_residual_ref(x.double(), y.double(), gate.double())
    lowp = x + y * fused._as_modulation(gate).to(dtype)
    check_error(out, ref64, lowp, f"gated_residual {dtype} {gate_shape}", dtype=dtype)
    _same_as_reference(out, fused.gated_residual_ref(x, y, gate), "gated_residual")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,head_dim,length", [(3, 16, 17), (12, 128, 5), (5, 12, 1)])
def test_apply_rope(dtype: torch.dtype, heads: int, head_dim: int, length: int, device: torch.device,
                    check_error) -> None:
    x = _rand(2, length, heads, head_dim, dtype=dtype, device=device, scale=2.0)
    angles = torch.rand(length, head_dim // 2, dtype=torch.float64) * 6.3
    cos, sin = angles.cos().float().to(device), angles.sin().float().to(device)
    out = ft.apply_rope_triton(x, cos, sin, out=_nan_like(x))
    ref64 = fused.apply_rope_ref(x.double(), cos.double(), sin.double())
    lowp = _diffusers_rope(x, *_interleaved_tables(cos.to(dtype), sin.to(dtype)), compute_dtype=dtype)
    check_error(out, ref64, lowp, f"apply_rope {dtype} H={heads} D={head_dim} L={length}", dtype=dtype)
    _same_as_reference(out, fused.apply_rope_ref(x, cos, sin), "apply_rope")


def _interleaved_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, D/2) -> diffusers' repeat-interleaved (1, L, 1, D) tables."""
    return (cos.repeat_interleave(2, -1)[None, :, None], sin.repeat_interleave(2, -1)[None, :, None])


def _diffusers_rope(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor,
                    compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The rotation diffusers' WanAttnProcessor applies (re-stated here to pin the layout)."""
    if compute_dtype is not None:
        x, freqs_cos, freqs_sin = x.to(compute_dtype), freqs_cos.to(compute_dtype), freqs_sin.to(compute_dtype)
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


def test_rope_layout_matches_diffusers_and_dit(device: torch.device) -> None:
    """Tables from diffusers' (1, L, 1, D) layout and the DiT's (1, L, 1, D/2) layout agree."""
    x = _rand(1, 9, 2, 16, dtype=torch.float32, device=device)
    angles = torch.rand(9, 8, dtype=torch.float64) * 6.3
    cos, sin = angles.cos().float().to(device), angles.sin().float().to(device)
    freqs_cos, freqs_sin = _interleaved_tables(cos, sin)
    expected = _diffusers_rope(x, freqs_cos, freqs_sin)
    from_diffusers = (freqs_cos[..., 0::2], freqs_sin[..., 1::2])
    for c, s in (from_diffusers, (cos[None, :, None], sin[None, :, None])):
        torch.testing.assert_close(ft.apply_rope_triton(x, c, s), expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(fused.apply_rope_ref(x, c, s), expected, rtol=1e-6, atol=1e-6)
    try:
        from fastvideo.engine.models.wan.transformer import apply_rotary_embedding
    except ImportError:
        return
    torch.testing.assert_close(apply_rotary_embedding(x, cos[None, :, None], sin[None, :, None]), expected,
                               rtol=1e-6, atol=1e-6)


def test_strided_inputs_and_outputs(device: torch.device) -> None:
    """Non-contiguous x (transposed views) and an out buffer that cannot be viewed as rows."""
    xt = _rand(2, 40, 11, dtype=torch.float16, device=device).transpose(1, 2)  # (2, 11, 40), strided
    w = torch.rand(40, device=device, dtype=torch.float16) + 0.5
    buf = torch.full((2, 40, 11), float("nan"), dtype=torch.float16, device=device).transpose(1, 2)
    out = ft.rms_norm_triton(xt, w, EPS, out=buf)
    assert out.data_ptr() == buf.data_ptr()
    _same_as_reference(buf, fused.rms_norm_ref(xt, w, EPS), "rms_norm strided")
    q = _rand(2, 4, 7, 16, dtype=torch.bfloat16, device=device).transpose(1, 2)  # (2, 7, 4, 16)
    angles = torch.rand(7, 8, dtype=torch.float64)
    cos, sin = angles.cos().float().to(device), angles.sin().float().to(device)
    _same_as_reference(ft.apply_rope_triton(q, cos, sin), fused.apply_rope_ref(q, cos, sin), "rope strided")


def test_rejects_bad_inputs(device: torch.device) -> None:
    x = _rand(1, 3, 8, dtype=torch.float16, device=device)
    with pytest.raises(ValueError, match="weight must be"):
        ft.rms_norm_triton(x, torch.ones(4, device=device), EPS)
    with pytest.raises(ValueError, match="does not broadcast"):
        ft.layer_norm_modulate_triton(x, torch.ones(2, 1, 8, device=device), torch.ones(8, device=device), EPS)
    with pytest.raises(ValueError, match="cos/sin"):
        ft.apply_rope_triton(x.view(1, 3, 2, 4), torch.ones(3, 3, device=device), torch.ones(3, 3, device=device))
    with pytest.raises(ValueError, match="float64"):
        ft.gated_residual_triton(x.double(), x.double(), torch.ones(8, device=device))


def test_ops_backend_selection(device: torch.device) -> None:
    assert fused.select_ops_backend(None, dtype=torch.bfloat16, device=device).name == "torch"
    assert fused.select_ops_backend(" Triton ", dtype=torch.bfloat16, device=device) is fused.TRITON_OPS
    assert fused.select_ops_backend("torch", dtype=torch.float64, device="meta") is fused.TORCH_OPS
    with pytest.raises(fused.OpsBackendError, match="unknown ops backend 'cuda_graphs'"):
        fused.select_ops_backend("cuda_graphs", dtype=torch.bfloat16, device=device)
    with pytest.raises(fused.OpsBackendError, match="rejected: dtype torch.float64"):
        fused.select_ops_backend("triton", dtype=torch.float64, device=device)
    with pytest.raises(fused.OpsBackendError, match="rejected: device meta"):
        fused.select_ops_backend("triton", dtype=torch.bfloat16, device="meta")


def _op_args(device: torch.device) -> dict[str, tuple]:
    x = _rand(2, 6, 32, dtype=torch.bfloat16, device=device)
    mod = _rand(2, 1, 32, dtype=torch.float32, device=device)
    angles = torch.rand(6, 8, dtype=torch.float64)
    return {
        "rms_norm": (x, torch.rand(32, dtype=torch.bfloat16, device=device) + 0.5, EPS),
        "layer_norm_modulate": (x, mod, mod * 0.5, EPS),
        "apply_rope": (x.view(2, 6, 2, 16), angles.cos().float().to(device), angles.sin().float().to(device)),
        "gated_residual": (x, x * 0.5, mod),
    }


def test_custom_ops_schema_and_fake(device: torch.device) -> None:
    for name, args in _op_args(device).items():
        torch.library.opcheck(getattr(torch.ops.fastvideo, name).default, args,
                              test_utils=("test_schema", "test_faketensor"))


class _Block(torch.nn.Module):
    """A DiT-like chain of all four ops through one OpsBackend."""

    def __init__(self, ops: fused.OpsBackend) -> None:
        super().__init__()
        self.ops = ops

    def forward(self, x: torch.Tensor, w: torch.Tensor, mod: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        h = self.ops.layer_norm_modulate(x, mod, mod * 0.5, EPS)
        q = self.ops.rms_norm(h, w, EPS).unflatten(-1, (2, 16))
        q = self.ops.apply_rope(q, cos, sin).flatten(-2)
        return self.ops.gated_residual(x, q, mod)


def _block_inputs(device: torch.device, length: int = 6) -> tuple[torch.Tensor, ...]:
    angles = torch.rand(length, 8, dtype=torch.float64)
    return (_rand(2, length, 32, dtype=torch.bfloat16, device=device),
            torch.rand(32, dtype=torch.bfloat16, device=device) + 0.5,
            _rand(2, 1, 32, dtype=torch.float32, device=device),
            angles.cos().float().to(device), angles.sin().float().to(device))


def test_triton_ops_match_torch_ops_in_a_chain(device: torch.device) -> None:
    args = _block_inputs(device)
    torch.testing.assert_close(_Block(fused.TRITON_OPS)(*args), _Block(fused.TORCH_OPS)(*args),
                               rtol=2e-2, atol=2e-2)


def test_compile_fullgraph_and_export(device: torch.device) -> None:
    torch._dynamo.reset()
    block = _Block(fused.TRITON_OPS)
    args = _block_inputs(device)
    eager = block(*args)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*args), eager, rtol=0, atol=0)
    exported = torch.export.export(block, args)
    code = str(exported.graph_module.code)
    for name in ("rms_norm", "layer_norm_modulate", "apply_rope", "gated_residual"):
        assert f"fastvideo.{name}" in code, name
    torch.testing.assert_close(exported.module()(*args), eager, rtol=0, atol=0)
