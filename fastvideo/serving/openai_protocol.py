"""Pydantic schemas of the OpenAI-compatible HTTP edge (requests in; helpers for replies out).

Contract: these models exist only at the HTTP edge. They accept what the official SDKs and curl
send: JSON bodies (SDK 2.x, curl) and multipart/urlencoded forms (SDK 3.x, where every
``extra_body`` key arrives as a top-level *string* field, and nested mappings as ``key[sub]``),
so numeric fields are validated in lax mode (``"5"`` is 5, ``"abc"`` is a 400 naming the field).
Unknown keys are accepted and reported once in the log (never silently applied). Dynamo's
``nvext`` block and ``extra_args`` are understood. :func:`form_to_mapping` turns form fields into
the same nested mapping a JSON body gives.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class SamplingExtensions(BaseModel):
    """Sampling fields beyond OpenAI's: in ``nvext`` or at the top level (curl, SDK ``extra_body``)."""

    model_config = ConfigDict(extra="allow")

    fps: int | None = None
    num_frames: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    negative_prompt: str | None = None


class NvExt(SamplingExtensions):
    """Dynamo's extension block (``nvext``)."""

    continuation_state: dict[str, Any] | None = None


class CreateVideoBody(SamplingExtensions):
    """``POST /v1/videos`` and ``POST /v1/videos/generations``."""

    prompt: str = Field(min_length=1)
    model: str | None = None
    seconds: float | None = None
    size: str | None = None
    input_reference: str | dict[str, Any] | None = None
    width: int | None = None
    height: int | None = None
    response_format: Literal["url", "b64_json"] | None = None
    user: str | None = None
    stream: bool | None = None
    nvext: NvExt | None = None
    extra_args: dict[str, Any] | None = None


class ImageGenerationBody(BaseModel):
    """``POST /v1/images/generations`` (one frame of the video model)."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(default=1, ge=1, le=4)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png"] | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    user: str | None = None
    nvext: NvExt | None = None


class ListQuery(BaseModel):
    """``GET /v1/videos`` query."""

    after: str | None = None
    limit: int = Field(default=20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"


def form_to_mapping(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """Form fields to a nested mapping: ``nvext[fps]=8`` -> ``{"nvext": {"fps": "8"}}``; repeats keep the last."""
    out: dict[str, Any] = {}
    for key, value in items:
        parts = [p for p in key.replace("]", "").split("[")] if "[" in key else [key]
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out
