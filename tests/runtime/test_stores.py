"""Blob and session stores (in-memory and a real redis-server), state round-trips through JSON, Redis and blob ids.

The Redis tests start their own ``redis-server`` on 127.0.0.1 and a free port; they skip (saying how to
install it) only when the binary or the ``redis`` package is missing. CI: ``apt-get install -y redis-server``
and ``pip install 'redis>=5'``.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest

from fastvideo.api import ContinuationState, RequestError
from fastvideo.runtime.state_blobs import externalize_state, internalize_state, state_blob_ids
from fastvideo.engine.state_codec import decode_latent_state
from fastvideo.runtime.stores import (
    BlobNotFound,
    InMemoryBlobStore,
    InMemorySessionStore,
    SessionRecord,
    StoreConfig,
    open_stores,
)

SAMPLING = {"width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2, "guidance_scale": 1.0}


@pytest.fixture(params=["memory", "redis"])
def stores(request):
    if request.param == "memory":
        s = open_stores(StoreConfig(url="memory://", blob_threshold_bytes=0))
    else:
        url = request.getfixturevalue("redis_url")
        s = open_stores(StoreConfig(url=url, blob_threshold_bytes=0, key_prefix=f"t{time.monotonic_ns()}:"))
    yield s
    s.close()


def test_blob_store_put_get_delete_and_expiry(stores):
    blobs = stores.blobs
    blob_id = blobs.put(b"\x00\x01payload")
    assert blob_id.startswith("blob_") and blobs.exists(blob_id)
    assert blobs.get(blob_id) == b"\x00\x01payload"
    assert blobs.delete(blob_id) and not blobs.exists(blob_id)
    with pytest.raises(BlobNotFound, match="expired, was deleted"):
        blobs.get(blob_id)
    short = blobs.put(b"x", ttl_s=0.05)
    time.sleep(0.15)
    assert not blobs.exists(short)
    with pytest.raises(ValueError, match="invalid blob id"):
        blobs.get("has space")
    with pytest.raises(TypeError):
        blobs.put("not bytes")  # type: ignore[arg-type]


def test_session_store_round_trip(stores):
    sessions = stores.sessions
    assert sessions.get("nope") is None
    sessions.put(SessionRecord("s1", state={"kind": "wan.v1", "payload": {"schema_version": 1}}, worker_id="w0",
                               segment_index=3, metadata={"prompt": "lake"}))
    sessions.put(SessionRecord("s2"), ttl_s=0.05)
    got = sessions.get("s1")
    assert got.worker_id == "w0" and got.segment_index == 3 and got.state["kind"] == "wan.v1"
    assert got.metadata == {"prompt": "lake"} and got.updated_at > 0
    time.sleep(0.15)
    assert sessions.ids() == ["s1"]
    assert sessions.delete("s1") and sessions.get("s1") is None


def _segment(generator, seed, state=None):
    return generator.generate({"prompt": "a slow pan over a mountain lake", "sampling": {**SAMPLING, "seed": seed},
                               "output": {"return_state": True}, "state": state})


def test_externalize_and_internalize_through_json(tiny_generator):
    state = _segment(tiny_generator, 1).state
    inline_size = len(state.payload["tail_latents"]["data"]) * 3 // 4
    store = InMemoryBlobStore()
    small = externalize_state(state, store, threshold_bytes=inline_size + 1)
    assert small.payload == state.payload and len(store) == 0  # below the threshold: inline
    big = externalize_state(state, store, threshold_bytes=64)
    entry = big.payload["tail_latents"]
    assert entry["encoding"] == "blob" and entry["format"] == "safetensors" and entry["nbytes"] > 64
    assert state_blob_ids(big) == [entry["blob_id"]] and "data" not in entry
    assert state.payload["tail_latents"]["encoding"] == "safetensors+base64"  # argument untouched
    wire = ContinuationState.from_json(json.dumps(big.to_dict()))
    back = internalize_state(wire, store)
    assert back.payload == state.payload
    assert decode_latent_state(back)[0].shape == decode_latent_state(state)[0].shape
    with pytest.raises(ValueError, match="no blob store configured"):
        internalize_state(wire, None)
    store.put(b"tampered", blob_id=entry["blob_id"])
    with pytest.raises(ValueError, match="holds 8 bytes"):
        internalize_state(wire, store)
    store.delete(entry["blob_id"])
    with pytest.raises(ValueError, match="expired"):
        internalize_state(wire, store)


def test_generator_with_blob_store_continues_after_restart(tiny_generator, redis_url):
    """Segment 1 on one store connection; the 'restarted server' (new connections) continues it."""
    reference_first = _segment(tiny_generator, 1)
    reference_second = _segment(tiny_generator, 2, state=reference_first.state)
    config = StoreConfig(url=redis_url, blob_threshold_bytes=256, key_prefix="restart:")
    before = open_stores(config)
    try:
        tiny_generator.attach_blob_store(before.blobs, threshold_bytes=config.blob_threshold_bytes)
        first = _segment(tiny_generator, 1)
        entry = first.state.payload["tail_latents"]
        assert entry["encoding"] == "blob" and before.blobs.exists(entry["blob_id"])
        before.sessions.put(SessionRecord("lake", state=first.state.to_dict(), segment_index=0))
        assert len(first.state.to_json()) < 1024  # the wire state is small: the tensor is by id
    finally:
        tiny_generator.blob_store = None
        before.close()
    after = open_stores(config)  # "restart": nothing in process memory survives, Redis does
    try:
        tiny_generator.attach_blob_store(after.blobs, threshold_bytes=config.blob_threshold_bytes)
        record = after.sessions.get("lake")
        second = _segment(tiny_generator, 2, state=record.state)
        assert second.metadata["branch"] == "continuation" and second.metadata["segment_index"] == 1
        assert np.array_equal(second.frames, reference_second.frames)
        with pytest.raises(RequestError, match="state: blob 'blob_missing' is not in the blob store"):
            broken = json.loads(json.dumps(record.state))
            broken["payload"]["tail_latents"]["blob_id"] = "blob_missing"
            _segment(tiny_generator, 2, state=broken)
    finally:
        tiny_generator.blob_store = None
        after.close()
    # without a store the blob reference is a clear request error too
    with pytest.raises(RequestError, match="no blob store configured"):
        _segment(tiny_generator, 2, state=record.state)


def test_session_record_state_survives_json_and_memory_store(tiny_generator):
    state = _segment(tiny_generator, 3).state
    sessions = InMemorySessionStore()
    sessions.put(SessionRecord("s", state=state.to_dict(), segment_index=0))
    restored = ContinuationState.from_dict(sessions.get("s").state)
    assert restored.payload == state.payload
    assert replace(restored).kind == "wan.v1"


def test_open_stores_rejects_unknown_urls():
    with pytest.raises(ValueError, match="unknown store URL"):
        open_stores(StoreConfig(url="s3://bucket"))
