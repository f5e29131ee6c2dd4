"""One road: ``fastvideo serve``, the WebSocket stream and ``fastvideo generate`` run the generator's engine core
(its executor counts every generation), and a bad value is refused on each real edge naming the field as that
edge's client wrote it (the Dynamo worker: ``tests/dynamo/test_dynamo_handler.py``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
websockets_sync = pytest.importorskip("websockets.sync.client")

from serving_utils import inproc_server, wait_job  # noqa: E402

from fastvideo.serving import cli  # noqa: E402

SMALL = {"size": "64x64", "num_frames": 5, "num_inference_steps": 2, "seed": 5}


def _delta(generator: Any, before: dict[str, int]) -> dict[str, int]:
    after = generator.counters.snapshot()
    return {k: after[k] - before[k] for k in ("generations_started", "generations_completed")}


def test_http_and_ws_jobs_run_through_the_engine_core_and_bad_values_name_the_client_field(tiny_generator,
                                                                                           tmp_path):
    with inproc_server(tiny_generator, tmp_path) as srv:
        before = tiny_generator.counters.snapshot()
        video = httpx.post(f"{srv.base_url}/v1/videos", json={"prompt": "a fox", **SMALL}, timeout=60).json()
        with httpx.Client(base_url=srv.base_url, timeout=60) as client:
            assert wait_job(client, video["id"])["status"] == "completed"
        assert _delta(tiny_generator, before) == {"generations_started": 1, "generations_completed": 1}

        for body, param in (({"prompt": "p", "nvext": {"num_inference_steps": 0}}, "nvext.num_inference_steps"),
                            ({"prompt": "p", "num_inference_steps": 0}, "num_inference_steps"),
                            ({"prompt": "p", "size": "65x64"}, "size"),
                            ({"prompt": "p", "width": 65}, "width"),
                            ({"prompt": "p", "shift": "strong"}, "shift"),
                            ({"prompt": "p", "seed": 1, "nvext": {"seed": 2}}, "nvext.seed")):
            r = httpx.post(f"{srv.base_url}/v1/videos", json=body, timeout=60)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
            assert r.json()["error"]["message"].startswith(f"{param}: "), r.text

        ws_url = srv.base_url.replace("http://", "ws://") + "/v1/stream"
        with websockets_sync.connect(ws_url, max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", "num_inference_steps": 0}))
            err = json.loads(ws.recv(timeout=30))
            assert (err["code"], err["param"]) == ("invalid_message", "num_inference_steps"), err
            assert "0 is out of range; use 1..1000" in err["message"]
            ws.send(json.dumps({"type": "session_init_v2", "width": 64, "height": 64, "num_frames": 5,
                                "num_inference_steps": "2"}))  # a numeric string is 2, as on every edge
            assert json.loads(ws.recv(timeout=30))["type"] == "ltx2_stream_start"
            ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "p", "guidance_scale": "high"}))
            err = json.loads(ws.recv(timeout=30))
            assert (err["code"], err["param"]) == ("invalid_request", "guidance_scale"), err
            before = tiny_generator.counters.snapshot()
            ws.send(json.dumps({"type": "segment_prompt_source", "prompt": "a kite"}))
            while True:
                msg = ws.recv(timeout=120)
                if isinstance(msg, str) and json.loads(msg)["type"] == "ltx2_segment_complete":
                    break
            assert _delta(tiny_generator, before) == {"generations_started": 1, "generations_completed": 1}


def test_cli_generate_runs_through_the_engine_core(tiny_model_dir, tmp_path, monkeypatch):
    from fastvideo.runtime.generator import VideoGenerator

    built: list[VideoGenerator] = []
    original = VideoGenerator.from_config.__func__  # type: ignore[attr-defined]

    def capture(cls, config):  # the real loader; we only keep the instance to read its counters
        generator = original(cls, config)
        built.append(generator)
        return generator

    monkeypatch.setattr(VideoGenerator, "from_config", classmethod(capture))
    out = tmp_path / "fox.mp4"
    code = cli.main(["generate", "--prompt", "a fox", "--model-path", str(tiny_model_dir), "--device", "cpu",
                     "--output", str(out), "--width", "64", "--height", "32", "--num-frames", "5", "--steps", "2"])
    assert code == 0 and out.stat().st_size > 0
    (generator,) = built
    counts = generator.counters.snapshot()
    assert (counts["generations_started"], counts["generations_completed"]) == (1, 1)


def test_cli_refuses_a_bad_flag_value_before_loading_the_model(tmp_path, capsys, monkeypatch):
    from fastvideo.runtime.generator import VideoGenerator

    def no_load(cls, config):
        raise AssertionError("the model must not load for a request that cannot run")

    monkeypatch.setattr(VideoGenerator, "from_config", classmethod(no_load))
    assert cli.main(["generate", "--prompt", "p", "--steps", "two", "--output", str(tmp_path / "x.mp4")]) == 2
    assert "invalid input: --steps: must be an integer, got 'two'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
