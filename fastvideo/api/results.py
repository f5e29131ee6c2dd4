"""Results and streaming events of a generation (FastVideo's ``fastvideo.api`` result types).

Contract:
- ``VideoGenerator.generate`` returns a :class:`GenerationResult` (alias :class:`VideoResult`). Every
  field is optional, so FastVideo code that builds one by keyword (``GenerationResult(frames=...,
  generation_time=...)``) works. FastVideo's fields: ``prompt``, ``prompt_index``, ``samples`` (the
  runtime fills it with a torch uint8 view ``(1, 3, T, H, W)`` of ``frames``, no copy; FastVideo's is
  float), ``frames`` (numpy uint8 ``(T, H, W, 3)``), ``audio``/``audio_sample_rate`` (None: no audio
  model; else a float32 numpy ``(channels, samples)`` in [-1, 1] and its rate in Hz, which
  ``fastvideo.runtime.media.encode_mp4`` muxes as the MP4's AAC track), ``size`` (``(height, width,
  num_frames)``), ``generation_time`` (seconds), ``logging_info``,
  ``trajectory*`` (None), ``video_path``, ``peak_memory_mb`` (peak CUDA memory allocated while it ran;
  None on a CPU engine), ``state`` and ``extra``. Ours besides: ``request_id``, ``metadata`` (JSON-safe:
  timings per stage in seconds under ``timings``, ``inference_time_s``, resolved sampling values, and
  FastVideo's ``generation_time``/``peak_memory_mb``/``video_path``) and ``video_bytes`` (MP4 bytes when
  the runtime encoded them).
- :meth:`GenerationResult.from_legacy_result` / :meth:`GenerationResult.to_legacy_dict` convert from / to
  FastVideo's legacy result dict (``prompts``, ``samples``, ... with unknown keys kept in ``extra``).
- ``generate_async`` yields :class:`VideoProgressEvent` once per denoising step, a
  :class:`VideoPartialEvent` preview after every ``output.preview_interval_steps`` steps when the request
  sets it (right after that step's progress event, never after the last step), then exactly one
  :class:`VideoFinalEvent` per request, always last. The events take FastVideo's constructor arguments
  in FastVideo's order (``VideoProgressEvent(step, total_steps, stage)``, ``VideoPartialEvent(frames,
  index)``, ``VideoFinalEvent(video_bytes, tensor, frames, metadata, continuation_state, result)``); our
  additions (``request_id``, ``elapsed_s``, ``frame_offset``, ...) are keyword-only with defaults.
  A final event built with a ``result`` and no ``tensor`` takes ``result.samples``. Match events with
  ``isinstance`` (:class:`VideoEvent` is their common base).
- This module imports neither numpy nor torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastvideo.api.state import ContinuationState

#: Keys of a legacy result dict that have a named field (everything else goes to ``extra``).
_LEGACY_NAMED = ("prompt", "prompt_index", "prompts", "samples", "frames", "audio", "audio_sample_rate", "size",
                 "generation_time", "logging_info", "trajectory", "trajectory_timesteps", "trajectory_decoded",
                 "video_path", "peak_memory_mb", "state")

#: Fields a legacy dict always carries, in FastVideo's order (``prompts`` first).
_LEGACY_ALWAYS = ("samples", "frames", "audio", "audio_sample_rate", "size", "generation_time", "logging_info",
                  "trajectory", "trajectory_timesteps", "trajectory_decoded", "video_path", "peak_memory_mb")


@dataclass
class GenerationResult:
    """The outcome of one generation (see module contract)."""

    prompt: str | None = None
    prompt_index: int | None = None
    samples: Any | None = None
    frames: Any | None = None
    audio: Any | None = None
    audio_sample_rate: int | None = None
    #: ``(height, width, num_frames)``.
    size: tuple[int, int, int] | None = None
    #: Wall time of the whole generation, seconds.
    generation_time: float | None = None
    logging_info: Any | None = None
    trajectory: Any | None = None
    trajectory_timesteps: Any | None = None
    trajectory_decoded: Any | None = None
    video_path: str | None = None
    #: Peak CUDA memory allocated while the request ran, MiB; None on a CPU engine.
    peak_memory_mb: float | None = None
    state: ContinuationState | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: MP4 bytes when the runtime encoded them (async path, or when saved).
    video_bytes: bytes | None = None

    @classmethod
    def from_legacy_result(cls, result: Mapping[str, Any]) -> "GenerationResult":
        """From FastVideo's legacy result dict: ``prompt`` (else ``prompts``), the named keys, the rest in ``extra``."""
        prompt = result.get("prompt")
        if prompt is None:
            prompt = result.get("prompts")
        named: dict[str, Any] = {name: result.get(name) for name in _LEGACY_NAMED if name not in ("prompt", "prompts")}
        extra = {key: value for key, value in result.items() if key not in _LEGACY_NAMED}
        return cls(prompt=prompt, extra=extra, **named)

    def to_legacy_dict(self) -> dict[str, Any]:
        """FastVideo's legacy result dict: ``prompts`` and the named fields; ``prompt_index``/``prompt`` when
        ``prompt_index`` is set, ``state`` when set; ``extra``'s keys last."""
        out: dict[str, Any] = {"prompts": self.prompt}
        out.update({name: getattr(self, name) for name in _LEGACY_ALWAYS})
        if self.prompt_index is not None:
            out["prompt_index"] = self.prompt_index
            out["prompt"] = self.prompt
        if self.state is not None:
            out["state"] = self.state
        out.update(self.extra)
        return out


#: FastVideo's name for the same class.
VideoResult = GenerationResult


@dataclass
class VideoEvent:
    """Base of every event ``generate_async`` yields."""

    #: The request the event belongs to (our addition; keyword-only).
    request_id: str | None = field(default=None, kw_only=True)


@dataclass
class VideoProgressEvent(VideoEvent):
    """Progress: ``stage`` is "text_encode", "denoise" (one per step), "decode" or "encode"."""

    step: int
    total_steps: int
    stage: str = "denoise"
    elapsed_s: float = field(default=0.0, kw_only=True)


@dataclass
class VideoPartialEvent(VideoEvent):
    """A preview while denoising: the current clean-video estimate, decoded.

    ``frames`` are uint8 ``(T, H, W, 3)`` at the request's size and frame count (the final video's
    shape): the sampler's estimate of the clean latents after ``step`` of ``total_steps`` steps
    (``x0 = x_t - sigma_t * v``), decoded by the VAE. ``index`` counts the request's previews from 0.
    ``frame_offset`` is where ``frames`` start in the video (0: a preview covers the whole clip).
    """

    frames: Any
    index: int
    frame_offset: int = field(default=0, kw_only=True)
    step: int = field(default=0, kw_only=True)
    total_steps: int = field(default=0, kw_only=True)


@dataclass
class VideoFinalEvent(VideoEvent):
    """The single last event of a request: the MP4 bytes and the full result."""

    video_bytes: bytes | None = None
    #: The video as a tensor (``result.samples`` when not given).
    tensor: Any | None = None
    frames: Any | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    continuation_state: ContinuationState | None = None
    result: GenerationResult | None = None

    def __post_init__(self) -> None:
        if self.tensor is None and self.result is not None:
            self.tensor = self.result.samples


__all__ = ["GenerationResult", "VideoEvent", "VideoFinalEvent", "VideoPartialEvent", "VideoProgressEvent",
           "VideoResult"]
