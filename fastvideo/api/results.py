"""Results and streaming events of a generation.

Contract: ``VideoGenerator.generate`` returns a :class:`VideoResult`; ``generate_async`` yields
:class:`VideoProgressEvent` once per denoising step, a :class:`VideoPartialEvent` preview after every
``output.preview_interval_steps`` steps when the request sets it (right after that step's progress
event, never after the last step), then exactly one :class:`VideoFinalEvent` per request, always last.
``frames`` is whatever array the runtime produced (numpy uint8 ``(T, H, W, 3)``); this module
does not import numpy or torch. ``metadata`` is JSON-safe (timings per stage in seconds under
``timings``, ``inference_time_s``, resolved sampling values).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastvideo.api.state import ContinuationState


@dataclass
class VideoResult:
    """The outcome of one generation."""

    request_id: str
    prompt: str
    frames: Any = None
    video_path: str | None = None
    state: ContinuationState | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Wall time of the whole generation, seconds.
    generation_time: float = 0.0
    #: MP4 bytes when the runtime encoded them (async path, or when saved).
    video_bytes: bytes | None = None


#: Name used by callers that follow the older API.
GenerationResult = VideoResult


@dataclass
class VideoEvent:
    """Base of every event ``generate_async`` yields."""

    request_id: str


@dataclass
class VideoProgressEvent(VideoEvent):
    """Progress: ``stage`` is "text_encode", "denoise" (one per step), "decode" or "encode"."""

    step: int = 0
    total_steps: int = 0
    stage: str = "denoise"
    elapsed_s: float = 0.0


@dataclass
class VideoPartialEvent(VideoEvent):
    """A preview while denoising: the current clean-video estimate, decoded.

    ``frames`` are uint8 ``(T, H, W, 3)`` at the request's size and frame count (the final video's
    shape): the sampler's estimate of the clean latents after ``step`` of ``total_steps`` steps
    (``x0 = x_t - sigma_t * v``), decoded by the VAE. ``index`` counts the request's previews from 0.
    ``frame_offset`` is where ``frames`` start in the video (0: a preview covers the whole clip).
    """

    frames: Any = None
    frame_offset: int = 0
    index: int = 0
    step: int = 0
    total_steps: int = 0


@dataclass
class VideoFinalEvent(VideoEvent):
    """The single last event of a request: the MP4 bytes and the full result."""

    video_bytes: bytes | None = None
    frames: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    continuation_state: ContinuationState | None = None
    result: VideoResult | None = None
