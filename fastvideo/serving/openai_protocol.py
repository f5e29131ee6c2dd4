"""Pydantic schemas of the OpenAI-compatible HTTP edge (requests in; helpers for replies out).

Contract: these models exist only at the HTTP edge. They accept what the official SDKs and curl
send: JSON bodies (SDK 2.x, curl) and multipart/urlencoded forms (SDK 3.x, where every
``extra_body`` key arrives as a top-level *string* field, and nested mappings as ``key[sub]``),
so fields are validated in lax mode. Only the fields this edge alone reads are declared here; the
request's own fields (prompt, size, sampling, ``nvext``) are translated by
:func:`fastvideo.api.translate_request` from the same mapping. Unknown keys are accepted and
reported once in the log (never silently applied). :func:`form_to_mapping` turns form fields into
the same nested mapping a JSON body gives.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class CreateVideoBody(BaseModel):
    """``POST /v1/videos`` and ``POST /v1/videos/generations``: the fields only this edge reads.

    The request's own fields (prompt, size, seconds, width/height, the sampling extensions, ``nvext``,
    ``extra_args``) are read from the same body by :func:`fastvideo.api.translate_request`."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input_reference: str | dict[str, Any] | None = None
    response_format: Literal["url", "b64_json"] | None = None
    user: str | None = None
    stream: bool | None = None


class ImageGenerationBody(BaseModel):
    """``POST /v1/images/generations`` (one frame of the video model): the fields only this edge reads."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    n: int = Field(default=1, ge=1, le=4)
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png"] | None = None
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    user: str | None = None


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
