"""Worker entry point: flags -> GeneratorConfig -> VideoGenerator -> Dynamo endpoint + registration.

Contract: ``main(argv)`` (what ``python -m fastvideo.serving.dynamo`` runs) parses the flags
(:mod:`.args`), loads the model with ``VideoGenerator.from_config`` (a bad model folder exits with
status 1 and one line naming it), optionally warms up with the health-check request (with
``--devices``: checks the devices exist first, exit 2 naming the missing one, then boots a
:class:`fastvideo.DevicePool` whose first worker is that generator and the others one process per
device, each warmed up; the handler then runs as many requests at once as there are devices), then creates
Dynamo's ``DistributedRuntime(loop, discovery_backend, request_plane, event_plane=...,
response_plane=...)`` and concurrently ``serve_endpoint(handler.generate, graceful_shutdown=True,
health_check_payload=...)`` on ``{namespace}.{component}.{endpoint}`` and ``register_model``
(:mod:`.register`). SIGTERM/SIGINT unregister the instance from discovery, wait the grace period,
then shut the runtime down (in-flight requests finish); the generator is shut down last. With
``--discovery-backend file`` (or ``DYN_DISCOVERY_BACKEND=file``) no etcd or NATS is needed: all
processes share the folder ``DYN_FILE_KV`` and requests travel over the TCP request plane.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Sequence

from fastvideo import DevicePool, VideoGenerator
from fastvideo.api import ConfigError, FastVideoError, ModelLoadError, config_to_dict
from fastvideo.serving.dynamo.args import WorkerArgs, build_generator_config, build_pool_config, parse_args
from fastvideo.serving.dynamo.handler import VideoGenerationHandler
from fastvideo.serving.dynamo.health import HealthPolicy, health_check_payload
from fastvideo.serving.dynamo.media import MediaStore
from fastvideo.serving.dynamo.protocol import RequestDefaults

logger = logging.getLogger("fastvideo.serving.dynamo")


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s fastvideo-dynamo[{os.getpid()}] %(name)s: %(message)s")


def _dump_config(path: str, args: WorkerArgs, generator_config: Any) -> None:
    from dataclasses import asdict

    data = {"worker": asdict(args), "generator": config_to_dict(generator_config)}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    logger.info("wrote the resolved config to %s", path)


def load_generator(args: WorkerArgs) -> VideoGenerator:
    """Build the generator the flags describe and (with ``--warmup``) run the health request once."""
    config = build_generator_config(args)
    if args.dump_config_to:
        _dump_config(args.dump_config_to, args, config)
    started = time.perf_counter()
    generator = VideoGenerator.from_config(config)
    logger.info("model %r loaded in %.1fs", args.served_name, time.perf_counter() - started)
    if args.warmup and not args.devices:  # a device pool warms every worker up when it boots (build_engine)
        started = time.perf_counter()
        generator.generate(generator.warmup_request())
        logger.info("warm-up (health-check request) took %.2fs", time.perf_counter() - started)
    return generator


def build_engine(args: WorkerArgs, generator: VideoGenerator) -> VideoGenerator | DevicePool:
    """What the handler drives: ``generator`` itself, or with ``--devices`` a booted, warm DevicePool whose first
    worker is ``generator`` (PoolBootError when no worker came up)."""
    pool_config = build_pool_config(args)
    if pool_config is None:
        return generator
    pool = DevicePool(generator, pool_config, path="--devices")
    pool.start()
    try:
        pool.warmup()
    except BaseException:
        pool.stop()
        raise
    return pool


def _default_fps(args: WorkerArgs, generator: VideoGenerator) -> int:
    if args.default_fps:
        return args.default_fps
    preset_fps = getattr(getattr(generator, "preset", None), "fps", None)
    return preset_fps if isinstance(preset_fps, int) and preset_fps > 0 else 16


def build_handler(args: WorkerArgs, generator: VideoGenerator, engine: VideoGenerator | DevicePool | None = None, *,
                  label: str | None = None, health_payload: dict[str, Any] | None = None) -> VideoGenerationHandler:
    """The endpoint handler the flags describe: requests run on ``engine`` (default ``generator``), as many at once
    as it has devices."""
    return VideoGenerationHandler(
        engine or generator, model_name=args.served_name, concurrency=len(args.devices or [None]),
        defaults=RequestDefaults(fps=_default_fps(args, generator), response_format=args.default_response_format),
        media=MediaStore(args.media_output_fs_url, args.media_output_http_url), worker_label=label,
        health_payload=health_payload, health_policy=HealthPolicy(probe_interval_s=args.health_probe_interval_s,
                                                                  stall_timeout_s=args.health_stall_timeout_s))


async def serve(args: WorkerArgs, generator: VideoGenerator, engine: VideoGenerator | DevicePool | None = None) -> None:
    """Run the Dynamo side until the runtime shuts down (signal or Dynamo shutdown); requests run on ``engine``
    (default: ``generator``), as many at once as it has devices."""
    from dynamo.runtime import DistributedRuntime

    from fastvideo.serving.dynamo.register import register_video_generation_model

    loop = asyncio.get_running_loop()
    runtime = DistributedRuntime(loop, args.discovery_backend, args.request_plane, event_plane=args.event_plane,
                                 response_plane=args.response_plane)
    endpoint = runtime.endpoint(args.endpoint_path)
    label = f"{args.served_name}@pid{os.getpid()}"
    payload = health_check_payload(args.served_name)
    handler = build_handler(args, generator, engine, label=label, health_payload=payload)
    if args.warmup:
        handler.health.generation_finished(True)  # the warm-up generation just proved the engine healthy
    shutting_down = False

    async def shutdown(signum: int) -> None:
        nonlocal shutting_down
        if shutting_down:
            return
        shutting_down = True
        logger.info("signal %d: unregistering %s from discovery, then stopping in %.1fs", signum, label,
                    args.graceful_shutdown_grace_s)
        try:
            await endpoint.unregister_endpoint_instance()
        except Exception as exc:  # noqa: BLE001 - shutting down regardless
            logger.warning("unregistering from discovery failed: %s", exc)
        await asyncio.sleep(max(0.0, args.graceful_shutdown_grace_s))
        runtime.shutdown()

    def on_signal(signum: int) -> None:
        asyncio.ensure_future(shutdown(signum))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    logger.info("worker %s serving %s (discovery=%s, request plane=%s, DYN_FILE_KV=%s)", label, args.endpoint_path,
                args.discovery_backend, args.request_plane, os.environ.get("DYN_FILE_KV", "-"))
    await asyncio.gather(
        endpoint.serve_endpoint(handler.generate, graceful_shutdown=True, health_check_payload=payload),
        register_video_generation_model(endpoint, args.model_path or args.served_name, args.served_name),
    )
    logger.info("worker %s stopped (%d completed, %d failed, %d cancelled)", label, handler.completed,
                handler.failed, handler.cancelled)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _configure_logging(args.log_level)
    try:
        import dynamo.llm  # noqa: F401 - fail early with an install hint, before loading the model
    except ImportError as exc:
        print(f"error: NVIDIA Dynamo is not installed ({exc}); install it with "
              "`pip install --no-deps ai-dynamo==1.6.1 ai-dynamo-runtime==1.6.1` and "
              "`pip install pydantic uvloop msgspec packaging pyyaml fsspec`", file=sys.stderr)
        return 1
    if args.devices:
        try:  # before the model loads, so a device this machine lacks is named as such
            DevicePool.check_devices(args.devices, "--devices")
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        generator = load_generator(args)
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"error: cannot load model {args.model_path or '(built-in)'}: {exc}", file=sys.stderr)
        return 1
    try:
        engine = build_engine(args, generator)
    except FastVideoError as exc:  # no worker of the pool came up
        print(f"error: the device pool did not start: {exc}", file=sys.stderr)
        generator.shutdown()
        return 1
    try:
        asyncio.run(serve(args, generator, engine))
    except KeyboardInterrupt:
        pass
    finally:
        if isinstance(engine, DevicePool):
            engine.stop()
        generator.shutdown()
    return 0
