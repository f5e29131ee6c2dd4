"""A GPU pool built from a device list: what ``fastvideo serve --devices`` and the Dynamo worker run.

Contract:
- :func:`check_devices` (also ``DevicePool.check_devices``) checks that every device of a
  (normalized) list exists on this machine: a CUDA device needs CUDA and an index below
  ``torch.cuda.device_count()``; otherwise a :class:`ConfigError` names the entry
  (``pool.devices[1]``, ``--devices[1]``).
- :class:`DevicePool` (``generator``, :class:`PoolConfig` with ``devices``, :class:`WorkerConfig`)
  runs one worker per device: the first is a :class:`LocalWorker` over ``generator`` itself (already
  loaded on ``devices[0]``, else ConfigError; it also validates every request, so a bad one is refused
  before any worker sees it), each further device a :class:`ProcessWorker` (its own spawn process)
  loading ``generator.config`` with ``engine.device`` set to that device. Every worker gets the same
  WorkerConfig as is (per-worker scheduler, overlap, warmup request); CPU process workers get an equal
  share of the cores as torch threads. Requests go to the least-loaded ready worker
  (:class:`GpuPool`); ``info()`` reports each worker's status and counters.
- It offers the surface :class:`~fastvideo.runtime.service.VideoService` uses of a
  :class:`~fastvideo.runtime.worker.BatchWorker`: ``start()`` begins every boot and returns at once,
  ``booted`` is true once ``warmup()`` (which waits for the boots: each worker warms up both branches)
  returned; ``submit_resolved`` raises :class:`QueueFull` *before* anything is queued when
  ``max_queue`` requests already wait (``force`` skips that), reports ``on_start`` (with the
  ``worker_id`` and ``device`` of the worker that started it) / ``on_step`` / exactly one terminal
  callback to the listener; ``cancel``, ``queue_depth``, ``running``, ``stop``.
- And the surface the Dynamo handler uses of a :class:`VideoGenerator`: ``preset`` and
  ``generate_async(request)`` (one progress event per step, then one final event; closing the
  iterator early cancels the request; errors raise from the iterator, a cancellation as
  :class:`GenerationCancelled`).
- Continuation states a process worker returns inline are moved to ``generator``'s BlobStore when one
  is attached (as the in-process engine does), so every worker's results look the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import torch

from fastvideo.api import (ConfigError, GenerationCancelled, GenerationRequest, RequestError, VideoFinalEvent,
                           VideoResult)
from fastvideo.runtime.pool import (GpuPool, LocalWorker, PoolConfig, PoolRequestFailed, WorkerHandle, WorkerInfo,
                                    normalize_device, normalize_devices)
from fastvideo.runtime.dispatcher import AsyncListener
from fastvideo.runtime.pool_process import ProcessWorker
from fastvideo.runtime.scheduler import QueueFull
from fastvideo.runtime.state_blobs import externalize_state
from fastvideo.runtime.stores import Stores
from fastvideo.runtime.worker import WorkerConfig

logger = logging.getLogger(__name__)

__all__ = ["DevicePool", "check_devices"]


def check_devices(devices: list[str], path: str = "pool.devices") -> None:
    """ConfigError naming ``path[i]`` for a device this machine does not have (see module contract)."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for i, device in enumerate(devices):
        if device == "cpu":
            continue
        index = int(device.split(":", 1)[1])
        if count == 0:
            raise ConfigError(f"{path}[{i}]", f"{device} needs CUDA, which this machine does not have: list cpu "
                                              "workers (e.g. cpu,cpu) or drop the device list")
        if index >= count:
            raise ConfigError(f"{path}[{i}]", f"{device} does not exist: this machine has {count} CUDA device(s), "
                                              f"cuda:0..cuda:{count - 1}")


class DevicePool:
    """One worker per device behind the BatchWorker / VideoGenerator surfaces (see module contract)."""

    #: :func:`check_devices`, for callers that check before loading the first engine.
    check_devices = staticmethod(check_devices)

    def __init__(self, generator: Any, config: PoolConfig, worker_config: WorkerConfig | None = None, *,
                 stores: Stores | None = None, path: str = "pool.devices") -> None:
        if generator.config.engine.num_gpus > 1:
            raise ConfigError("engine.num_gpus", f"{generator.config.engine.num_gpus}: a device pool of "
                                                 "sequence-parallel generators is not supported yet; set it to 1 "
                                                 f"for one worker per device ({path}), or drop the device list and "
                                                 "run one sequence-parallel generator")
        devices = normalize_devices(config.devices)
        if not devices:
            raise ConfigError(path, "a device pool needs at least one device")
        check_devices(devices, path)
        here = normalize_device(str(generator.pipeline.device))
        if here != devices[0]:
            raise ConfigError(f"{path}[0]", f"the first device runs the engine this process already loaded, which is "
                                            f"on {here}, not {devices[0]}: list {here} first or load it on "
                                            f"{devices[0]} (engine.device)")
        self.generator = generator
        self.worker_config = worker_config or WorkerConfig()
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        cpu_threads = max(1, (os.cpu_count() or 1) // len(devices))
        workers: list[WorkerHandle] = [LocalWorker("worker0", generator=generator, worker_config=self.worker_config,
                                                   device=devices[0])]
        base = generator.config
        for i, device in enumerate(devices[1:], 1):
            workers.append(ProcessWorker(f"worker{i}", replace(base, engine=replace(base.engine, device=device)),
                                         worker_config=self.worker_config, log_level=level,
                                         threads=cpu_threads if device == "cpu" else None))
        self.pool = GpuPool(workers, stores=stores, config=config)
        self.booted = False
        self._lock = threading.Lock()
        self._waiting: set[str] = set()
        self._running: set[str] = set()

    # ------------------------------------------------------------------ lifecycle
    @property
    def preset(self) -> Any:
        return self.generator.preset

    def start(self) -> None:
        """Begin booting every worker (returns at once)."""
        self.pool.boot()

    def warmup(self) -> dict[str, Any]:
        """Wait until every worker booted and warmed up (PoolBootError when none did); then ``booted``."""
        t0 = time.perf_counter()
        infos = self.pool.wait_booted()
        self.booted = True
        graphs = [label for w in self.pool.ready_workers for label in w.warmup_info.get("graphs") or []]
        ready = [i.worker_id for i in infos if i.status == "ready"]
        logger.info("device pool ready: %d/%d workers (%s)", len(ready), len(infos),
                    ", ".join(f"{i.worker_id}={i.device}:{i.status}" for i in infos))
        return {"warmup_s": time.perf_counter() - t0, "graphs": graphs, "workers": infos}

    def stop(self, timeout: float | None = None) -> None:
        self.booted = False
        self.pool.stop()

    def info(self) -> list[WorkerInfo]:
        return self.pool.info()

    # ------------------------------------------------------------------ BatchWorker surface (VideoService)
    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def notify(self) -> None:
        """Nothing to wake: each worker's own dispatcher batches what it was sent."""

    def cancel(self, request_id: str) -> bool:
        return self.pool.cancel(request_id)

    def submit_resolved(self, req: GenerationRequest, resolved: Any, *, listener: Any, need_bytes: bool = True,
                        notify: bool = True, should_cancel: Any = None, force: bool = False) -> None:
        """Route an already validated request (see module contract; ``need_bytes``: workers always encode)."""
        rid = req.request_id
        assert rid is not None
        scheduler = self.worker_config.scheduler
        with self._lock:
            if not force and len(self._waiting) >= scheduler.max_queue:
                raise QueueFull(len(self._waiting), scheduler.retry_after_s)
            self._waiting.add(rid)
        try:
            future = self.pool.submit(req, on_progress=lambda step, total: listener.on_step(None, step, total),
                                      on_start=lambda: self._started(rid, listener))
        except BaseException:
            with self._lock:
                self._waiting.discard(rid)
            raise
        future.add_done_callback(lambda f: self._finished(rid, listener, f))

    def _started(self, rid: str, listener: Any) -> None:
        with self._lock:
            if rid in self._waiting:
                self._waiting.discard(rid)
                self._running.add(rid)
        worker = next((w for w in self.pool.workers.values() if rid in w.pending), None)
        listener.on_start(None, worker_id=worker.worker_id if worker else None,
                          device=worker.device if worker else None)

    def _finished(self, rid: str, listener: Any, future: Future) -> None:
        with self._lock:
            self._waiting.discard(rid)
            self._running.discard(rid)
        try:
            exc = future.exception()
            if exc is None:
                listener.on_done(None, self._externalize(future.result()))
            elif isinstance(exc, PoolRequestFailed) and exc.code in ("cancelled", "shutting_down"):
                listener.on_cancelled(None, GenerationCancelled(str(exc), shutting_down=exc.code == "shutting_down"))
            else:
                listener.on_failed(None, exc)
        except Exception:  # noqa: BLE001 - a listener must not break the worker's reader thread
            logger.exception("reporting the end of %s failed", rid)

    def _externalize(self, result: VideoResult) -> VideoResult:
        store = self.generator.blob_store
        if store is None or result.state is None:
            return result
        state = externalize_state(result.state, store, self.generator.blob_threshold_bytes,
                                  ttl_s=self.generator.blob_ttl_s)
        return replace(result, state=state)

    # ------------------------------------------------------------------ VideoGenerator surface (Dynamo handler)
    async def generate_async(self, request: GenerationRequest | Mapping[str, Any]) -> AsyncIterator[Any]:
        """Progress events, then one final event (see module contract)."""
        req, resolved = self.generator.resolve(request)
        if req.output.preview_interval_steps is not None:  # pool workers have no channel for preview frames
            raise RequestError("output.preview_interval_steps", "previews are not available from a device pool yet; "
                                                                "leave it unset, or use a single VideoGenerator")
        assert req.request_id is not None
        rid = req.request_id
        listener = AsyncListener(asyncio.get_running_loop(), rid, previews=False)
        self.submit_resolved(req, resolved, listener=listener, force=True)
        finished = False
        try:
            async for event in listener.events():
                finished = isinstance(event, VideoFinalEvent)
                yield event
        finally:
            if not finished:  # closed early or failed: stop it at its next step
                self.cancel(rid)
