"""NvCreateVideoRequest dict -> GenerationRequest mapping and NvVideosResponse builders (no Dynamo needed)."""

from __future__ import annotations

import pytest

from fastvideo.api import ContinuationState, RequestError, parse_size
from fastvideo.api.wire import PASSTHROUGH_KEYS
from fastvideo.serving.dynamo.protocol import (
    RequestDefaults,
    completed_response,
    failed_response,
    progress_response,
    safe_id,
    to_generation_request,
)


def _req(**fields):
    base = {"prompt": "a red fox", "model": "fastvideo-tiny"}
    base.update(fields)
    return base


def test_full_mapping_of_dynamo_fields():
    parsed = to_generation_request(_req(size="832x480", seconds=2, input_reference="/tmp/ref.png",
                                        response_format="b64_json", stream=True,
                                        nvext={"fps": 8, "num_inference_steps": 3, "guidance_scale": 4.5,
                                               "seed": 7, "negative_prompt": "blur"}), request_id="video-x")
    r = parsed.request
    assert (r.sampling.width, r.sampling.height) == (832, 480)
    assert r.sampling.num_frames == 16  # seconds * fps
    assert (r.sampling.fps, r.sampling.num_inference_steps, r.sampling.guidance_scale,
            r.sampling.seed) == (8, 3, 4.5, 7)
    assert r.negative_prompt == "blur" and r.inputs.image_path == "/tmp/ref.png"
    assert r.request_id == "video-x" and r.output.save_video is False and r.output.return_frames is False
    assert parsed.stream and parsed.response_format == "b64_json" and parsed.output_format == "mp4"
    assert parsed.model == "fastvideo-tiny" and not parsed.return_state


def test_num_frames_overrides_seconds_times_fps():
    parsed = to_generation_request(_req(seconds=4, nvext={"fps": 8, "num_frames": 5}))
    assert parsed.request.sampling.num_frames == 5


def test_seconds_without_fps_uses_worker_default_fps():
    parsed = to_generation_request(_req(seconds="3"), RequestDefaults(fps=16))
    assert parsed.request.sampling.num_frames == 48 and parsed.request.sampling.fps == 16


def test_unset_fields_stay_none_for_the_preset():
    s = to_generation_request(_req()).request.sampling
    assert (s.width, s.height, s.num_frames, s.fps, s.num_inference_steps, s.guidance_scale, s.seed) == (None,) * 7


def test_default_response_format_comes_from_the_worker():
    assert to_generation_request(_req()).response_format == "url"
    assert to_generation_request(_req(), RequestDefaults(response_format="b64_json")).response_format == "b64_json"


@pytest.mark.parametrize("size", ["abc", "64", "64x", "x64", "0x64", "64x64x5", 640])
def test_bad_size_names_the_field(size):
    with pytest.raises(RequestError) as info:
        to_generation_request(_req(size=size))
    assert info.value.field == "size"
    assert "WIDTHxHEIGHT" in str(info.value) or "zero side" in str(info.value)


def test_parse_size_accepts_spaces_and_uppercase():
    assert parse_size(" 64 X 32 ") == (64, 32)
    assert parse_size("64*32") == parse_size("64\u00d732") == (64, 32)
    with pytest.raises(RequestError):
        parse_size(None)


@pytest.mark.parametrize("prompt", [None, "", "   ", 3])
def test_missing_prompt_is_a_clear_error(prompt):
    request = _req(prompt=prompt)
    if prompt is None:
        del request["prompt"]
    with pytest.raises(RequestError, match="prompt: (is required|must be a string)"):
        to_generation_request(request)


@pytest.mark.parametrize("field,value,match", [
    ("response_format", "png", "response_format"),
    ("output_format", "mjpeg", "output_format"),
    ("stream", "yes", "stream"),
    ("seconds", 0, "seconds: 0 is out of range"),
    ("seconds", "four", "seconds: must be a number"),
    ("nvext", [1], "nvext: must be an object"),
])
def test_bad_top_level_values(field, value, match):
    with pytest.raises(RequestError, match=match):
        to_generation_request(_req(**{field: value}))


@pytest.mark.parametrize("nvext,match", [
    ({"num_frames": "many"}, "nvext.num_frames: must be an integer"),
    ({"guidance_scale": "high"}, "nvext.guidance_scale: must be a number"),
    ({"num_inference_steps": True}, "nvext.num_inference_steps: must be an integer"),
    ({"frobnicate": 1}, "unknown nvext field"),
    ({"boundary_ratio": "half"}, "nvext.boundary_ratio: must be a number"),
])
def test_bad_nvext_values(nvext, match):
    with pytest.raises(RequestError, match=match):
        to_generation_request(_req(nvext=nvext))


def test_moe_nvext_keys_left_unset_are_accepted():
    parsed = to_generation_request(_req(nvext={"boundary_ratio": None, "guidance_scale_2": None,
                                               "annotations": ["x"]}))
    assert (parsed.request.sampling.boundary_ratio, parsed.request.sampling.guidance_scale_2) == (None, None)


def test_moe_nvext_keys_reach_the_request_for_two_expert_models():
    """Dynamo's MoE options are carried to the engine (which honours them on Wan2.2 A14B and refuses them, naming
    the field, on a one-expert model); they used to be refused here for every model."""
    parsed = to_generation_request(_req(nvext={"boundary_ratio": 0.9, "guidance_scale_2": 3.0}))
    assert (parsed.request.sampling.boundary_ratio, parsed.request.sampling.guidance_scale_2) == (0.9, 3.0)


def test_unknown_top_level_keys_are_ignored_and_markers_are_silent(caplog):
    caplog.set_level("INFO")
    to_generation_request(_req(quality="hd", _HEALTH_CHECK=True))
    assert "quality" in caplog.text and "_HEALTH_CHECK" not in caplog.text


def test_media_passthrough_knobs_apply_and_a_contradicting_nvext_value_is_refused():
    extra = {"media_passthrough": {"num_frames": 9, "seed": 2, "shift": 5.0, "sampler": "euler", "width": 64,
                                   "height": 32, "true_cfg_scale": 2.0, "continuation_strength": 0.5}}
    parsed = to_generation_request(_req(extra_args=extra, nvext={"seed": 2}))  # the same value twice is fine
    s = parsed.request.sampling
    assert (s.num_frames, s.seed, s.shift, s.sampler, s.width, s.height) == (9, 2, 5.0, "euler", 64, 32)
    assert (s.true_cfg_scale, s.continuation_strength) == (2.0, 0.5)
    with pytest.raises(RequestError, match="contradicts nvext.seed=1") as info:
        to_generation_request(_req(extra_args=extra, nvext={"seed": 1}))
    assert info.value.field == "extra_args.media_passthrough.seed"


def test_unknown_media_passthrough_key_is_rejected_with_the_accepted_list():
    with pytest.raises(RequestError) as info:
        to_generation_request(_req(extra_args={"media_passthrough": {"model_path": "/etc", "num_frames": 5}}))
    assert info.value.field == "extra_args.media_passthrough.model_path"
    assert all(key in str(info.value) for key in sorted(PASSTHROUGH_KEYS))


def test_passthrough_size_contradicting_size_is_rejected():
    with pytest.raises(RequestError, match="contradicts"):
        to_generation_request(_req(size="64x64", extra_args={"media_passthrough": {"width": 128}}))


def test_continuation_state_from_nvext_or_passthrough():
    state = {"kind": "wan.v1", "payload": {"schema_version": 1, "segment_index": 0}}
    for request in (_req(nvext={"continuation_state": state}),
                    _req(extra_args={"media_passthrough": {"continuation_state": state}})):
        parsed = to_generation_request(request)
        assert isinstance(parsed.request.state, ContinuationState) and parsed.request.state.kind == "wan.v1"
        assert parsed.return_state and parsed.request.output.return_state
    as_json = ContinuationState(kind="wan.v1", payload={"schema_version": 1}).to_json()
    assert to_generation_request(_req(nvext={"continuation_state": as_json})).request.state is not None


@pytest.mark.parametrize("state,match", [
    ({"kind": "nope.v9", "payload": {"schema_version": 1}}, "unknown continuation state kind"),
    ({"kind": "wan.v1", "payload": {"schema_version": 99}}, "schema_version"),
    ({"payload": {}}, "kind"),
    ("{not json", "not valid JSON"),
    (5, "must be a ContinuationState"),
])
def test_bad_continuation_state_is_a_request_error(state, match):
    with pytest.raises(RequestError, match=match) as info:
        to_generation_request(_req(nvext={"continuation_state": state}))
    assert info.value.field == "nvext.continuation_state"


def test_return_state_passthrough():
    assert to_generation_request(_req(extra_args={"media_passthrough": {"return_state": True}})).return_state
    with pytest.raises(RequestError, match="return_state"):
        to_generation_request(_req(extra_args={"media_passthrough": {"return_state": "yes"}}))


def test_response_builders_have_the_nv_videos_response_shape():
    done = completed_response("video-1", "m", output_format="mp4", b64_json="QUJD", fps=8, inference_time_s=0.5)
    assert set(done) == {"id", "object", "model", "status", "progress", "created", "data", "inference_time_s"}
    assert (done["object"], done["status"], done["progress"]) == ("video", "completed", 100)
    assert done["data"] == [{"output_format": "mp4", "b64_json": "QUJD", "fps": 8}]
    url = completed_response("video-1", "m", output_format="mp4", url="file:///x.mp4")
    assert url["data"] == [{"output_format": "mp4", "url": "file:///x.mp4"}]
    state = ContinuationState(kind="wan.v1", payload={"schema_version": 1})
    with_state = completed_response("v", "m", output_format="mp4", url="u", continuation_state=state)
    assert with_state["nvext"]["continuation_state"] == state.to_dict()
    with pytest.raises(ValueError):
        completed_response("v", "m", output_format="mp4")
    failed = failed_response("video-1", "m", "size: bad")
    assert (failed["status"], failed["progress"], failed["data"], failed["error"]) == ("failed", 0, [], "size: bad")
    progress = [progress_response("v", "m", step=i, total_steps=4)["progress"] for i in range(1, 5)]
    assert progress == sorted(progress) and progress[-1] < 100


def test_safe_id():
    assert safe_id("5d9bea95-dcbe-4fd1-b769-fe0cc607fd7d") == "5d9bea95-dcbe-4fd1-b769-fe0cc607fd7d"
    assert safe_id("../../etc/passwd") == "etc-passwd"
    assert safe_id("///") == "request"
