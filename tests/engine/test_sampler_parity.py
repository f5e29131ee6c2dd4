"""Parity of fastvideo.engine.sampler with diffusers' UniPCMultistepScheduler / FlowMatchEulerDiscreteScheduler.

Tolerances: schedules (timesteps, sigmas) must be bit-equal. Sampling trajectories in float32 must agree to
max abs err <= 1e-5 at every step (UniPC computes its coefficients in float64 on the host, diffusers in float32;
observed <= 5e-6, Euler is bit-equal). The float64 runs (diffusers' sigmas upcast so its coefficients are
float64 too) must agree to 1e-10; they pin the UniPC algebra for solver orders 1-3.
"""

from __future__ import annotations

import pytest
import torch

from fastvideo.engine.sampler import (
    FlowEulerSampler,
    FlowUniPCSampler,
    SamplerConfig,
    make_sampler,
)

diffusers = pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler  # noqa: E402

# scheduler/scheduler_config.json as shipped with Wan2.1 diffusers checkpoints (480p; 720p uses flow_shift 5.0).
WAN_UNIPC_CONFIG = {
    "_class_name": "UniPCMultistepScheduler",
    "_diffusers_version": "0.33.0.dev0",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "disable_corrector": [],
    "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero",
    "flow_shift": 3.0,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "predict_x0": True,
    "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_p": None,
    "solver_type": "bh2",
    "steps_offset": 0,
    "thresholding": False,
    "time_shift_type": "exponential",
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_beta_sigmas": False,
    "use_dynamic_shifting": False,
    "use_exponential_sigmas": False,
    "use_flow_sigmas": True,
    "use_karras_sigmas": False,
}
EULER_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}

STEPS = (1, 2, 5, 20, 50)
SHIFTS = (1.0, 3.0, 5.0)
SHAPE = (1, 4, 3, 6, 8)  # [B, C, F, H, W] like Wan latents, kept tiny
FP32_TOL = 1e-5
FP64_TOL = 1e-10


def _configs(kind: str, shift: float, **unipc_overrides) -> tuple[dict, SamplerConfig]:
    if kind == "unipc":
        cfg = {**WAN_UNIPC_CONFIG, "flow_shift": shift, **unipc_overrides}
    else:
        cfg = {**EULER_CONFIG, "shift": shift}
    return cfg, SamplerConfig.from_scheduler_config(cfg)


def _reference(cfg: dict):
    if cfg["_class_name"] == "UniPCMultistepScheduler":
        return UniPCMultistepScheduler.from_config(cfg)
    return FlowMatchEulerDiscreteScheduler.from_config(cfg)


def _inputs(n: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(1000 * seed + n)
    noise = torch.randn(SHAPE, generator=g, dtype=dtype)
    outputs = [torch.randn(SHAPE, generator=g, dtype=dtype) for _ in range(n)]
    return noise, outputs


def _planned(cfg: dict, n: int):
    ref = _reference(cfg)
    ref.set_timesteps(n)
    return ref


def _run_reference(ref, noise, outputs, begin=0):
    """Drive a diffusers scheduler (set_timesteps already called) the way WanPipeline does."""
    ref.set_begin_index(begin)
    x, traj = noise, []
    for i in range(begin, len(ref.timesteps)):
        x = ref.step(outputs[i], ref.timesteps[i], x, return_dict=False)[0]
        traj.append(x)
    return traj


def _run_ours(sampler, noise, outputs, begin=0, state=None):
    x, traj = noise, []
    for i in range(begin, sampler.num_inference_steps):
        x = sampler.step(outputs[i], i, x, state=state)
        traj.append(x)
    return traj


def _max_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert len(a) == len(b)
    return max((x.double() - y.double()).abs().max().item() for x, y in zip(a, b))


# -- config ---------------------------------------------------------------------------------------------

def test_wan_config_is_read():
    cfg = SamplerConfig.from_scheduler_config(WAN_UNIPC_CONFIG)
    assert cfg == SamplerConfig(kind="unipc", num_train_timesteps=1000, shift=3.0, solver_order=2,
                                lower_order_final=True, disable_corrector=(), final_sigmas_type="zero")
    assert SamplerConfig.from_scheduler_config({**WAN_UNIPC_CONFIG, "flow_shift": 5.0}).shift == 5.0
    assert isinstance(make_sampler(cfg), FlowUniPCSampler)
    euler = SamplerConfig.from_scheduler_config(EULER_CONFIG)
    assert euler.kind == "euler" and euler.shift == 3.0
    assert isinstance(make_sampler(EULER_CONFIG), FlowEulerSampler)  # dicts are accepted too


@pytest.mark.parametrize("cfg, setting", [
    ({**WAN_UNIPC_CONFIG, "_class_name": "DDIMScheduler"}, "DDIMScheduler"),
    ({k: v for k, v in WAN_UNIPC_CONFIG.items() if k != "prediction_type"}, "prediction_type"),
    ({**WAN_UNIPC_CONFIG, "prediction_type": "epsilon"}, "prediction_type"),
    ({**WAN_UNIPC_CONFIG, "use_flow_sigmas": False}, "use_flow_sigmas"),
    ({**WAN_UNIPC_CONFIG, "predict_x0": False}, "predict_x0"),
    ({**WAN_UNIPC_CONFIG, "use_karras_sigmas": True}, "use_karras_sigmas"),
    ({**WAN_UNIPC_CONFIG, "thresholding": True}, "thresholding"),
    ({**WAN_UNIPC_CONFIG, "use_dynamic_shifting": True}, "use_dynamic_shifting"),
    ({**WAN_UNIPC_CONFIG, "shift_terminal": 0.1}, "shift_terminal"),
    ({**WAN_UNIPC_CONFIG, "solver_type": "bh1"}, "solver_type"),
    ({**WAN_UNIPC_CONFIG, "final_sigmas_type": "nope"}, "final_sigmas_type"),
    ({**WAN_UNIPC_CONFIG, "lower_order_final": False}, "lower_order_final"),
    ({**WAN_UNIPC_CONFIG, "flow_shift": 0.0}, "shift"),
    ({**WAN_UNIPC_CONFIG, "brand_new_knob": 1}, "brand_new_knob"),
    ({**EULER_CONFIG, "use_dynamic_shifting": True}, "use_dynamic_shifting"),
    ({**EULER_CONFIG, "stochastic_sampling": True}, "stochastic_sampling"),
    ({**EULER_CONFIG, "invert_sigmas": True}, "invert_sigmas"),
    ({**EULER_CONFIG, "use_beta_sigmas": True}, "use_beta_sigmas"),
])
def test_unsupported_config_rejected(cfg, setting):
    with pytest.raises(ValueError, match=setting):
        SamplerConfig.from_scheduler_config(cfg)


def test_bad_direct_config_and_misuse_rejected():
    with pytest.raises(ValueError, match="kind"):
        SamplerConfig(kind="heun")
    with pytest.raises(ValueError, match="solver_order"):
        SamplerConfig(solver_order=0)
    with pytest.raises(ValueError, match="kind='unipc'"):
        FlowUniPCSampler(SamplerConfig(kind="euler"))
    s = make_sampler(SamplerConfig(kind="unipc", shift=3.0))
    x = torch.zeros(SHAPE)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        s.step(x, 0, x)
    s.set_timesteps(5)
    with pytest.raises(ValueError, match="num_inference_steps"):
        s.set_timesteps(0)
    with pytest.raises(ValueError, match="shift"):
        s.set_timesteps(5, shift=-1.0)
    s.step(x, 0, x)
    with pytest.raises(ValueError, match="in order"):
        s.step(x, 2, x)
    with pytest.raises(ValueError, match="not in this schedule"):
        s.step(x, torch.tensor(12345), x)
    with pytest.raises(IndexError):
        s.step(x, 5, x, state=s.new_state())


# -- schedules ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["unipc", "euler"])
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", STEPS)
def test_schedule_equals_diffusers(kind, shift, n):
    cfg, ours_cfg = _configs(kind, shift)
    ref = _planned(cfg, n)
    ours = make_sampler(ours_cfg).set_timesteps(n)
    assert ours.timesteps.dtype == ref.timesteps.dtype
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert ours.sigmas.dtype == torch.float32
    assert torch.equal(ours.sigmas, ref.sigmas.to(torch.float32))
    assert ours.num_inference_steps == n


def test_model_timestep_is_what_wan_feeds():
    s = make_sampler(WAN_UNIPC_CONFIG).set_timesteps(4)
    t = s.model_timestep(1, batch_size=3)
    assert t.dtype == torch.int64 and t.shape == (3,) and torch.equal(t, s.timesteps[1].expand(3))
    assert 0 <= int(s.timesteps[-1]) and int(s.timesteps[0]) == 999
    e = make_sampler(EULER_CONFIG).set_timesteps(4)
    assert e.model_timestep(0, 2).dtype == torch.float32 and float(e.model_timestep(0)[0]) == 1000.0


# -- sampling parity ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["unipc", "euler"])
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", STEPS)
def test_fp32_trajectory_equals_diffusers(kind, shift, n):
    cfg, ours_cfg = _configs(kind, shift)
    noise, outputs = _inputs(n)
    ref = _run_reference(_planned(cfg, n), noise, outputs)
    ours = _run_ours(make_sampler(ours_cfg).set_timesteps(n), noise, outputs)
    assert ours[-1].dtype == torch.float32
    assert _max_err(ours, ref) <= FP32_TOL


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("final_sigmas_type", ["zero", "sigma_min"])
@pytest.mark.parametrize("shift", [1.0, 5.0])
@pytest.mark.parametrize("n", [2, 5, 20])
def test_unipc_fp64_math_equals_diffusers(order, final_sigmas_type, shift, n):
    cfg, ours_cfg = _configs("unipc", shift, solver_order=order, final_sigmas_type=final_sigmas_type)
    noise, outputs = _inputs(n, torch.float64)
    ref = _planned(cfg, n)
    ref.sigmas = ref.sigmas.double()  # so diffusers' coefficients are float64 like ours
    expected = _run_reference(ref, noise, outputs)
    ours = _run_ours(make_sampler(ours_cfg).set_timesteps(n), noise, outputs)
    assert _max_err(ours, expected) <= FP64_TOL


def test_disable_corrector_equals_diffusers():
    cfg, ours_cfg = _configs("unipc", 3.0, disable_corrector=[0, 3, 4])
    assert ours_cfg.disable_corrector == (0, 3, 4)
    noise, outputs = _inputs(8)
    ref = _run_reference(_planned(cfg, 8), noise, outputs)
    ours = _run_ours(make_sampler(ours_cfg).set_timesteps(8), noise, outputs)
    assert _max_err(ours, ref) <= FP32_TOL
    plain = _run_ours(make_sampler(WAN_UNIPC_CONFIG).set_timesteps(8), noise, outputs)
    assert _max_err(ours, plain) > 1e-3  # the setting is honoured, not ignored


@pytest.mark.parametrize("kind", ["unipc", "euler"])
def test_start_mid_schedule_equals_diffusers(kind):
    cfg, ours_cfg = _configs(kind, 3.0)
    noise, outputs = _inputs(10)
    ref = _run_reference(_planned(cfg, 10), noise, outputs, begin=4)
    ours = _run_ours(make_sampler(ours_cfg).set_timesteps(10), noise, outputs, begin=4)
    assert _max_err(ours, ref) <= FP32_TOL


@pytest.mark.parametrize("kind", ["unipc", "euler"])
def test_timestep_values_and_indices_agree(kind):
    _, ours_cfg = _configs(kind, 5.0)
    noise, outputs = _inputs(6)
    s = make_sampler(ours_cfg).set_timesteps(6)
    by_index = _run_ours(s, noise, outputs)
    s.reset()
    x, by_value = noise, []
    for i, t in enumerate(s.timesteps):
        x = s.step(outputs[i], t, x)
        by_value.append(x)
    assert all(torch.equal(a, b) for a, b in zip(by_index, by_value))


def test_shift_override_equals_a_config_with_that_shift():
    noise, outputs = _inputs(12)
    overridden = make_sampler(WAN_UNIPC_CONFIG).set_timesteps(12, shift=5.0)
    ref = _planned({**WAN_UNIPC_CONFIG, "flow_shift": 5.0}, 12)
    assert torch.equal(overridden.timesteps, ref.timesteps)
    assert _max_err(_run_ours(overridden, noise, outputs), _run_reference(ref, noise, outputs)) <= FP32_TOL
    e = make_sampler(EULER_CONFIG).set_timesteps(12, shift=5.0)
    e_ref = FlowMatchEulerDiscreteScheduler(shift=5.0)
    e_ref.set_timesteps(12)
    assert torch.equal(e.timesteps, e_ref.timesteps) and torch.equal(e.sigmas, e_ref.sigmas)


# -- state, reuse, dtype --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["unipc", "euler"])
def test_reuse_and_independent_states(kind):
    _, ours_cfg = _configs(kind, 3.0)
    noise, outputs = _inputs(20)
    s = make_sampler(ours_cfg).set_timesteps(20)
    first = _run_ours(s, noise, outputs)
    s.set_timesteps(20)
    second = _run_ours(s, noise, outputs)
    s.reset()
    third = _run_ours(s, noise, outputs)
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(first, second, third))

    # Two requests interleaved on one sampler via explicit states, the second with other inputs.
    noise_b, outputs_b = _inputs(20, seed=1)
    st_a, st_b = s.new_state(), s.new_state()
    xa, xb = noise, noise_b
    for i in range(20):
        xa = s.step(outputs[i], i, xa, state=st_a)
        xb = s.step(outputs_b[i], i, xb, state=st_b)
    assert torch.equal(xa, first[-1])
    assert torch.equal(xb, _run_ours(s.set_timesteps(20), noise_b, outputs_b)[-1])


def test_state_survives_set_timesteps_and_inplace_caller_buffers():
    s = make_sampler(WAN_UNIPC_CONFIG).set_timesteps(10)
    noise, outputs = _inputs(10)
    expected = _run_ours(s, noise, outputs)[-1]
    st = s.new_state()
    buf = noise.clone()  # a static latent buffer updated in place, as a graph-captured loop would
    for i in range(10):
        if i == 3:
            s.set_timesteps(4)  # another request re-plans the shared sampler; st keeps its own schedule
        buf.copy_(s.step(outputs[i], i, buf, state=st))
    assert torch.equal(buf, expected)


@pytest.mark.parametrize("kind", ["unipc", "euler"])
def test_dtype_contract(kind):
    _, ours_cfg = _configs(kind, 3.0)
    noise, outputs = _inputs(6)
    s = make_sampler(ours_cfg).set_timesteps(6)
    # Low-precision model output on fp32 latents is upcast before the update.
    low = [o.to(torch.bfloat16) for o in outputs]
    a = _run_ours(s, noise, low)
    s.reset()
    b = _run_ours(s, noise, [o.float() for o in low])
    assert a[-1].dtype == torch.float32 and all(torch.equal(x, y) for x, y in zip(a, b))
    # bf16 latents come back as bf16, computed in fp32 internally.
    s.reset()
    c = _run_ours(s, noise.to(torch.bfloat16), low)
    assert c[-1].dtype == torch.bfloat16
    assert (c[-1].float() - b[-1]).abs().max().item() < 0.1


@pytest.mark.parametrize("kind", ["unipc", "euler"])
@pytest.mark.parametrize("n", [1, 5, 50])
def test_straight_flow_is_integrated_exactly(kind, n):
    """Oracle independent of diffusers: for the constant velocity noise - x0 the flow ODE path is a straight
    line, which both samplers integrate exactly, so they must land on x0."""
    _, ours_cfg = _configs(kind, 5.0)
    g = torch.Generator().manual_seed(7)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    s = make_sampler(ours_cfg).set_timesteps(n)
    sigma0 = float(s.sigmas[0])
    x = (1 - sigma0) * x0 + sigma0 * noise
    for i in range(n):
        x = s.step(noise - x0, i, x)
    assert (x - x0).abs().max().item() <= FP32_TOL
