"""Typed generation requests.

Contract: a :class:`GenerationRequest` fully describes one video to generate. Sampling fields left
``None`` take the model preset's defaults (size, frames, steps, guidance, shift); the engine
validates the resolved values and raises :class:`fastvideo.api.RequestError` naming the field and
the fix. ``num_frames`` is the number of frames returned: the Wan VAE decodes ``4k+1`` frames, so
other counts are generated at the next ``4k+1`` and trimmed to exactly the count asked for.
Field paths are stable (Dynamo and the OpenAI server write them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fastvideo.api.state import ContinuationState


@dataclass
class InputConfig:
    """Conditioning media given by path (reference image or video)."""

    image_path: str | None = None
    video_path: str | None = None


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
    #: "unipc" (Wan's default) or "euler"; None takes the model's scheduler config.
    sampler: Literal["unipc", "euler"] | None = None
    #: For continuation segments: how strongly the previous segment's tail latents are imposed (0..1).
    continuation_strength: float | None = None


@dataclass
class OutputConfig:
    """What the generator returns and writes."""

    #: Write an MP4 (H.264, yuv420p) to ``output_path``.
    save_video: bool = False
    #: Return decoded frames (uint8, (T, H, W, 3)) on the result.
    return_frames: bool = True
    #: A ``.mp4`` file path, or a folder (the file is named after the request id). Default: ``outputs/``.
    output_path: str | None = None
    #: Return a ContinuationState so a next segment can continue this one.
    return_state: bool = False
    #: ``generate_async`` yields a :class:`~fastvideo.api.VideoPartialEvent` preview after every this many
    #: denoising steps (not after the last: the final event follows). Each preview costs one VAE decode of
    #: the whole clip at the request's size. None: no previews (>= 1 otherwise).
    preview_interval_steps: int | None = None


@dataclass
class GenerationRequest:
    """One generation: prompt, optional conditioning, sampling, outputs and continuation state."""

    prompt: str = ""
    negative_prompt: str | None = None
    inputs: InputConfig = field(default_factory=InputConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    state: ContinuationState | None = None
    #: Caller-chosen id (used for file names, logs and events); generated when None.
    request_id: str | None = None
