"""The one request-translation layer: the same intent on every edge gives the same request, and the same
bad value the same error, named as that edge's client wrote it (the edge-equivalence table)."""

from __future__ import annotations

from typing import Any

import pytest

from fastvideo.api import ContinuationState, GenerationRequest, RequestError, TranslatedRequest, translate_request
from fastvideo.api.wire import EDGES, FIELDS, NVEXT_FIELDS, parse_size, wire_names
from fastvideo.engine.presets import get_preset
from fastvideo.engine.validation import resolve_sampling

PRESET = get_preset("fastvideo-tiny")
MODEL_FPS = 16
STATE = {"kind": "wan.v1", "payload": {"schema_version": 1, "segment_index": 0}}

#: One intent, by short field name (what a client of any edge means).
INTENT: dict[str, Any] = {
    "prompt": "a red fox", "negative_prompt": "blur", "width": 64, "height": 32, "num_frames": 9, "fps": 8,
    "num_inference_steps": 3, "guidance_scale": 4.5, "seed": 7, "shift": 5.0, "sampler": "euler",
    "continuation_strength": 0.5,
}
CLI_FLAGS = {s.short: s.flag for s in FIELDS if s.flag}


def _put(wire: dict[str, Any], dotted: str, value: Any) -> None:
    if dotted.startswith("--"):
        wire[dotted] = value
        return
    *parents, last = dotted.split(".")
    node = wire
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


# How each edge's client writes a field: (edge, variant) -> wire mapping for ``fields``.
def _http_top(fields: dict[str, Any]) -> dict[str, Any]:
    return dict(fields)


def _http_nvext(fields: dict[str, Any]) -> dict[str, Any]:
    wire: dict[str, Any] = {}
    for key, value in fields.items():
        _put(wire, f"nvext.{key}" if key in NVEXT_FIELDS else key, value)
    if "width" in wire and "height" in wire:  # OpenAI's size instead of width/height
        wire["size"] = f"{wire.pop('width')}x{wire.pop('height')}"
    return wire


def _http_form(fields: dict[str, Any]) -> dict[str, Any]:  # SDK 3.x multipart: every extra is a string
    return {key: str(value) for key, value in fields.items()}


def _dynamo(fields: dict[str, Any]) -> dict[str, Any]:
    wire: dict[str, Any] = {"model": "fastvideo-tiny"}
    for key, value in fields.items():
        if key == "prompt":
            wire[key] = value
        elif key in NVEXT_FIELDS:
            _put(wire, f"nvext.{key}", value)
        else:
            _put(wire, f"extra_args.media_passthrough.{key}", value)
    knobs = wire.get("extra_args", {}).get("media_passthrough", {})
    if "width" in knobs and "height" in knobs:
        wire["size"] = f"{knobs.pop('width')}x{knobs.pop('height')}"
    return wire


def _ws(fields: dict[str, Any]) -> dict[str, Any]:
    return dict(fields)


def _cli(fields: dict[str, Any]) -> dict[str, Any]:  # argparse hands strings over
    return {CLI_FLAGS[key]: str(value) for key, value in fields.items() if key in CLI_FLAGS}


def _http_forwarded(fields: dict[str, Any]) -> dict[str, Any]:  # a body nested the way Dynamo's frontend does
    wire = _dynamo(fields)
    del wire["model"]
    return wire


WRITERS = {("http", "top-level"): _http_top, ("http", "nvext+size"): _http_nvext, ("http", "form"): _http_form,
           ("http", "nvext+passthrough"): _http_forwarded, ("dynamo", "nvext+passthrough"): _dynamo,
           ("ws", "frame"): _ws, ("cli", "flags"): _cli}


def _translate(edge: str, wire: dict[str, Any]) -> TranslatedRequest:
    return translate_request(edge, wire, fps=MODEL_FPS)  # type: ignore[arg-type]


def _judge(edge: str, wire: dict[str, Any]) -> RequestError:
    """The error a request gets on ``edge``: the translation layer's, else the engine's, named for the edge."""
    try:
        translated = _translate(edge, wire)
    except RequestError as exc:
        return exc
    try:
        resolve_sampling(translated.request, PRESET)
    except RequestError as exc:
        return translated.relabel(exc)
    raise AssertionError(f"{edge}: {wire} was accepted")


def _intent_of(request: GenerationRequest) -> tuple[Any, ...]:
    return request.prompt, request.negative_prompt, request.sampling, request.state


def test_the_same_intent_gives_the_same_request_on_every_edge():
    cli_fields = {k: v for k, v in INTENT.items() if k in CLI_FLAGS}
    results = {}
    for (edge, variant), write in WRITERS.items():
        fields = cli_fields if edge == "cli" else INTENT
        results[(edge, variant)] = _intent_of(_translate(edge, write(fields)).request)
    reference = _intent_of(_translate("ws", _ws(cli_fields)).request)
    assert results.pop(("cli", "flags")) == reference  # the CLI has no continuation_strength flag
    assert len(set(map(repr, results.values()))) == 1, results
    assert next(iter(results.values()))[2].continuation_strength == 0.5
    assert reference[2].width == 64 and reference[2].num_inference_steps == 3 and reference[2].sampler == "euler"


def test_continuation_state_is_read_the_same_on_http_dynamo_and_ws():
    requests = [_translate("http", {"prompt": "p", "nvext": {"continuation_state": STATE}}).request,
                _translate("dynamo", {"prompt": "p", "nvext": {"continuation_state": STATE}}).request,
                _translate("dynamo", {"prompt": "p", "extra_args": {"media_passthrough": {"continuation_state": STATE}}}
                           ).request,
                _translate("ws", {"prompt": "p", "continuation_state": ContinuationState.from_dict(STATE)}).request]
    assert all(r.state == requests[0].state and r.output.return_state for r in requests)


def test_seconds_become_frames_at_the_served_fps_unless_frames_are_given():
    for edge, wire in (("http", {"prompt": "p", "seconds": "2"}), ("dynamo", {"prompt": "p", "seconds": 2})):
        s = _translate(edge, wire).request.sampling
        assert (s.num_frames, s.fps) == (32, 16)
        translated = _translate(edge, {**wire, "fps": 8} if edge == "http" else {**wire, "nvext": {"fps": 8}})
        assert translated.request.sampling.num_frames == 16 and translated.given["sampling.num_frames"] == "seconds"
    assert _translate("http", {"prompt": "p", "seconds": 2.5, "num_frames": 5}).request.sampling.num_frames == 5
    assert _translate("http", {"prompt": "p", "seconds": 0.5}).request.sampling.num_frames == 8  # floats too


#: (field, bad value, the reason every edge gives). Types are judged by the translation layer, ranges by the
#: engine; each edge must name its own field either way.
BAD_VALUES = [
    ("num_inference_steps", "abc", "must be an integer, got"),
    ("num_inference_steps", 0, "0 is out of range; use 1..1000"),
    ("num_inference_steps", 1001, "1001 is out of range; use 1..1000"),
    ("seed", True, "must be an integer, got"),
    ("seed", -1, "-1 is out of range"),
    ("guidance_scale", "high", "must be a number, got"),
    ("guidance_scale", 51, "51.0 is out of range"),
    ("fps", 500, "500 is out of range; use 1..120"),
    ("num_frames", 100000, "100000 frames cannot be generated"),
    ("num_frames", 2.5, "must be an integer, got"),
    ("width", 65, "65 is not a multiple of 16"),
    ("height", 8, "8 is too small"),
    ("shift", 0, "0.0 is out of range"),
    ("sampler", "ddim", "unknown sampler 'ddim'"),
    ("continuation_strength", 2, "2.0 is out of range; use 0..1"),
    ("negative_prompt", 5, "must be a string, got int"),
    ("true_cfg_scale", 3.0, "3.0 cannot be honoured"),  # Wan has classic CFG only: refused, never ignored
]


@pytest.mark.parametrize("short,bad,reason", BAD_VALUES, ids=[f"{f}={v!r}" for f, v, _ in BAD_VALUES])
def test_the_same_bad_value_gives_the_same_error_named_for_each_edge(short, bad, reason):
    spec = next(s for s in FIELDS if s.short == short)
    seen = set()
    for edge in EDGES:
        if edge == "cli" and (isinstance(bad, bool) or spec.kind == "str"):
            continue  # a command line carries text: "True" or "5" is not the same value there
        for name in wire_names(edge, spec.path):
            wire: dict[str, Any] = {"prompt": "a fox"} if edge != "cli" else {"--prompt": "a fox"}
            _put(wire, name, str(bad) if edge == "cli" else bad)
            exc = _judge(edge, wire)
            assert exc.field == name, (edge, name, str(exc))
            assert exc.reason.startswith(reason), (edge, name, exc.reason)
            seen.add(edge)
    assert seen >= {"http", "dynamo", "ws"}  # every edge that carries the field was tried


@pytest.mark.parametrize("edge,wire,field", [
    ("http", {"prompt": "p", "size": "64x64x2"}, "size"),
    ("dynamo", {"prompt": "p", "size": "64x64x2"}, "size"),
    ("http", {"prompt": "p", "size": "65x64"}, "size"),  # the engine's multiple-of-16 rule, named "size"
    ("dynamo", {"prompt": "p", "size": "65x64"}, "size"),
    ("http", {"prompt": "p", "seconds": 0}, "seconds"),
    ("dynamo", {"prompt": "p", "seconds": "forever"}, "seconds"),
    ("http", {"prompt": "  "}, "prompt"),
    ("dynamo", {"size": "64x64"}, "prompt"),
    ("ws", {"prompt": ""}, "prompt"),
    ("cli", {"--prompt": ""}, "--prompt"),
    ("http", {"prompt": "p", "nvext": {"shift": 2}}, "nvext.shift"),  # not a Dynamo nvext field
    ("dynamo", {"prompt": "p", "extra_args": {"media_passthrough": {"model_path": "/x"}}},
     "extra_args.media_passthrough.model_path"),
    ("http", {"prompt": "p", "extra_args": {"media_passthrough": {"model_path": "/x"}}},
     "extra_args.media_passthrough.model_path"),  # refused, never dropped
])
def test_edge_only_fields_and_unknown_extensions_are_named(edge, wire, field):
    assert _judge(edge, wire).field == field


def test_one_precedence_rule_a_field_given_twice_must_agree():
    same = _translate("http", {"prompt": "p", "seed": 3, "nvext": {"seed": 3}, "size": "64x32", "width": 64})
    assert (same.request.sampling.seed, same.request.sampling.width, same.request.sampling.height) == (3, 64, 32)
    for edge, wire, field, other in [
        ("http", {"prompt": "p", "seed": 3, "nvext": {"seed": 4}}, "nvext.seed", "seed=3"),
        ("dynamo", {"prompt": "p", "nvext": {"seed": 4}, "extra_args": {"media_passthrough": {"seed": 3}}},
         "extra_args.media_passthrough.seed", "nvext.seed=4"),
        ("http", {"prompt": "p", "width": 128, "size": "64x32"}, "width", "size"),
        ("dynamo", {"prompt": "p", "size": "64x32", "extra_args": {"media_passthrough": {"height": 16}}},
         "extra_args.media_passthrough.height", "size"),
    ]:
        with pytest.raises(RequestError) as info:
            _translate(edge, wire)
        assert info.value.field == field and other in str(info.value) and "contradicts" in str(info.value)


def test_one_size_parser():
    assert parse_size("832x480") == parse_size(" 832 X 480 ") == parse_size("832*480") == (832, 480)
    for bad in ("832", "x480", "0x480", "832x480x81", None, 832):
        with pytest.raises(RequestError):
            parse_size(bad)


def test_errors_the_engine_raises_later_are_named_by_the_name_the_client_used():
    translated = _translate("http", {"prompt": "p", "nvext": {"num_inference_steps": 0}})
    with pytest.raises(RequestError) as info:
        resolve_sampling(translated.request, PRESET)
    assert translated.relabel(info.value).field == "nvext.num_inference_steps"
    assert translated.wire_name("sampling.seed") == "seed"  # unset: the edge's first name for it
    assert _translate("dynamo", {"prompt": "p"}).wire_name("sampling.seed") == "nvext.seed"
    assert _translate("cli", {"--prompt": "p"}).wire_name("sampling.num_inference_steps") == "--steps"
    assert _translate("http", {"prompt": "p"}).wire_name("inputs.image_path") == "input_reference"


def test_output_options_are_the_edges_and_return_state_is_asked_the_same_way():
    assert _translate("http", {"prompt": "p", "return_state": "true"}).request.output.return_state
    assert _translate("dynamo", {"prompt": "p", "extra_args": {"media_passthrough": {"return_state": True}}}
                      ).request.output.return_state
    assert not _translate("http", {"prompt": "p"}).request.output.return_state
    assert wire_names("ws", "output.return_state") == () and wire_names("cli", "output.return_state") == ()


def test_dmd_timesteps_travel_as_a_list_on_json_and_comma_separated_on_forms_and_the_cli():
    """FastVideo's ``dmd_denoising_steps`` is a wire field (it was dropped as an unknown key before)."""
    expected = [1000, 757, 522]
    for edge, wire in (("http", {"prompt": "p", "dmd_denoising_steps": [1000, 757, 522]}),
                       ("http", {"prompt": "p", "dmd_denoising_steps": "1000, 757,522"}),  # a form field
                       ("dynamo", {"prompt": "p", "extra_args": {"media_passthrough": {
                           "dmd_denoising_steps": [1000, 757, 522]}}}),
                       ("cli", {"--prompt": "p", "--dmd-denoising-steps": "1000,757,522"})):
        translated = translate_request(edge, wire)
        assert translated.request.sampling.dmd_denoising_steps == expected, (edge, wire)
    with pytest.raises(RequestError) as err:
        translate_request("http", {"prompt": "p", "dmd_denoising_steps": [1000, "x", 522]})
    assert err.value.field == "dmd_denoising_steps[1]"
    with pytest.raises(RequestError) as err:
        translate_request("cli", {"--prompt": "p", "--dmd-denoising-steps": 1000})
    assert err.value.field == "--dmd-denoising-steps" and "list of integers" in err.value.reason
    with pytest.raises(RequestError) as err:
        translate_request("http", {"prompt": "p", "dmd_denoising_steps": list(range(1001))})
    assert "at most 1000" in err.value.reason


@pytest.mark.parametrize("edge,wire,name", [
    ("http", {"prompt": "p", "nvext": {"boundary_ratio": 0.5}}, "nvext.boundary_ratio"),
    ("dynamo", {"prompt": "p", "nvext": {"guidance_scale_2": 3.0}}, "nvext.guidance_scale_2"),
    ("http", {"prompt": "p", "guidance_scale_2": 3.0}, "guidance_scale_2"),
    ("cli", {"--prompt": "p", "--boundary-ratio": "0.9"}, "--boundary-ratio"),
])
def test_two_expert_fields_travel_and_a_one_expert_model_refuses_them_by_the_clients_name(edge, wire, name):
    translated = _translate(edge, wire)
    with pytest.raises(RequestError) as info:
        resolve_sampling(translated.request, PRESET)  # the tiny model has one expert
    assert translated.relabel(info.value).field == name
