"""TeaCache step cache (fastvideo.engine.step_cache): the decision against hand-computed sequences, the clamp that
makes threshold 0 exact, the per-request state, and the DiT's embed / run_blocks / head split it hooks into."""

from __future__ import annotations

import math

import pytest
import torch

from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel
from fastvideo.engine.step_cache import (
    WAN_NON_RET_STEPS_COEFFICIENTS,
    WAN_RET_STEPS_COEFFICIENTS,
    TeaCacheParams,
    TeaCacheState,
    decide,
    params_of,
    relative_l1,
    rescaled_distance,
)
from fastvideo.api.request import RequestRuntimeConfig

IDENTITY = (1.0, 0.0)


def test_rescaled_distance_is_the_polynomial_highest_power_first_clamped_at_zero():
    assert rescaled_distance(0.5, (2.0, 1.0, 3.0)) == 2 * 0.25 + 0.5 + 3  # 2x^2 + x + 3
    x = 0.05
    want = sum(c * x ** (4 - i) for i, c in enumerate(WAN_NON_RET_STEPS_COEFFICIENTS))
    assert rescaled_distance(x, WAN_NON_RET_STEPS_COEFFICIENTS) == pytest.approx(want, rel=1e-12)
    # the fitted Wan polynomial is negative at 0 (-0.0499...): FastVideo would accumulate that; we clamp
    assert WAN_RET_STEPS_COEFFICIENTS[-1] < 0 and rescaled_distance(0.0, WAN_RET_STEPS_COEFFICIENTS) == 0.0


def test_decision_sequence_by_hand():
    """use_ret_steps=False: step 0 and the last step compute; between, the identity-rescaled changes accumulate
    and a step skips while the sum stays below the threshold (then the sum resets on the computed step)."""
    params = TeaCacheParams(thresh=0.25, use_ret_steps=False, coefficients_override=IDENTITY)
    changes = [None, 0.1, 0.1, 0.1, 0.3, 0.05, 0.05, 0.2]
    # acc:     -    0.1  0.2  0.3>=  0.3>= 0.05  0.10  last
    want = [True, False, False, True, True, False, False, True]
    acc, got, accs = 0.0, [], []
    for step, change in enumerate(changes):
        compute, acc = decide(step, len(changes), acc, change, params)
        got.append(compute)
        accs.append(acc)
    assert got == want
    assert accs == pytest.approx([0.0, 0.1, 0.2, 0.0, 0.0, 0.05, 0.1, 0.0])


def test_ret_steps_compute_the_first_five_and_none_is_forced_at_the_end():
    params = TeaCacheParams(thresh=10.0, use_ret_steps=True, coefficients_override=IDENTITY)
    acc, got = 0.0, []
    for step in range(8):
        compute, acc = decide(step, 8, acc, 0.01, params)
        got.append(compute)
    assert got == [True] * 5 + [False] * 3
    assert (params.ret_steps, params.cutoff(8)) == (5, 8)
    assert (TeaCacheParams(use_ret_steps=False).ret_steps, TeaCacheParams(use_ret_steps=False).cutoff(8)) == (1, 7)


def test_threshold_zero_never_skips_even_where_the_polynomial_is_negative():
    params = TeaCacheParams(thresh=0.0, use_ret_steps=True)  # Wan's polynomial: negative near 0
    acc = 0.0
    for step in range(20):
        compute, acc = decide(step, 20, acc, 1e-6, params)
        assert compute


def test_params_validation_and_the_request_fields():
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="teacache_thresh"):
            TeaCacheParams(thresh=bad)
    with pytest.raises(ValueError, match="teacache_coefficients"):
        TeaCacheParams(coefficients_override=())
    assert params_of(RequestRuntimeConfig()) is None
    params = params_of(RequestRuntimeConfig(enable_teacache=True, teacache_thresh=0.2, teacache_use_ret_steps=False,
                                            teacache_coefficients=[1, 0]))
    assert params == TeaCacheParams(0.2, False, (1.0, 0.0)) and params.coefficients == (1.0, 0.0)
    assert params_of(RequestRuntimeConfig(enable_teacache=True)).coefficients == WAN_RET_STEPS_COEFFICIENTS


def test_state_tracks_the_previous_input_the_residual_and_the_counts():
    state = TeaCacheState(TeaCacheParams(thresh=0.5, use_ret_steps=False, coefficients_override=IDENTITY), total=4)
    m0 = torch.tensor([1.0, -2.0, 4.0])
    assert state.change(m0) is None and state.decide(0, m0, None)  # first step: computes
    blocks_in, blocks_out = torch.ones(2, 3), torch.full((2, 3), 3.0)
    state.store(blocks_out, blocks_in)
    m1 = torch.tensor([1.5, -2.0, 4.0])
    change = state.change(m1)
    assert change.item() == pytest.approx(0.5 / 3 / (7 / 3))  # mean|m1-m0| / mean|m0|
    assert not state.decide(1, m1, change.item())  # 0.214 < 0.5: skip
    assert torch.equal(state.reuse(torch.zeros(2, 3)), torch.full((2, 3), 2.0))
    assert torch.equal(state.previous, m1)
    assert state.decide(3, m1, 0.0)  # the last step computes
    assert (state.skipped, state.computed) == (1, 2)


def test_a_step_without_a_cached_residual_computes():
    state = TeaCacheState(TeaCacheParams(thresh=5.0, use_ret_steps=False, coefficients_override=IDENTITY), total=5)
    assert state.decide(1, torch.ones(3), 0.1)  # would skip, but nothing is cached yet
    assert state.accumulated == 0.0 and state.computed == 1


def test_relative_l1_is_a_device_scalar():
    value = relative_l1(torch.tensor([2.0, 2.0]), torch.tensor([1.0, -1.0]))
    assert value.ndim == 0 and math.isclose(value.item(), 2.0)


def _tiny_dit() -> WanTransformer3DModel:
    torch.manual_seed(0)
    config = WanDiTConfig(num_attention_heads=2, attention_head_dim=16, text_dim=24, freq_dim=16, ffn_dim=48,
                          num_layers=2)
    return WanTransformer3DModel(config).eval()


@torch.no_grad()
def test_forward_is_embed_then_blocks_then_head_bit_for_bit_and_rows_compute_alone():
    dit = _tiny_dit()
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(3, 16, 2, 4, 4, generator=g)
    timestep = torch.tensor([900.0, 500.0, 10.0])
    text = torch.randn(3, 7, 24, generator=g)
    out = dit(latents, timestep, text)
    step = dit.embed(latents, timestep, text)
    assert step.modulation.shape == (3, 6, 32) and step.temb.shape == (3, 32)
    assert torch.equal(dit.head(dit.run_blocks(step), step), out)
    rows = torch.tensor([0, 2])
    sub = dit.run_blocks(step, rows)
    full = dit.run_blocks(step)
    assert sub.shape == (2, *full.shape[1:])
    torch.testing.assert_close(sub, full[rows], rtol=1e-5, atol=1e-5)  # other rows never mix in
