"""FastVideo's ``ServeConfig.default_request``: the operator's request defaults fill what each request leaves unset
(negative prompt and the sampling size, frames, fps, steps, guidance, seed, shift, sampler), are what the HTTP API
reports as the model's defaults, and are checked against the model once; other fields are refused by name. Real
uvicorn on 127.0.0.1 over the tiny model."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("fastapi")

import httpx  # noqa: E402

from fastvideo.api import ConfigError, GenerationRequest, SamplingConfig, parse_config  # noqa: E402
from fastvideo.serving.config import (  # noqa: E402
    ServeConfig,
    apply_request_defaults,
    check_serve_config,
    request_defaults,
)
from serving_utils import inproc_server, wait_job  # noqa: E402

DEFAULTS = {"negative_prompt": "blurry", "sampling": {"width": 48, "height": 32, "num_frames": 5, "fps": 8,
                                                      "num_inference_steps": 1, "seed": 7}}


def test_request_defaults_fill_only_what_a_request_leaves_unset():
    config = parse_config(ServeConfig, {"default_request": {**DEFAULTS, "output": {"return_frames": False}}})
    defaults = request_defaults(check_serve_config(config))
    assert defaults == {"negative_prompt": "blurry", "sampling.width": 48, "sampling.height": 32,
                        "sampling.num_frames": 5, "sampling.fps": 8, "sampling.num_inference_steps": 1,
                        "sampling.seed": 7}
    request = apply_request_defaults(GenerationRequest(prompt="p", sampling=SamplingConfig(width=64, seed=1)),
                                     defaults)
    assert (request.sampling.width, request.sampling.seed, request.sampling.height) == (64, 1, 32)  # the request wins
    assert request.negative_prompt == "blurry"
    assert request_defaults(parse_config(ServeConfig, {})) == {}


@pytest.mark.parametrize("data,path", [
    ({"sampling": {"sigmas": [1.0, 0.0]}}, "default_request.sampling.sigmas"),
    ({"output": {"output_path": "x.mp4"}}, "default_request.output.output_path"),
    ({"inputs": {"image_path": "a.png"}}, "default_request.inputs.image_path"),
    ({"prompt": "always this"}, "default_request.prompt"),
])
def test_other_default_request_fields_are_refused_by_name(data, path):
    with pytest.raises(ConfigError) as info:
        check_serve_config(parse_config(ServeConfig, {"default_request": data}))
    assert info.value.path == path and "not supported yet" in str(info.value)


def test_a_default_the_model_cannot_run_is_refused_when_the_app_is_built(tiny_generator, tmp_path):
    from fastvideo.serving.app import build_app

    config = parse_config(ServeConfig, {"server": {"output_dir": str(tmp_path), "warmup": False},
                                        "default_request": {"sampling": {"width": 50}}})
    with pytest.raises(ConfigError) as info:
        build_app(config, tiny_generator)
    assert info.value.path == "default_request.sampling.width"


def test_http_jobs_take_the_operator_defaults(tiny_generator, tmp_path):
    av = pytest.importorskip("av")
    with inproc_server(tiny_generator, tmp_path, default_request=DEFAULTS) as srv, \
            httpx.Client(base_url=srv.base_url, timeout=60) as client:
        created = client.post("/v1/videos", json={"prompt": "a fox"})
        assert created.status_code == 200, created.text
        assert created.json()["size"] == "48x32" and created.json()["seconds"] == "0.625"  # 5 frames at 8 fps
        video = wait_job(client, created.json()["id"])
        assert video["status"] == "completed", video
        content = client.get(f"/v1/videos/{video['id']}/content")
        with av.open(io.BytesIO(content.content)) as container:
            stream = container.streams.video[0]
            frames = sum(1 for _ in container.decode(stream))
            assert (stream.codec_context.width, stream.codec_context.height, frames) == (48, 32, 5)
        asked = client.post("/v1/videos", json={"prompt": "a boat", "size": "64x32"})  # the request wins
        assert asked.json()["size"] == "64x32"
        assert wait_job(client, asked.json()["id"])["status"] == "completed"
