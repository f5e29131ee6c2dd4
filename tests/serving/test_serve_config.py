"""``fastvideo serve`` config: the runtime sections are the runtime's own dataclasses, passed down as they are;
every field works or is refused naming its dotted path; ``pool.devices`` / ``--devices`` is checked at load."""

from __future__ import annotations

import asyncio

import pytest

from fastvideo.api import ConfigError
from fastvideo.runtime.pool import PoolConfig
from fastvideo.runtime.scheduler import SchedulerConfig
from fastvideo.runtime.service import ServiceConfig, VideoService
from fastvideo.runtime.worker import WorkerConfig
from fastvideo.serving.config import QueueConfig, load_serve_config


def test_queue_keys_keep_working_and_the_section_is_passed_down_as_is():
    pytest.importorskip("fastapi")
    from fastvideo.serving.app import service_config

    config = load_serve_config(overrides=["queue.max_batch=4", "queue.max_queue=9", "queue.max_bypass=2",
                                          "queue.retry_after_s=3", "server.job_ttl_s=30",
                                          "server.drain_timeout_s=7", "pool.stop_timeout_s=12"])
    assert QueueConfig is SchedulerConfig and isinstance(config.queue, SchedulerConfig)
    assert (config.queue.max_batch, config.queue.max_queue, config.queue.max_bypass,
            config.queue.retry_after_s) == (4, 9, 2, 3)
    service = service_config(config)
    assert service.worker.scheduler is config.queue and service.pool is config.pool  # nested, not copied
    assert (service.job_ttl_s, service.drain_timeout_s, service.pool.stop_timeout_s) == (30.0, 7.0, 12.0)
    assert load_serve_config().server.job_ttl_s == 120.0  # the value app.py used to hard-code, now a default


@pytest.mark.parametrize("override,path", [
    ("queue.max_batch=0", "queue.max_batch"),
    ("queue.max_queue=0", "queue.max_queue"),
    ("queue.max_bypass=-1", "queue.max_bypass"),
    ("queue.retry_after_s=-1", "queue.retry_after_s"),
    ("pool.boot_timeout_s=0", "pool.boot_timeout_s"),
    ("pool.stop_timeout_s=-5", "pool.stop_timeout_s"),
    ("pool.devices=[gpu0]", "pool.devices[0]"),
    ("pool.devices=[0, 0]", "pool.devices[1]"),  # YAML ints are CUDA indices
    ("pool.devices=[cpu, 0]", "pool.devices[1]"),
    ("pool.bogus=1", "pool.bogus"),
])
def test_bad_values_are_refused_naming_their_dotted_path(override, path):
    with pytest.raises(ConfigError) as info:
        load_serve_config(overrides=[override])
    assert info.value.path == path and str(info.value).startswith(f"{path}: ")


def test_runtime_configs_refuse_bad_values_naming_the_field():
    with pytest.raises(ConfigError, match=r"^job_ttl_s: must be >= 0"):
        ServiceConfig(job_ttl_s=-1)
    with pytest.raises(ConfigError, match=r"^warmup_timeout_s: must be > 0"):
        WorkerConfig(warmup_timeout_s=0)
    with pytest.raises(ConfigError, match=r"^max_batch: must be >= 1, got 0"):
        SchedulerConfig(max_batch=0)


def test_devices_flag_sets_the_pool_and_the_engine_device():
    from fastvideo.serving.cli import build_parser, serve_flags_from_args

    def load(*argv: str, overrides: tuple[str, ...] = ()):
        return load_serve_config(flags=serve_flags_from_args(build_parser().parse_args(["serve", *argv])),
                                 overrides=overrides)

    config = load("--devices", "0, cuda:1")
    assert config.pool.devices == ["cuda:0", "cuda:1"]
    assert config.generator.engine.device == "cuda:0"  # the first device runs the server's own engine
    assert load("--devices", "cpu,cpu").pool.devices == ["cpu", "cpu"]
    assert load("--device", "cuda", "--devices", "0,1").generator.engine.device == "cuda"  # the same device
    assert load().pool == PoolConfig() and load().pool.devices == []
    with pytest.raises(ConfigError, match=r"^pool.devices: .*engine.device is 'cuda:1'"):
        load("--device", "cuda:1", "--devices", "0,1")
    with pytest.raises(ConfigError, match=r"^server.warmup: every pool worker warms up"):
        load("--devices", "cpu,cpu", "--no-warmup")


def test_devices_this_machine_lacks_are_refused(monkeypatch):
    import torch

    from fastvideo.runtime.device_pool import check_devices

    check_devices(["cpu", "cpu"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^pool.devices\[0\]: cuda:0 needs CUDA, which this machine does not"):
        check_devices(["cuda:0", "cuda:1"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_devices(["cuda:0", "cuda:1"])
    with pytest.raises(ConfigError, match=r"^--devices\[1\]: cuda:2 does not exist: this machine has 2 CUDA"):
        check_devices(["cuda:0", "cuda:2"], "--devices")


def test_serve_refuses_a_missing_device_before_loading_the_model(tmp_path, capsys):
    """The real entry point on this machine: a CUDA device it does not have exits 2 naming it, before any load."""
    import torch

    from fastvideo.serving.cli import main

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert main(["serve", "--devices", f"{count}", "--output-dir", str(tmp_path)]) == 2
    assert f"pool.devices[0]: cuda:{count} " in capsys.readouterr().err


def test_job_ttl_expires_finished_jobs(tiny_generator):
    """``job_ttl_s`` (serve: ``server.job_ttl_s``) works: a finished job nobody collected is forgotten after it."""
    request = {"prompt": "a fox", "sampling": {"width": 32, "height": 32, "num_frames": 1, "num_inference_steps": 1}}

    async def main() -> tuple[bool, bool]:
        service = VideoService(tiny_generator, ServiceConfig(job_ttl_s=0.2))
        await service.start()
        try:
            job = service.submit(request)
            await job.wait()
            kept = service.get(job.id) is job
            await asyncio.sleep(0.3)
            return kept, service.get(job.id) is None
        finally:
            await service.stop()

    kept, expired = asyncio.run(main())
    assert kept and expired
