"""Parity of fastvideo.engine.models.wan.transformer.WanTransformer3DModel with diffusers' WanTransformer3DModel.

Tiny random models (seconds on CPU). Every parameter of the reference is perturbed with seeded
noise first, so norm weights are not all-ones and biases not all-zeros: a wrong norm, a swapped
modulation chunk or a mis-ordered RoPE axis shows up as a large error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import WanTransformer3DModel as DiffusersWan  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from fastvideo.engine.models.wan.transformer import (  # noqa: E402
    WanDiTConfig,
    WanTransformer3DModel,
)
from fastvideo.kernels.registry import AttentionBackend, sdpa_attention  # noqa: E402
from wan_dit_fixtures import ours_from, reference_dit  # noqa: E402

FP32_TOL = 1e-4
# bf16 vs diffusers bf16 (same weights, same inputs). The model mirrors diffusers' op order and
# fp32 islands, so on CPU the outputs come out bit-identical (observed error 0.0). The bound is about
# one bf16 ulp at the output's magnitude (|y| <= ~6 here, ulp 2**-5) and below the bf16-vs-fp32 gap
# on the same inputs (~5e-2): e.g. doing the AdaLN modulation in bf16 instead of fp32 fails it.
BF16_TOL = 3e-2

TINY: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4,
    out_channels=4, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
    rope_max_seq_len=64,
)
# Second shape family: no cross-attn norm, temporal patching, odd freq_dim, C_in != C_out,
# head_dim 24 (t/h/w RoPE split 8/8/8 instead of 8/4/4).
TINY_ALT: dict[str, Any] = dict(
    patch_size=(2, 2, 1), num_attention_heads=3, attention_head_dim=24, in_channels=4,
    out_channels=6, text_dim=20, freq_dim=15, ffn_dim=40, num_layers=2, cross_attn_norm=False,
    rope_max_seq_len=32,
)
LATENT_FHW = {id(TINY): (3, 6, 10), id(TINY_ALT): (4, 6, 5)}


def _inputs(cfg: dict[str, Any], fhw: tuple[int, int, int], seed: int = 7,
            dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg["in_channels"], *fhw, generator=gen).to(dtype)
    t = torch.tensor([999.0, 421.7])
    ctx = torch.randn(2, 7, cfg["text_dim"], generator=gen).to(dtype)
    return x, t, ctx


@pytest.fixture(params=[TINY, TINY_ALT], ids=["tiny", "tiny_alt"])
def cfg(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.param


def test_state_dict_keys_and_shapes_identical(cfg: dict[str, Any]) -> None:
    ref = reference_dit(cfg)
    ours = WanTransformer3DModel(WanDiTConfig.from_dict(dict(ref.config)))
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert set(ref_sd) == set(our_sd)
    assert {k: tuple(v.shape) for k, v in ref_sd.items()} == {k: tuple(v.shape) for k, v in our_sd.items()}


@torch.no_grad()
def test_fp32_forward_matches_diffusers(cfg: dict[str, Any]) -> None:
    ref = reference_dit(cfg)
    ours = ours_from(ref)
    fhw = LATENT_FHW[id(cfg)]
    x, t, ctx = _inputs(cfg, fhw)
    expected = ref(x, t, ctx, return_dict=False)[0]
    got = ours(x, t, ctx)
    assert got.shape == (2, cfg["out_channels"], *fhw) == expected.shape
    assert got.dtype == torch.float32
    assert expected.std() > 0.1  # the comparison is not between near-zero tensors
    err = (got - expected).abs().max().item()
    assert err <= FP32_TOL, f"max abs error {err:.3e} > {FP32_TOL}"

    # integer timesteps go through the same float32 sinusoid
    t_int = torch.tensor([999, 3])
    err_int = (ours(x, t_int, ctx) - ref(x, t_int, ctx, return_dict=False)[0]).abs().max().item()
    assert err_int <= FP32_TOL


@torch.no_grad()
def test_parity_check_is_sensitive() -> None:
    """Negative control: a small change to one q/k-norm weight must break the tolerance."""
    ref = reference_dit(TINY)
    ours = ours_from(ref)
    ours.blocks[1].attn1.norm_k.weight.mul_(1.05)
    x, t, ctx = _inputs(TINY, LATENT_FHW[id(TINY)])
    err = (ours(x, t, ctx) - ref(x, t, ctx, return_dict=False)[0]).abs().max().item()
    assert err > 10 * FP32_TOL


@torch.no_grad()
def test_bf16_matches_diffusers_from_pretrained(tmp_path: Path) -> None:
    """bf16 the way diffusers runs it: ``from_pretrained(torch_dtype=bf16)`` (fp32 islands kept)."""
    ref32 = reference_dit(TINY)
    ref32.save_pretrained(tmp_path)
    ref16 = DiffusersWan.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).eval()

    # the diffusers safetensors checkpoint loads strictly into our model
    ours = WanTransformer3DModel(WanDiTConfig.from_dict(dict(ref16.config))).eval()
    ours.load_state_dict(load_file(str(tmp_path / "diffusion_pytorch_model.safetensors")), strict=True)
    ours.to_inference_dtype(torch.bfloat16)
    ref_dtypes = {k: v.dtype for k, v in ref16.state_dict().items()}
    assert {k: v.dtype for k, v in ours.state_dict().items()} == ref_dtypes
    assert torch.float32 in ref_dtypes.values() and torch.bfloat16 in ref_dtypes.values()

    fhw = LATENT_FHW[id(TINY)]
    x, t, ctx = _inputs(TINY, fhw, seed=11, dtype=torch.bfloat16)
    expected = ref16(x, t, ctx, return_dict=False)[0]
    got = ours(x, t, ctx)
    assert got.dtype == torch.bfloat16 and got.shape == expected.shape
    assert torch.isfinite(got).all()
    err = (got.float() - expected.float()).abs().max().item()
    assert err <= BF16_TOL, f"bf16 max abs error vs diffusers {err:.3e} > {BF16_TOL}"

    # sanity: bf16 stays a bf16-sized distance from our fp32 result on the same weights
    exact = ours_from(ref32)(x.float(), t, ctx.float())
    assert (got.float() - exact).abs().max().item() < 0.25 * exact.abs().max().item()


@torch.no_grad()
def test_all_attention_goes_through_backend_and_rope_is_cached() -> None:
    ref = reference_dit(TINY)
    ours = ours_from(ref)
    calls: list[tuple[int, int]] = []

    def counting(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        calls.append((q.shape[1], k.shape[1]))
        return sdpa_attention(q, k, v)

    ours.set_attention_backend(AttentionBackend("counting", counting, lambda *_: None))
    fhw = LATENT_FHW[id(TINY)]
    x, t, ctx = _inputs(TINY, fhw)
    first = ours(x, t, ctx)
    tokens = math.prod(s // p for s, p in zip(fhw, TINY["patch_size"]))
    assert calls == [(tokens, tokens), (tokens, 7)] * TINY["num_layers"]
    assert torch.equal(first, ours(x, t, ctx))
    assert len(ours._rope_cache) == 1  # one table pair for the grid, reused across blocks/calls

    x2, t2, ctx2 = _inputs(TINY, (2, 4, 8), seed=3)
    err = (ours(x2, t2, ctx2) - ref(x2, t2, ctx2, return_dict=False)[0]).abs().max().item()
    assert err <= FP32_TOL
    assert len(ours._rope_cache) == 2


def test_rejects_unsupported_image_configs() -> None:
    # Wan2.1 I2V (both set, added_kv_proj_dim = width) is supported: tests/engine/test_wan_i2v.py.
    cfg = WanDiTConfig.from_dict({**TINY, "image_dim": 24, "added_kv_proj_dim": 24})
    with pytest.raises(NotImplementedError, match="equal to the model width"):
        WanTransformer3DModel(cfg)
    with pytest.raises(NotImplementedError, match="added_kv_proj_dim=24"):
        WanTransformer3DModel(WanDiTConfig.from_dict({**TINY, "added_kv_proj_dim": 24}))


def test_config_from_dict() -> None:
    raw = {**TINY, "patch_size": [1, 2, 2], "_class_name": "WanTransformer3DModel",
           "_diffusers_version": "0.33.0"}
    cfg = WanDiTConfig.from_dict(raw)
    assert cfg.patch_size == (1, 2, 2) and cfg.inner_dim == 32 and cfg.rope_axis_dims == (8, 4, 4)
    assert WanDiTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="window_size"):
        WanDiTConfig.from_dict({**raw, "window_size": [-1, -1]})


def test_rejects_bad_inputs() -> None:
    ours = WanTransformer3DModel(WanDiTConfig.from_dict(TINY))
    x, t, ctx = _inputs(TINY, (3, 5, 10))  # H=5 is not a multiple of the patch
    with pytest.raises(ValueError, match="multiples of patch_size"):
        ours(x, t, ctx)
    x, t, ctx = _inputs(TINY, (3, 6, 10))
    with pytest.raises(ValueError, match="timestep"):
        ours(x, t[:, None], ctx)
