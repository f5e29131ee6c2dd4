"""Encoding tensors into :class:`fastvideo.api.ContinuationState` payloads and back.

Contract: ``wan.v1`` payloads are JSON-safe dicts ``{schema_version: 1, segment_index, seed,
latent_shape, tail_latents: {encoding: "safetensors+base64", data}}`` where ``tail_latents`` holds
the trailing latent frames of the segment (float32, ``(B, C, T_tail, h, w)``) that a continuation
conditions on. Decoding checks kind, version and shapes and raises ``ValueError`` saying what is
wrong. This module keeps tensors inline; the runtime may move large ones to a blob store by id and
back before decoding. ``DEFAULT_TAIL_FRAMES`` (latent frames a continuation conditions on) is shared
with the builder's continuation shapes (:mod:`fastvideo.build.specs`). Pure: torch, safetensors and
:mod:`fastvideo.api` only.
"""

from __future__ import annotations

import base64
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fastvideo.api import ContinuationState

WAN_STATE_KIND = "wan.v1"
SCHEMA_VERSION = 1
DEFAULT_TAIL_FRAMES = 1


def tensor_to_b64(tensor: torch.Tensor) -> dict[str, str]:
    return {"encoding": "safetensors+base64",
            "data": base64.b64encode(st_save({"t": tensor.detach().to("cpu").contiguous()})).decode("ascii")}


def tensor_from_b64(blob: Any) -> torch.Tensor:
    if not isinstance(blob, dict) or blob.get("encoding") != "safetensors+base64" or "data" not in blob:
        raise ValueError("tensor entry must be {'encoding': 'safetensors+base64', 'data': ...}")
    try:
        return st_load(base64.b64decode(blob["data"], validate=True))["t"]
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad state
        raise ValueError(f"tensor entry cannot be decoded: {exc}") from exc


def encode_latent_state(latents: torch.Tensor, *, segment_index: int, seed: int | None, width: int, height: int,
                        model: str, tail_frames: int = DEFAULT_TAIL_FRAMES) -> ContinuationState:
    """State holding the last ``tail_frames`` latent frames of segment ``segment_index``."""
    tail = latents[:, :, -tail_frames:].float()
    return ContinuationState(kind=WAN_STATE_KIND, payload={
        "schema_version": SCHEMA_VERSION, "segment_index": int(segment_index), "seed": seed,
        "width": int(width), "height": int(height), "model": model,
        "latent_shape": list(latents.shape), "tail_latents": tensor_to_b64(tail)})


def decode_latent_state(state: ContinuationState) -> tuple[torch.Tensor, int]:
    """``(tail_latents, segment_index)`` from a validated ``wan.v1`` state (ValueError if malformed)."""
    state.validate()
    if state.kind != WAN_STATE_KIND:
        raise ValueError(f"continuation state kind {state.kind!r} cannot continue a Wan model "
                         f"(needs {WAN_STATE_KIND!r})")
    payload = state.payload
    tail = tensor_from_b64(payload.get("tail_latents"))
    if tail.ndim != 5:
        raise ValueError(f"tail_latents must be 5-D (B, C, T, h, w), got shape {tuple(tail.shape)}")
    index = payload.get("segment_index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"segment_index must be a non-negative integer, got {index!r}")
    return tail, index
