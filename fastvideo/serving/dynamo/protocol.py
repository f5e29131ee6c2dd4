"""Dynamo's video wire shapes <-> FastVideo's public typed request (no Dynamo import needed).

Contract:
- :func:`to_generation_request` maps one ``NvCreateVideoRequest`` dict (what Dynamo 1.6.1's
  frontend forwards for ``POST /v1/videos``) to a :class:`fastvideo.api.GenerationRequest`:
  ``prompt``; ``size`` "WxH" -> ``sampling.width/height``; ``nvext.num_frames`` or else
  ``seconds * fps`` -> ``sampling.num_frames``; ``nvext.{fps, num_inference_steps, guidance_scale,
  seed}`` -> ``sampling``; ``nvext.negative_prompt`` -> ``negative_prompt``; ``input_reference`` ->
  ``inputs.image_path``; ``nvext.continuation_state`` -> ``state``. Unknown top-level fields arrive
  nested under ``extra_args.media_passthrough`` (an OpenAI client's ``extra_body``): the sampling
  knobs listed in :data:`PASSTHROUGH_KEYS` are applied (``nvext`` wins when both are set), anything
  else fails the request with a message naming the key and listing what is accepted. Top-level keys
  outside NvCreateVideoRequest (only a newer Dynamo or a direct caller sends them) are logged and
  ignored; ``_``-prefixed markers such as Dynamo's ``_HEALTH_CHECK`` are ignored silently.
- Every problem raises :class:`fastvideo.api.RequestError` naming the field and the fix; the
  engine's own validation (size multiples, frame limits, ...) raises the same type later.
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

from fastvideo.api import (
    ContinuationState,
    GenerationRequest,
    InputConfig,
    OutputConfig,
    RequestError,
    SamplingConfig,
)

#: Top-level request keys Dynamo's NvCreateVideoRequest carries.
REQUEST_KEYS = frozenset({"prompt", "model", "input_reference", "seconds", "size", "user", "response_format",
                          "output_format", "stream", "nvext", "extra_args"})
#: nvext keys we read (``annotations`` is Dynamo's SSE annotation list; it is accepted and ignored).
NVEXT_KEYS = frozenset({"fps", "num_frames", "negative_prompt", "num_inference_steps", "guidance_scale", "seed",
                        "continuation_state", "annotations"})
#: nvext keys Dynamo defines for other backends (vLLM-Omni MoE experts); accepted only when unset.
NVEXT_FOREIGN_KEYS = frozenset({"boundary_ratio", "guidance_scale_2"})
#: ``extra_args.media_passthrough`` knobs applied to the request (an OpenAI client's ``extra_body``).
PASSTHROUGH_KEYS = frozenset({"num_frames", "fps", "num_inference_steps", "guidance_scale", "seed",
                              "negative_prompt", "width", "height", "shift", "sampler", "true_cfg_scale",
                              "continuation_strength", "continuation_state", "return_state"})
RESPONSE_FORMATS = ("url", "b64_json")
OUTPUT_FORMATS = ("mp4",)
_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX\u00d7]\s*(\d+)\s*$")
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


def safe_id(value: str) -> str:
    """A request id usable as a file name (Dynamo context ids are UUIDs; anything else is cleaned)."""
    cleaned = _SAFE_ID_RE.sub("-", value).strip("-.")
    return cleaned[:96] or "request"


def parse_size(size: Any) -> tuple[int | None, int | None]:
    """``"WxH"`` -> ``(W, H)``; ``None``/empty -> ``(None, None)`` (the model preset's size)."""
    if size is None or (isinstance(size, str) and not size.strip()):
        return None, None
    match = _SIZE_RE.match(size) if isinstance(size, str) else None
    if not match:
        raise RequestError("size", f"{size!r} is not a size; use \"WIDTHxHEIGHT\", e.g. \"832x480\"")
    width, height = int(match.group(1)), int(match.group(2))
    if width <= 0 or height <= 0:
        raise RequestError("size", f"{size!r} has a zero side; both width and height must be positive")
    return width, height


def _int_field(field: str, value: Any, *, minimum: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise RequestError(field, f"must be an integer, got {value!r}")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise RequestError(field, f"must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise RequestError(field, f"must be >= {minimum}, got {value}")
    return value


def _float_field(field: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RequestError(field, f"must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise RequestError(field, f"must be a number, got {value!r}") from None


def _str_field(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(field, f"must be a string, got {type(value).__name__}")
    return value


def _state_field(field: str, value: Any) -> ContinuationState | None:
    if value is None:
        return None
    if isinstance(value, ContinuationState):
        return value.validate()
    try:
        if isinstance(value, str):
            return ContinuationState.from_json(value)
        if isinstance(value, dict):
            return ContinuationState.from_dict(value)
    except ValueError as exc:
        raise RequestError(field, str(exc)) from None
    raise RequestError(field, f"must be a ContinuationState object {{kind, payload}}, got {type(value).__name__}")


def _mapping(field: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RequestError(field, f"must be an object, got {type(value).__name__}")
    return dict(value)


def passthrough_knobs(request: Mapping[str, Any]) -> dict[str, Any]:
    """The ``extra_args.media_passthrough`` knobs, checked against :data:`PASSTHROUGH_KEYS`."""
    extra_args = _mapping("extra_args", request.get("extra_args"))
    knobs = _mapping("extra_args.media_passthrough", extra_args.get("media_passthrough"))
    unknown = sorted(set(knobs) - PASSTHROUGH_KEYS)
    if unknown:
        raise RequestError(f"extra_args.media_passthrough.{unknown[0]}",
                           f"unknown request field(s) {unknown}; FastVideo accepts {sorted(PASSTHROUGH_KEYS)} "
                           "as extra fields (or the standard nvext fields)")
    return knobs


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
    prompt = request.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestError("prompt", "is required: a non-empty string describing the video")
    model = request.get("model")
    model = model if isinstance(model, str) else ""

    nvext = _mapping("nvext", request.get("nvext"))
    unknown = sorted(set(nvext) - NVEXT_KEYS - NVEXT_FOREIGN_KEYS)
    if unknown:
        raise RequestError(f"nvext.{unknown[0]}", f"unknown nvext field(s) {unknown}; FastVideo reads "
                                                  f"{sorted(NVEXT_KEYS - {'annotations'})}")
    for key in sorted(NVEXT_FOREIGN_KEYS & set(nvext)):
        if nvext[key] is not None:
            raise RequestError(f"nvext.{key}", "is a vLLM-Omni MoE option; Wan models served by FastVideo "
                                               "have one expert, leave it unset")
    knobs = passthrough_knobs(request)

    def pick(name: str) -> tuple[str, Any]:
        """nvext wins over passthrough; returns (field path for errors, value)."""
        if nvext.get(name) is not None:
            return f"nvext.{name}", nvext[name]
        return f"extra_args.media_passthrough.{name}", knobs.get(name)

    width, height = parse_size(request.get("size"))
    for side, name in ((width, "width"), (height, "height")):
        if side is not None and knobs.get(name) is not None and _int_field(name, knobs[name]) != side:
            raise RequestError(name, f"extra field {name}={knobs[name]!r} contradicts size={request['size']!r}")
    if width is None:
        width = _int_field("extra_args.media_passthrough.width", knobs.get("width"), minimum=1)
    if height is None:
        height = _int_field("extra_args.media_passthrough.height", knobs.get("height"), minimum=1)

    fps = _int_field(*pick("fps"), minimum=1)
    num_frames = _int_field(*pick("num_frames"), minimum=1)
    seconds = _int_field("seconds", request.get("seconds"), minimum=1)
    if num_frames is None and seconds is not None:
        if fps is None:
            fps = defaults.fps
        num_frames = seconds * fps

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

    state_field, state_value = pick("continuation_state")
    state = _state_field(state_field, state_value)
    return_state = knobs.get("return_state")
    if return_state is not None and not isinstance(return_state, bool):
        raise RequestError("extra_args.media_passthrough.return_state", f"must be true or false, got {return_state!r}")
    return_state = bool(return_state) or state is not None

    sampler = _str_field("extra_args.media_passthrough.sampler", knobs.get("sampler"))
    input_reference = _str_field("input_reference", request.get("input_reference")) or None
    generation = GenerationRequest(
        prompt=prompt,
        negative_prompt=_str_field(*pick("negative_prompt")),
        inputs=InputConfig(image_path=input_reference),
        sampling=SamplingConfig(
            width=width, height=height, num_frames=num_frames, fps=fps,
            num_inference_steps=_int_field(*pick("num_inference_steps"), minimum=1),
            guidance_scale=_float_field(*pick("guidance_scale")),
            seed=_int_field(*pick("seed")),
            true_cfg_scale=_float_field("extra_args.media_passthrough.true_cfg_scale", knobs.get("true_cfg_scale")),
            shift=_float_field("extra_args.media_passthrough.shift", knobs.get("shift")),
            sampler=sampler,  # type: ignore[arg-type]  # the engine validates the name
            continuation_strength=_float_field("extra_args.media_passthrough.continuation_strength",
                                               knobs.get("continuation_strength")),
        ),
        output=OutputConfig(save_video=False, return_frames=False, return_state=return_state),
        state=state,
        request_id=request_id,
    )
    return ParsedVideoRequest(request=generation, model=model, response_format=response_format,
                              output_format=output_format, stream=bool(stream), return_state=return_state)


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
