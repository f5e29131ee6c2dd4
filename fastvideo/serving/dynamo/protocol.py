"""Dynamo's video wire shapes <-> FastVideo's public typed request (no Dynamo import needed).

Contract:
- :func:`to_generation_request` maps one ``NvCreateVideoRequest`` dict (what Dynamo 1.6.1's
  frontend forwards for ``POST /v1/videos``) to a :class:`fastvideo.api.GenerationRequest` through
  :func:`fastvideo.api.translate_request` (the one translation layer every edge uses: its field
  table, precedence rule, size parser and coercions): ``prompt``, ``size``, ``seconds``, the
  ``nvext`` fields, and a client's extra fields, which Dynamo's frontend nests under
  ``extra_args.media_passthrough`` (an unknown one fails the request naming it).
  ``input_reference`` -> ``inputs.image_path``. This module adds what only Dynamo has:
  ``response_format``, ``output_format``, ``stream``, and top-level keys outside
  NvCreateVideoRequest (only a newer Dynamo or a direct caller sends them), which are logged and
  ignored; ``_``-prefixed markers such as Dynamo's ``_HEALTH_CHECK`` are ignored silently.
- Every problem raises :class:`fastvideo.api.RequestError` naming the field and the fix; the
  engine's own validation (size multiples, frame limits, ...) raises the same type later, and the
  handler names the client's field with ``ParsedVideoRequest.translated.relabel``.
- :func:`completed_response` / :func:`progress_response` / :func:`failed_response` build
  ``NvVideosResponse`` dicts: ``{id, object: "video", model, status, progress, created, data,
  error, inference_time_s}`` with ``data[i] = {output_format, url | b64_json}``.
- Imports only the standard library and public ``fastvideo.api`` symbols.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping

from fastvideo.api import ContinuationState, GenerationRequest, OutputConfig, RequestError, TranslatedRequest
from fastvideo.api import translate_request

#: Top-level request keys Dynamo's NvCreateVideoRequest carries.
REQUEST_KEYS = frozenset({"prompt", "model", "input_reference", "seconds", "size", "user", "response_format",
                          "output_format", "stream", "nvext", "extra_args"})
RESPONSE_FORMATS = ("url", "b64_json")
OUTPUT_FORMATS = ("mp4",)
_SAFE_ID_RE = re.compile(r"[^A-Za-z0-9._-]+")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestDefaults:
    """Worker-level defaults for fields a Dynamo request may leave out."""

    #: Frame rate used to turn ``seconds`` into frames when ``nvext.fps`` is absent.
    fps: int = 16
    #: ``response_format`` when the request has none (Dynamo's handlers default to "url").
    response_format: str = "url"


@dataclass(frozen=True)
class ParsedVideoRequest:
    """A Dynamo video request translated to FastVideo, plus how to answer it."""

    request: GenerationRequest
    model: str
    response_format: str
    output_format: str
    stream: bool
    #: Put ``nvext.continuation_state`` on the final chunk.
    return_state: bool
    #: The translation, for naming the client's field in an error the engine raises later.
    translated: TranslatedRequest


def safe_id(value: str) -> str:
    """A request id usable as a file name (Dynamo context ids are UUIDs; anything else is cleaned)."""
    cleaned = _SAFE_ID_RE.sub("-", value).strip("-.")
    return cleaned[:96] or "request"


def to_generation_request(request: Mapping[str, Any], defaults: RequestDefaults = RequestDefaults(), *,
                          request_id: str | None = None) -> ParsedVideoRequest:
    """Translate one ``NvCreateVideoRequest`` dict (see module contract); raises RequestError."""
    if not isinstance(request, Mapping):
        raise RequestError("request", f"must be a JSON object, got {type(request).__name__}")
    ignored = sorted(k for k in set(request) - REQUEST_KEYS if not str(k).startswith("_"))
    if ignored:
        # Dynamo's frontend nests a client's unknown fields under extra_args.media_passthrough, so a
        # top-level key we do not know comes from a newer Dynamo or a direct caller: noted, not fatal.
        logger.info("ignoring top-level request field(s) %s (not part of NvCreateVideoRequest)", ignored)
    model = request.get("model")
    model = model if isinstance(model, str) else ""
    response_format = request.get("response_format") or defaults.response_format
    if response_format not in RESPONSE_FORMATS:
        raise RequestError("response_format", f"{response_format!r} is not supported; use one of "
                                              f"{list(RESPONSE_FORMATS)}")
    output_format = request.get("output_format") or "mp4"
    if output_format not in OUTPUT_FORMATS:
        raise RequestError("output_format", f"{output_format!r} is not supported; FastVideo writes "
                                            f"{list(OUTPUT_FORMATS)} (H.264, yuv420p)")
    stream = request.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError("stream", f"must be true or false, got {stream!r}")
    reference = request.get("input_reference")
    if reference is not None and not isinstance(reference, str):
        raise RequestError("input_reference", f"must be a string (a path or URL the worker can read), got "
                                              f"{type(reference).__name__}")
    translated = translate_request("dynamo", request, fps=defaults.fps, request_id=request_id,
                                   image_path=reference or None,
                                   output=OutputConfig(save_video=False, return_frames=False))
    return ParsedVideoRequest(request=translated.request, model=model, response_format=response_format,
                              output_format=output_format, stream=bool(stream),
                              return_state=translated.request.output.return_state, translated=translated)


def _base(response_id: str, model: str, status: str, progress: int) -> dict[str, Any]:
    return {"id": response_id, "object": "video", "model": model, "status": status, "progress": progress,
            "created": int(time.time()), "data": []}


def completed_response(response_id: str, model: str, *, output_format: str, url: str | None = None,
                       b64_json: str | None = None, fps: int | None = None, inference_time_s: float | None = None,
                       continuation_state: ContinuationState | None = None) -> dict[str, Any]:
    """The final ``NvVideosResponse`` chunk of a successful generation."""
    if (url is None) == (b64_json is None):
        raise ValueError("exactly one of url / b64_json")
    item: dict[str, Any] = {"output_format": output_format}
    item["url" if url is not None else "b64_json"] = url if url is not None else b64_json
    if fps is not None:
        item["fps"] = fps
    chunk = _base(response_id, model, "completed", 100)
    chunk["data"] = [item]
    chunk["inference_time_s"] = inference_time_s
    if continuation_state is not None:
        chunk["nvext"] = {"continuation_state": continuation_state.to_dict()}
    return chunk


def progress_response(response_id: str, model: str, *, step: int, total_steps: int) -> dict[str, Any]:
    """An ``in_progress`` chunk (only sent when the request has ``stream: true``); progress < 100."""
    fraction = step / total_steps if total_steps > 0 else 0.0
    return _base(response_id, model, "in_progress", max(0, min(99, int(fraction * 99))))


def failed_response(response_id: str, model: str, error: str) -> dict[str, Any]:
    """A ``failed`` chunk carrying a readable ``error`` (never an empty reply or a hang)."""
    chunk = _base(response_id, model, "failed", 0)
    chunk["error"] = error
    return chunk
