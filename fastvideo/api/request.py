"""Typed generation requests.

Contract: a :class:`GenerationRequest` fully describes one video to generate. Sampling fields left
``None`` take the model preset's defaults (size, frames, steps, guidance, shift); the engine
validates the resolved values and raises :class:`fastvideo.api.RequestError` naming the field and
the fix. Every field of FastVideo's ``fastvideo.api`` request schema exists here with its name, type
and nesting (``runtime``, ``stage_overrides``, ``plan``, ``extensions``, every ``InputConfig`` field,
the extra sampling fields); the ones this engine cannot honour are parsed and then refused when the
request runs, naming the field (:mod:`fastvideo.engine.request_support` holds the table), never
ignored. Where a default differs from FastVideo's (sampling values: None = the preset's, where FastVideo
writes 1024/125/720x1280...; ``save_video`` false; ``output_path`` None = ``outputs/``) the field says so.
``num_frames`` is the number of frames returned: the Wan VAE decodes ``4k+1`` frames, so other counts
are generated at the next ``4k+1`` and trimmed to exactly the count asked for.
Field paths are stable (Dynamo and the OpenAI server write them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from fastvideo.api.state import ContinuationState


@dataclass
class InputConfig:
    """Conditioning inputs (FastVideo's fields, all optional). Image-to-video models take ``image_path`` (or
    ``pil_image``) and, first-last-frame ones, ``last_image``; text-to-video models refuse them. Every other
    field here is refused when set (not supported yet), naming it; a list ``image_path``/``video_path`` (one per
    prompt upstream) likewise."""

    #: A ``.txt`` file with one prompt per line (FastVideo: one result per line).
    prompt_path: str | None = None
    image_path: str | list[str] | None = None
    video_path: str | list[str] | None = None
    pil_image: Any | None = None
    last_image: Any | None = None
    references: list[Any] | None = None
    latents: Any | None = None
    audio_latents: Any | None = None
    pose: str | None = None
    mouse_cond: Any | None = None
    keyboard_cond: Any | None = None
    grid_sizes: Any | None = None
    c2ws_plucker_emb: Any | None = None
    action_path: str | None = None
    refine_from: str | None = None
    stage1_video: Any | None = None


@dataclass
class SamplingConfig:
    """Sampling parameters; ``None`` means "the preset's default"."""

    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    #: For API compatibility: None or 1.0 (off) only; Wan uses classic CFG (guidance_scale), other values are refused.
    true_cfg_scale: float | None = None
    #: Flow-matching timestep shift; None takes the preset's.
    shift: float | None = None
    #: "unipc" (Wan's default), "euler", or "dmd" (few-step DMD sampling of FastVideo's distilled FastWan
    #: checkpoints); None takes the preset's (FastWan: "dmd") or the model's scheduler config.
    sampler: Literal["unipc", "euler", "dmd"] | None = None
    #: With sampler "dmd": the fixed timesteps, strictly decreasing in 0..1000 (FastVideo's name); None takes
    #: the preset's (FastWan: [1000, 757, 522]).
    dmd_denoising_steps: list[int] | None = None
    #: For continuation segments: how strongly the previous segment's tail latents are imposed (0..1).
    continuation_strength: float | None = None
    # FastVideo's other sampling fields, with its defaults. Each is honoured at its default (the value that
    # changes nothing here) and refused otherwise, naming the field (see fastvideo.engine.request_support).
    num_videos_per_prompt: int = 1
    max_sequence_length: int | None = None
    height_sr: int = 1072
    width_sr: int = 1920
    num_inference_steps_sr: int = 50
    #: Accepted either way: it only changes how the two CFG passes are scheduled, not the video.
    batch_cfg: bool = False
    guidance_scale_2: float | None = None
    cfg_normalization: bool = False
    cfg_truncation: float | None = 1.0
    guidance_rescale: float = 0.0
    use_embedded_guidance: bool | None = None
    boundary_ratio: float | None = None
    sigmas: list[float] | None = None


@dataclass
class OutputConfig:
    """What the generator returns and writes."""

    #: Write an MP4 (H.264, yuv420p) to ``output_path``.
    save_video: bool = False
    #: Return decoded frames (uint8, (T, H, W, 3)) on the result.
    return_frames: bool = True
    #: A ``.mp4`` file path, or a folder (the file is named after the request id). None: ``outputs/``.
    output_path: str | None = None
    #: FastVideo's file name inside ``output_path``: None honoured; a name refused (not supported yet: put
    #: the file name in ``output_path``, e.g. ``outputs/fox.mp4``).
    output_video_name: str | None = None
    #: Return a ContinuationState so a next segment can continue this one.
    return_state: bool = False
    #: ``generate_async`` yields a :class:`~fastvideo.api.VideoPartialEvent` preview after every this many
    #: denoising steps (not after the last: the final event follows). Each preview costs one VAE decode of
    #: the whole clip at the request's size. None: no previews (>= 1 otherwise).
    preview_interval_steps: int | None = None


@dataclass
class RequestRuntimeConfig:
    """FastVideo's per-request runtime switches: TeaCache step caching (``fastvideo.engine.step_cache``) honoured;
    trajectories: false honoured, true refused (not supported yet)."""

    enable_teacache: bool = False
    #: TeaCache threshold (FastVideo's ``teacache_params.teacache_thresh``, Wan's default 0.08): higher skips more
    #: DiT steps (faster, further from the uncached video); 0 never skips. Read only with ``enable_teacache``.
    teacache_thresh: float = 0.08
    #: FastVideo's ``teacache_params.use_ret_steps``: true compares the blocks' timestep modulation and always
    #: computes the first 5 steps; false compares the time embedding and always computes the first and last step.
    teacache_use_ret_steps: bool = True
    #: FastVideo's ``teacache_params.coefficients``: the polynomial (highest power first) that rescales the relative
    #: change of the modulated input. None: Wan2.1-T2V-1.3B's (fitted on that model; other models need their own).
    teacache_coefficients: list[float] | None = None
    return_trajectory_latents: bool = False
    return_trajectory_decoded: bool = False


@dataclass
class PlannedStage:
    """One stage of a :class:`GenerationPlan` (FastVideo's schema; plans are refused when a request runs)."""

    name: str
    kind: str
    source: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationPlan:
    """An explicit multi-stage plan (FastVideo's schema). Parsed; refused when a request runs (not supported
    yet, as upstream's ``VideoGenerator`` also refuses it)."""

    stages: list[PlannedStage]
    final_stage: str | None = None


@dataclass
class GenerationRequest:
    """One generation: prompt, optional conditioning, sampling, outputs and continuation state."""

    #: The text describing the video. A list (FastVideo: one result per prompt) is accepted by the parser;
    #: ``VideoGenerator.generate`` fans it out where it supports that, and the engine refuses a list it is
    #: handed whole (RequestError on ``prompt``). None is refused when the request runs.
    prompt: str | list[str] | None = None
    negative_prompt: str | None = None
    inputs: InputConfig = field(default_factory=InputConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    #: FastVideo's runtime switches: TeaCache honoured; trajectories: false honoured, true refused.
    runtime: RequestRuntimeConfig = field(default_factory=RequestRuntimeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    #: FastVideo's per-stage overrides: empty honoured; any stage refused (not supported yet).
    stage_overrides: dict[str, Any] = field(default_factory=dict)
    state: ContinuationState | None = None
    #: An explicit stage plan: None honoured; a plan refused (not supported yet).
    plan: GenerationPlan | None = None
    #: FastVideo's free-form extra sampling keys: empty honoured; any key refused (not supported yet).
    extensions: dict[str, Any] = field(default_factory=dict)
    #: Caller-chosen id (used for file names, logs and events); generated when None.
    request_id: str | None = None
