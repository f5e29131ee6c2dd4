"""Moving the tensors of a ContinuationState payload between inline bytes and a BlobStore.

Contract:
- An inline tensor entry is ``{"encoding": "safetensors+base64", "data": <base64>}`` (what
  :mod:`fastvideo.engine.state_codec` writes). :func:`externalize_state` replaces every such entry
  in the payload (at any depth) whose raw bytes exceed ``threshold_bytes`` with a blob reference
  ``{"encoding": "blob", "blob_id", "format": "safetensors", "nbytes", "sha256"}`` after writing the
  bytes to the store; smaller entries stay inline. :func:`internalize_state` is the inverse: it
  fetches every blob reference (checking size and digest) and returns an all-inline state that
  the codec decodes. Both return a new state and never mutate their argument.
- ``ltx2.v1`` states keep their own layout (:mod:`fastvideo.api.ltx2_state`): their trailing frames
  (all PNGs together) and audio latents (safetensors bytes) above ``threshold_bytes`` become the
  reference's ``{"blob_id", ...}`` entries and come back inline the same way.
- A missing or corrupted blob raises ``ValueError`` naming the blob and why (expired, wrong
  digest), so the runtime reports a clear error on ``state``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from fastvideo.api import ContinuationState
from fastvideo.api.ltx2_state import LTX2_CONTINUATION_KIND, ContinuationStateError, LTX2StatePayload
from fastvideo.runtime.stores import BlobNotFound, BlobStore

INLINE = "safetensors+base64"
BLOB = "blob"


def _is_entry(value: Any, encoding: str) -> bool:
    return isinstance(value, dict) and value.get("encoding") == encoding


def _walk(value: Any, fn) -> Any:
    if isinstance(value, dict):
        replaced = fn(value)
        if replaced is not value:
            return replaced
        return {k: _walk(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, fn) for v in value]
    return value


def state_blob_ids(state: ContinuationState) -> list[str]:
    """Blob ids referenced by ``state`` (in payload order)."""
    if state.kind == LTX2_CONTINUATION_KIND:
        entries = [state.payload.get(key) for key in ("video", "audio")]
        return [e["blob_id"] for e in entries if isinstance(e, dict) and isinstance(e.get("blob_id"), str)]
    found: list[str] = []

    def visit(entry: dict) -> dict:
        if _is_entry(entry, BLOB):
            found.append(str(entry.get("blob_id")))
        return entry

    _walk(state.payload, visit)
    return found


def has_blob_refs(state: ContinuationState) -> bool:
    return bool(state_blob_ids(state))


def externalize_state(state: ContinuationState, store: BlobStore, threshold_bytes: int,
                      ttl_s: float | None = None) -> ContinuationState:
    """Move inline tensors larger than ``threshold_bytes`` to ``store`` (see module contract)."""
    if state.kind == LTX2_CONTINUATION_KIND:
        try:
            parsed = LTX2StatePayload.from_continuation_state(state)
        except ContinuationStateError:
            return state  # left for the decoder to reject with its own message
        return parsed.to_continuation_state(blob_store=store, inline_threshold_bytes=threshold_bytes, ttl_s=ttl_s)

    def move(entry: dict) -> dict:
        if not _is_entry(entry, INLINE) or not isinstance(entry.get("data"), str):
            return entry
        try:
            raw = base64.b64decode(entry["data"], validate=True)
        except (binascii.Error, ValueError):
            return entry  # left for the codec to reject with its own message
        if len(raw) <= threshold_bytes:
            return entry
        blob_id = store.put(raw, ttl_s=ttl_s)
        return {"encoding": BLOB, "blob_id": blob_id, "format": "safetensors", "nbytes": len(raw),
                "sha256": hashlib.sha256(raw).hexdigest()}

    return ContinuationState(kind=state.kind, payload=_walk(state.payload, move))


def internalize_state(state: ContinuationState, store: BlobStore | None) -> ContinuationState:
    """Fetch every blob reference in ``state`` back inline (ValueError when one cannot be read)."""
    if state.kind == LTX2_CONTINUATION_KIND:
        ids = state_blob_ids(state)
        if ids and store is None:
            raise ValueError(f"the state references blob {ids[0]!r} but this server has no blob store configured "
                             "(start it with the same --state-store as the server that produced the state)")
        return LTX2StatePayload.from_continuation_state(state, blob_store=store).to_continuation_state()

    def fetch(entry: dict) -> dict:
        if not _is_entry(entry, BLOB):
            return entry
        blob_id = entry.get("blob_id")
        if not isinstance(blob_id, str) or not blob_id:
            raise ValueError(f"blob reference without a valid blob_id: {entry!r}")
        if entry.get("format", "safetensors") != "safetensors":
            raise ValueError(f"blob {blob_id!r} has unsupported format {entry.get('format')!r} (needs 'safetensors')")
        if store is None:
            raise ValueError(f"the state references blob {blob_id!r} but this server has no blob store configured "
                             "(start it with the same --state-store as the server that produced the state)")
        try:
            raw = store.get(blob_id)
        except BlobNotFound as exc:
            raise ValueError(str(exc)) from exc
        except ValueError as exc:
            raise ValueError(f"blob reference {blob_id!r}: {exc}") from exc
        nbytes = entry.get("nbytes")
        if isinstance(nbytes, int) and nbytes != len(raw):
            raise ValueError(f"blob {blob_id!r} holds {len(raw)} bytes, the state expects {nbytes}")
        digest = entry.get("sha256")
        if isinstance(digest, str) and hashlib.sha256(raw).hexdigest() != digest:
            raise ValueError(f"blob {blob_id!r} does not match the state's sha256 (overwritten or corrupted)")
        return {"encoding": INLINE, "data": base64.b64encode(raw).decode("ascii")}

    return ContinuationState(kind=state.kind, payload=_walk(state.payload, fetch))
