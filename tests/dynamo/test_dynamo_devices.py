"""The Dynamo worker with ``--devices``: flag parsing, refusals, and the worker it builds (a DevicePool of two CPU
workers behind the handler, which runs one request per device at once); end to end through Dynamo's frontend
when ``ai-dynamo`` is installed."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from fastvideo.serving.dynamo.args import build_generator_config, build_pool_config, parse_args

SMALL = {"num_frames": 5, "num_inference_steps": 8, "fps": 8, "seed": 3}


def _request(**fields: Any) -> dict[str, Any]:
    nvext = {**SMALL, **fields.pop("nvext", {})}
    return {"prompt": "a red fox in snow", "model": "fastvideo-tiny", "size": "64x64", "response_format": "b64_json",
            "nvext": nvext, **fields}


def test_devices_flag_maps_to_a_pool_config_and_the_engine_device():
    args = parse_args(["--devices", "0, cuda:1"])
    assert args.devices == ["cuda:0", "cuda:1"] and args.device == "cuda:0"
    assert build_generator_config(args).engine.device == "cuda:0"  # the first device runs this process's engine
    assert build_pool_config(args).devices == ["cuda:0", "cuda:1"]
    cpu = parse_args(["--devices", "cpu,cpu", "--device", "cpu"])
    assert cpu.devices == ["cpu", "cpu"] and build_pool_config(cpu).devices == ["cpu", "cpu"]
    assert parse_args([]).devices is None and build_pool_config(parse_args([])) is None


@pytest.mark.parametrize("argv,needle", [
    (["--devices", "0,0"], "--devices '0,0': devices[1]: cuda:0 is listed twice"),
    (["--devices", "0,gpu"], "devices[1]: 'gpu' is not a device"),
    (["--devices", "cpu,0"], "devices[1]: cuda:0 mixes CPU and CUDA workers"),
    (["--devices", "0,1", "--device", "cuda:1"], "--device cuda:1 is not the first of --devices cuda:0,cuda:1"),
    (["--devices", "cpu,cpu", "--no-warmup"], "--no-warmup cannot be used with --devices"),
])
def test_bad_devices_exit_2_naming_the_flag(argv, needle, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2 and needle in capsys.readouterr().err


def test_a_device_the_machine_lacks_exits_2_before_the_model_loads(capsys):
    pytest.importorskip("dynamo.llm", reason="main() needs NVIDIA Dynamo installed")
    import torch

    from fastvideo.serving.dynamo.main import main

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert main(["--devices", f"0,{count}" if count else "0", "--discovery-backend", "file"]) == 2
    err = capsys.readouterr().err
    assert (f"--devices[1]: cuda:{count} does not exist" if count else "--devices[0]: cuda:0 needs CUDA") in err


def test_worker_with_two_cpu_devices_runs_a_request_on_each(tiny_generator, tmp_path: Path, fake_context):
    """What ``main`` builds for ``--devices cpu,cpu``: a booted DevicePool over the loaded generator and a handler
    running two requests at once, one per worker (the pool's counters say which served what)."""
    from fastvideo import DevicePool
    from fastvideo.serving.dynamo.main import build_engine, build_handler

    args = parse_args(["--devices", "cpu,cpu", "--media-output-fs-url", f"file://{tmp_path}"])
    engine = build_engine(args, tiny_generator)
    try:
        assert isinstance(engine, DevicePool)
        infos = {i.worker_id: i for i in engine.info()}
        assert [i.status for i in infos.values()] == ["ready", "ready"] and infos["worker1"].pid != os.getpid()
        handler = build_handler(args, tiny_generator, engine, label="test")

        async def run() -> list[list[dict[str, Any]]]:
            async def one(i: int) -> list[dict[str, Any]]:
                return [c async for c in handler.generate(_request(nvext={"seed": i}), fake_context(f"ctx-{i}"))]

            return list(await asyncio.gather(one(1), one(2), one(3)))

        replies = asyncio.run(run())
        assert [[c["status"] for c in chunks] for chunks in replies] == [["completed"]] * 3
        assert all(chunks[0]["data"][0]["b64_json"] for chunks in replies)
        served = {i.worker_id: i.completed for i in engine.info()}
        assert served["worker0"] >= 1 and served["worker1"] >= 1 and sum(served.values()) == 3

        async def bad() -> list[dict[str, Any]]:
            return [c async for c in handler.generate(_request(size="30x30"), fake_context("ctx-bad"))]

        (failed,) = asyncio.run(bad())
        assert failed["status"] == "failed" and "invalid request" in failed["error"]
        assert sum(i.completed + i.failed for i in engine.info()) == 3  # refused before any worker saw it
    finally:
        if isinstance(engine, DevicePool):
            engine.stop()


@pytest.mark.dynamo
@pytest.mark.timeout(300)
def test_one_dynamo_instance_serves_two_devices(tiny_model_dir: Path, fastvideo_cache: Path):
    """``python -m fastvideo.serving.dynamo --devices cpu,cpu`` behind Dynamo's frontend: one instance, two
    workers, two concurrent requests both answered."""
    pytest.importorskip("dynamo.llm", reason="NVIDIA Dynamo is not installed")
    from fastvideo.serving.dynamo.local import ClusterConfig, LocalDynamoCluster, http_json

    config = ClusterConfig(workers=1, worker_args=["--device", "cpu"], worker_devices=["cpu,cpu"],
                           threads_per_worker=1, env={"FASTVIDEO_CACHE_DIR": str(fastvideo_cache)},
                           startup_timeout_s=240)
    with LocalDynamoCluster(config) as cluster:
        assert cluster.instances() == 1
        assert "device pool ready: 2/2 workers" in cluster.worker_log(0)
        results: list[tuple[int, Any]] = []
        threads = [threading.Thread(target=lambda i=i: results.append(
            http_json("POST", cluster.base_url, "/v1/videos", _request(nvext={"seed": i}), timeout=120)))
            for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=150)
        assert len(results) == 2 and all(status == 200 and body["status"] == "completed" for status, body in results)
