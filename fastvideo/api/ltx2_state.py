"""The ``ltx2.v1`` continuation state on the wire: torch-free parsing and writing of its payload.

Contract (the reference's LTX-2 continuation state, field for field): a
``ContinuationState(kind="ltx2.v1", payload)`` whose payload is a plain JSON object::

    {"schema_version": 1, "segment_index": int >= 0,
     "video_conditioning_frame_idx": int, "video_conditioning_strength": float in [0, 1],
     "audio_conditioning_num_frames": int >= 0, "audio_conditioning_strength": float in [0, 1],
     "video_position_offset_sec": float, "metadata": {...},
     "audio_sample_rate": int > 0,                                   # optional
     "video": {"frames_b64": [<base64 PNG>, ...]}                    # optional, or
              {"blob_id": str, "frame_count": int}                   #   frames packed in a blob
     "audio": {"safetensors_b64": <base64 safetensors>}              # optional, or
              {"blob_id": str}}                                      #   the safetensors bytes in a blob

A frames blob packs the PNGs as ``[u32 count][u32 len][png]...`` (big-endian). The audio latents are a
safetensors file holding one tensor named ``"t"`` (so bf16 survives). A blob reference we write also
carries ``nbytes`` and ``sha256`` of the blob (checked when present, ignored by readers that do not
know them). Every key the reference's writer always emits is required; unknown top-level keys are
refused (forward-compatible extras belong in ``metadata``).

:class:`LTX2StatePayload` holds those fields with the media still encoded (PNG bytes, safetensors
bytes, or blob ids); :meth:`~LTX2StatePayload.to_continuation_state` moves media larger than
``inline_threshold_bytes`` (default :data:`DEFAULT_INLINE_THRESHOLD_BYTES`, 2 MiB) to a blob store
when one is given, and :meth:`~LTX2StatePayload.from_continuation_state` fetches blob references
back when given one (otherwise it keeps the ids). Anything malformed raises
:class:`ContinuationStateError` (a ``ValueError``) naming the payload field and what is wrong.
Decoding pixels and tensors is the engine's (:mod:`fastvideo.engine.models.ltx2.state`); this module imports
neither torch nor numpy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastvideo.api.errors import FastVideoError
from fastvideo.api.state import ContinuationState

LTX2_CONTINUATION_KIND = "ltx2.v1"
LTX2_CONTINUATION_SCHEMA_VERSION = 1
#: Media larger than this (PNG bytes of all frames together; the audio safetensors bytes) go to the
#: blob store when one is given: below Dynamo's 4 MiB single-message limit, above a 512x512 PNG.
DEFAULT_INLINE_THRESHOLD_BYTES = 2 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FRAMES_BLOB_MIME = "application/x-fastvideo-frames+png"
TENSOR_BLOB_MIME = "application/x-fastvideo-tensor+safetensors"

_SCALARS = ("schema_version", "segment_index", "video_conditioning_frame_idx", "video_conditioning_strength",
            "audio_conditioning_num_frames", "audio_conditioning_strength", "video_position_offset_sec", "metadata")
_KNOWN_KEYS = frozenset(_SCALARS) | {"audio_sample_rate", "video", "audio"}


class ContinuationStateError(FastVideoError, ValueError):
    """A continuation state this package cannot read, with the payload field and what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")


class StateBlobStore(Protocol):
    """What the state needs from a blob store (:class:`fastvideo.runtime.stores.BlobStore` fits)."""

    def put(self, data: bytes, *, ttl_s: float | None = None) -> str: ...

    def get(self, blob_id: str) -> bytes: ...


def pack_frames(pngs: list[bytes]) -> bytes:
    """One blob holding ``pngs``: ``[u32 count]`` then ``[u32 length][png]`` per frame, big-endian."""
    parts = [len(pngs).to_bytes(4, "big")]
    for png in pngs:
        parts += [len(png).to_bytes(4, "big"), png]
    return b"".join(parts)


def unpack_frames(raw: bytes, field: str = "payload.video.blob_id") -> list[bytes]:
    """Inverse of :func:`pack_frames` (ContinuationStateError naming ``field`` when truncated)."""
    if len(raw) < 4:
        raise ContinuationStateError(field, "the frames blob is truncated (no frame count)")
    count = int.from_bytes(raw[:4], "big")
    if count > (len(raw) - 4) // 4:
        raise ContinuationStateError(field, f"the frames blob declares {count} frames but holds {len(raw)} bytes")
    out, cursor = [], 4
    for index in range(count):
        length = int.from_bytes(raw[cursor:cursor + 4], "big") if cursor + 4 <= len(raw) else -1
        cursor += 4
        if length < 0 or cursor + length > len(raw):
            raise ContinuationStateError(field, f"the frames blob is truncated at frame {index}")
        out.append(raw[cursor:cursor + length])
        cursor += length
    if cursor != len(raw):
        raise ContinuationStateError(field, f"the frames blob has {len(raw) - cursor} bytes after its last frame")
    return out


def _require(payload: dict[str, Any], key: str) -> Any:
    if key not in payload:
        raise ContinuationStateError(f"payload.{key}", "is missing (an ltx2.v1 payload always carries it)")
    return payload[key]


def _int(value: Any, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContinuationStateError(name, f"must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ContinuationStateError(name, f"must be >= {minimum}, got {value}")
    return value


def _float(value: Any, name: str, unit_range: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ContinuationStateError(name, f"must be a finite number, got {value!r}")
    if unit_range and not 0.0 <= value <= 1.0:
        raise ContinuationStateError(name, f"must be in [0, 1], got {value}")
    return float(value)


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise ContinuationStateError(name, f"must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ContinuationStateError(name, f"is not valid base64 ({exc})") from exc


def _check_png(data: bytes, name: str) -> bytes:
    if not data.startswith(PNG_SIGNATURE):
        raise ContinuationStateError(name, "is not a PNG image (frames are PNG bytes, base64-encoded)")
    return data


def _blob_ref(value: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    unknown = set(value) - allowed
    if unknown:
        raise ContinuationStateError(name, f"has unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    blob_id = value["blob_id"]
    if not isinstance(blob_id, str) or not blob_id:
        raise ContinuationStateError(f"{name}.blob_id", f"must be a non-empty string, got {blob_id!r}")
    if "nbytes" in value:
        _int(value["nbytes"], f"{name}.nbytes", 0)
    if "sha256" in value and not isinstance(value["sha256"], str):
        raise ContinuationStateError(f"{name}.sha256", "must be a hex string")
    return dict(value)


def _fetch(store: StateBlobStore, ref: dict[str, Any], name: str) -> bytes:
    blob_id = ref["blob_id"]
    try:
        raw = store.get(blob_id)
    except (KeyError, ValueError, OSError) as exc:
        raise ContinuationStateError(f"{name}.blob_id", f"blob {blob_id!r} cannot be read: {exc}") from exc
    if isinstance(ref.get("nbytes"), int) and ref["nbytes"] != len(raw):
        raise ContinuationStateError(f"{name}.blob_id", f"blob {blob_id!r} holds {len(raw)} bytes, "
                                                        f"the state expects {ref['nbytes']}")
    if isinstance(ref.get("sha256"), str) and hashlib.sha256(raw).hexdigest() != ref["sha256"]:
        raise ContinuationStateError(f"{name}.blob_id", f"blob {blob_id!r} does not match the state's sha256 "
                                                        "(overwritten or corrupted)")
    return raw


def _put(store: StateBlobStore, raw: bytes, ttl_s: float | None) -> dict[str, Any]:
    return {"blob_id": store.put(raw, ttl_s=ttl_s), "nbytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


@dataclass
class LTX2StatePayload:
    """An ``ltx2.v1`` payload with its media still encoded (see the module contract).

    ``video_frames_png`` / ``audio_latents_safetensors`` hold the media inline; ``video_blob`` /
    ``audio_blob`` hold a blob reference (``{"blob_id", ...}``) instead when the media lives in a
    blob store. At most one of each pair is set.
    """

    segment_index: int = 0
    video_frames_png: list[bytes] | None = None
    video_blob: dict[str, Any] | None = None
    video_conditioning_frame_idx: int = 0
    video_conditioning_strength: float = 1.0
    audio_latents_safetensors: bytes | None = None
    audio_blob: dict[str, Any] | None = None
    audio_sample_rate: int | None = None
    audio_conditioning_num_frames: int = 0
    audio_conditioning_strength: float = 1.0
    video_position_offset_sec: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)

    def blob_ids(self) -> list[str]:
        return [ref["blob_id"] for ref in (self.video_blob, self.audio_blob) if ref is not None]

    # ------------------------------------------------------------------ writing
    def to_continuation_state(self, *, blob_store: StateBlobStore | None = None,
                              inline_threshold_bytes: int = DEFAULT_INLINE_THRESHOLD_BYTES,
                              ttl_s: float | None = None) -> ContinuationState:
        """The envelope; media over ``inline_threshold_bytes`` go to ``blob_store`` when one is given."""
        try:
            metadata = json.loads(json.dumps(self.metadata, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ContinuationStateError("payload.metadata", f"must be JSON-serializable: {exc}") from exc
        if not isinstance(metadata, dict):
            raise ContinuationStateError("payload.metadata", f"must be an object, got {type(metadata).__name__}")
        payload: dict[str, Any] = {
            "schema_version": LTX2_CONTINUATION_SCHEMA_VERSION,
            "segment_index": _int(self.segment_index, "segment_index", 0),
            "video_conditioning_frame_idx": _int(self.video_conditioning_frame_idx, "video_conditioning_frame_idx"),
            "video_conditioning_strength": _float(self.video_conditioning_strength, "video_conditioning_strength",
                                                  True),
            "audio_conditioning_num_frames": _int(self.audio_conditioning_num_frames,
                                                  "audio_conditioning_num_frames", 0),
            "audio_conditioning_strength": _float(self.audio_conditioning_strength, "audio_conditioning_strength",
                                                  True),
            "video_position_offset_sec": _float(self.video_position_offset_sec, "video_position_offset_sec"),
            "metadata": metadata,
        }
        if self.audio_sample_rate is not None:
            payload["audio_sample_rate"] = _int(self.audio_sample_rate, "audio_sample_rate", 1)
        if self.video_blob is not None:
            payload["video"] = dict(self.video_blob)
        elif self.video_frames_png:
            pngs = [_check_png(bytes(p), f"video_frames_png[{i}]") for i, p in enumerate(self.video_frames_png)]
            if blob_store is not None and sum(map(len, pngs)) > inline_threshold_bytes:
                payload["video"] = {**_put(blob_store, pack_frames(pngs), ttl_s), "frame_count": len(pngs)}
            else:
                payload["video"] = {"frames_b64": [base64.b64encode(p).decode("ascii") for p in pngs]}
        if self.audio_blob is not None:
            payload["audio"] = dict(self.audio_blob)
        elif self.audio_latents_safetensors is not None:
            raw = bytes(self.audio_latents_safetensors)
            if blob_store is not None and len(raw) > inline_threshold_bytes:
                payload["audio"] = _put(blob_store, raw, ttl_s)
            else:
                payload["audio"] = {"safetensors_b64": base64.b64encode(raw).decode("ascii")}
        return ContinuationState(kind=LTX2_CONTINUATION_KIND, payload=payload)

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_continuation_state(cls, state: ContinuationState, *,
                                blob_store: StateBlobStore | None = None) -> "LTX2StatePayload":
        """Parse and check an ``ltx2.v1`` envelope; with ``blob_store``, fetch its blob references inline."""
        if state.kind != LTX2_CONTINUATION_KIND:
            raise ContinuationStateError("kind", f"expected {LTX2_CONTINUATION_KIND!r}, got {state.kind!r}")
        payload = state.payload
        version = _require(payload, "schema_version")
        if version != LTX2_CONTINUATION_SCHEMA_VERSION or isinstance(version, bool):
            raise ContinuationStateError("payload.schema_version",
                                         f"unsupported {LTX2_CONTINUATION_KIND} schema_version {version!r}; "
                                         f"this build reads {LTX2_CONTINUATION_SCHEMA_VERSION}")
        unknown = set(payload) - _KNOWN_KEYS
        if unknown:
            raise ContinuationStateError("payload", f"has unknown keys {sorted(unknown)} (put extra fields in "
                                                    "payload.metadata)")
        metadata = _require(payload, "metadata")
        if not isinstance(metadata, dict):
            raise ContinuationStateError("payload.metadata", f"must be an object, got {type(metadata).__name__}")
        out = cls(
            segment_index=_int(_require(payload, "segment_index"), "payload.segment_index", 0),
            video_conditioning_frame_idx=_int(_require(payload, "video_conditioning_frame_idx"),
                                              "payload.video_conditioning_frame_idx"),
            video_conditioning_strength=_float(_require(payload, "video_conditioning_strength"),
                                               "payload.video_conditioning_strength", True),
            audio_conditioning_num_frames=_int(_require(payload, "audio_conditioning_num_frames"),
                                               "payload.audio_conditioning_num_frames", 0),
            audio_conditioning_strength=_float(_require(payload, "audio_conditioning_strength"),
                                               "payload.audio_conditioning_strength", True),
            video_position_offset_sec=_float(_require(payload, "video_position_offset_sec"),
                                             "payload.video_position_offset_sec"),
            metadata=dict(metadata),
        )
        if "audio_sample_rate" in payload:
            out.audio_sample_rate = _int(payload["audio_sample_rate"], "payload.audio_sample_rate", 1)
        if "video" in payload:
            out._read_video(payload["video"], blob_store)
        if "audio" in payload:
            out._read_audio(payload["audio"], blob_store)
        return out

    def _read_video(self, video: Any, store: StateBlobStore | None) -> None:
        name = "payload.video"
        if not isinstance(video, dict):
            raise ContinuationStateError(name, f"must be an object, got {type(video).__name__}")
        if "blob_id" in video:
            ref = _blob_ref(video, name, {"blob_id", "frame_count", "nbytes", "sha256"})
            if "frame_count" in ref:
                _int(ref["frame_count"], f"{name}.frame_count", 1)
            if store is None:
                self.video_blob = ref
                return
            pngs = unpack_frames(_fetch(store, ref, name), f"{name}.blob_id")
            if "frame_count" in ref and ref["frame_count"] != len(pngs):
                raise ContinuationStateError(f"{name}.frame_count", f"says {ref['frame_count']} frames, "
                                                                    f"the blob holds {len(pngs)}")
            self.video_frames_png = [_check_png(p, f"{name}.blob_id[{i}]") for i, p in enumerate(pngs)]
            return
        if set(video) != {"frames_b64"}:
            raise ContinuationStateError(name, f"must be {{'frames_b64': [...]}} or {{'blob_id': ...}}, "
                                               f"got keys {sorted(video)}")
        frames = video["frames_b64"]
        if not isinstance(frames, list) or not frames:
            raise ContinuationStateError(f"{name}.frames_b64", "must be a non-empty list of base64 PNG strings")
        self.video_frames_png = [_check_png(_b64(f, f"{name}.frames_b64[{i}]"), f"{name}.frames_b64[{i}]")
                                 for i, f in enumerate(frames)]

    def _read_audio(self, audio: Any, store: StateBlobStore | None) -> None:
        name = "payload.audio"
        if not isinstance(audio, dict):
            raise ContinuationStateError(name, f"must be an object, got {type(audio).__name__}")
        if "blob_id" in audio:
            ref = _blob_ref(audio, name, {"blob_id", "nbytes", "sha256"})
            if store is None:
                self.audio_blob = ref
            else:
                self.audio_latents_safetensors = _fetch(store, ref, name)
            return
        if set(audio) != {"safetensors_b64"}:
            raise ContinuationStateError(name, f"must be {{'safetensors_b64': ...}} or {{'blob_id': ...}}, "
                                               f"got keys {sorted(audio)}")
        self.audio_latents_safetensors = _b64(audio["safetensors_b64"], f"{name}.safetensors_b64")


__all__ = [
    "DEFAULT_INLINE_THRESHOLD_BYTES",
    "LTX2_CONTINUATION_KIND",
    "LTX2_CONTINUATION_SCHEMA_VERSION",
    "ContinuationStateError",
    "LTX2StatePayload",
    "StateBlobStore",
    "pack_frames",
    "unpack_frames",
]
