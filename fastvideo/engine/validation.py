"""Resolving a request's sampling values against a model preset, with clear errors.

Contract: :func:`resolve_sampling` fills unset fields from the preset and checks every value; a bad
value raises :class:`fastvideo.api.RequestError` naming the dotted field and the fix (nearest valid
sizes, the valid frame counts, allowed ranges). The result, :class:`ResolvedSampling`, is what the
pipeline runs: ``num_frames`` is what the caller gets back and ``generated_frames`` (the next
``4k+1``) is what the VAE decodes before trimming. Request fields this engine cannot honour (FastVideo's
``sampling.sigmas``, ``inputs.*``, ...) are refused first, by
:func:`fastvideo.engine.request_support.check_request_fields`.

Sampler: ``sampling.sampler`` or else the preset's (FastWan presets: ``"dmd"``) or else None (the model's
scheduler config). With ``"dmd"`` the timesteps are ``sampling.dmd_denoising_steps`` or the preset's or
FastVideo's default (1000, 757, 522), checked (non-empty, integers in 0..1000, strictly decreasing); the
step count is their number (an explicit different ``num_inference_steps`` is refused), and CFG is off:
guidance defaults to 1.0 and a value above 1 is refused (DMD-distilled checkpoints are sampled without
CFG, as FastVideo's DMD stage does). ``dmd_denoising_steps`` without the dmd sampler is refused.

Two experts (Wan2.2 A14B, ``preset.boundary_ratio`` set by the pipeline from its folder): ``sampling.boundary_ratio``
(in (0, 1]) and ``sampling.guidance_scale_2`` (0..50; default ``guidance_scale``, as diffusers) are resolved; CFG
is on when ``guidance_scale > 1`` (diffusers decides on the first scale only). One-expert models refuse both.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Literal, cast

from fastvideo.api.limits import check_prompt_length
from fastvideo.api.errors import RequestError
from fastvideo.api.request import GenerationRequest
from fastvideo.engine.presets import ModelPreset
from fastvideo.engine.request_support import check_request_fields
from fastvideo.engine.sampler import DEFAULT_DMD_TIMESTEPS, check_dmd_timesteps

SPATIAL_MULTIPLE = 16  # VAE 8x downsampling x DiT 2x2 patches
TEMPORAL_FACTOR = 4
MAX_STEPS = 1000


@dataclass(frozen=True)
class ResolvedSampling:
    """Fully specified sampling values for one request."""

    width: int
    height: int
    num_frames: int
    generated_frames: int
    latent_frames: int
    fps: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    shift: float
    sampler: Literal["unipc", "euler", "dmd"] | None
    continuation_strength: float
    #: sampler "dmd" only: the fixed timesteps (one step each).
    dmd_timesteps: tuple[int, ...] | None = None
    #: The model's workload ("t2v", "i2v", "flf2v"): requests of different workloads never share a batch.
    workload: str = "t2v"
    #: Two-expert models only (None otherwise): the switch point (``transformer`` while
    #: ``t >= boundary_ratio * num_train_timesteps``, then ``transformer_2``) and ``transformer_2``'s guidance.
    boundary_ratio: float | None = None
    guidance_scale_2: float | None = None

    @property
    def do_cfg(self) -> bool:
        return self.guidance_scale > 1.0

    def shape_key(self) -> tuple[int, int, int, int]:
        """What batching and graph capture bucket on: (width, height, latent frames, steps)."""
        return (self.width, self.height, self.latent_frames, self.num_inference_steps)


def _check_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(field, f"must be an integer, got {value!r}")
    return value


def _check_side(field: str, value: object, preset: ModelPreset) -> int:
    side = _check_int(field, value)
    if side < SPATIAL_MULTIPLE:
        raise RequestError(field, f"{side} is too small; use a multiple of {SPATIAL_MULTIPLE} >= {SPATIAL_MULTIPLE}")
    if side % SPATIAL_MULTIPLE:
        lower = side - side % SPATIAL_MULTIPLE
        raise RequestError(field, f"{side} is not a multiple of {SPATIAL_MULTIPLE} (the VAE's 8x downsampling times "
                                  f"the DiT's 2x2 patches); use {lower} or {lower + SPATIAL_MULTIPLE}")
    if side > preset.max_side:
        raise RequestError(field, f"{side} exceeds {preset.max_side}, the largest side model {preset.name!r} allows")
    return side


def valid_frame_counts_hint(max_frames: int) -> str:
    return (f"valid counts are 1..{max_frames}; counts of the form 4k+1 (1, 5, 9, ..., 81, ...) are decoded "
            "exactly, others are generated at the next 4k+1 and trimmed")


def resolve_sampling(request: GenerationRequest, preset: ModelPreset) -> ResolvedSampling:
    """Fill defaults from ``preset`` and validate; raise RequestError on the first bad field."""
    s = request.sampling
    check_request_fields(request, preset.name, preset.workload,  # fields
                         two_experts=preset.boundary_ratio is not None)  # this engine cannot honour: refused by name
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        raise RequestError("prompt", "must be a non-empty string describing the video")
    width = _check_side("sampling.width", preset.width if s.width is None else s.width, preset)
    height = _check_side("sampling.height", preset.height if s.height is None else s.height, preset)

    frames = _check_int("sampling.num_frames", preset.num_frames if s.num_frames is None else s.num_frames)
    if frames < 1 or frames > preset.max_frames:
        raise RequestError("sampling.num_frames", f"{frames} frames cannot be generated by {preset.name!r}; "
                                                  + valid_frame_counts_hint(preset.max_frames))
    generated = frames if (frames - 1) % TEMPORAL_FACTOR == 0 else frames + (-(frames - 1)) % TEMPORAL_FACTOR
    latent_frames = (generated - 1) // TEMPORAL_FACTOR + 1

    fps = _check_int("sampling.fps", preset.fps if s.fps is None else s.fps)
    if not 1 <= fps <= 120:
        raise RequestError("sampling.fps", f"{fps} is out of range; use 1..120")
    chosen = s.sampler if s.sampler is not None else preset.sampler
    if chosen not in (None, "unipc", "euler", "dmd"):
        raise RequestError("sampling.sampler", f"unknown sampler {chosen!r}; use 'unipc', 'euler' or 'dmd'")
    sampler = cast(Literal["unipc", "euler", "dmd"] | None, chosen)
    dmd_timesteps = _dmd_timesteps(s.dmd_denoising_steps, sampler, preset)
    if dmd_timesteps is not None and s.num_inference_steps is None:
        steps = len(dmd_timesteps)
    else:
        steps = _check_int("sampling.num_inference_steps",
                           preset.num_inference_steps if s.num_inference_steps is None else s.num_inference_steps)
    if not 1 <= steps <= MAX_STEPS:
        raise RequestError("sampling.num_inference_steps", f"{steps} is out of range; use 1..{MAX_STEPS}")
    if dmd_timesteps is not None and steps != len(dmd_timesteps):
        raise RequestError("sampling.num_inference_steps", f"{steps} steps do not match the {len(dmd_timesteps)} DMD "
                                                           f"timesteps {list(dmd_timesteps)} (one step each); leave "
                                                           "it unset or set sampling.dmd_denoising_steps")

    if dmd_timesteps is not None:
        guidance = 1.0 if s.guidance_scale is None else s.guidance_scale
    else:
        guidance = preset.guidance_scale if s.guidance_scale is None else s.guidance_scale
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0.0 <= guidance <= 50.0:
        raise RequestError("sampling.guidance_scale", f"{guidance!r} is out of range; use 0..50 (1 disables CFG)")
    if dmd_timesteps is not None and guidance > 1.0:
        raise RequestError("sampling.guidance_scale", f"{guidance!r} asks for CFG, which DMD sampling does not use "
                                                      "(distilled checkpoints run without it); set 1.0 or leave it "
                                                      "unset")
    shift = preset.shift if s.shift is None else s.shift
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not 0.0 < shift <= 100.0:
        raise RequestError("sampling.shift", f"{shift!r} is out of range; use a value in (0, 100]")
    seed = s.seed if s.seed is not None else random.randrange(2**31)
    seed = _check_int("sampling.seed", seed)
    if not 0 <= seed < 2**63:
        raise RequestError("sampling.seed", f"{seed} is out of range; use 0..2**63-1")
    if s.true_cfg_scale not in (None, 1.0):  # 1.0 is "off" where true CFG exists
        raise RequestError("sampling.true_cfg_scale", f"{s.true_cfg_scale!r} cannot be honoured: Wan models use "
                                                      "classic CFG; set guidance_scale instead and leave "
                                                      "true_cfg_scale unset")
    check_prompt_length("prompt", request.prompt)  # fastvideo.api.MAX_PROMPT_CHARS, whoever built the request
    check_prompt_length("negative_prompt", request.negative_prompt)
    strength = 1.0 if s.continuation_strength is None else s.continuation_strength
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise RequestError("sampling.continuation_strength", f"{strength!r} is out of range; use 0..1")
    boundary, guidance_2 = _experts(s.boundary_ratio, s.guidance_scale_2, float(guidance), preset)
    return ResolvedSampling(width=width, height=height, num_frames=frames, generated_frames=generated,
                            latent_frames=latent_frames, fps=fps, num_inference_steps=steps,
                            guidance_scale=float(guidance), seed=seed, shift=float(shift), sampler=sampler,
                            continuation_strength=float(strength), dmd_timesteps=dmd_timesteps,
                            workload=preset.workload, boundary_ratio=boundary, guidance_scale_2=guidance_2)


def _experts(boundary: object, guidance_2: object, guidance: float,
             preset: ModelPreset) -> tuple[float | None, float | None]:
    """Two-expert models: ``(boundary_ratio, guidance_scale_2)``, the request's or else the model's (guidance_scale_2
    else ``guidance``, as diffusers' WanPipeline); ``(None, None)`` for one expert (the fields are refused there)."""
    if preset.boundary_ratio is None:
        return None, None
    ratio = preset.boundary_ratio if boundary is None else boundary
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
        raise RequestError("sampling.boundary_ratio", f"{ratio!r} is out of range; use a number in (0, 1] (the "
                                                      "fraction of the noise range the high-noise expert runs)")
    second = preset.guidance_scale_2 if guidance_2 is None else guidance_2
    second = guidance if second is None else second
    if isinstance(second, bool) or not isinstance(second, (int, float)) or not 0.0 <= second <= 50.0:
        raise RequestError("sampling.guidance_scale_2", f"{second!r} is out of range; use 0..50")
    return float(ratio), float(second)


def _dmd_timesteps(requested: object, sampler: str | None, preset: ModelPreset) -> tuple[int, ...] | None:
    """The DMD timesteps of a request (None unless the sampler is "dmd"); see module contract."""
    if sampler != "dmd":
        if requested is not None:
            raise RequestError("sampling.dmd_denoising_steps", f"only applies to sampler 'dmd' (this request uses "
                                                               f"{sampler or 'the model default'!r}); set "
                                                               "sampling.sampler='dmd' or drop it")
        return None
    chosen = requested if requested is not None else (preset.dmd_timesteps or DEFAULT_DMD_TIMESTEPS)
    try:
        return check_dmd_timesteps(chosen)
    except ValueError as exc:
        raise RequestError("sampling.dmd_denoising_steps", str(exc)) from None


def with_overlap(s: ResolvedSampling, overlap_frames: int) -> ResolvedSampling:
    """The continuation branch: ``overlap_frames`` decoded frames precede the requested ones."""
    total = overlap_frames + s.num_frames
    generated = total if (total - 1) % TEMPORAL_FACTOR == 0 else total + (-(total - 1)) % TEMPORAL_FACTOR
    return replace(s, generated_frames=generated, latent_frames=(generated - 1) // TEMPORAL_FACTOR + 1)
