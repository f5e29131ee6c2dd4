"""The typed LTX-2 continuation state: decoded frames and audio latents <-> the ``ltx2.v1`` envelope.

Contract: :class:`LTX2ContinuationState` has the reference's fields with the reference's names and
defaults (``segment_index``, ``video_frames`` as RGB ``uint8`` ``(H, W, 3)`` numpy arrays or
``video_frames_blob_id``, ``video_conditioning_frame_idx``, ``video_conditioning_strength``,
``audio_latents`` as a ``[B, C, T, mel]`` floating tensor or ``audio_latents_blob_id``,
``audio_sample_rate``, ``audio_conditioning_num_frames``, ``audio_conditioning_strength``,
``video_position_offset_sec``, ``metadata``). :meth:`~LTX2ContinuationState.to_continuation_state`
writes ``ContinuationState(kind="ltx2.v1", payload)`` exactly as the reference's writer does (frames
as PNG + base64, audio latents as a one-tensor safetensors file + base64, which keeps bf16; media over
``inline_threshold_bytes`` to the blob store by id when one is given); the wire layout and its
checks live in :mod:`fastvideo.api.ltx2_state`. :meth:`~LTX2ContinuationState.from_continuation_state`
is the inverse and raises :class:`~fastvideo.api.ltx2_state.ContinuationStateError` (a ``ValueError``)
naming the field for a wrong kind or schema version, a missing field, bad base64, a non-PNG or
non-8-bit-RGB frame, frames of different sizes, or audio latents that are not one floating 4-D
tensor. PNG goes through PyAV's PNG codec (FFmpeg; lossless), tensors through ``safetensors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fastvideo.api.ltx2_state import (
    DEFAULT_INLINE_THRESHOLD_BYTES,
    LTX2_CONTINUATION_KIND,
    LTX2_CONTINUATION_SCHEMA_VERSION,
    ContinuationStateError,
    LTX2StatePayload,
    StateBlobStore,
)
from fastvideo.api.state import ContinuationState

AUDIO_LATENT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
#: PNG pixel formats read losslessly as 8-bit RGB (gray and palette expand exactly).
_RGB_READABLE = ("rgb24", "gray", "pal8")


def encode_png(frame: Any, field: str = "video_frames") -> bytes:
    """Lossless PNG bytes of one RGB ``uint8`` ``(H, W, 3)`` frame."""
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise ContinuationStateError(field, f"a frame must be uint8 (H, W, 3) RGB, got {array.dtype} "
                                            f"{tuple(array.shape)}")
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = array.shape[1], array.shape[0], "rgb24"
    frame_av = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
    packets = list(codec.encode(frame_av)) + list(codec.encode(None))
    return b"".join(bytes(p) for p in packets)


def decode_png(data: bytes, field: str) -> np.ndarray:
    """An RGB ``uint8`` ``(H, W, 3)`` array from PNG bytes (8-bit RGB, gray or palette only)."""
    codec = av.CodecContext.create("png", "r")
    try:
        frames = list(codec.decode(av.Packet(data))) + list(codec.decode(None))
    except av.FFmpegError as exc:
        raise ContinuationStateError(field, f"is not a decodable PNG ({exc})") from exc
    if len(frames) != 1:
        raise ContinuationStateError(field, f"holds {len(frames)} images, expected one PNG frame")
    fmt = frames[0].format.name
    if fmt not in _RGB_READABLE:
        raise ContinuationStateError(field, f"is a {fmt} PNG; frames must be 8-bit RGB (no alpha, no 16-bit)")
    return frames[0].to_ndarray(format="rgb24")


def audio_latents_to_safetensors(latents: Any, field: str = "audio_latents") -> bytes:
    """A safetensors file holding ``latents`` as the one tensor ``"t"`` (dtype and shape kept)."""
    if isinstance(latents, np.ndarray):
        latents = torch.from_numpy(np.ascontiguousarray(latents))
    if not isinstance(latents, torch.Tensor):
        raise ContinuationStateError(field, f"must be a torch.Tensor, got {type(latents).__name__}")
    _check_audio(latents, field)
    return st_save({"t": latents.detach().to("cpu").contiguous()})


def safetensors_to_audio_latents(raw: bytes, field: str) -> torch.Tensor:
    """The tensor ``"t"`` of a safetensors file, checked to be floating ``[B, C, T, mel]``."""
    try:
        tensors = st_load(raw)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for bad bytes
        raise ContinuationStateError(field, f"is not a safetensors file ({exc})") from exc
    if set(tensors) != {"t"}:
        raise ContinuationStateError(field, f"must hold exactly one tensor named 't', got {sorted(tensors)}")
    return _check_audio(tensors["t"], field)


def _check_audio(tensor: torch.Tensor, field: str) -> torch.Tensor:
    if tensor.dtype not in AUDIO_LATENT_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in AUDIO_LATENT_DTYPES)
        raise ContinuationStateError(field, f"audio latents must be {names}, got {str(tensor.dtype)[6:]}")
    if tensor.ndim != 4:
        raise ContinuationStateError(field, f"audio latents must be 4-D [B, C, T, mel], got shape "
                                            f"{tuple(tensor.shape)}")
    return tensor


@dataclass
class LTX2ContinuationState:
    """Typed LTX-2 continuation state carried between streaming segments (see the module contract)."""

    segment_index: int = 0
    """Index of the just-completed segment; the next segment is ``segment_index + 1``."""
    video_frames: list[np.ndarray] | None = None
    """Trailing decoded RGB ``uint8`` ``(H, W, 3)`` frames of the segment; None when blob-backed or unset."""
    video_frames_blob_id: str | None = None
    """Blob store id when the frames live outside the payload."""
    video_conditioning_frame_idx: int = 0
    """Frame index in the next segment the trailing frames align with."""
    video_conditioning_strength: float = 1.0
    """Video conditioning strength in [0, 1]."""
    audio_latents: torch.Tensor | None = None
    """Denoised audio latents ``[B, C, T, mel]``; None when blob-backed or unset."""
    audio_latents_blob_id: str | None = None
    """Blob store id when the audio latents live outside the payload."""
    audio_sample_rate: int | None = None
    """Sample rate of the audio side (e.g. 24000)."""
    audio_conditioning_num_frames: int = 0
    """Trailing audio latent frames carried over as clean context."""
    audio_conditioning_strength: float = 1.0
    """Clean-latent mask value of the overlap: 0 keeps the cached audio, 1 renoises from scratch."""
    video_position_offset_sec: float = 0.0
    """Seconds the video RoPE is shifted so an audio prefix longer than the video one sits at t >= 0."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Opaque JSON bag for forward-compatible extras."""

    def to_payload(self) -> LTX2StatePayload:
        """The wire fields with the media encoded (PNG bytes, safetensors bytes) but nothing moved to blobs."""
        frames = None
        if self.video_frames_blob_id is None and self.video_frames:
            frames = [encode_png(f, f"video_frames[{i}]") for i, f in enumerate(self.video_frames)]
        audio = None
        if self.audio_latents_blob_id is None and self.audio_latents is not None:
            audio = audio_latents_to_safetensors(self.audio_latents)
        return LTX2StatePayload(
            segment_index=self.segment_index, video_frames_png=frames,
            video_blob=None if self.video_frames_blob_id is None else {"blob_id": self.video_frames_blob_id},
            video_conditioning_frame_idx=self.video_conditioning_frame_idx,
            video_conditioning_strength=self.video_conditioning_strength,
            audio_latents_safetensors=audio,
            audio_blob=None if self.audio_latents_blob_id is None else {"blob_id": self.audio_latents_blob_id},
            audio_sample_rate=self.audio_sample_rate,
            audio_conditioning_num_frames=self.audio_conditioning_num_frames,
            audio_conditioning_strength=self.audio_conditioning_strength,
            video_position_offset_sec=self.video_position_offset_sec, metadata=dict(self.metadata))

    @classmethod
    def from_payload(cls, payload: LTX2StatePayload) -> "LTX2ContinuationState":
        frames = None
        if payload.video_frames_png is not None:
            where = "payload.video.blob_id" if payload.video_blob else "payload.video.frames_b64"
            frames = [decode_png(p, f"{where}[{i}]") for i, p in enumerate(payload.video_frames_png)]
            shapes = sorted({f.shape for f in frames})
            if len(shapes) > 1:
                raise ContinuationStateError(where, f"frames must all have one size, got shapes {shapes}")
        audio = None
        if payload.audio_latents_safetensors is not None:
            audio = safetensors_to_audio_latents(payload.audio_latents_safetensors,
                                                 "payload.audio.blob_id" if payload.audio_blob
                                                 else "payload.audio.safetensors_b64")
        video_ref = payload.video_blob if payload.video_frames_png is None else None
        audio_ref = payload.audio_blob if payload.audio_latents_safetensors is None else None
        return cls(
            segment_index=payload.segment_index, video_frames=frames,
            video_frames_blob_id=None if video_ref is None else video_ref["blob_id"],
            video_conditioning_frame_idx=payload.video_conditioning_frame_idx,
            video_conditioning_strength=payload.video_conditioning_strength,
            audio_latents=audio, audio_latents_blob_id=None if audio_ref is None else audio_ref["blob_id"],
            audio_sample_rate=payload.audio_sample_rate,
            audio_conditioning_num_frames=payload.audio_conditioning_num_frames,
            audio_conditioning_strength=payload.audio_conditioning_strength,
            video_position_offset_sec=payload.video_position_offset_sec, metadata=dict(payload.metadata))

    def to_continuation_state(self, *, blob_store: StateBlobStore | None = None,
                              inline_threshold_bytes: int = DEFAULT_INLINE_THRESHOLD_BYTES,
                              ttl_s: float | None = None) -> ContinuationState:
        """Serialize into the public envelope (media over the threshold to ``blob_store`` when given)."""
        return self.to_payload().to_continuation_state(blob_store=blob_store,
                                                       inline_threshold_bytes=inline_threshold_bytes, ttl_s=ttl_s)

    @classmethod
    def from_continuation_state(cls, state: ContinuationState, *,
                                blob_store: StateBlobStore | None = None) -> "LTX2ContinuationState":
        """Rebuild from the envelope; blob references are fetched from ``blob_store`` or kept as ids."""
        return cls.from_payload(LTX2StatePayload.from_continuation_state(state, blob_store=blob_store))


__all__ = [
    "DEFAULT_INLINE_THRESHOLD_BYTES",
    "LTX2_CONTINUATION_KIND",
    "LTX2_CONTINUATION_SCHEMA_VERSION",
    "ContinuationStateError",
    "LTX2ContinuationState",
    "audio_latents_to_safetensors",
    "decode_png",
    "encode_png",
    "safetensors_to_audio_latents",
]
