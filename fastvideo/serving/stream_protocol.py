"""JSON control frames of the ``/v1/stream`` WebSocket (client -> server schemas, server frame names).

Contract: every control frame is a JSON object with a ``type``. Client frames are validated here
(pydantic, at the edge only): ``session_init_v2``, ``segment_prompt_source``, ``snapshot_state``,
``end_stream`` and ``ping``. :func:`parse_client_message` raises :class:`ProtocolError` for
anything else - not JSON, not an object, unknown ``type``, wrong field types - with a message
that says what was wrong; the server answers it with an ``error`` frame ``invalid_message`` and
keeps the session. Unknown extra keys are ignored. Request fields (prompt, sizes, sampling) are
not judged here but by the translation layer, like on every edge. Server frame types are listed in
:data:`SERVER_FRAMES`; binary WebSocket messages carry fMP4 bytes only.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from fastvideo.api.errors import FastVideoError


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SessionInitV2(_Msg):
    """Opens the session; sets the sampling every segment shares; may resume from a snapshot.

    Request fields are typed ``Any`` here on purpose: the one translation layer
    (:func:`fastvideo.api.translate_request`, edge ``ws``) coerces and names them, as on every edge."""

    type: Literal["session_init_v2"]
    #: A session id the client saw before (routers use it for stickiness); informational here.
    session_id: str | None = None
    #: When set, the first segment starts right away with this prompt.
    prompt: Any = None
    negative_prompt: Any = None
    width: Any = None
    height: Any = None
    num_frames: Any = None
    fps: Any = None
    num_inference_steps: Any = None
    guidance_scale: Any = None
    seed: Any = None
    shift: Any = None
    sampler: Any = None
    continuation_strength: Any = None
    #: ``{kind, payload}`` of a ``continuation_state_snapshot``: the first segment continues it.
    continuation_state: dict[str, Any] | None = None


class SegmentPromptSource(_Msg):
    """Requests the next segment (continuing the previous one); its fields override the session's."""

    type: Literal["segment_prompt_source"]
    prompt: Any = None
    negative_prompt: Any = None
    num_frames: Any = None
    num_inference_steps: Any = None
    guidance_scale: Any = None
    seed: Any = None
    shift: Any = None
    sampler: Any = None
    continuation_strength: Any = None


#: The request fields of the two frames above (what the translation layer reads from them).
SESSION_FIELDS = ("width", "height", "num_frames", "fps", "num_inference_steps", "guidance_scale", "seed", "shift",
                  "sampler", "continuation_strength")
SEGMENT_FIELDS = ("num_frames", "num_inference_steps", "guidance_scale", "seed", "shift", "sampler",
                  "continuation_strength")


class SnapshotState(_Msg):
    """Asks for the session's current continuation state."""

    type: Literal["snapshot_state"]


class EndStream(_Msg):
    """Ends the stream after the segments already requested."""

    type: Literal["end_stream"]


class Ping(_Msg):
    type: Literal["ping"]


ClientMessage = Annotated[Union[SessionInitV2, SegmentPromptSource, SnapshotState, EndStream, Ping],
                          Field(discriminator="type")]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(ClientMessage)

CLIENT_TYPES = ("session_init_v2", "segment_prompt_source", "snapshot_state", "end_stream", "ping")
SERVER_FRAMES = ("queue_status", "gpu_assigned", "ltx2_stream_start", "ltx2_segment_start", "step_complete",
                 "media_init", "media_segment_complete", "ltx2_segment_complete", "ltx2_stream_complete",
                 "continuation_state_snapshot", "error", "pong")


class ProtocolError(FastVideoError, ValueError):
    """A client frame that is not a valid control message."""


def parse_client_message(raw: str | bytes | None) -> Any:
    """A typed client message from one WebSocket text frame (see module contract)."""
    if raw is None:
        raise ProtocolError("binary frames are not accepted from clients; send JSON text frames")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"frame must be a JSON object with a 'type', got {type(data).__name__}")
    kind = data.get("type")
    if kind not in CLIENT_TYPES:
        raise ProtocolError(f"unknown message type {kind!r}; expected one of {list(CLIENT_TYPES)}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "frame"
        raise ProtocolError(f"{kind}: {where}: {first.get('msg')}") from exc
