"""TeaCache-style step caching for the Wan DiT: per-request state and the skip decision (pure, testable).

Contract (the algorithm of FastVideo's Wan TeaCache, ``WanTransformer3DModel.should_skip_forward_for_cached_states``,
with its ``WanTeaCacheParams`` defaults):

- A request opts in with ``runtime.enable_teacache`` and sets ``runtime.teacache_thresh`` (FastVideo's
  ``teacache_params.teacache_thresh``; default 0.08) and ``runtime.teacache_use_ret_steps`` (FastVideo's
  ``use_ret_steps``; default true). :func:`params_of` reads them into :class:`TeaCacheParams`.
- Per denoising step ``i`` of ``total`` (:meth:`TeaCacheState.decide`), from the step's *modulated input* ``m``
  (``use_ret_steps``: the blocks' timestep modulation ``(6, D)``; otherwise the time embedding ``temb`` ``(D,)``);
  ``runtime.teacache_coefficients`` (FastVideo's ``teacache_params.coefficients``) replaces the polynomial:

  * the relative L1 change ``x = mean|m - m_prev| / mean|m_prev|`` is rescaled by the model's polynomial
    (:data:`WAN_RET_STEPS_COEFFICIENTS` / :data:`WAN_NON_RET_STEPS_COEFFICIENTS`, highest power first, as
    ``numpy.poly1d``) and added to an accumulator;
  * steps ``i < ret_steps`` (5 with ``use_ret_steps``, else 1) and ``i >= cutoff`` (``total`` with
    ``use_ret_steps``, else ``total - 1``: the last step) always compute and reset the accumulator;
  * otherwise, if the accumulator is below the threshold the step *skips* every DiT block and adds the residual
    cached at the last computed step (blocks' output minus their input) to this step's embedded tokens; else it
    computes, refreshes the residual and resets the accumulator. ``m_prev`` is always the previous step's input.

- The default polynomials are fitted on Wan2.1-T2V-1.3B, where a step changes the input by a few percent. Other
  models need their own (FastVideo: "override these values"): the built-in tiny model's random weights change
  it by ~100% a step, where the fitted polynomials are meaningless (the modulation one is hugely negative, so
  every step after the retained ones skips; the ``temb`` one is in the thousands, so none does). The quality
  gate runs the tiny model with the identity polynomial ``[1.0, 0.0]`` (the raw relative change).
- One divergence from FastVideo, so that threshold 0 is exactly the uncached run: the rescaled change is
  clamped at 0 (the fitted polynomial dips below 0 near ``x = 0``, which FastVideo would accumulate as a
  negative distance and then skip even at threshold 0). With the clamp the accumulator is never negative, so
  threshold 0 never skips.
- CFG: the conditional and unconditional rows of a request get the same timestep, hence the same modulated
  input and the same decision sequence (FastVideo's separate even/odd accumulators follow identical paths), so
  one decision per request covers both rows; each row keeps its own cached residual (the cached tensor holds
  the request's rows in order: cond then uncond).
- The decision needs one host sync per step (the relative change as a Python float); :func:`relative_l1`
  returns a 0-d device tensor so a caller can batch several requests' values into one sync.
- Counters: ``skipped`` and ``computed`` steps per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

__all__ = [
    "WAN_NON_RET_STEPS_COEFFICIENTS",
    "WAN_RET_STEPS_COEFFICIENTS",
    "TeaCacheParams",
    "TeaCacheState",
    "decide",
    "params_of",
    "relative_l1",
    "rescaled_distance",
]

#: Wan2.1 T2V 1.3B, modulated input = the blocks' timestep modulation (TeaCache4Wan2.1, FastVideo's defaults).
WAN_RET_STEPS_COEFFICIENTS: tuple[float, ...] = (-5.21862437e04, 9.23041404e03, -5.28275948e02, 1.36987616e01,
                                                 -4.99875664e-02)
#: Wan2.1 T2V 1.3B, modulated input = the time embedding ``temb``.
WAN_NON_RET_STEPS_COEFFICIENTS: tuple[float, ...] = (2.39676752e03, -1.31110545e03, 2.01331979e02, -8.29855975e00,
                                                     1.37887774e-01)


@dataclass(frozen=True)
class TeaCacheParams:
    """One request's TeaCache settings (FastVideo's ``WanTeaCacheParams``; see module contract)."""

    thresh: float = 0.08
    use_ret_steps: bool = True
    #: The rescaling polynomial (highest power first); None: Wan2.1 1.3B's for ``use_ret_steps``.
    coefficients_override: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.thresh >= 0.0 or self.thresh == float("inf"):  # also refuses NaN
            raise ValueError(f"teacache_thresh must be a finite number >= 0, got {self.thresh!r}")
        if self.coefficients_override is not None and not self.coefficients_override:
            raise ValueError("teacache_coefficients must hold at least one number")

    @property
    def coefficients(self) -> tuple[float, ...]:
        if self.coefficients_override is not None:
            return self.coefficients_override
        return WAN_RET_STEPS_COEFFICIENTS if self.use_ret_steps else WAN_NON_RET_STEPS_COEFFICIENTS

    @property
    def ret_steps(self) -> int:
        """Leading steps that always compute."""
        return 5 if self.use_ret_steps else 1

    def cutoff(self, total: int) -> int:
        """Steps ``>= cutoff`` always compute."""
        return total if self.use_ret_steps else total - 1


def params_of(runtime: Any) -> TeaCacheParams | None:
    """The request's params from its ``runtime`` section, or None when ``enable_teacache`` is false."""
    if not getattr(runtime, "enable_teacache", False):
        return None
    coefficients = getattr(runtime, "teacache_coefficients", None)
    return TeaCacheParams(thresh=float(runtime.teacache_thresh), use_ret_steps=bool(runtime.teacache_use_ret_steps),
                          coefficients_override=None if coefficients is None else tuple(float(c) for c in coefficients))


def rescaled_distance(rel_l1: float, coefficients: Sequence[float]) -> float:
    """The polynomial (highest power first) at ``rel_l1``, clamped at 0 (see module contract)."""
    value = 0.0
    for c in coefficients:  # Horner, as numpy.poly1d evaluates
        value = value * rel_l1 + c
    return max(0.0, value)


def decide(step: int, total: int, accumulated: float, rel_l1: float | None,
           params: TeaCacheParams) -> tuple[bool, float]:
    """One step's decision: ``(compute, new_accumulated)``. ``rel_l1`` is the relative change against the
    previous step's modulated input (None: no previous input, which computes)."""
    if step < params.ret_steps or step >= params.cutoff(total) or rel_l1 is None:
        return True, 0.0
    accumulated += rescaled_distance(rel_l1, params.coefficients)
    if accumulated < params.thresh:
        return False, accumulated
    return True, 0.0


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """``mean|current - previous| / mean|previous|`` as a 0-d float32 tensor (no host sync)."""
    current, previous = current.float(), previous.float()
    return (current - previous).abs().mean() / previous.abs().mean()


class TeaCacheState:
    """One request's cache: the previous modulated input, the accumulator, the cached residual, the counts."""

    def __init__(self, params: TeaCacheParams, total: int) -> None:
        self.params = params
        self.total = total
        self.accumulated = 0.0
        self.previous: torch.Tensor | None = None
        self.residual: torch.Tensor | None = None
        self.skipped = 0
        self.computed = 0

    def modulated_input(self, temb: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        """This request's modulated input from its first row's ``temb`` ``(D,)`` / ``modulation`` ``(6, D)``."""
        return modulation if self.params.use_ret_steps else temb

    def change(self, modulated: torch.Tensor) -> torch.Tensor | None:
        """The relative L1 change against the previous step's input (0-d tensor), or None at the first step."""
        return None if self.previous is None else relative_l1(modulated, self.previous)

    def decide(self, step: int, modulated: torch.Tensor, rel_l1: float | None) -> bool:
        """Record this step's input and return whether it computes (a step without a cached residual always
        computes). Counts the step."""
        compute, self.accumulated = decide(step, self.total, self.accumulated, rel_l1, self.params)
        if self.residual is None:
            compute, self.accumulated = True, 0.0
        self.previous = modulated.detach().clone()
        if compute:
            self.computed += 1
        else:
            self.skipped += 1
        return compute

    def store(self, blocks_out: torch.Tensor, blocks_in: torch.Tensor) -> None:
        """Refresh the cached residual after a computed step (the request's rows)."""
        self.residual = blocks_out - blocks_in

    def reuse(self, blocks_in: torch.Tensor) -> torch.Tensor:
        """A skipped step's blocks output: its embedded tokens plus the cached residual."""
        assert self.residual is not None
        return blocks_in + self.residual
