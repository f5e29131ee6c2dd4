"""One VideoGenerator over 2 sequence-parallel ranks (engine.num_gpus=2) on the CPU, gloo, built-in tiny Wan.

One 2-rank generator serves the module: its video equals the single-process generator's for the same request and
seed, progress comes from rank 0, errors and cancellations keep the ranks in step, a killed rank fails the
request instead of hanging, and shutdown leaves no rank process behind. Bad combinations are refused by name
before anything is spawned.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import numpy as np
import pytest
import torch

from fastvideo.api import (ConfigError, GenerationRequest, GeneratorConfig, RequestError, VideoFinalEvent,
                           VideoProgressEvent, parse_config)
from fastvideo.engine.state_codec import decode_latent_state
from fastvideo.runtime.generator import GeneratorClosed, VideoGenerator
from fastvideo.runtime.sp_group import SequenceParallelGenerator, SequenceParallelGroupError, sp_devices

dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover - torch builds without distributed
    pytest.skip("torch.distributed is unavailable in this torch build", allow_module_level=True)

TOLERANCE = 1e-5  # as tests/engine/test_sequence_parallel.py: float reordering only
# 48x80, 5 frames: latent 2 x 6 x 10, patch (1, 2, 2) -> 30 tokens, 15 per rank
REQUEST = {"prompt": "a red fox in the snow", "negative_prompt": "blurry",
           "sampling": {"width": 80, "height": 48, "num_frames": 5, "num_inference_steps": 3, "guidance_scale": 5.0,
                        "seed": 7},
           "output": {"save_video": False, "return_frames": True, "return_state": True}}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not running: /proc says so
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def sp_generator():
    generator = VideoGenerator.from_pretrained(device="cpu", num_gpus=2, sp_size=-1)
    yield generator
    generator.shutdown()


@pytest.fixture(scope="module")
def single_result():
    with VideoGenerator.from_config({"engine": {"device": "cpu"}}) as generator:
        return generator.generate(REQUEST)


def test_two_ranks_give_the_single_process_video(sp_generator, single_result) -> None:
    assert isinstance(sp_generator, SequenceParallelGenerator)
    assert sp_generator.devices == ["cpu", "cpu"]
    # every rank's DiT is wired to the 2-rank group (the forward really is shared)
    assert [sp_generator.group.rank_info[r]["dit_sp_world_size"] for r in (0, 1)] == [2, 2]
    steps: list[tuple[int, int]] = []
    result = sp_generator.generate(REQUEST, on_step=lambda step, total: steps.append((step, total)))
    assert steps == [(1, 3), (2, 3), (3, 3)]  # rank 0's progress, once per step
    assert result.metadata["sp_size"] == 2 and result.metadata["seed"] == 7
    assert result.frames.shape == single_result.frames.shape == (5, 48, 80, 3)
    assert result.samples.shape == (1, 3, 5, 48, 80)
    frame_diff = np.abs(result.frames.astype(np.int16) - single_result.frames.astype(np.int16)).max()
    assert frame_diff <= 1  # uint8 rounding of float-reordered pixels
    sp_latents, _ = decode_latent_state(result.state)
    one_latents, _ = decode_latent_state(single_result.state)
    scale = one_latents.abs().max().item()
    latent_diff = (sp_latents - one_latents).abs().max().item()
    print(f"SP=2 vs 1 generator: latent max abs diff {latent_diff:.2e} (scale {scale:.2f}), frames {frame_diff}")
    assert scale > 0.1
    assert latent_diff <= TOLERANCE * max(1.0, scale)


def test_generate_async_streams_rank_zero_progress_then_one_final_event(sp_generator) -> None:
    async def collect() -> list:
        request = {**REQUEST, "sampling": {**REQUEST["sampling"], "seed": None, "num_inference_steps": 2},
                   "output": {"save_video": False}}
        return [event async for event in sp_generator.generate_async(request)]

    events = asyncio.run(collect())
    assert [(e.step, e.total_steps) for e in events[:-1] if isinstance(e, VideoProgressEvent)] == [(1, 2), (2, 2)]
    assert len(events) == 3 and isinstance(events[-1], VideoFinalEvent)
    assert events[-1].video_bytes and events[-1].video_bytes[4:8] == b"ftyp"  # an MP4, from rank 0
    assert isinstance(events[-1].result.metadata["seed"], int)  # the parent picked one seed for every rank


def test_a_bad_request_fails_on_every_rank_and_the_group_keeps_serving(sp_generator) -> None:
    with pytest.raises(RequestError) as info:
        sp_generator.generate({**REQUEST, "sampling": {**REQUEST["sampling"], "width": 81}})
    assert info.value.field == "sampling.width"
    assert sp_generator.group.alive
    result = sp_generator.generate({**REQUEST, "sampling": {**REQUEST["sampling"], "num_inference_steps": 1}})
    assert result.frames.shape == (5, 48, 80, 3)


def test_closing_the_stream_early_keeps_the_ranks_in_step(sp_generator) -> None:
    async def first_event_then_close() -> None:
        request = {**REQUEST, "sampling": {**REQUEST["sampling"], "num_inference_steps": 6}}
        events = sp_generator.generate_async(request)
        async for event in events:
            assert isinstance(event, VideoProgressEvent)
            break
        await events.aclose()  # cancelled: every rank stops at the same step (or finishes the same one)

    asyncio.run(first_event_then_close())
    result = sp_generator.generate({**REQUEST, "sampling": {**REQUEST["sampling"], "num_inference_steps": 1}})
    assert result.frames is not None and sp_generator.group.alive


def test_the_dynamo_warmup_request_is_the_probe_and_pools_and_serve_refuse_it_by_name(sp_generator) -> None:
    from fastvideo.api.serve import PoolConfig, ServeConfig
    from fastvideo.runtime.device_pool import DevicePool
    from fastvideo.serving.config import check_serve_config

    # what the Dynamo worker's --warmup runs: VideoGenerator's probe (a text-to-video model needs no image)
    assert sp_generator.warmup_request() == VideoGenerator.default_health_check_request()
    with pytest.raises(ConfigError) as info:
        DevicePool(sp_generator, PoolConfig(devices=["cpu"]))
    assert info.value.path == "engine.num_gpus"
    serve = parse_config(ServeConfig, {"generator": {"engine": {"device": "cpu", "num_gpus": 2}}})
    with pytest.raises(ConfigError) as info:
        check_serve_config(serve)
    assert info.value.path == "generator.engine.num_gpus" and "pool.devices" in str(info.value)


def test_shutdown_stops_every_rank_cleanly(sp_generator) -> None:
    processes = list(sp_generator.group._processes)
    pids = [p.pid for p in processes]
    assert all(_alive(pid) for pid in pids)
    sp_generator.shutdown()
    assert [p.exitcode for p in processes] == [0, 0]  # they left on "stop", none had to be terminated
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(GeneratorClosed):
        sp_generator.generate(REQUEST)
    sp_generator.shutdown()  # twice is fine


def test_a_gpu_pool_serves_through_one_sequence_parallel_worker() -> None:
    from fastvideo.runtime.pool import GpuPool
    from fastvideo.runtime.sp_group import SequenceParallelWorker

    worker = SequenceParallelWorker("sp0", {"engine": {"device": "cpu", "num_gpus": 2}})
    pool = GpuPool([worker])
    try:
        infos = pool.start()  # boots the group and runs the health-check request on both ranks
        assert [i.status for i in infos] == ["ready"] and worker.device == "cpu,cpu"
        steps: list[tuple[int, int]] = []
        started: list[bool] = []
        request = {**REQUEST, "sampling": {**REQUEST["sampling"], "num_inference_steps": 2}}
        result = pool.submit(request, on_progress=lambda step, total: steps.append((step, total)),
                             on_start=lambda: started.append(True)).result(timeout=120)
        assert result.metadata["sp_size"] == 2 and result.frames.shape == (5, 48, 80, 3)
        assert steps == [(1, 2), (2, 2)] and started == [True]
        with pytest.raises(RequestError) as info:  # the field survives the pool's error mapping
            pool.submit({**REQUEST, "sampling": {**REQUEST["sampling"], "width": 81}}).result(timeout=60)
        assert info.value.field == "sampling.width"
        pids = [p.pid for p in worker.group._processes]
    finally:
        pool.stop()
    assert [p.exitcode for p in worker.group._processes] == [0, 0]
    assert not any(_alive(pid) for pid in pids)


def test_a_dead_rank_fails_the_request_and_no_process_is_left() -> None:
    from fastvideo.runtime.sp_group import SequenceParallelGroup

    group = SequenceParallelGroup(parse_config(GeneratorConfig, {"engine": {"device": "cpu", "num_gpus": 2}}))
    group.start()
    try:
        pids = list(group.pids)
        long_request = {**REQUEST, "sampling": {**REQUEST["sampling"], "num_inference_steps": 50}}
        future = group.submit(parse_config(GenerationRequest, long_request))
        os.kill(pids[1], signal.SIGKILL)
        with pytest.raises(SequenceParallelGroupError, match=r"rank 1 .*died: exit code -9"):
            future.result(timeout=60)
        with pytest.raises(SequenceParallelGroupError, match="broken"):
            group.submit(parse_config(GenerationRequest, REQUEST))
    finally:
        group.stop(timeout=5.0)
    deadline = time.monotonic() + 30  # the group stops rank 0 itself once rank 1 died
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"engine": {"device": "cpu", "num_gpus": 2, "parallelism": {"sp_size": 1}}}, "engine.parallelism.sp_size",
     "sp_size < num_gpus"),
    ({"engine": {"device": "cpu", "num_gpus": 4, "parallelism": {"sp_size": 2}}}, "engine.parallelism.sp_size",
     "set engine.num_gpus=2"),
    ({"engine": {"device": "cpu", "num_gpus": 2, "parallelism": {"tp_size": 2}}}, "engine.parallelism.tp_size",
     "tensor parallelism"),
    ({"engine": {"device": "cpu", "num_gpus": 2, "compile": {"enabled": True}}}, "engine.compile.enabled",
     "engine.num_gpus=2"),
])
def test_combinations_that_are_not_one_sp_group_are_refused_before_any_spawn(data, field, words) -> None:
    with pytest.raises(ConfigError) as info:
        VideoGenerator.from_config(data)
    assert info.value.path == field
    assert words in str(info.value)


def test_more_gpus_than_visible_is_refused_naming_num_gpus(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    config = parse_config(GeneratorConfig, {"engine": {"device": "cuda", "num_gpus": 4}})
    with pytest.raises(ConfigError) as info:
        sp_devices(config)
    assert info.value.path == "engine.num_gpus" and "only 2 are visible" in str(info.value)
    assert sp_devices(parse_config(GeneratorConfig, {"engine": {"device": "cuda:1", "num_gpus": 1}})) == ["cuda:1"]
    assert sp_devices(parse_config(GeneratorConfig, {"engine": {"device": "cuda", "num_gpus": 2}})) == \
        ["cuda:0", "cuda:1"]


def test_a_missing_model_folder_is_refused_before_any_spawn(tmp_path) -> None:
    from fastvideo.api.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="missing-model"):
        VideoGenerator.from_config({"model_path": str(tmp_path / "missing-model"),
                                    "engine": {"device": "cpu", "num_gpus": 2}})


def test_a_rank_that_fails_to_boot_stops_the_group_with_its_error() -> None:
    from fastvideo.runtime.sp_group import SequenceParallelGroup

    config = parse_config(GeneratorConfig, {"engine": {"device": "cpu", "num_gpus": 2,
                                                       "attention_backend": "no-such-backend"}})
    group = SequenceParallelGroup(config, boot_timeout_s=120)
    with pytest.raises(SequenceParallelGroupError, match=r"rank \d failed to boot: AttentionBackendError: unknown "
                                                         r"attention backend 'no-such-backend'"):
        group.start()  # raised by the ranks while loading the model
    assert len(group._processes) == 2
    assert all(process.exitcode is not None for process in group._processes)  # stopped and reaped
    with pytest.raises(SequenceParallelGroupError):
        group.submit(parse_config(GenerationRequest, REQUEST))
