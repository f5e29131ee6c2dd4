"""Wan2.2 TI2V-5B: the DiT's per-token timesteps against diffusers' WanTransformer3DModel (2-D timestep).

Tiny random models (seconds on CPU), diffusers as the oracle. The per-token timestep is what diffusers'
TI2V pipelines pass: the first latent frame's tokens at 0 (the clean image frame), every other token at t.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

pytest.importorskip("diffusers")

from wan_dit_fixtures import ours_from, reference_dit  # noqa: E402

FP32_TOL = 1e-4

# TI2V-5B's shape family in miniature: in == out channels (48 in the real model), patch (1, 2, 2).
TINY_TI2V: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=6,
    out_channels=6, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
    rope_max_seq_len=64,
)
FHW = (3, 4, 6)
TOKENS = 3 * 2 * 3


def _first_frame_timesteps(t: list[float]) -> torch.Tensor:
    """``(B, L)``: 0 on the first latent frame's tokens, ``t[b]`` elsewhere (diffusers' mask * t)."""
    mask = torch.ones(FHW[0], FHW[1] // 2, FHW[2] // 2)
    mask[0] = 0
    return torch.stack([(mask * v).flatten() for v in t])


def _inputs(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, TINY_TI2V["in_channels"], *FHW, generator=gen)
    ctx = torch.randn(2, 7, TINY_TI2V["text_dim"], generator=gen)
    return x, ctx


@torch.no_grad()
def test_per_token_timesteps_match_diffusers() -> None:
    ref = reference_dit(TINY_TI2V)
    ours = ours_from(ref)
    x, ctx = _inputs()
    t = _first_frame_timesteps([999.0, 421.7])
    expected = ref(x, t, ctx, return_dict=False)[0]
    got = ours(x, t, ctx)
    assert got.shape == expected.shape == x.shape
    assert expected.std() > 0.1
    err = (got - expected).abs().max().item()
    assert err <= FP32_TOL, f"max abs error {err:.3e} > {FP32_TOL}"
    # a (1, L) timestep broadcasts over the batch as diffusers' does after its expand
    one = _first_frame_timesteps([500.0])
    err1 = (ours(x, one, ctx) - ref(x, one.expand(2, -1), ctx, return_dict=False)[0]).abs().max().item()
    assert err1 <= FP32_TOL
    # the per-token steps really differ from a uniform timestep (the first frame's tokens see t = 0)
    uniform = ours(x, torch.tensor([999.0, 421.7]), ctx)
    assert (uniform - got).abs().max().item() > 100 * FP32_TOL
    # ... and a per-token timestep that is uniform equals the 1-D one
    flat = torch.tensor([999.0, 421.7])[:, None].expand(2, TOKENS)
    assert (ours(x, flat, ctx) - uniform).abs().max().item() <= FP32_TOL


@torch.no_grad()
def test_per_token_split_forward_and_rows() -> None:
    """embed / run_blocks (a subset of rows) / head give the forward's rows with per-token timesteps."""
    ours = ours_from(reference_dit(TINY_TI2V))
    x, ctx = _inputs(5)
    t = _first_frame_timesteps([800.0, 100.0])
    full = ours(x, t, ctx)
    step = ours.embed(x, t, ctx)
    assert step.temb.shape == (2, TOKENS, ours.config.inner_dim)
    assert step.modulation.shape == (2, TOKENS, 6, ours.config.inner_dim)
    row = ours.run_blocks(step, torch.tensor([1]))
    whole = ours.run_blocks(step)
    torch.testing.assert_close(row, whole[1:2], rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.head(whole, step), full, rtol=0, atol=0)


def test_rejects_bad_per_token_timestep() -> None:
    ours = ours_from(reference_dit(TINY_TI2V))
    x, ctx = _inputs()
    with pytest.raises(ValueError, match="per token"):
        ours(x, torch.zeros(2, TOKENS + 1), ctx)
