"""Pydantic schemas of the OpenAI-compatible HTTP edge (requests in; helpers for replies out).

Contract: these models exist only at the HTTP edge. They accept what the official SDKs and curl
send: JSON bodies (SDK 2.x, curl) and multipart/urlencoded forms (SDK 3.x, where every
``extra_body`` key arrives as a top-level *string* field, and nested mappings as ``key[sub]``),
so fields are validated in lax mode. Only the fields this edge alone reads are declared here; the
request's own fields (prompt, size, sampling, ``nvext``) are translated by
:func:`fastvideo.api.translate_request` from the same mapping. Unknown keys are accepted and
reported once in the log (never silently applied). :func:`form_to_mapping` turns form fields into
the same nested mapping a JSON body gives.

The OpenAPI schema (``/openapi.json``) describes what the server does: :func:`request_body` gives each POST
route its body (JSON, multipart and urlencoded; every request field of the translation table
:data:`fastvideo.api.wire.FIELDS` plus this edge's own, ``prompt`` required), and :func:`describe_errors`
replaces FastAPI's 422 (never answered) with the OpenAI error envelope on the statuses the routes answer.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fastvideo.api import MAX_PROMPT_CHARS
from fastvideo.api.wire import FIELDS


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


# ------------------------------------------------------------------------------------------------- OpenAPI
_KIND_SCHEMA: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"}, "float": {"type": "number"}, "str": {"type": "string"}, "bool": {"type": "boolean"},
    "state": {"type": "object", "description": "a ContinuationState {kind, payload} from an earlier response"},
    "int_list": {"type": "array", "items": {"type": "integer"},
                 "description": "a list of integers (a form sends them comma-separated: \"1000,757,522\")"},
}
#: Request fields an image (one frame) cannot set.
_NOT_FOR_IMAGES = frozenset({"num_frames", "fps", "continuation_state", "return_state", "seconds"})

#: The OpenAI error envelope every error status answers with.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"], "title": "ErrorResponse",
    "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "the request field at fault"},
        "code": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}},
}
_ERROR_STATUSES = {"400": "Bad request: a field is wrong (param names it), or the body does not parse",
                   "401": "Missing or wrong API key", "404": "Unknown id, model or route",
                   "413": "Body larger than server.max_body_bytes",
                   "415": "Body not JSON, multipart/form-data or application/x-www-form-urlencoded",
                   "429": "Queue full (retry-after)", "503": "Not ready or shutting down (retry-after)"}


def request_schema(kind: Literal["video", "image"]) -> dict[str, Any]:
    """The JSON schema of a ``kind`` request body (see module contract)."""
    props: dict[str, Any] = {}
    for spec in FIELDS:
        if kind == "image" and spec.short in _NOT_FOR_IMAGES:
            continue
        props[spec.short] = copy.deepcopy(_KIND_SCHEMA[spec.kind])
    for name in ("prompt", "negative_prompt"):
        props[name]["maxLength"] = MAX_PROMPT_CHARS
    props["prompt"]["description"] = ("what to generate (at most server.max_prompt_chars characters, "
                                      f"{MAX_PROMPT_CHARS} by default)")
    props["size"] = {"type": "string", "description": "WIDTHxHEIGHT, e.g. 832x480"}
    if kind == "video":
        props["seconds"] = {"anyOf": [{"type": "number"}, {"type": "string"}],
                            "description": "duration; frames = round(seconds * fps) when num_frames is not given"}
    props["nvext"] = {"type": "object", "description": "Dynamo's nvext fields (fps, num_frames, negative_prompt, "
                                                       "num_inference_steps, guidance_scale, seed, ...)"}
    props["extra_args"] = {"type": "object", "description": "{media_passthrough: {...}} as Dynamo's frontend nests "
                                                            "extra fields"}
    edge = CreateVideoBody if kind == "video" else ImageGenerationBody
    props.update(edge.model_json_schema()["properties"])
    return {"type": "object", "properties": props, "required": ["prompt"], "additionalProperties": True}


def request_body(kind: Literal["video", "image"]) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a ``kind`` POST route: JSON, multipart and urlencoded."""
    schema = request_schema(kind)
    form = copy.deepcopy(schema)
    for name in ("nvext", "extra_args"):  # a form sends nested fields as JSON text (or as name[key] fields)
        form["properties"][name] = {"type": "string", "description": "JSON object text"}
    if kind == "video":
        form["properties"]["input_reference"] = {"type": "string", "format": "binary",
                                                 "description": "a PNG, JPEG, WebP or GIF image"}
    return {"required": True, "content": {"application/json": {"schema": schema},
                                          "multipart/form-data": {"schema": form},
                                          "application/x-www-form-urlencoded": {"schema": form}}}


def describe_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace FastAPI's 422 with the error envelope on every ``/v1/`` operation (in place; returns ``schema``)."""
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            if not path.startswith("/v1/"):
                continue
            statuses = ["400", "401", "404"] + (["413", "415", "429", "503"] if method == "post" else [])
            for status in statuses:
                responses.setdefault(status, {"description": _ERROR_STATUSES[status],
                                              "content": {"application/json": {"schema": ERROR_SCHEMA}}})
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    if "components" in schema and not components:
        schema["components"].pop("schemas", None)
        if not schema["components"]:
            del schema["components"]
    return schema
