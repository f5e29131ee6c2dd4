"""Results and streaming events of a generation.

Contract: ``VideoGenerator.generate`` returns a :class:`VideoResult`; ``generate_async`` yields
:class:`VideoProgressEvent` once per denoising step (plus stage markers), optional
:class:`VideoPartialEvent`, then exactly one :class:`VideoFinalEvent` per request, always last.
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
    """Partial output (frames decoded so far) for streaming consumers."""

    frames: Any = None
    frame_offset: int = 0


@dataclass
class VideoFinalEvent(VideoEvent):
    """The single last event of a request: the MP4 bytes and the full result."""

    video_bytes: bytes | None = None
    frames: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    continuation_state: ContinuationState | None = None
    result: VideoResult | None = None
