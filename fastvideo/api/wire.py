"""The one request-translation layer: each edge's wire format -> :class:`GenerationRequest`.

Edges: ``http`` (the OpenAI-compatible body, JSON or a form mapped to the same nesting), ``ws``
(the ``/v1/stream`` ``session_init_v2`` / ``segment_prompt_source`` frames), ``dynamo`` (Dynamo's
``NvCreateVideoRequest``) and ``cli`` (``fastvideo generate`` flags, keyed ``--flag``). Every edge
calls :func:`translate_request`; none builds a ``GenerationRequest`` from client fields itself.

Contract:
- **Where a field may be given** is one table (:data:`FIELDS`, :func:`wire_names`): ``http`` reads a
  field at the top level, in ``nvext`` for Dynamo's nvext fields, and in
  ``extra_args.media_passthrough``; ``dynamo`` reads ``nvext`` and ``extra_args.media_passthrough``
  (where Dynamo's frontend puts a client's top-level extra fields, so one client body means the
  same on both); ``ws`` reads the frame's keys; ``cli`` its
  ``--flags``. ``size`` ("WxH") is an alias of width and height on ``http`` and ``dynamo``.
- **One precedence rule**: a field given under several names must carry the same value under each;
  different values are refused with :class:`RequestError` naming both. ``seconds`` is turned into
  ``round(seconds * fps)`` frames, played at that ``fps``, only when no frame count is given
  (``fps`` is the request's, else the ``fps`` handed to :func:`translate_request`, the served
  model's).
- **One size parser** (:func:`parse_size`) and **one coercion per type**: an integer is an int, an
  integral float or a decimal string (forms and Dynamo send strings); a number is an int, float or
  numeric string; a boolean is never a number. A wrong type is a :class:`RequestError` naming the
  edge's field. An integer string longer than :data:`MAX_INT_DIGITS` digits (no field's range comes near it),
  and a string holding a lone UTF-16 surrogate (an unpaired ``\\ud800``-``\\udfff`` escape: not text), are
  refused the same way, for every field.
- **Prompt length**: ``prompt`` and ``negative_prompt`` hold at most ``max_prompt_chars`` characters (the
  edge's bound, never above :data:`fastvideo.api.limits.MAX_PROMPT_CHARS`), refused naming the wire field.
- **JSON text** the client sends inside a field (a form's ``nvext``) or as a whole body is read with
  :func:`parse_json`: invalid JSON, an integer past Python's digit limit, or nesting deeper than
  :data:`MAX_JSON_DEPTH` is a :class:`RequestError`, never another exception.
- **One range per field, applied once**: ranges (steps 1..1000, fps 1..120, sizes, frame counts,
  ...) are the engine's (:mod:`fastvideo.engine.validation`), checked when the request is resolved
  against the model. The edge re-labels that error with :meth:`TranslatedRequest.relabel`, which
  maps the internal path (``sampling.num_inference_steps``) back to the name the client used
  (``nvext.num_inference_steps``, ``--steps``...). Only ``seconds``, which exists on the wire alone,
  is range-checked here (0 < seconds <= 3600).
- ``nvext`` keys outside Dynamo's nvext schema and ``media_passthrough`` keys outside
  :data:`PASSTHROUGH_KEYS` are refused naming the key (http and dynamo); other unknown keys are the edge's business
  (reported in its log). Output options are the edge's: it passes its :class:`OutputConfig`.
- Standard library and ``fastvideo.api`` only.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fastvideo.api.errors import RequestError
from fastvideo.api.limits import MAX_PROMPT_CHARS, check_prompt_length
from fastvideo.api.request import GenerationRequest, InputConfig, OutputConfig, SamplingConfig
from fastvideo.api.state import ContinuationState

Edge = Literal["http", "ws", "dynamo", "cli"]
EDGES: tuple[Edge, ...] = ("http", "ws", "dynamo", "cli")
Kind = Literal["int", "float", "str", "state", "bool", "int_list"]


@dataclass(frozen=True)
class FieldSpec:
    """One request field: its internal path, its short wire name, its value type, its CLI flag and what it means."""

    path: str
    short: str
    kind: Kind
    #: ``fastvideo generate`` flag, or None when the CLI has none. The CLI builds its per-request flags from this
    #: table (with ``--<short>`` as an alias where it differs), so a field given a flag here shows up there.
    flag: str | None
    #: What the field means, for the user (``fastvideo generate --help`` shows it with the flag).
    help: str = ""


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("prompt", "prompt", "str", "--prompt", "text describing the video"),
    FieldSpec("negative_prompt", "negative_prompt", "str", "--negative-prompt",
              "what to avoid (default: the preset's)"),
    FieldSpec("sampling.width", "width", "int", "--width", "width in pixels, a multiple of 16"),
    FieldSpec("sampling.height", "height", "int", "--height", "height in pixels, a multiple of 16"),
    FieldSpec("sampling.num_frames", "num_frames", "int", "--num-frames", "frames to return (4k+1 decodes exactly)"),
    FieldSpec("sampling.fps", "fps", "int", "--fps", "frames per second of the MP4"),
    FieldSpec("sampling.num_inference_steps", "num_inference_steps", "int", "--steps", "denoising steps"),
    FieldSpec("sampling.guidance_scale", "guidance_scale", "float", "--guidance-scale",
              "classifier-free guidance (1 disables)"),
    #: Two-expert models (Wan2.2 A14B): the second expert's guidance and the switch point (refused on one expert).
    FieldSpec("sampling.guidance_scale_2", "guidance_scale_2", "float", "--guidance-scale-2",
              "two-expert models (Wan2.2 A14B): the second (low-noise) expert's guidance"),
    FieldSpec("sampling.boundary_ratio", "boundary_ratio", "float", "--boundary-ratio",
              "two-expert models: the switch point, a fraction of the training timesteps (e.g. 0.875)"),
    FieldSpec("sampling.seed", "seed", "int", "--seed", "random seed (default: random, printed)"),
    FieldSpec("sampling.true_cfg_scale", "true_cfg_scale", "float", None,
              "for API compatibility: 1.0 (off) only; Wan uses guidance_scale"),
    FieldSpec("sampling.shift", "shift", "float", "--shift", "flow-matching timestep shift"),
    FieldSpec("sampling.sampler", "sampler", "str", "--sampler",
              "sampler (default: the preset's, else the model's); dmd: few-step FastWan sampling"),
    #: FastVideo's DMD timesteps (``sampler="dmd"``): a JSON list of ints, or "1000,757,522" (forms, CLI).
    FieldSpec("sampling.dmd_denoising_steps", "dmd_denoising_steps", "int_list", "--dmd-denoising-steps",
              "dmd only: the timesteps, comma-separated and decreasing (default: the preset's, e.g. 1000,757,522)"),
    FieldSpec("sampling.continuation_strength", "continuation_strength", "float", None,
              "continuation segments: how strongly the previous segment's tail latents are imposed (0..1)"),
    FieldSpec("state", "continuation_state", "state", None, "the ContinuationState a video continues from"),
    #: Ask for a ContinuationState back (http and dynamo; a request continuing a state always gets one).
    FieldSpec("output.return_state", "return_state", "bool", None, "return a ContinuationState with the video"),
)
_BY_PATH = {spec.path: spec for spec in FIELDS}

#: Dynamo's ``nvext`` fields (NvCreateVideoRequest 1.6.1); ``annotations`` is accepted and ignored.
#: ``boundary_ratio`` / ``guidance_scale_2`` are its two-expert (MoE) options: honoured on Wan2.2 A14B, refused by
#: the engine, naming the field, on a one-expert model.
NVEXT_FIELDS = frozenset({"fps", "num_frames", "negative_prompt", "num_inference_steps", "guidance_scale", "seed",
                          "continuation_state", "boundary_ratio", "guidance_scale_2"})
#: ``extra_args.media_passthrough`` keys a Dynamo request may carry (a client's top-level extras).
PASSTHROUGH_KEYS = frozenset(s.short for s in FIELDS if s.short != "prompt")
#: Top-level keys :func:`translate_request` reads on the http edge (the edge reports any other as ignored).
HTTP_KEYS = frozenset({s.short for s in FIELDS} | {"size", "seconds", "nvext", "extra_args"})
#: Keys the ws edge's frames may carry for a request.
WS_KEYS = frozenset(s.short for s in FIELDS if not s.path.startswith("output."))

_SIZE_RE = re.compile(r"^\s*(\d{1,5})\s*[xX*\u00d7]\s*(\d{1,5})\s*$")
MAX_SECONDS = 3600.0
#: Digits an integer string may have (seeds go up to 2**63-1: 19 digits); longer ones are refused unread.
MAX_INT_DIGITS = 40
#: Deepest nesting of arrays/objects accepted in client JSON (request bodies are two levels deep).
MAX_JSON_DEPTH = 64


def wire_names(edge: Edge, path: str) -> tuple[str, ...]:
    """Every name under which ``edge`` may carry internal field ``path`` (in the order it reads them)."""
    spec = _BY_PATH.get(path)
    if spec is None:
        return ()
    if edge == "cli":
        return (spec.flag,) if spec.flag else ()
    if edge == "ws" and spec.path.startswith("output."):  # a stream always returns its state
        return ()
    if edge == "ws" or spec.short == "prompt":
        return (spec.short,)
    nvext = (f"nvext.{spec.short}",) if spec.short in NVEXT_FIELDS else ()
    passthrough = (f"extra_args.media_passthrough.{spec.short}",)
    if edge == "http":  # a body forwarded the way Dynamo's frontend nests extras means the same here
        return (spec.short,) + nvext + passthrough
    return nvext + passthrough


def parse_size(text: Any, name: str = "size") -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` (also ``*`` or ``\u00d7``, spaces allowed) -> ``(width, height)``."""
    match = _SIZE_RE.match(text) if isinstance(text, str) else None
    if not match:
        raise RequestError(name, f"{text!r} is not a size; use \"WIDTHxHEIGHT\", e.g. \"832x480\"")
    width, height = int(match.group(1)), int(match.group(2))
    if not width or not height:
        raise RequestError(name, f"{text!r} has a zero side; use \"WIDTHxHEIGHT\" with both sides positive")
    return width, height


def to_int(name: str, value: Any) -> int:
    """An int from an int, an integral float or a decimal string; never from a bool."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        if len(value.strip().lstrip("+-")) > MAX_INT_DIGITS:
            raise RequestError(name, f"is an integer of {len(value.strip().lstrip('+-'))} digits; at most "
                                     f"{MAX_INT_DIGITS} are read (no field's range comes near): send a value in "
                                     "range")
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(name, f"must be an integer, got {value!r}")
    return value


#: Longest integer list accepted on the wire (no field's range holds more: steps are 1..1000).
MAX_LIST_ITEMS = 1000


def to_int_list(name: str, value: Any) -> list[int]:
    """A list of ints from a JSON list (each item as :func:`to_int`, named ``name[i]``) or a comma-separated
    string (forms and the CLI send ``"1000,757,522"``)."""
    if isinstance(value, str):
        items: list[Any] = [part for part in value.split(",")] if value.strip() else []
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise RequestError(name, f"must be a list of integers (or \"1000,757,522\"), got {type(value).__name__}")
    if len(items) > MAX_LIST_ITEMS:
        raise RequestError(name, f"holds {len(items)} items; at most {MAX_LIST_ITEMS} are read")
    return [to_int(f"{name}[{i}]", item) for i, item in enumerate(items)]


def to_float(name: str, value: Any) -> float:
    """A finite float from a number or a numeric string; never from a bool."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise RequestError(name, f"must be a number, got {value!r}") from None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(name, f"must be a number, got {value!r}")
    else:
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            raise RequestError(name, "must be a finite number, got an integer too large for a float") from None
    if not math.isfinite(number):
        raise RequestError(name, f"must be a finite number, got {value!r}")
    return number


def to_bool(name: str, value: Any) -> bool:
    """A bool from a JSON boolean or the strings true/false (forms send strings)."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise RequestError(name, f"must be true or false, got {value!r}")
    return value


def _to_state(name: str, value: Any) -> ContinuationState:
    if isinstance(value, ContinuationState):
        return value.validate()
    try:
        if isinstance(value, str):
            return ContinuationState.from_json(value)
        if isinstance(value, Mapping):
            return ContinuationState.from_dict(dict(value))
    except ValueError as exc:
        raise RequestError(name, str(exc)) from None
    raise RequestError(name, f"must be a ContinuationState object {{kind, payload}}, got {type(value).__name__}")


def _convert(kind: Kind, name: str, value: Any) -> Any:
    if kind == "int":
        return to_int(name, value)
    if kind == "float":
        return to_float(name, value)
    if kind == "state":
        return _to_state(name, value)
    if kind == "bool":
        return to_bool(name, value)
    if kind == "int_list":
        return to_int_list(name, value)
    if not isinstance(value, str):
        raise RequestError(name, f"must be a string, got {type(value).__name__}")
    check_text(name, value)
    return value


def check_text(name: str, value: str) -> None:
    """Refuse a string holding a lone UTF-16 surrogate (it is not text; it could not be encoded later)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(name, "holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which is "
                                 "not text; send valid Unicode") from None


def json_too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON) nests arrays/objects deeper than ``limit`` levels. Iterative."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        nested = [child for child in (node.values() if isinstance(node, dict) else node)
                  if isinstance(child, (dict, list))]
        if nested and depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in nested)
    return False


def parse_json(text: str | bytes, name: str) -> Any:
    """Client JSON text -> its value; :class:`RequestError` naming ``name`` for invalid JSON, an integer past
    Python's digit limit, or nesting deeper than :data:`MAX_JSON_DEPTH` (see module contract)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise RequestError(name, f"is nested too deeply; at most {MAX_JSON_DEPTH} levels of arrays/objects are "
                                 "accepted") from None
    except UnicodeDecodeError as exc:
        raise RequestError(name, f"is not UTF-8 JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise RequestError(name, f"is not valid JSON: {exc}") from None
    except ValueError:  # what json.loads raises besides: an integer past Python's digit limit
        raise RequestError(name, f"holds a number too long to parse (integers are limited to "
                                 f"{sys.get_int_max_str_digits()} digits); send a value in range") from None
    if json_too_deep(value):
        raise RequestError(name, f"is nested too deeply; at most {MAX_JSON_DEPTH} levels of arrays/objects are "
                                 "accepted")
    return value


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RequestError(name, f"must be an object, got {type(value).__name__}")
    return value


def _lookup(wire: Mapping[str, Any], dotted: str) -> Any:
    if dotted.startswith("--"):  # a CLI flag is one key
        return wire.get(dotted)
    node: Any = wire
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        node = _mapping(".".join(parts[:i]) or "request", node).get(part)
        if node is None:
            return None
    return node


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, ContinuationState) and isinstance(b, ContinuationState):
        return a.to_dict() == b.to_dict()
    return bool(a == b)


@dataclass(frozen=True)
class TranslatedRequest:
    """A wire request as a :class:`GenerationRequest`, and which wire name set each field."""

    request: GenerationRequest
    edge: Edge
    #: internal path -> the wire name the client set it with (``seconds`` for frames derived from it).
    given: Mapping[str, str] = field(default_factory=dict)

    def wire_name(self, path: str) -> str:
        """The client's name for internal field ``path``: the one they used, else the edge's first."""
        if path in self.given:
            return self.given[path]
        if path == "inputs.image_path" and self.edge in ("http", "dynamo", "ws"):  # stored by the edge itself
            return "input_reference"
        names = wire_names(self.edge, path)
        if names:
            return names[0]
        if self.edge == "cli":  # a field the CLI has no flag for cannot have come from the command line
            return path
        short = _BY_PATH[path].short if path in _BY_PATH else path
        return short

    def relabel(self, exc: RequestError) -> RequestError:
        """``exc`` (raised on an internal path, e.g. by the engine's range check) named for this edge."""
        name = self.wire_name(exc.field)
        if name == exc.field:
            return exc
        relabelled = RequestError(name, exc.reason)
        relabelled.__cause__ = exc
        return relabelled


def translate_request(edge: Edge, wire: Mapping[str, Any], *, fps: int | None = None,
                      output: OutputConfig | None = None, request_id: str | None = None,
                      image_path: str | None = None, max_prompt_chars: int = MAX_PROMPT_CHARS) -> TranslatedRequest:
    """The :class:`GenerationRequest` for one wire request on ``edge`` (see module contract).

    ``fps`` is the served model's frame rate (for ``seconds``; the http and dynamo edges pass it);
    ``output`` the edge's output options; ``image_path`` a reference image the edge already stored
    (http/dynamo/ws ``input_reference``); ``max_prompt_chars`` the edge's prompt bound (at most
    :data:`~fastvideo.api.limits.MAX_PROMPT_CHARS`).
    """
    if edge not in EDGES:
        raise ValueError(f"unknown edge {edge!r}; one of {EDGES}")
    if not isinstance(wire, Mapping):
        raise RequestError("request", f"must be a JSON object, got {type(wire).__name__}")
    _check_extensions(edge, wire)
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for spec in FIELDS:
        for name in wire_names(edge, spec.path):
            raw = _lookup(wire, name)
            if raw is None:
                continue
            if spec.path in ("prompt", "negative_prompt"):  # before any other work on a long string
                check_prompt_length(name, raw, min(max_prompt_chars, MAX_PROMPT_CHARS))
            value = _convert(spec.kind, name, raw)
            if spec.path in values and not _same(values[spec.path], value):
                raise RequestError(name, f"{value!r} contradicts {given[spec.path]}={values[spec.path]!r}; "
                                         "give the field once (or the same value in both places)")
            values.setdefault(spec.path, value)
            given.setdefault(spec.path, name)
    if edge in ("http", "dynamo") and wire.get("size") not in (None, ""):
        for path, side in zip(("sampling.width", "sampling.height"), parse_size(wire["size"])):
            if path in values and values[path] != side:
                raise RequestError(given[path], f"{values[path]!r} contradicts size={wire['size']!r}; give one")
            values[path] = side
            given.setdefault(path, "size")
    if edge in ("http", "dynamo") and wire.get("seconds") not in (None, ""):
        seconds = to_float("seconds", wire["seconds"])
        if not 0 < seconds <= MAX_SECONDS:
            raise RequestError("seconds", f"{wire['seconds']!r} is out of range; use a duration in (0, "
                                          f"{MAX_SECONDS:g}]")
        if "sampling.num_frames" not in values:
            rate = values.get("sampling.fps", fps)
            if rate is None:
                raise ValueError("translate_request needs the served model's fps to turn seconds into frames")
            values["sampling.num_frames"] = max(1, round(seconds * rate))
            values["sampling.fps"] = rate  # the frames play for the seconds asked
            given["sampling.num_frames"] = "seconds"
    prompt = values.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestError(given.get("prompt") or wire_names(edge, "prompt")[0],
                           "is required: a non-empty string describing the video")
    sampling = SamplingConfig(**{path.split(".", 1)[1]: value for path, value in values.items()
                                 if path.startswith("sampling.")})
    state = values.get("state")
    out = output if output is not None else OutputConfig()
    if state is not None or values.get("output.return_state"):
        out = replace(out, return_state=True)
    request = GenerationRequest(prompt=prompt, negative_prompt=values.get("negative_prompt"),
                                inputs=InputConfig(image_path=image_path), sampling=sampling, output=out,
                                state=state, request_id=request_id)
    return TranslatedRequest(request=request, edge=edge, given=given)


def _check_extensions(edge: Edge, wire: Mapping[str, Any]) -> None:
    """Refuse nvext / media_passthrough keys FastVideo does not read (see module contract)."""
    if edge not in ("http", "dynamo"):
        return
    nvext = _mapping("nvext", wire.get("nvext"))
    unknown = sorted(set(nvext) - NVEXT_FIELDS - {"annotations"})
    if unknown:
        raise RequestError(f"nvext.{unknown[0]}", f"unknown nvext field(s) {unknown}; FastVideo reads "
                                                  f"{sorted(NVEXT_FIELDS)}")
    unknown = sorted(set(passthrough(wire)) - PASSTHROUGH_KEYS)  # an extra field nobody reads: refused, not dropped
    if unknown:
        raise RequestError(f"extra_args.media_passthrough.{unknown[0]}",
                           f"unknown request field(s) {unknown}; FastVideo accepts {sorted(PASSTHROUGH_KEYS)} "
                           "as extra fields (or the standard nvext fields)")


def passthrough(wire: Mapping[str, Any]) -> Mapping[str, Any]:
    """A Dynamo request's ``extra_args.media_passthrough`` mapping (empty when absent)."""
    extra_args = _mapping("extra_args", wire.get("extra_args"))
    return _mapping("extra_args.media_passthrough", extra_args.get("media_passthrough"))
