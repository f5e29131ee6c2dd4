"""Flow-matching samplers for Wan-style video DiTs, numerically equal to diffusers.

Contract
--------
Schedule. ``set_timesteps(n, device, shift=None)`` builds ``n`` noise levels ``sigmas[0..n-1]`` on the
rectified-flow path ``x_sigma = (1 - sigma) * x0 + sigma * noise`` plus a terminal ``sigmas[n]``, and the
matching ``timesteps[0..n-1]`` the DiT is conditioned on (``sigma * num_train_timesteps``, i.e. 0..1000).
Both are warped by the flow shift ``s``: ``sigma -> s * sigma / (1 + (s - 1) * sigma)``. Values are those of

* ``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=s, ...)``
  (``kind="unipc"``, Wan's default): base ``linspace(1, 1/N, n + 1)[:-1]`` in float64, shifted, first sigma
  nudged to ``1 - 1e-6``, timesteps truncated to int64, sigmas stored as float32 with a terminal 0
  (``final_sigmas_type="zero"``) or a repeat of the last sigma (``"sigma_min"``);
* ``FlowMatchEulerDiscreteScheduler(shift=s)`` (``kind="euler"``): float32 timesteps, terminal sigma 0;
* FastVideo's DMD few-step sampling (``kind="dmd"``, :class:`FlowDMDSampler`, FastWan checkpoints): see below.

``shift`` passed to ``set_timesteps`` overrides the config's shift exactly as if the scheduler had been
built with that shift.

Step. ``step(model_output, t, sample)`` consumes the DiT's velocity prediction (``noise - x0``, diffusers'
"flow_prediction") for the latents ``sample`` at step ``t`` and returns the latents at the next noise level.
``t`` is either a Python ``int`` *step index* (preferred: no host/device sync) or a *timestep value* (a
tensor or float taken from ``.timesteps``; it is looked up on the host, which syncs if it lives on an
accelerator). Steps must be taken in order, one per index; the first step of a state may start at any
index (img2img style, with UniPC warming up from order 1 there).

State. Everything a multistep solver remembers between steps lives in a :class:`SamplerState`.
``set_timesteps`` and ``reset()`` give the sampler a fresh default state; ``new_state()`` returns an
independent one and ``step(..., state=st)`` advances that one instead, so concurrent requests that share a
sampler never share history. A state keeps a reference to the (immutable) schedule it was created for, so
a later ``set_timesteps`` does not disturb it. States never alias caller tensors.

DMD (``kind="dmd"``), as FastVideo's ``DmdDenoisingStage``. The schedule is a fixed list of integer timesteps
(``SamplerConfig.dmd_timesteps`` or ``set_timesteps(..., timesteps=...)``; FastWan: 1000, 757, 522), strictly
decreasing, each in ``0..num_train_timesteps``. The DiT gets each timestep as is (int64, e.g. 757). Its sigma is
looked up as FastVideo does: on the shifted *training* grid of ``FlowMatchEulerDiscreteScheduler(shift=s)``
(``sigma_k = warp(k / N)`` for ``k = N..1`` in float32, grid timesteps ``sigma_k * N``), the sigma of the grid
timestep nearest to it (so 1000 -> 1.0, and 757 -> ~0.757: the shift only sets the grid's resolution). A step
turns the velocity into ``x0 = x_t - sigma_t * v``; before the last step it re-noises ``x0`` to the next timestep,
``(1 - sigma_next) * x0 + sigma_next * eps``, with ``eps ~ N(0, 1)`` drawn in float32 on the CPU from the
state's ``generator`` (one per request: ``set_timesteps(..., generator=g)`` / ``new_state(generator=g)``); the
last step returns ``x0``. ``sigmas`` holds the looked-up sigmas plus a terminal 0, so ``sigmas[i + 1]`` is
the noise level of the latents a step returns.

Determinism. UniPC and Euler use no randomness: output is a pure function of (schedule, state, inputs). DMD's
only randomness is its state's generator, so it is a pure function of (schedule, generator seed, inputs) and
concurrent requests never share noise. All step
coefficients are computed on the host in float64 from the schedule's float32 sigmas; no ``.item()`` or
other device sync happens inside ``step`` when ``t`` is an index, so the tensor work is graph-capturable
per step.

Dtypes. The update runs in ``promote(sample.dtype, float32)`` (fp16/bf16 inputs are upcast; float64 stays
float64); ``model_output`` is upcast to that dtype first, history is kept in it, and the result is cast back
to ``sample.dtype``. With fp32 latents and fp32 model output this matches diffusers to float32 rounding
(Euler bit-exactly). Deliberate differences: diffusers multiplies a bf16 model output by sigma in bf16 before
promoting (we upcast first), computes entirely in bf16 for bf16 latents, and returns Euler results in the
model output's dtype (we return ``sample.dtype``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import numpy as np
import torch

__all__ = [
    "DEFAULT_DMD_TIMESTEPS",
    "FlowDMDSampler",
    "FlowEulerSampler",
    "FlowUniPCSampler",
    "SamplerConfig",
    "SamplerState",
    "make_sampler",
]

_KINDS = ("unipc", "euler", "dmd")
#: FastVideo's ``dmd_denoising_steps`` for its FastWan checkpoints (FastWan2.1 1.3B/14B, FastWan2.2 5B).
DEFAULT_DMD_TIMESTEPS: tuple[int, ...] = (1000, 757, 522)
_FINAL_SIGMAS = ("zero", "sigma_min")


@dataclass(frozen=True)
class SamplerConfig:
    """What a sampler needs. ``solver_order``, ``lower_order_final``, ``disable_corrector`` and
    ``final_sigmas_type`` only apply to ``kind="unipc"`` (Euler always ends at sigma 0); ``dmd_timesteps`` only
    to ``kind="dmd"``."""

    kind: Literal["unipc", "euler", "dmd"] = "unipc"
    num_train_timesteps: int = 1000
    shift: float = 1.0
    solver_order: int = 2
    lower_order_final: bool = True
    disable_corrector: tuple[int, ...] = ()
    final_sigmas_type: Literal["zero", "sigma_min"] = "zero"
    dmd_timesteps: tuple[int, ...] = DEFAULT_DMD_TIMESTEPS

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"SamplerConfig.kind must be one of {_KINDS}, got {self.kind!r}")
        if not isinstance(self.num_train_timesteps, int) or self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be a positive int, got {self.num_train_timesteps!r}")
        _check_shift(self.shift)
        if not isinstance(self.solver_order, int) or self.solver_order < 1:
            raise ValueError(f"solver_order must be a positive int, got {self.solver_order!r}")
        if self.final_sigmas_type not in _FINAL_SIGMAS:
            raise ValueError(f"final_sigmas_type must be one of {_FINAL_SIGMAS}, got {self.final_sigmas_type!r}")
        object.__setattr__(self, "disable_corrector", tuple(int(i) for i in self.disable_corrector))
        object.__setattr__(self, "dmd_timesteps", check_dmd_timesteps(self.dmd_timesteps, self.num_train_timesteps))
        if self.kind == "euler" and self.final_sigmas_type != "zero":
            raise ValueError("final_sigmas_type='sigma_min' is not supported for kind='euler'")
        if (self.kind == "unipc" and self.final_sigmas_type == "zero" and not self.lower_order_final
                and self.solver_order > 1):
            # The last step would be a multistep update into sigma=0 (infinite log-SNR); diffusers
            # returns non-finite samples there.
            raise ValueError("lower_order_final=False with final_sigmas_type='zero' and solver_order>1 "
                             "is not supported (the final UniPC step would be non-finite)")

    @classmethod
    def from_scheduler_config(cls, cfg: Mapping[str, Any]) -> SamplerConfig:
        """Read a diffusers ``scheduler_config.json`` dict. Missing keys take diffusers' defaults; a
        setting we do not implement raises ``ValueError`` naming it."""
        name = cfg.get("_class_name")
        if name == "UniPCMultistepScheduler":
            return cls._from_unipc(cfg)
        if name == "FlowMatchEulerDiscreteScheduler":
            return cls._from_euler(cfg)
        raise ValueError(f"unsupported scheduler _class_name {name!r}; expected "
                         "'UniPCMultistepScheduler' or 'FlowMatchEulerDiscreteScheduler'")

    @classmethod
    def _from_unipc(cls, cfg: Mapping[str, Any]) -> SamplerConfig:
        # setting -> (diffusers default, value we require); required None means "must be unset/falsy".
        required = {
            "prediction_type": ("epsilon", "flow_prediction"),
            "use_flow_sigmas": (False, True),
            "predict_x0": (True, True),
            "thresholding": (False, False),
            "use_karras_sigmas": (False, False),
            "use_exponential_sigmas": (False, False),
            "use_beta_sigmas": (False, False),
            "use_dynamic_shifting": (False, False),
            "shift_terminal": (None, None),
            "solver_p": (None, None),
        }
        used = {"num_train_timesteps", "flow_shift", "solver_order", "lower_order_final", "disable_corrector",
                "final_sigmas_type", "solver_type"}
        # No effect on the flow-sigma path (they shape the unused VP beta schedule or disabled features).
        ignored = {"beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr",
                   "dynamic_thresholding_ratio", "sample_max_value", "timestep_spacing", "steps_offset",
                   "time_shift_type", "sigma_min", "sigma_max"}
        _check_settings("UniPCMultistepScheduler", cfg, required, used | ignored)
        solver_type = cfg.get("solver_type", "bh2")
        if solver_type not in ("bh2", "midpoint", "heun", "logrho"):  # diffusers maps the last three to bh2
            raise ValueError(f"UniPCMultistepScheduler setting solver_type={solver_type!r} is not supported "
                             "(only 'bh2', which Wan uses)")
        return cls(
            kind="unipc",
            num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)),
            shift=float(cfg.get("flow_shift", 1.0)),
            solver_order=int(cfg.get("solver_order", 2)),
            lower_order_final=bool(cfg.get("lower_order_final", True)),
            disable_corrector=tuple(cfg.get("disable_corrector") or ()),
            final_sigmas_type=cfg.get("final_sigmas_type", "zero"),
        )

    @classmethod
    def _from_euler(cls, cfg: Mapping[str, Any]) -> SamplerConfig:
        required = {
            "use_dynamic_shifting": (False, False),
            "invert_sigmas": (False, False),
            "shift_terminal": (None, None),
            "use_karras_sigmas": (False, False),
            "use_exponential_sigmas": (False, False),
            "use_beta_sigmas": (False, False),
            "stochastic_sampling": (False, False),
        }
        used = {"num_train_timesteps", "shift"}
        ignored = {"base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len", "time_shift_type"}
        _check_settings("FlowMatchEulerDiscreteScheduler", cfg, required, used | ignored)
        return cls(kind="euler", num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)),
                   shift=float(cfg.get("shift", 1.0)))


#: The key each scheduler class stores its flow shift under, in a diffusers ``scheduler_config.json``.
_SHIFT_KEYS = {"UniPCMultistepScheduler": "flow_shift", "FlowMatchEulerDiscreteScheduler": "shift"}


def scheduler_shift(cfg: Mapping[str, Any]) -> float | None:
    """The shift a ``scheduler_config.json`` sets explicitly, or None when it does not set one."""
    key = _SHIFT_KEYS.get(cfg.get("_class_name"))  # type: ignore[arg-type]
    value = cfg.get(key) if key is not None else None
    return None if value is None else float(value)


def check_dmd_timesteps(timesteps: Any, num_train_timesteps: int = 1000) -> tuple[int, ...]:
    """``timesteps`` as a tuple of ints when it is a valid DMD schedule: non-empty, integers (not bools) in
    ``0..num_train_timesteps``, strictly decreasing. Otherwise a ``ValueError`` saying what is wrong."""
    if isinstance(timesteps, (str, bytes)) or not hasattr(timesteps, "__iter__"):
        raise ValueError(f"DMD timesteps must be a list of integers such as [1000, 757, 522], got {timesteps!r}")
    values = list(timesteps)
    if not values:
        raise ValueError("DMD timesteps are empty; give at least one, e.g. [1000, 757, 522]")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"DMD timestep {v!r} is not an integer; use integers in 0..{num_train_timesteps}, "
                             "e.g. [1000, 757, 522]")
        if not 0 <= int(v) <= num_train_timesteps:
            raise ValueError(f"DMD timestep {v} is out of range; use integers in 0..{num_train_timesteps}")
    for a, b in zip(values, values[1:]):
        if int(b) >= int(a):
            raise ValueError(f"DMD timesteps must be strictly decreasing (from noise to data), got {values}: "
                             f"{b} follows {a}")
    return tuple(int(v) for v in values)


def _check_shift(shift: float) -> None:
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite number > 0, got {shift!r}")


def _check_settings(cls_name: str, cfg: Mapping[str, Any], required: Mapping[str, tuple[Any, Any]],
                    known: set[str]) -> None:
    for key, (default, want) in required.items():
        value = cfg.get(key, default)
        ok = (not value) if want is None else (value == want and type(value) is type(want))
        if not ok:
            expect = "unset" if want is None else repr(want)
            raise ValueError(f"{cls_name} setting {key}={value!r} is not supported (need {expect})")
    unknown = sorted(k for k in cfg if not k.startswith("_") and k not in required and k not in known)
    if unknown:
        raise ValueError(f"{cls_name} settings not understood: {unknown}")


@dataclass(frozen=True)
class _Schedule:
    timesteps: torch.Tensor  # [n], what the DiT is conditioned on
    sigmas: torch.Tensor  # [n + 1] float32, terminal sigma last
    sigmas_host: tuple[float, ...]  # the same float32 values as Python floats
    timesteps_host: tuple[float, ...]


@dataclass(eq=False)
class SamplerState:
    """Per-request solver memory. ``step_index`` is the index the next ``step`` must use (None before the
    first step). The UniPC fields hold data predictions (newest last), the corrected latents of the previous
    step and that step's order."""

    schedule: _Schedule
    step_index: int | None = None
    x0_history: list[torch.Tensor] = field(default_factory=list)
    last_sample: torch.Tensor | None = None
    last_order: int = 0
    warm_steps: int = 0
    #: DMD only: the request's own source of re-noising noise (a CPU ``torch.Generator``).
    generator: torch.Generator | None = None

    @property
    def timesteps(self) -> torch.Tensor:
        return self.schedule.timesteps

    @property
    def sigmas(self) -> torch.Tensor:
        return self.schedule.sigmas


def _compute_dtype(sample: torch.Tensor) -> torch.dtype:
    return torch.promote_types(sample.dtype, torch.float32)


class _FlowSampler:
    kind: str = ""

    def __init__(self, config: SamplerConfig) -> None:
        if config.kind != self.kind:
            raise ValueError(f"{type(self).__name__} needs a SamplerConfig with kind={self.kind!r}, "
                             f"got {config.kind!r}")
        self.config = config
        self.state: SamplerState | None = None

    # -- schedule ---------------------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None,
                      shift: float | None = None) -> _FlowSampler:
        """Build the schedule for ``num_inference_steps`` steps (and a fresh default state)."""
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
        shift = self.config.shift if shift is None else shift
        _check_shift(shift)
        timesteps, sigmas = self._build(num_inference_steps, float(shift))
        sigmas = sigmas.to(torch.float32)
        self.state = SamplerState(_Schedule(
            timesteps=timesteps.to(device), sigmas=sigmas.to(device),
            sigmas_host=tuple(float(v) for v in sigmas.tolist()),
            timesteps_host=tuple(float(v) for v in timesteps.tolist())))
        return self

    def _build(self, n: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _schedule(self) -> _Schedule:
        if self.state is None:
            raise RuntimeError(f"{type(self).__name__}: call set_timesteps() first")
        return self.state.schedule

    @property
    def timesteps(self) -> torch.Tensor:
        return self._schedule().timesteps

    @property
    def sigmas(self) -> torch.Tensor:
        return self._schedule().sigmas

    @property
    def num_inference_steps(self) -> int:
        return len(self._schedule().timesteps_host)

    def model_timestep(self, index: int, batch_size: int = 1, state: SamplerState | None = None) -> torch.Tensor:
        """The ``timestep`` tensor the DiT gets at step ``index``: ``timesteps[index]`` (0..1000 scale, dtype
        as diffusers: int64 for UniPC, float32 for Euler) expanded to ``[batch_size]``. Wan embeds it as is."""
        sched = state.schedule if state is not None else self._schedule()
        return sched.timesteps[index].expand(batch_size)

    # -- state ------------------------------------------------------------------------------------
    def new_state(self, generator: torch.Generator | None = None) -> SamplerState:
        """A fresh, independent state for the current schedule (one per concurrent request); ``generator``
        is the request's noise source (used by DMD only)."""
        return SamplerState(self._schedule(), generator=generator)

    def reset(self) -> None:
        """Forget the default state's history so the sampler can run a new request on the same schedule
        (a DMD state keeps its generator, which has moved on)."""
        self.state = self.new_state(self.state.generator if self.state is not None else None)

    # -- stepping ---------------------------------------------------------------------------------
    def step(self, model_output: torch.Tensor, t: int | float | torch.Tensor, sample: torch.Tensor,
             state: SamplerState | None = None) -> torch.Tensor:
        """Advance ``sample`` from step ``t`` to the next noise level given the velocity ``model_output``."""
        st = state if state is not None else self.state
        if st is None:
            raise RuntimeError(f"{type(self).__name__}: call set_timesteps() first")
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output shape {tuple(model_output.shape)} != sample shape {tuple(sample.shape)}")
        i = self._resolve_index(t, st)
        prev = self._step(model_output, i, sample, st)
        st.step_index = i + 1
        return prev

    def _step(self, model_output: torch.Tensor, i: int, sample: torch.Tensor, st: SamplerState) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _resolve_index(t: int | float | torch.Tensor, st: SamplerState) -> int:
        sched = st.schedule
        n = len(sched.timesteps_host)
        if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
            i = int(t)
        else:  # a timestep value from .timesteps
            value = float(t)
            hits = [k for k, v in enumerate(sched.timesteps_host) if v == value]
            if not hits:
                raise ValueError(f"timestep {value} is not in this schedule")
            i = st.step_index if st.step_index in hits else hits[0]
        if not 0 <= i < n:
            raise IndexError(f"step index {i} out of range for a {n}-step schedule (a Python int is a step "
                             "index; pass timestep values as tensors or floats)")
        if st.step_index is not None and i != st.step_index:
            raise ValueError(f"steps must be taken in order: expected index {st.step_index}, got {i} "
                             "(use reset() or new_state() to start over)")
        return i


class FlowEulerSampler(_FlowSampler):
    """First-order flow-matching Euler (diffusers ``FlowMatchEulerDiscreteScheduler``, deterministic)."""

    kind = "euler"

    def _build(self, n: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
        big_n = self.config.num_train_timesteps

        def warp(s):  # same expression as diffusers, evaluated in the caller's dtype
            return shift * s / (1 + (shift - 1) * s)

        # Endpoints of diffusers' float32 training schedule (sigma_max, sigma_min), then a float64
        # linspace between them, shifted (again), rounded to float32.
        ends = warp(torch.tensor([float(big_n), 1.0], dtype=torch.float32) / big_n)
        t64 = np.linspace(float(ends[0]) * big_n, float(ends[1]) * big_n, n)
        sigmas = torch.from_numpy(warp(t64 / big_n)).to(torch.float32)
        timesteps = sigmas * big_n
        return timesteps, torch.cat([sigmas, sigmas.new_zeros(1)])

    def _step(self, model_output: torch.Tensor, i: int, sample: torch.Tensor, st: SamplerState) -> torch.Tensor:
        s = st.schedule.sigmas_host
        cdtype = _compute_dtype(sample)
        prev = sample.to(cdtype) + model_output.to(cdtype) * (s[i + 1] - s[i])
        return prev.to(sample.dtype)


class FlowUniPCSampler(_FlowSampler):
    """UniPC (B(h)=bh2, data prediction, predictor + corrector) on the flow path, as diffusers'
    ``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True)``."""

    kind = "unipc"

    def _build(self, n: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
        big_n = self.config.num_train_timesteps
        s = np.linspace(1.0, 1.0 / big_n, n + 1)[:-1]
        s = shift * s / (1 + (shift - 1) * s)
        if abs(s[0] - 1.0) < 1e-6:  # keep log(1 - sigma) finite
            s[0] -= 1e-6
        timesteps = torch.from_numpy(s * big_n).to(torch.int64)  # truncation, as diffusers
        last = 0.0 if self.config.final_sigmas_type == "zero" else s[-1]
        return timesteps, torch.from_numpy(np.append(s, last)).to(torch.float32)

    def _step(self, model_output: torch.Tensor, i: int, sample: torch.Tensor, st: SamplerState) -> torch.Tensor:
        cfg = self.config
        s = st.schedule.sigmas_host
        cdtype = _compute_dtype(sample)
        x = sample.to(cdtype)
        x0 = x - model_output.to(cdtype) * s[i]  # velocity -> data prediction, at the uncorrected sample
        hist = st.x0_history
        if i > 0 and st.last_sample is not None and (i - 1) not in cfg.disable_corrector:
            # UniC: redo the previous step's update now that x0 at its endpoint is known.
            cx, cms, c_new = _unipc_coefficients(s, i - 1, st.last_order, corrector=True)
            x = _combine(st.last_sample, cx, hist, cms) + x0 * c_new
        elif x is sample:
            x = x.clone()  # kept in the state below; never alias the caller's buffer
        hist.append(x0)
        del hist[:-cfg.solver_order]
        order = min(cfg.solver_order, len(s) - 1 - i) if cfg.lower_order_final else cfg.solver_order
        order = min(order, st.warm_steps + 1)
        st.last_sample, st.last_order = x, order
        cx, cms, _ = _unipc_coefficients(s, i, order, corrector=False)
        prev = _combine(x, cx, hist, cms)
        st.warm_steps = min(st.warm_steps + 1, cfg.solver_order)
        return prev.to(sample.dtype)


class FlowDMDSampler(_FlowSampler):
    """FastVideo's DMD few-step sampling for distilled checkpoints (see module contract): x0 prediction at
    each fixed timestep, re-noised with the request's generator to the next one; the last step returns x0."""

    kind = "dmd"

    def set_timesteps(self, num_inference_steps: int | None = None, device: torch.device | str | None = None,
                      shift: float | None = None, timesteps: Any = None,
                      generator: torch.Generator | None = None) -> FlowDMDSampler:
        """The schedule for ``timesteps`` (None: ``config.dmd_timesteps``); ``num_inference_steps``, when
        given, must equal their count. ``generator`` seeds the default state's re-noising."""
        big_n = self.config.num_train_timesteps
        ts = self.config.dmd_timesteps if timesteps is None else check_dmd_timesteps(timesteps, big_n)
        if num_inference_steps is not None and num_inference_steps != len(ts):
            raise ValueError(f"num_inference_steps={num_inference_steps!r} does not match the {len(ts)} DMD "
                             f"timesteps {list(ts)}; DMD runs one step per timestep")
        shift = self.config.shift if shift is None else shift
        _check_shift(shift)
        sigmas = torch.tensor([*dmd_sigmas(ts, float(shift), big_n), 0.0], dtype=torch.float32)
        timesteps_t = torch.tensor(ts, dtype=torch.int64)
        self.state = SamplerState(_Schedule(
            timesteps=timesteps_t.to(device), sigmas=sigmas.to(device),
            sigmas_host=tuple(float(v) for v in sigmas.tolist()), timesteps_host=tuple(float(v) for v in ts)),
            generator=generator)
        return self

    def _step(self, model_output: torch.Tensor, i: int, sample: torch.Tensor, st: SamplerState) -> torch.Tensor:
        s = st.schedule.sigmas_host
        cdtype = _compute_dtype(sample)
        x0 = sample.to(cdtype) - model_output.to(cdtype) * s[i]
        if i + 1 == len(s) - 1:  # the last timestep: the clean estimate is the result
            return x0.to(sample.dtype)
        if st.generator is None:
            raise RuntimeError("FlowDMDSampler: this state has no generator to re-noise with; pass "
                               "set_timesteps(..., generator=torch.Generator().manual_seed(seed)) or "
                               "new_state(generator=...)")
        noise = torch.randn(tuple(sample.shape), generator=st.generator, dtype=torch.float32)
        noise = noise.to(device=sample.device, dtype=cdtype)
        nxt = s[i + 1]
        return (x0 * (1.0 - nxt) + noise * nxt).to(sample.dtype)


def dmd_sigmas(timesteps: tuple[int, ...], shift: float, num_train_timesteps: int = 1000) -> list[float]:
    """The sigma of each DMD timestep: FastVideo's nearest-timestep lookup on the shifted training grid of
    ``FlowMatchEulerDiscreteScheduler(shift=shift)`` (float32 grid, distances in float64)."""
    big_n = num_train_timesteps
    grid = torch.from_numpy(np.linspace(1, big_n, big_n, dtype=np.float32)[::-1].copy()) / big_n
    grid_sigmas = shift * grid / (1 + (shift - 1) * grid)
    grid_timesteps = (grid_sigmas * big_n).double()
    idx = torch.argmin((grid_timesteps[None, :] - torch.tensor(timesteps, dtype=torch.float64)[:, None]).abs(), dim=1)
    return [float(v) for v in grid_sigmas[idx].tolist()]


def _log_snr(sigma: float) -> float:
    """lambda = log(alpha / sigma) with alpha = 1 - sigma on the flow path (+inf at sigma = 0)."""
    return math.inf if sigma == 0.0 else math.log(1.0 - sigma) - math.log(sigma)


def _unipc_coefficients(s: tuple[float, ...], j: int, p: int, corrector: bool) -> tuple[float, list[float], float]:
    """Linear coefficients of one UniP (predictor) or UniC (corrector) update of order ``p`` from ``s[j]`` to
    ``s[j + 1]``, in data-prediction form with B(h) = expm1(-h) (bh2):

        out = cx * x + sum_m cms[m] * x0[j - m] (+ c_new * x0[j + 1] for the corrector),

    where ``x`` is the latents at ``s[j]`` and ``x0[k]`` the data prediction made at ``s[k]``
    (``cms[0]`` multiplies the newest history entry). Host float64."""
    sig0, sig_t = s[j], s[j + 1]
    alpha_t = 1.0 - sig_t
    lam0 = _log_snr(sig0)
    h = _log_snr(sig_t) - lam0
    if h == 0.0:  # zero-length step (final_sigmas_type="sigma_min"): the update is the identity
        return 1.0, [0.0] * p, 0.0
    hh = -h
    h_phi1 = math.expm1(hh)  # h * phi_1(-h)
    b_h = h_phi1  # bh2
    rks = [(_log_snr(s[j - m]) - lam0) / h for m in range(1, p)]
    # b[k-1] = k! * h*phi_{k+1}(-h) / B(h), from the recursion phi_{k+1} = (phi_k - 1/k!) / h.
    b, h_phik, fact = [], h_phi1 / hh - 1.0, 1.0
    for k in range(1, p + 1):
        b.append(h_phik * fact / b_h)
        fact *= k + 1
        h_phik = h_phik / hh - 1.0 / fact
    if corrector:
        if p == 1:
            rhos = [0.5]
        else:
            r = np.array([[rk ** a for rk in rks + [1.0]] for a in range(p)])
            rhos = np.linalg.solve(r, np.array(b)).tolist()
        rho_d, rho_new = rhos[:-1], rhos[-1]
    else:
        if p == 1:
            rho_d = []
        elif p == 2:
            rho_d = [0.5]
        else:
            r = np.array([[rk ** a for rk in rks] for a in range(p - 1)])
            rho_d = np.linalg.solve(r, np.array(b[:-1])).tolist()
        rho_new = 0.0
    # x_t = (sig_t/sig0) x - alpha_t*h_phi1*m0 - alpha_t*B(h)*(sum_m rho_m (m_m - m0)/rk_m + rho_new (m_new - m0))
    scale = alpha_t * b_h
    cms = [-alpha_t * h_phi1] + [0.0] * (p - 1)
    for m, (rho, rk) in enumerate(zip(rho_d, rks), start=1):
        cms[m] = -scale * rho / rk
        cms[0] += scale * rho / rk
    cms[0] += scale * rho_new
    return sig_t / sig0, cms, -scale * rho_new


def _combine(x: torch.Tensor, cx: float, hist: list[torch.Tensor], cms: list[float]) -> torch.Tensor:
    out = x * cx
    for c, m in zip(cms, reversed(hist)):
        out = out + m * c
    return out


def make_sampler(config: SamplerConfig | Mapping[str, Any]) -> FlowUniPCSampler | FlowEulerSampler | FlowDMDSampler:
    """Sampler for a :class:`SamplerConfig` (or a diffusers scheduler_config dict)."""
    if not isinstance(config, SamplerConfig):
        config = SamplerConfig.from_scheduler_config(config)
    if config.kind == "dmd":
        return FlowDMDSampler(config)
    return FlowUniPCSampler(config) if config.kind == "unipc" else FlowEulerSampler(config)
