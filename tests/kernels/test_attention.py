"""Triton attention kernel: accuracy vs float64, odd and cross-attention lengths, strides,
poisoned outputs, and the ``fastvideo::flash_attention`` custom op under compile/export.

Runs on CPU through the Triton interpreter (see conftest.py); shapes are kept tiny.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from fastvideo.kernels.attention import triton_attention as ta
from fastvideo.kernels.attention.tuning import AttentionConfig
from fastvideo.kernels.registry import sdpa_attention

LOW = (torch.bfloat16, torch.float16)


def _qkv(b: int, lq: int, lk: int, h: int, d: int, dtype: torch.dtype, device: torch.device,
         sharpness: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = (torch.randn(b, lq, h, d, dtype=torch.float64) * sharpness).to(device=device, dtype=dtype)
    k = torch.randn(b, lk, h, d, dtype=torch.float64).to(device=device, dtype=dtype)
    v = torch.randn(b, lk, h, d, dtype=torch.float64).to(device=device, dtype=dtype)
    return q, k, v


def _ref64(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Float64 attention on CPU, ``(B, L, H, D)`` layout, written out (not SDPA) to be independent."""
    qd, kd, vd = (t.detach().cpu().double().transpose(1, 2) for t in (q, k, v))
    s = qd @ kd.transpose(-1, -2) * (scale if scale is not None else qd.shape[-1] ** -0.5)
    return (s.softmax(-1) @ vd).transpose(1, 2)


def _poisoned(like: torch.Tensor) -> torch.Tensor:
    return torch.full(like.shape, float("nan"), dtype=like.dtype, device=like.device)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("lq,lk", [(1, 1), (17, 17), (67, 67), (17, 67), (67, 1), (1, 67), (33, 16)])
def test_matches_float64(dtype: torch.dtype, lq: int, lk: int, device: torch.device, check_error) -> None:
    if dtype == torch.float32 and device.type == "cuda":
        pytest.skip("float32 is an interpreter-only test dtype")
    q, k, v = _qkv(2, lq, lk, 3, 32, dtype, device)
    out = ta.flash_attention_triton(q, k, v, out=_poisoned(q))
    check_error(out, _ref64(q, k, v), sdpa_attention(q, k, v), f"{dtype} Lq={lq} Lk={lk}", dtype=dtype)


@pytest.mark.parametrize("head_dim", [16, 64, 128])
@pytest.mark.parametrize("dtype", LOW)
def test_head_dims(head_dim: int, dtype: torch.dtype, device: torch.device, check_error) -> None:
    q, k, v = _qkv(1, 19, 23, 2, head_dim, dtype, device)
    out = ta.flash_attention_triton(q, k, v, out=_poisoned(q))
    check_error(out, _ref64(q, k, v), sdpa_attention(q, k, v), f"{dtype} d={head_dim}", dtype=dtype)


@pytest.mark.parametrize("block_m,block_n", [(16, 32), (32, 16), (64, 64)])
def test_block_sizes_and_sharp_softmax(block_m: int, block_n: int, device: torch.device, check_error) -> None:
    """Tiles larger/smaller than the sequence, a masked tail, and peaky logits (online max shifts)."""
    q, k, v = _qkv(1, 45, 51, 2, 32, torch.bfloat16, device, sharpness=4.0)
    out = ta.flash_attention_triton(q, k, v, out=_poisoned(q), config=AttentionConfig(block_m, block_n))
    check_error(out, _ref64(q, k, v), sdpa_attention(q, k, v), f"blocks {block_m}x{block_n}")


def test_strided_inputs_and_custom_scale(device: torch.device, check_error) -> None:
    """q from a (B, H, L, D) tensor, k/v sliced out of a packed (B, L, 2, H, D) tensor."""
    b, lq, lk, h, d = 2, 21, 30, 3, 32
    q = torch.randn(b, h, lq, d, device=device, dtype=torch.float16).transpose(1, 2)
    kv = torch.randn(b, lk, 2, h, d, device=device, dtype=torch.float16)
    k, v = kv[:, :, 0], kv[:, :, 1]
    assert not q.is_contiguous() and not k.is_contiguous()
    out = ta.flash_attention_triton(q, k, v, scale=0.3)
    lowp = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=0.3).transpose(1, 2)
    check_error(out, _ref64(q, k, v, scale=0.3), lowp, "strided, scale=0.3")
    assert out.is_contiguous()


def test_strided_output_buffer(device: torch.device) -> None:
    q, k, v = _qkv(1, 18, 18, 2, 16, torch.float16, device)
    buf = torch.full((1, 2, 18, 16), float("nan"), dtype=q.dtype, device=device)
    out = ta.flash_attention_triton(q, k, v, out=buf.transpose(1, 2))
    torch.testing.assert_close(out, ta.flash_attention_triton(q, k, v), rtol=0, atol=0)


def test_rejects_bad_inputs(device: torch.device) -> None:
    q, k, v = _qkv(1, 4, 5, 2, 16, torch.float16, device)
    with pytest.raises(ValueError, match="share batch, heads, head_dim"):
        ta.flash_attention_triton(q, k[:, :, :1], v[:, :, :1])
    with pytest.raises(ValueError, match="k and v shapes differ"):
        ta.flash_attention_triton(q, k, v[:, :3])
    with pytest.raises(ValueError, match="kv length"):
        ta.flash_attention_triton(q, k[:, :0], v[:, :0])
    with pytest.raises(ValueError, match="dtypes differ"):
        ta.flash_attention_triton(q, k.float(), v)
    with pytest.raises(ValueError, match="head_dim 24"):
        ta.flash_attention_triton(*(torch.cat([t, t[..., :8]], -1) for t in (q, k, v)))
    with pytest.raises(ValueError, match="float64"):
        ta.flash_attention_triton(q.double(), k.double(), v.double())


def test_config_that_does_not_fit_falls_back(device: torch.device, monkeypatch: pytest.MonkeyPatch) -> None:
    """A JSON config hitting Triton's OutOfResources is replaced by FALLBACK_CONFIG, once."""
    from triton.runtime.errors import OutOfResources

    real_launch, tried = ta._launch, []

    def launch(q, k, v, out, sm_scale, cfg):  # noqa: ANN001, ANN202
        tried.append(cfg)
        if cfg != ta.FALLBACK_CONFIG:
            raise OutOfResources(300_000, 232_448, "shared memory")
        real_launch(q, k, v, out, sm_scale, cfg)

    monkeypatch.setattr(ta, "_launch", launch)
    monkeypatch.setattr(ta, "_CONFIGS", {})
    q, k, v = _qkv(1, 5, 7, 2, 16, torch.float16, device)
    torch.testing.assert_close(ta.flash_attention_triton(q, k, v), sdpa_attention(q, k, v), rtol=2e-3, atol=2e-3)
    ta.flash_attention_triton(q, k, v)
    assert tried[1:] == [ta.FALLBACK_CONFIG, ta.FALLBACK_CONFIG] and tried[0] != ta.FALLBACK_CONFIG
    with pytest.raises(OutOfResources):  # an explicit config is never replaced
        ta.flash_attention_triton(q, k, v, config=AttentionConfig(128, 128))


def test_custom_op_schema_and_fake(device: torch.device) -> None:
    q, k, v = _qkv(1, 5, 7, 2, 16, torch.float16, device)
    torch.library.opcheck(torch.ops.fastvideo.flash_attention.default, (q, k, v),
                          test_utils=("test_schema", "test_faketensor"))


class _Attn(torch.nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return ta.triton_attention(q, k, v) * 2.0


def test_torch_compile_fullgraph(device: torch.device) -> None:
    torch._dynamo.reset()
    q, k, v = _qkv(1, 17, 9, 2, 16, torch.float16, device)
    compiled = torch.compile(_Attn(), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v), _Attn()(q, k, v), rtol=0, atol=0)


def test_torch_export_with_dynamic_lengths(device: torch.device) -> None:
    q, k, v = _qkv(1, 17, 9, 2, 16, torch.float16, device)
    lq, lk = torch.export.Dim("lq", min=2, max=4096), torch.export.Dim("lk", min=2, max=4096)
    exported = torch.export.export(_Attn(), (q, k, v), dynamic_shapes=({1: lq}, {1: lk}, {1: lk}))
    assert "fastvideo.flash_attention" in str(exported.graph_module.code)
    q2, k2, v2 = _qkv(1, 5, 33, 2, 16, torch.float16, device)
    torch.testing.assert_close(exported.module()(q2, k2, v2), _Attn()(q2, k2, v2), rtol=0, atol=0)
