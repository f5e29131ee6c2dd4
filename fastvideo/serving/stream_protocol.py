"""JSON control frames of the ``/v1/stream`` WebSocket (client -> server schemas, server frame names).

Contract: every control frame is a JSON object with a ``type``. Client frames are validated here
(pydantic, at the edge only), one model per type behind the one :func:`parse_client_message`:
FastVideo's ``session_init_v2``, ``segment_prompt_source``, ``snapshot_state``,
``seed_prompts_updated``, ``enhancement_updated``, ``auto_extension_updated``,
``loop_generation_updated``, ``generation_paused_updated``; this server's ``single_clip_updated``,
``preset_updated``, ``pause``, ``resume``, ``enhance_prompt``, ``rewrite_prompt``, ``end_stream``
and ``ping`` (:data:`CLIENT_TYPES`). Flags are strict booleans, prompt lists lists of strings.
:func:`parse_client_message` raises :class:`ProtocolError` for anything else - not JSON (an integer
of more digits than Python converts, nesting deeper than the parser goes, included), not an object,
unknown ``type``, wrong field types, a string (value or key, at any depth) holding a lone UTF-16
surrogate (``"\\ud800"``: not text; it could not be encoded later) - with a message that says what
was wrong; the server answers it with an ``error`` frame ``invalid_message`` and keeps the session.
Unknown extra keys are ignored. Request fields (prompt, sizes, sampling) are not judged here but by
the translation layer, like on every edge; ``session_init_v2.input_reference`` (the image of an image-to-video
session) is decoded by the server with the HTTP edge's decoder, not here. Server frame types are listed in
:data:`SERVER_FRAMES`; binary WebSocket messages carry fMP4 bytes only.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter, ValidationError

from fastvideo.api.errors import FastVideoError


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _SegmentRequest(_Msg):
    """The request fields a segment may set (both frames below carry them).

    They are typed ``Any`` on purpose: the one translation layer (:func:`fastvideo.api.translate_request`,
    edge ``ws``) coerces and names them, as on every edge."""

    prompt: Any = None
    negative_prompt: Any = None
    num_frames: Any = None
    num_inference_steps: Any = None
    guidance_scale: Any = None
    seed: Any = None
    shift: Any = None
    sampler: Any = None
    continuation_strength: Any = None


#: At most this many curated prompts per session, each at most MAX_PROMPT_CHARS characters.
MAX_CURATED_PROMPTS = 64
MAX_PROMPT_CHARS = 8192
_Prompt = Annotated[StrictStr, Field(max_length=MAX_PROMPT_CHARS)]
_Prompts = Annotated[list[_Prompt], Field(max_length=MAX_CURATED_PROMPTS)]
_Label = Annotated[StrictStr, Field(max_length=256)]


class SessionInitV2(_SegmentRequest):
    """Opens the session; sets the sampling every segment shares (its prompt, when set, starts the first
    segment right away); may resume from a snapshot or a session id. FastVideo's session fields: a
    client id, a preset (must name the served model) with a display label, curated prompts, and the
    feature flags (unset: off, or the resumed session's)."""

    type: Literal["session_init_v2"]
    client_id: _Label | None = None
    preset: _Label | None = None
    preset_label: _Label | None = None
    curated_prompts: _Prompts | None = None
    enhancement_enabled: StrictBool | None = None
    auto_extension_enabled: StrictBool | None = None
    loop_generation_enabled: StrictBool | None = None
    single_clip_mode: StrictBool | None = None
    stream_mode: Literal["av_fmp4"] | None = None
    #: A session id the client saw before (routers use it for stickiness); informational here.
    session_id: str | None = None
    width: Any = None
    height: Any = None
    fps: Any = None
    #: ``{kind, payload}`` of a ``continuation_state_snapshot``: the first segment continues it.
    continuation_state: dict[str, Any] | None = None
    #: The session's reference image (image-to-video models): a data URL or base64 image bytes, as the HTTP
    #: edge's ``input_reference``; every segment of the session is conditioned on it. Decoded by the server.
    input_reference: Any = None


class SegmentPromptSource(_SegmentRequest):
    """Requests the next segment (continuing the previous one); its fields override the session's.
    ``source`` says where the client took the prompt from (echoed as ``prompt_source``)."""

    type: Literal["segment_prompt_source"]
    source: Literal["curated", "enhanced", "user", "auto_extension"] = "user"


#: The sampling fields of the two frames above (what the translation layer reads from them, besides the prompts).
SEGMENT_FIELDS = tuple(name for name in _SegmentRequest.model_fields if name not in ("prompt", "negative_prompt"))
SESSION_FIELDS = ("width", "height", "fps") + SEGMENT_FIELDS


class SeedPromptsUpdated(_Msg):
    """Replaces the session's curated prompts (what loop generation cycles through)."""

    type: Literal["seed_prompts_updated"]
    seed_prompts: _Prompts


class EnhancementUpdated(_Msg):
    type: Literal["enhancement_updated"]
    enabled: StrictBool


class AutoExtensionUpdated(_Msg):
    type: Literal["auto_extension_updated"]
    enabled: StrictBool


class LoopGenerationUpdated(_Msg):
    """Loop generation on: after each segment the next starts by itself, until paused or capped."""

    type: Literal["loop_generation_updated"]
    enabled: StrictBool


class GenerationPausedUpdated(_Msg):
    type: Literal["generation_paused_updated"]
    paused: StrictBool


class SingleClipUpdated(_Msg):
    """Single-clip mode: the session makes one segment, then the stream completes."""

    type: Literal["single_clip_updated"]
    enabled: StrictBool


class PresetUpdated(_Msg):
    """Sets the session's preset (must name the served model) and/or its display label."""

    type: Literal["preset_updated"]
    preset: _Label | None = None
    preset_label: _Label | None = None


class Pause(_Msg):
    """No new segment starts until ``resume`` (the running one finishes)."""

    type: Literal["pause"]


class Resume(_Msg):
    type: Literal["resume"]


class EnhancePrompt(_Msg):
    """Asks the prompt enhancer for a better prompt."""

    type: Literal["enhance_prompt"]
    prompt: _Prompt


class RewritePrompt(_Msg):
    """Asks the prompt enhancer for ``count`` alternative prompts."""

    type: Literal["rewrite_prompt"]
    prompt: _Prompt
    count: Annotated[StrictInt, Field(ge=1, le=8)] = 3


class SnapshotState(_Msg):
    """Asks for the session's current continuation state."""

    type: Literal["snapshot_state"]


class EndStream(_Msg):
    """Ends the stream after the segments already requested."""

    type: Literal["end_stream"]


class Ping(_Msg):
    type: Literal["ping"]


_CLIENT_MODELS = (SessionInitV2, SegmentPromptSource, SeedPromptsUpdated, EnhancementUpdated, AutoExtensionUpdated,
                  LoopGenerationUpdated, GenerationPausedUpdated, SingleClipUpdated, PresetUpdated, Pause, Resume,
                  EnhancePrompt, RewritePrompt, SnapshotState, EndStream, Ping)
ClientMessage = Annotated[Union[_CLIENT_MODELS], Field(discriminator="type")]  # type: ignore[valid-type]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(ClientMessage)

#: Every client frame type, in catalogue order.
CLIENT_TYPES = tuple(m.model_fields["type"].annotation.__args__[0] for m in _CLIENT_MODELS)  # type: ignore[union-attr]
#: Every server frame type (``session_updated`` acknowledges a settings frame with the session's settings;
#: ``prompt_enhanced`` / ``prompt_rewrites`` answer ``enhance_prompt`` / ``rewrite_prompt`` when an enhancer is set).
SERVER_FRAMES = ("queue_status", "gpu_assigned", "ltx2_stream_start", "ltx2_segment_start", "step_complete",
                 "media_init", "media_segment_complete", "ltx2_segment_complete", "ltx2_stream_complete",
                 "continuation_state_snapshot", "session_updated", "prompt_enhanced", "prompt_rewrites", "error",
                 "pong")


class ProtocolError(FastVideoError, ValueError):
    """A client frame that is not a valid control message."""


def _lone_surrogate_at(data: Any) -> str | None:
    """The dotted path of the first string (or key) in ``data`` that cannot be encoded as UTF-8, else None.
    Iterative: depth is bounded by the JSON parser, not by this walk."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else str(key)
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    return path or "key"
                stack.append((child, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def parse_client_message(raw: str | bytes | None) -> Any:
    """A typed client message from one WebSocket text frame (see module contract)."""
    if raw is None:
        raise ProtocolError("binary frames are not accepted from clients; send JSON text frames")
    try:
        data = json.loads(raw)
    except RecursionError as exc:
        raise ProtocolError("frame is nested too deeply to parse; control frames are flat JSON objects") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from exc
    except ValueError as exc:  # what json.loads raises besides: an integer past Python's digit limit
        raise ProtocolError(f"frame holds a number too long to parse (integers are limited to "
                            f"{sys.get_int_max_str_digits()} digits); send a number in range") from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"frame must be a JSON object with a 'type', got {type(data).__name__}")
    bad = _lone_surrogate_at(data)
    if bad is not None:
        raise ProtocolError(f"{bad or 'frame'}: holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff "
                            "escape), which is not text; send valid Unicode")
    kind = data.get("type")
    if kind not in CLIENT_TYPES:
        raise ProtocolError(f"unknown message type {kind!r:.40}; expected one of: {', '.join(CLIENT_TYPES)}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "frame"
        raise ProtocolError(f"{kind}: {where}: {first.get('msg')}") from exc
