"""DMD few-step sampling (``sampler="dmd"``, FastVideo's FastWan checkpoints) against a plain reference loop.

The reference follows the algorithm as FastVideo's DMD stage describes it, written here independently: fixed
integer timesteps (1000, 757, 522), each mapped to the sigma of the nearest timestep on the shifted training
grid ``warp(k / 1000) * 1000``, k = 1..1000; the DiT's velocity gives ``x0 = x_t - sigma * v``; before the
last step ``x0`` is re-noised to the next timestep's sigma with ``torch.randn`` from the request's seeded
generator (the one that drew the initial noise, continued); the last step returns ``x0``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from core_testing import LATENT_TOL, core_latents
from fastvideo.api import GenerationRequest, RequestError, SamplingConfig
from fastvideo.api import presets as api_presets
from fastvideo.engine import presets as engine_presets
from fastvideo.engine.sampler import FlowDMDSampler, SamplerConfig, make_sampler
from fastvideo.engine.validation import resolve_sampling

TIMESTEPS = (1000, 757, 522)


def ref_sigma(t: int, shift: float) -> float:
    """Nearest point of the shifted training grid (plain Python floats)."""
    best = None
    for k in range(1, 1001):
        s = k / 1000
        sigma = shift * s / (1 + (shift - 1) * s)
        dist = abs(sigma * 1000 - t)
        if best is None or dist < best[0]:
            best = (dist, sigma)
    assert best is not None
    return best[1]


def velocity(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.tanh(x) * 0.7 + 0.001 * t - 0.3 * x


def reference_dmd(x: torch.Tensor, seed_generator: torch.Generator, timesteps: tuple[int, ...],
                  shift: float) -> torch.Tensor:
    for i, t in enumerate(timesteps):
        x0 = x - velocity(x, t) * ref_sigma(t, shift)
        if i == len(timesteps) - 1:
            return x0
        nxt = ref_sigma(timesteps[i + 1], shift)
        x = (1 - nxt) * x0 + nxt * torch.randn(x.shape, generator=seed_generator)
    raise AssertionError("no timesteps")


def run_sampler(x: torch.Tensor, seed: int, timesteps: tuple[int, ...] = TIMESTEPS, shift: float = 8.0,
                model_timesteps: list[int] | None = None) -> torch.Tensor:
    sampler = make_sampler(SamplerConfig(kind="dmd", shift=shift, dmd_timesteps=timesteps))
    assert isinstance(sampler, FlowDMDSampler)
    sampler.set_timesteps(len(timesteps), generator=torch.Generator().manual_seed(seed))
    for i in range(len(timesteps)):
        t = sampler.model_timestep(i, 1)
        assert t.dtype == torch.int64
        if model_timesteps is not None:
            model_timesteps.append(int(t))
        x = sampler.step(velocity(x, int(t)), i, x)
    return x


@pytest.mark.parametrize("shift", [8.0, 5.0, 1.0])
def test_steps_match_the_reference_loop(shift: float) -> None:
    x = torch.randn(1, 4, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    seen: list[int] = []
    got = run_sampler(x.clone(), seed=9, shift=shift, model_timesteps=seen)
    want = reference_dmd(x.clone(), torch.Generator().manual_seed(9), TIMESTEPS, shift)
    assert seen == list(TIMESTEPS)  # the DiT gets the integer timesteps as they are
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


def test_sigma_lookup_and_schedule() -> None:
    sampler = make_sampler(SamplerConfig(kind="dmd", shift=8.0)).set_timesteps(3)
    sigmas = sampler.state.schedule.sigmas_host  # type: ignore[union-attr]
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0 and len(sigmas) == 4
    for t, sigma in zip(TIMESTEPS, sigmas):
        assert sigma == pytest.approx(ref_sigma(t, 8.0), abs=1e-7)
        assert sigma == pytest.approx(t / 1000, abs=2e-3)  # the shift only sets the grid's resolution


def test_one_step_returns_x0_and_single_step_uses_no_noise() -> None:
    x = torch.randn(1, 4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    sampler = make_sampler(SamplerConfig(kind="dmd", dmd_timesteps=(1000,))).set_timesteps(1)  # no generator
    out = sampler.step(velocity(x, 1000), 0, x)
    torch.testing.assert_close(out, x - velocity(x, 1000))


def test_determinism_per_seed() -> None:
    x = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    a, b, c = run_sampler(x, seed=5), run_sampler(x, seed=5), run_sampler(x, seed=6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_states_do_not_share_noise() -> None:
    """Two states of one sampler, each with its own generator, equal their solo runs when interleaved."""
    x = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    sampler = make_sampler(SamplerConfig(kind="dmd")).set_timesteps(3)
    sa = sampler.new_state(generator=torch.Generator().manual_seed(1))
    sb = sampler.new_state(generator=torch.Generator().manual_seed(2))
    xa, xb = x.clone(), x.clone()
    for i, t in enumerate(TIMESTEPS):
        xa = sampler.step(velocity(xa, t), i, xa, state=sa)
        xb = sampler.step(velocity(xb, t), i, xb, state=sb)
    assert torch.equal(xa, run_sampler(x, seed=1, shift=1.0)) and torch.equal(xb, run_sampler(x, seed=2, shift=1.0))


def test_missing_generator_is_a_clear_error() -> None:
    sampler = make_sampler(SamplerConfig(kind="dmd")).set_timesteps(3)
    x = torch.zeros(1, 4, 1, 2, 2)
    with pytest.raises(RuntimeError, match="generator"):
        sampler.step(x, 0, x)


BAD = [
    ([], "empty"),
    ([1000, 1000, 522], "strictly decreasing"),
    ([522, 757, 1000], "strictly decreasing"),
    ([1001, 757], "out of range"),
    ([1000, -1], "out of range"),
    ([1000, 757.5], "not an integer"),
    ([True], "not an integer"),
    ("1000,757", "list of integers"),
]


@pytest.mark.parametrize(("timesteps", "why"), BAD)
def test_bad_timesteps_are_refused(timesteps: Any, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        SamplerConfig(kind="dmd", dmd_timesteps=timesteps)
    with pytest.raises(ValueError, match=why):
        make_sampler(SamplerConfig(kind="dmd")).set_timesteps(None, timesteps=timesteps)  # type: ignore[attr-defined]
    preset = engine_presets.get_preset("fastvideo-tiny")
    request = GenerationRequest(prompt="a fox", sampling=SamplingConfig(sampler="dmd", dmd_denoising_steps=timesteps))
    with pytest.raises(RequestError, match=why) as info:
        resolve_sampling(request, preset)
    assert info.value.field == "sampling.dmd_denoising_steps"


def test_request_resolution() -> None:
    tiny = engine_presets.get_preset("fastvideo-tiny")
    s = resolve_sampling(GenerationRequest(prompt="a fox", sampling=SamplingConfig(sampler="dmd")), tiny)
    assert s.dmd_timesteps == TIMESTEPS and s.num_inference_steps == 3 and s.guidance_scale == 1.0 and not s.do_cfg
    s = resolve_sampling(GenerationRequest(prompt="a fox", sampling=SamplingConfig(
        sampler="dmd", dmd_denoising_steps=[1000, 500], num_inference_steps=2)), tiny)
    assert s.dmd_timesteps == (1000, 500) and s.num_inference_steps == 2
    refusals = [
        (SamplingConfig(sampler="dmd", num_inference_steps=4), "sampling.num_inference_steps"),
        (SamplingConfig(sampler="dmd", guidance_scale=5.0), "sampling.guidance_scale"),
        (SamplingConfig(dmd_denoising_steps=[1000, 757]), "sampling.dmd_denoising_steps"),
        (SamplingConfig(sampler="unipc", dmd_denoising_steps=[1000, 757]), "sampling.dmd_denoising_steps"),
    ]
    for sampling, field in refusals:
        with pytest.raises(RequestError) as info:
            resolve_sampling(GenerationRequest(prompt="a fox", sampling=sampling), tiny)
        assert info.value.field == field


def test_fastwan_presets() -> None:
    fast = engine_presets.get_preset("fastwan_t2v_1_3b")
    assert fast == engine_presets.get_preset("fastwan2.1-t2v-1.3b")
    assert (fast.sampler, fast.dmd_timesteps, fast.num_inference_steps, fast.guidance_scale, fast.shift) == \
        ("dmd", TIMESTEPS, 3, 1.0, 8.0)
    assert (fast.width, fast.height, fast.num_frames, fast.fps) == (832, 448, 61, 16)
    s = resolve_sampling(GenerationRequest(prompt="a fox"), fast)  # the preset alone selects DMD, no CFG
    assert s.sampler == "dmd" and s.dmd_timesteps == TIMESTEPS and s.num_inference_steps == 3 and not s.do_cfg
    # FastVideo's FastWan folders: model_index _class_name WanDMDPipeline, 1536-wide transformer.
    dit = {"num_attention_heads": 12, "attention_head_dim": 128, "num_layers": 30}
    assert engine_presets.infer_preset({"_class_name": "WanDMDPipeline"}, dit) == fast
    assert engine_presets.infer_preset({"_class_name": "WanPipeline"}, dit).sampler is None
    # The 5B (FastWan2.2 TI2V) loads: DMD at the same timesteps, no CFG, 1280x704x121 at 24 fps, the image optional.
    assert "fastwan_ti2v_5b" in api_presets.get_all_preset_names()
    ti2v = engine_presets.get_preset("fastwan_ti2v_5b")
    assert (ti2v.sampler, ti2v.dmd_timesteps, ti2v.num_inference_steps, ti2v.guidance_scale, ti2v.shift) == \
        ("dmd", TIMESTEPS, 3, 1.0, 5.0)
    assert (ti2v.width, ti2v.height, ti2v.num_frames, ti2v.fps, ti2v.workload) == (1280, 704, 121, 24, "ti2v")
    assert engine_presets.infer_preset({"_class_name": "WanDMDPipeline"},
                                       {"num_attention_heads": 24, "attention_head_dim": 128, "num_layers": 30}) == ti2v


# ----------------------------------------------------------------------------- end to end on the tiny model
def dmd_request(seed: int, **sampling: Any) -> GenerationRequest:
    return GenerationRequest(prompt="a red fox in snow", sampling=SamplingConfig(
        width=64, height=32, num_frames=5, sampler="dmd", seed=seed, **sampling))


def test_tiny_generation_three_dit_forwards_without_cfg(tiny_generator) -> None:
    calls: list[tuple[int, list[int]]] = []
    dit = tiny_generator.pipeline.dit
    handle = dit.register_forward_hook(lambda _m, args, _o: calls.append((args[0].shape[0], args[1].tolist())))
    try:
        result = tiny_generator.generate(dmd_request(seed=4, guidance_scale=1.0))
    finally:
        handle.remove()
    assert calls == [(1, [1000]), (1, [757]), (1, [522])]  # 3 forwards, batch of 1: no CFG pass
    assert result.frames.shape == (5, 32, 64, 3)
    assert (result.metadata["sampler"], result.metadata["dmd_denoising_steps"]) == ("dmd", list(TIMESTEPS))
    assert result.metadata["num_inference_steps"] == 3 and result.metadata["guidance_scale"] == 1.0
    again = tiny_generator.generate(dmd_request(seed=4))
    assert (again.frames == result.frames).all()


def test_tiny_generation_equals_the_reference_loop(tiny_generator) -> None:
    latents, s = core_latents(tiny_generator, dmd_request(seed=12))
    pipe = tiny_generator.pipeline
    generator = torch.Generator().manual_seed(12)
    x = torch.randn(pipe.noise_shape(s), generator=generator)
    embeds = pipe.encode_prompts("a red fox in snow", "", False)
    with torch.no_grad():
        for i, t in enumerate(TIMESTEPS):
            v = pipe.dit(x, torch.tensor([t]), embeds).float()
            x0 = x - v * ref_sigma(t, s.shift)
            if i == len(TIMESTEPS) - 1:
                x = x0
            else:
                nxt = ref_sigma(TIMESTEPS[i + 1], s.shift)
                x = (1 - nxt) * x0 + nxt * torch.randn(x.shape, generator=generator)
    torch.testing.assert_close(latents, x, rtol=0, atol=1e-5)


def test_two_requests_in_one_batch_equal_their_solo_runs(tiny_generator) -> None:
    from fastvideo.runtime.executor import WanBatchExecutor

    solo = [core_latents(tiny_generator, dmd_request(seed=seed))[0] for seed in (21, 22)]
    executor = WanBatchExecutor(tiny_generator)
    items = []
    for seed in (21, 22):
        req, resolved = tiny_generator.resolve(dmd_request(seed=seed))
        item = executor.make_item(req, resolved)
        executor.prepare(item)
        items.append(item)
    assert items[0].key == items[1].key  # one bucket: they really share each DiT forward
    assert executor.denoise(items, lambda *_: None) == []
    for item, want in zip(items, solo):
        assert (item.ctx.latents - want).abs().max().item() <= LATENT_TOL
    assert (solo[0] - solo[1]).abs().max().item() > 1e-3
