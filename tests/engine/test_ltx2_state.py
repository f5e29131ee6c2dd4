"""The ``ltx2.v1`` continuation state: round-trips (JSON, blob stores, a real redis-server), exactness
(PNG frames, bf16 audio latents bit for bit), the 2 MiB inline threshold, refusals naming the field, and
interoperability with the reference's format both ways.

"The reference" is /work/shared/reference/ltx2-continuation-state.txt (FastVideo's own LTX-2 server's
``LTX2ContinuationState``). The interop tests build a payload the way that server writes it, field by
field, with a PNG writer (zlib) and a safetensors writer (header JSON + raw bytes) written here, so no
code of ours makes the fixture; and they read what we write with Pillow and a hand-parsed safetensors
header, so no code of ours reads it back.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from fastvideo.api import KNOWN_STATE_KINDS, ContinuationState, FastVideoError
from fastvideo.api.ltx2_state import (
    DEFAULT_INLINE_THRESHOLD_BYTES,
    PNG_SIGNATURE,
    ContinuationStateError,
    LTX2StatePayload,
    pack_frames,
)
from fastvideo.engine.models.ltx2.state import LTX2ContinuationState, encode_png
from fastvideo.runtime.state_blobs import externalize_state, internalize_state, state_blob_ids
from fastvideo.runtime.stores import InMemoryBlobStore, StoreConfig, open_stores

# The redis-server fixture (starts its own server on 127.0.0.1; skips only when redis is not installed).

# What the reference's writer always puts in a payload, besides the optional audio_sample_rate/video/audio.
REFERENCE_KEYS = {"schema_version", "segment_index", "video_conditioning_frame_idx", "video_conditioning_strength",
                  "audio_conditioning_num_frames", "audio_conditioning_strength", "video_position_offset_sec",
                  "metadata"}


def _frames(n: int = 2, h: int = 16, w: int = 24, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _bf16(shape=(1, 8, 6, 16), seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


def _state(**kw) -> LTX2ContinuationState:
    fields = dict(segment_index=3, video_frames=_frames(), video_conditioning_frame_idx=2,
                  video_conditioning_strength=0.75, audio_latents=_bf16(), audio_sample_rate=24000,
                  audio_conditioning_num_frames=4, audio_conditioning_strength=0.25, video_position_offset_sec=0.5,
                  metadata={"prompt_id": "p-7", "knobs": [1, 2]})
    fields.update(kw)
    return LTX2ContinuationState(**fields)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16) if t.dtype in (torch.bfloat16, torch.float16) else t.view(torch.int32)


def assert_same(a: LTX2ContinuationState, b: LTX2ContinuationState) -> None:
    assert (a.video_frames is None) == (b.video_frames is None)
    if a.video_frames is not None:
        assert len(a.video_frames) == len(b.video_frames)
        for x, y in zip(a.video_frames, b.video_frames):
            assert x.dtype == y.dtype == np.uint8 and np.array_equal(x, y)
    if a.audio_latents is not None:
        assert b.audio_latents.dtype == a.audio_latents.dtype and b.audio_latents.shape == a.audio_latents.shape
        assert torch.equal(_bits(a.audio_latents), _bits(b.audio_latents))  # bit for bit
    else:
        assert b.audio_latents is None
    for name in ("segment_index", "video_frames_blob_id", "video_conditioning_frame_idx",
                 "video_conditioning_strength", "audio_latents_blob_id", "audio_sample_rate",
                 "audio_conditioning_num_frames", "audio_conditioning_strength", "video_position_offset_sec",
                 "metadata"):
        assert getattr(a, name) == getattr(b, name), name


# ---------------------------------------------------------------------------------------------- round-trips
def test_round_trip_through_json_keeps_frames_and_bf16_exact():
    state = _state()
    envelope = state.to_continuation_state()
    assert envelope.kind == "ltx2.v1"
    wire = json.dumps(envelope.to_dict())  # plain JSON, no custom encoder
    back = ContinuationState.from_dict(json.loads(wire))
    assert_same(state, LTX2ContinuationState.from_continuation_state(back))
    assert_same(state, LTX2ContinuationState.from_continuation_state(ContinuationState.from_json(envelope.to_json())))
    payload = envelope.payload
    assert set(payload) == REFERENCE_KEYS | {"audio_sample_rate", "video", "audio"}
    assert set(payload["video"]) == {"frames_b64"} and set(payload["audio"]) == {"safetensors_b64"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_audio_dtypes_survive(dtype):
    state = _state(video_frames=None, audio_latents=torch.randn(2, 4, 3, 8).to(dtype))
    assert_same(state, LTX2ContinuationState.from_continuation_state(state.to_continuation_state()))


def test_defaults_and_empty_media_round_trip():
    state = LTX2ContinuationState()
    envelope = state.to_continuation_state()
    assert set(envelope.payload) == REFERENCE_KEYS  # no media, no sample rate: only what the reference always writes
    assert envelope.payload["schema_version"] == 1 and envelope.payload["video_conditioning_strength"] == 1.0
    assert_same(state, LTX2ContinuationState.from_continuation_state(envelope))


def test_known_state_kinds_still_lists_ltx2():
    assert KNOWN_STATE_KINDS["ltx2.v1"] == (1,)
    ContinuationState.from_dict(_state().to_continuation_state().to_dict())  # the envelope validates


@pytest.fixture(params=["memory", "redis"])
def blob_store(request):
    if request.param == "memory":
        yield InMemoryBlobStore()
        return
    stores = open_stores(StoreConfig(url=request.getfixturevalue("redis_url"), key_prefix="ltx2-state:"))
    yield stores.blobs
    stores.close()


def test_round_trip_through_blob_store(blob_store):
    state = _state(video_frames=_frames(3, 64, 64), audio_latents=_bf16((1, 8, 64, 16)))
    envelope = state.to_continuation_state(blob_store=blob_store, inline_threshold_bytes=1024)
    video, audio = envelope.payload["video"], envelope.payload["audio"]
    assert set(video) == {"blob_id", "frame_count", "nbytes", "sha256"} and video["frame_count"] == 3
    assert set(audio) == {"blob_id", "nbytes", "sha256"}
    wire = ContinuationState.from_json(envelope.to_json())
    assert len(wire.to_json()) < 1024  # the media are not in the message
    assert_same(state, LTX2ContinuationState.from_continuation_state(wire, blob_store=blob_store))
    # without a store the ids are kept, and written back as references
    by_id = LTX2ContinuationState.from_continuation_state(wire)
    assert by_id.video_frames is None and by_id.video_frames_blob_id == video["blob_id"]
    assert by_id.audio_latents is None and by_id.audio_latents_blob_id == audio["blob_id"]
    again = by_id.to_continuation_state()
    assert again.payload["video"] == {"blob_id": video["blob_id"]}
    assert again.payload["audio"] == {"blob_id": audio["blob_id"]}
    assert_same(state, LTX2ContinuationState.from_continuation_state(again, blob_store=blob_store))


def test_runtime_blob_mechanism_moves_ltx2_media(blob_store):
    """``state_blobs`` (what the generator, pool and servers use) externalizes ltx2.v1 media the reference's way."""
    state = _state(video_frames=_frames(2, 64, 64), audio_latents=_bf16((1, 8, 64, 16)))
    inline = state.to_continuation_state()
    stored = externalize_state(inline, blob_store, threshold_bytes=4096, ttl_s=60)
    ids = state_blob_ids(stored)
    assert ids == [stored.payload["video"]["blob_id"], stored.payload["audio"]["blob_id"]]
    assert all(blob_store.exists(i) for i in ids)
    assert state_blob_ids(inline) == [] and externalize_state(inline, blob_store, 10**9).payload == inline.payload
    back = internalize_state(ContinuationState.from_json(stored.to_json()), blob_store)
    assert state_blob_ids(back) == [] and back.payload == inline.payload
    assert_same(state, LTX2ContinuationState.from_continuation_state(back))
    with pytest.raises(ValueError, match="no blob store configured"):
        internalize_state(stored, None)
    blob_store.delete(ids[1])
    with pytest.raises(ContinuationStateError, match="payload.audio.blob_id.*not in the blob store") as info:
        internalize_state(stored, blob_store)
    assert info.value.field == "payload.audio.blob_id"


def test_overwritten_blob_is_refused():
    store = InMemoryBlobStore()
    envelope = _state().to_continuation_state(blob_store=store, inline_threshold_bytes=0)
    ref = envelope.payload["video"]
    store.put(pack_frames([encode_png(f) for f in _frames(seed=9)]), blob_id=ref["blob_id"])
    with pytest.raises(ContinuationStateError, match="sha256"):
        LTX2ContinuationState.from_continuation_state(envelope, blob_store=store)


# ---------------------------------------------------------------------------------------------- threshold
def test_threshold_is_2_mib_exactly_at_the_wire_level():
    assert DEFAULT_INLINE_THRESHOLD_BYTES == 2 * 1024 * 1024
    store = InMemoryBlobStore()
    for extra, where in ((0, "inline"), (1, "blob")):
        size = DEFAULT_INLINE_THRESHOLD_BYTES + extra
        half = size // 2
        pngs = [PNG_SIGNATURE + b"\0" * (half - 8), PNG_SIGNATURE + b"\0" * (size - half - 8)]  # all PNGs together
        payload = LTX2StatePayload(video_frames_png=pngs, audio_latents_safetensors=b"\1" * size)
        out = payload.to_continuation_state(blob_store=store).payload
        for key in ("video", "audio"):
            assert ("blob_id" in out[key]) == (where == "blob"), (key, size)
    # without a store everything stays inline whatever the size
    big = LTX2StatePayload(audio_latents_safetensors=b"\1" * (DEFAULT_INLINE_THRESHOLD_BYTES + 1))
    assert "safetensors_b64" in big.to_continuation_state().payload["audio"]


def test_threshold_with_real_media_just_under_and_just_over():
    store = InMemoryBlobStore()
    # bf16 [1, 8, T, 16]: 256 bytes a latent frame, plus a ~100-byte safetensors header
    under = _state(video_frames=None, audio_latents=_bf16((1, 8, 8191, 16)))
    over = _state(video_frames=None, audio_latents=_bf16((1, 8, 8192, 16)))
    assert "safetensors_b64" in under.to_continuation_state(blob_store=store).payload["audio"]
    assert "blob_id" in over.to_continuation_state(blob_store=store).payload["audio"]
    # noise frames do not compress: two 512x512 PNGs (~1.5 MiB) stay inline, three (~2.25 MiB) go to the store
    frames = _frames(3, 512, 512)
    two = _state(video_frames=frames[:2], audio_latents=None).to_continuation_state(blob_store=store)
    three_state = _state(video_frames=frames, audio_latents=None)
    three = three_state.to_continuation_state(blob_store=store)
    assert "frames_b64" in two.payload["video"]
    assert three.payload["video"]["frame_count"] == 3 and len(three.to_json()) < 4096
    assert_same(three_state, LTX2ContinuationState.from_continuation_state(three, blob_store=store))


# ---------------------------------------------------------------------------------------------- refusals
def _payload() -> dict:
    return _state().to_continuation_state().to_dict()["payload"]


def _refused(payload: dict, field: str, match: str, kind: str = "ltx2.v1") -> ContinuationStateError:
    with pytest.raises(ContinuationStateError, match=match) as info:
        LTX2ContinuationState.from_continuation_state(ContinuationState(kind=kind, payload=payload))
    assert info.value.field == field, str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FastVideoError)
    return info.value


def test_unknown_kind_and_schema_version_are_refused():
    _refused(_payload(), "kind", r"expected 'ltx2.v1', got 'wan.v1'", kind="wan.v1")
    _refused({**_payload(), "schema_version": 2}, "payload.schema_version",
             r"unsupported ltx2.v1 schema_version 2; this build reads 1")
    _refused({**_payload(), "schema_version": True}, "payload.schema_version", "unsupported")
    with pytest.raises(ValueError, match=r"schema_version 2; supported: \[1\]"):
        ContinuationState.from_dict({"kind": "ltx2.v1", "payload": {**_payload(), "schema_version": 2}})
    with pytest.raises(ValueError, match="unknown continuation state kind 'ltx3.v1'"):
        ContinuationState.from_dict({"kind": "ltx3.v1", "payload": _payload()})


@pytest.mark.parametrize("key", sorted(REFERENCE_KEYS))
def test_missing_field_is_named(key):
    payload = _payload()
    del payload[key]
    _refused(payload, f"payload.{key}", "is missing")


@pytest.mark.parametrize("key,value,match", [
    ("segment_index", -1, ">= 0"), ("segment_index", "3", "integer"), ("segment_index", 1.0, "integer"),
    ("video_conditioning_strength", 1.5, r"\[0, 1\]"), ("audio_conditioning_strength", "x", "finite number"),
    ("video_position_offset_sec", float("nan"), "finite"), ("audio_conditioning_num_frames", -2, ">= 0"),
    ("audio_sample_rate", 0, ">= 1"), ("metadata", [1], "object"), ("video", "abc", "object"),
])
def test_bad_scalar_is_named(key, value, match):
    _refused({**_payload(), key: value}, f"payload.{key}", match)


def test_unknown_keys_are_refused():
    _refused({**_payload(), "tail_latents": {}}, "payload", r"unknown keys \['tail_latents'\].*metadata")
    _refused({**_payload(), "video": {"frames": []}}, "payload.video", "frames_b64")
    _refused({**_payload(), "audio": {"data": "x"}}, "payload.audio", "safetensors_b64")


def test_bad_media_is_named():
    payload = _payload()
    frames = payload["video"]["frames_b64"]
    _refused({**payload, "video": {"frames_b64": [frames[0], "not base64!"]}}, "payload.video.frames_b64[1]",
             "not valid base64")
    _refused({**payload, "video": {"frames_b64": []}}, "payload.video.frames_b64", "non-empty")
    _refused({**payload, "video": {"frames_b64": [base64.b64encode(b"GIF89a...").decode()]}},
             "payload.video.frames_b64[0]", "not a PNG")
    truncated = base64.b64encode(base64.b64decode(frames[0])[:40]).decode()
    _refused({**payload, "video": {"frames_b64": [truncated]}}, "payload.video.frames_b64[0]", "PNG")
    rgba = base64.b64encode(_png(np.zeros((4, 4, 4), np.uint8), color_type=6)).decode()
    _refused({**payload, "video": {"frames_b64": [rgba]}}, "payload.video.frames_b64[0]", "8-bit RGB")
    mixed = [frames[0], base64.b64encode(encode_png(_frames(1, 8, 8)[0])).decode()]
    _refused({**payload, "video": {"frames_b64": mixed}}, "payload.video.frames_b64", "one size")
    _refused({**payload, "audio": {"safetensors_b64": "%%%"}}, "payload.audio.safetensors_b64", "base64")
    _refused({**payload, "audio": {"safetensors_b64": base64.b64encode(b"junk").decode()}},
             "payload.audio.safetensors_b64", "not a safetensors file")
    wrong = base64.b64encode(st_save({"t": torch.zeros(1, 2, 3, 4, dtype=torch.int32)})).decode()
    _refused({**payload, "audio": {"safetensors_b64": wrong}}, "payload.audio.safetensors_b64",
             "must be bfloat16, float16, float32, got int32")
    flat = base64.b64encode(st_save({"t": torch.zeros(8, dtype=torch.bfloat16)})).decode()
    _refused({**payload, "audio": {"safetensors_b64": flat}}, "payload.audio.safetensors_b64", "4-D")
    two = base64.b64encode(st_save({"t": _bf16(), "u": _bf16()})).decode()
    _refused({**payload, "audio": {"safetensors_b64": two}}, "payload.audio.safetensors_b64", "one tensor named 't'")
    _refused({**payload, "video": {"blob_id": ""}}, "payload.video.blob_id", "non-empty")


def test_bad_values_are_refused_when_writing():
    with pytest.raises(ContinuationStateError, match="uint8"):
        _state(video_frames=[np.zeros((4, 4, 3), np.float32)]).to_continuation_state()
    with pytest.raises(ContinuationStateError, match="int64"):
        _state(audio_latents=torch.zeros(1, 2, 3, 4, dtype=torch.int64)).to_continuation_state()
    with pytest.raises(ContinuationStateError, match="metadata.*JSON"):
        _state(metadata={"t": object()}).to_continuation_state()


# ---------------------------------------------------------------------------------------------- interop
def _png(pixels: np.ndarray, color_type: int = 2) -> bytes:
    """A PNG written from the PNG spec with zlib (8-bit, filter 0 on every row); not our encoder."""
    h, w = pixels.shape[:2]

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = b"".join(b"\0" + pixels[y].tobytes() for y in range(h))
    return (PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _safetensors_bf16(values: np.ndarray) -> bytes:
    """A safetensors file by its spec (u64 header length, JSON header, little-endian data): tensor "t", BF16."""
    bits = (values.astype(np.float32).view(np.uint32) >> 16).astype("<u2")  # values are exact in bf16
    header = json.dumps({"t": {"dtype": "BF16", "shape": list(values.shape), "data_offsets": [0, bits.nbytes]}})
    header_bytes = header.encode() + b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header_bytes)) + header_bytes + bits.tobytes()


def _read_safetensors(raw: bytes) -> tuple[str, list[int], np.ndarray]:
    """The independent reader: dtype, shape and float32 values of tensor "t" (BF16 widened by bits)."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    entry = header["t"]
    start, end = entry["data_offsets"]
    data = raw[8 + n + start:8 + n + end]
    assert entry["dtype"] == "BF16"
    values = (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])
    return entry["dtype"], entry["shape"], values


def test_a_state_written_as_the_reference_documents_it_is_accepted():
    rng = np.random.default_rng(5)
    pixels = [rng.integers(0, 256, (12, 20, 3), dtype=np.uint8) for _ in range(2)]
    audio = torch.randn(1, 8, 5, 16, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16).float().numpy()
    reference_payload = {
        "schema_version": 1,
        "segment_index": 7,
        "video_conditioning_frame_idx": 0,
        "video_conditioning_strength": 1.0,
        "audio_conditioning_num_frames": 3,
        "audio_conditioning_strength": 0.5,
        "video_position_offset_sec": 0.25,
        "metadata": {"stream": "s-1"},
        "audio_sample_rate": 24000,
        "video": {"frames_b64": [base64.b64encode(_png(p)).decode("ascii") for p in pixels]},
        "audio": {"safetensors_b64": base64.b64encode(_safetensors_bf16(audio)).decode("ascii")},
    }
    wire = json.dumps({"kind": "ltx2.v1", "payload": reference_payload})
    state = LTX2ContinuationState.from_continuation_state(ContinuationState.from_json(wire))
    assert state.segment_index == 7 and state.audio_sample_rate == 24000 and state.metadata == {"stream": "s-1"}
    assert (state.audio_conditioning_num_frames, state.audio_conditioning_strength) == (3, 0.5)
    assert (state.video_conditioning_frame_idx, state.video_conditioning_strength) == (0, 1.0)
    assert state.video_position_offset_sec == 0.25
    assert all(np.array_equal(a, b) for a, b in zip(pixels, state.video_frames)) and len(state.video_frames) == 2
    assert state.audio_latents.dtype == torch.bfloat16
    assert np.array_equal(state.audio_latents.float().numpy(), audio)
    # the reference's blob forms: frames packed [u32 count][u32 len][png]..., audio as the raw safetensors
    store = InMemoryBlobStore()
    packed = struct.pack(">I", 2) + b"".join(struct.pack(">I", len(_png(p))) + _png(p) for p in pixels)
    by_blob = {**reference_payload, "video": {"blob_id": store.put(packed), "frame_count": 2},
               "audio": {"blob_id": store.put(_safetensors_bf16(audio))}}
    again = LTX2ContinuationState.from_continuation_state(ContinuationState("ltx2.v1", by_blob), blob_store=store)
    assert all(np.array_equal(a, b) for a, b in zip(pixels, again.video_frames))
    assert np.array_equal(again.audio_latents.float().numpy(), audio)


def test_ours_is_readable_by_an_independent_decoder():
    image = pytest.importorskip("PIL.Image")
    state = _state()
    payload = json.loads(state.to_continuation_state().to_json())["payload"]
    # the reference's reader: payload.get(name, default) for every scalar, video.frames_b64, audio.safetensors_b64
    assert payload["schema_version"] == 1 and payload["segment_index"] == 3
    assert (payload["video_conditioning_frame_idx"], payload["video_conditioning_strength"]) == (2, 0.75)
    assert (payload["audio_conditioning_num_frames"], payload["audio_conditioning_strength"]) == (4, 0.25)
    assert payload["video_position_offset_sec"] == 0.5 and payload["audio_sample_rate"] == 24000
    assert payload["metadata"] == {"prompt_id": "p-7", "knobs": [1, 2]}
    for b64, expected in zip(payload["video"]["frames_b64"], state.video_frames, strict=True):
        with image.open(io.BytesIO(base64.b64decode(b64))) as img:
            assert img.format == "PNG"
            assert np.array_equal(np.asarray(img.convert("RGB")), expected)
    dtype, shape, values = _read_safetensors(base64.b64decode(payload["audio"]["safetensors_b64"]))
    assert dtype == "BF16" and shape == list(state.audio_latents.shape)
    assert np.array_equal(values, state.audio_latents.float().numpy())
    # and the blob forms: a packed-frames blob and the raw safetensors bytes, ids in {"blob_id"}
    store = InMemoryBlobStore()
    stored = state.to_continuation_state(blob_store=store, inline_threshold_bytes=0).payload
    raw = store.get(stored["video"]["blob_id"])
    assert struct.unpack(">I", raw[:4])[0] == stored["video"]["frame_count"] == 2
    (length,) = struct.unpack(">I", raw[4:8])
    with image.open(io.BytesIO(raw[8:8 + length])) as img:
        assert np.array_equal(np.asarray(img.convert("RGB")), state.video_frames[0])
    audio_raw = store.get(stored["audio"]["blob_id"])
    assert stored["audio"]["sha256"] == hashlib.sha256(audio_raw).hexdigest()
    assert np.array_equal(_read_safetensors(audio_raw)[2], state.audio_latents.float().numpy())


def test_gray_png_frames_from_another_writer_read_as_rgb():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    payload = {**_payload(), "video": {"frames_b64": [base64.b64encode(_png(gray, color_type=0)).decode()]}}
    state = LTX2ContinuationState.from_continuation_state(ContinuationState("ltx2.v1", payload))
    assert np.array_equal(state.video_frames[0], np.stack([gray] * 3, axis=-1))
