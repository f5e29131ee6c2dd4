"""Sequence-parallel rank process: what runs inside each of the N processes a
:class:`~fastvideo.runtime.sp_group.SequenceParallelGroup` spawns, and the error codec between rank and parent.

Contract:
- :func:`rank_main` is the spawn target of rank ``r`` (module-level so *spawn* can import it). It initialises
  ``torch.distributed`` (NCCL on CUDA with ``torch.cuda.set_device`` and the process group bound to that device,
  gloo on the CPU; collectives time out after ``timeout_s``), builds a
  :class:`~fastvideo.runtime.generator.VideoGenerator` from the one-device config :func:`rank_config` made, and
  wires a :class:`~fastvideo.engine.sequence_parallel.SequenceParallel` over the world group into every DiT
  (``set_sequence_parallel``; a DiT without it, or heads that do not split, fail the boot). It reports
  ``("ready", rank, info)`` (pid, device, preset, ``dit_sp_world_size``) or ``("boot_failed", rank, described)``
  and then exits at once.
- Messages in (over the pipe, in the parent's order): ``("generate", rid, request, need_bytes)``,
  ``("cancel", rid)``, ``("stop",)``. Messages out: ``("progress", rid, step, total)`` (rank 0 only),
  ``("done", rid, rank, result_or_None)``, ``("error", rid, rank, described)``.
- Requests run one at a time, in arrival order. Before a request starts and after every denoising step every rank
  broadcasts rank 0's "cancel or stop this request" flag, so all ranks stop at the same point and none is left in
  a collective. Only rank 0 saves / returns the video (with MP4 bytes when ``need_bytes``; ``samples`` is left to
  the parent to rebuild); other ranks report ``done`` with ``None``.
- ``stop`` (or the parent's pipe closing) cancels what is queued (agreed as above), shuts the generator down and
  destroys the process group.
- :func:`describe_error` turns any exception into a picklable ``(kind, field, message, step)``;
  :func:`rebuild_error` turns it back into the same fastvideo error type (RequestError, ConfigError,
  GenerationFailed, GenerationCancelled, ModelLoadError), anything else a :class:`SequenceParallelGroupError`
  naming the rank.
"""

from __future__ import annotations

import datetime
import logging
import os
import queue
import threading
from dataclasses import replace
from typing import Any

from fastvideo.api import (ConfigError, FastVideoError, GenerationCancelled, GenerationFailed, GenerationRequest,
                           GeneratorConfig, RequestError, parse_config)
from fastvideo.api.errors import ModelLoadError
from fastvideo.runtime.pool_process import child_process_setup

__all__ = ["ErrorInfo", "SequenceParallelGroupError", "describe_error", "rank_config", "rank_main",
           "rebuild_error"]

#: A picklable exception: ``(kind, field or None, message, step or None)``.
ErrorInfo = tuple[str, str | None, str, int | None]


class SequenceParallelGroupError(FastVideoError, RuntimeError):
    """The sequence-parallel group cannot serve: a rank failed to boot, died, or the ranks disagreed."""


def rank_config(config: GeneratorConfig, device: str) -> GeneratorConfig:
    """The one-device config a rank builds its generator from."""
    engine = config.engine
    return replace(config, engine=replace(engine, num_gpus=1, device=device,
                                          parallelism=replace(engine.parallelism, sp_size=1)))


def describe_error(exc: BaseException) -> ErrorInfo:
    """An exception as ``(kind, field, message, step)``, picklable whatever the exception holds."""
    if isinstance(exc, RequestError):
        return "request", exc.field, exc.reason, None
    if isinstance(exc, ConfigError):
        return "config", exc.path, exc.reason, None
    if isinstance(exc, GenerationCancelled):
        return "cancelled", None, str(exc), None
    if isinstance(exc, GenerationFailed):
        return "failed", None, str(exc), exc.step
    if isinstance(exc, ModelLoadError):
        return "model", None, str(exc), None
    from fastvideo.engine.sequence_parallel import SequenceParallelError

    if isinstance(exc, SequenceParallelError):
        return "config", "engine.parallelism.sp_size", str(exc), None
    return "other", None, f"{type(exc).__name__}: {exc}", None


def rebuild_error(info: ErrorInfo, rank: int) -> BaseException:
    """The error ``info`` describes, as its own type; anything else a SequenceParallelGroupError naming ``rank``."""
    kind, path, message, step = info
    if kind == "request" and path is not None:
        return RequestError(path, message)
    if kind == "config" and path is not None:
        return ConfigError(path, message)
    if kind == "cancelled":
        return GenerationCancelled(message)
    if kind == "failed":
        return GenerationFailed(message, step=step)
    if kind == "model":
        return ModelLoadError(message)
    return SequenceParallelGroupError(f"sequence-parallel rank {rank} failed: {message}")


_STOP = object()  # ends the job loop


def rank_main(rank: int, world: int, init_method: str, config_dict: dict, conn: Any, threads: int | None,
              timeout_s: float, log_level: str) -> None:
    """Entry point of rank ``rank`` (module-level so spawn can import it; see the module contract)."""
    send = child_process_setup(conn, log_level, f"sp rank {rank}")

    try:
        import torch
        import torch.distributed as dist

        if threads:
            torch.set_num_threads(threads)
        config = parse_config(GeneratorConfig, config_dict)
        device = torch.device(config.engine.device)
        bind: dict[str, Any] = {}
        if device.type == "cuda":
            torch.cuda.set_device(device)  # this thread; the engine's stage threads get the PG bound to it:
            bind["device_id"] = device  # NCCL collectives of any thread run on this rank's GPU
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=init_method, rank=rank,
                                world_size=world, timeout=datetime.timedelta(seconds=timeout_s), **bind)
        from fastvideo.engine.sequence_parallel import SequenceParallel
        from fastvideo.runtime.generator import VideoGenerator

        generator = VideoGenerator.from_config(config)
        sp = SequenceParallel.from_process_group()
        pipe = generator.pipeline
        dits = [d for d in (getattr(pipe, "dit", None), getattr(pipe, "dit_2", None)) if d is not None]
        if not dits or not all(hasattr(d, "set_sequence_parallel") for d in dits):
            raise ConfigError("engine.num_gpus", f"this model ({type(pipe).__name__}) has no sequence-parallel DiT "
                                                 "forward yet; set engine.num_gpus to 1")
        for dit in dits:
            dit.set_sequence_parallel(sp)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops the group
        send("boot_failed", rank, describe_error(exc))
        conn.close()
        os._exit(1)  # at once: no interpreter teardown waiting on a half-built process group
    wired = getattr(dits[0], "sequence_parallel", None)
    send("ready", rank, {"pid": os.getpid(), "device": str(device), "preset": generator.preset,
                         "dit_sp_world_size": wired.world_size if wired is not None else 1})

    jobs: queue.Queue[Any] = queue.Queue()
    stop_flag: set[str] = set()  # request ids to cancel (read on rank 0 only: its flag is broadcast)
    stopping = threading.Event()

    def agreed(rid: str) -> bool:
        """Rank 0's "cancel this request" flag, on every rank (one broadcast)."""
        flag = torch.tensor([1 if rank == 0 and (rid in stop_flag or stopping.is_set()) else 0],
                            dtype=torch.int32, device=device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def run_job(rid: str, request: GenerationRequest, need_bytes: bool) -> None:
        if agreed(rid):
            cancelled = GenerationCancelled("the job was cancelled before it started", shutting_down=stopping.is_set())
            send("error", rid, rank, describe_error(cancelled))
            return
        if rank != 0:  # only rank 0 saves and returns the video
            request = replace(request, output=replace(request.output, save_video=False, return_frames=False,
                                                      return_state=False))
        wants_frames = request.output.return_frames
        if need_bytes:
            request = replace(request, output=replace(request.output, return_frames=True))

        def on_step(step: int, total: int) -> None:
            if rank == 0:
                send("progress", rid, step, total)
            if agreed(rid):
                generator.engine_core().cancel(rid)  # every rank stops at the same step

        try:
            result = generator.generate(request, on_step=on_step)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            send("error", rid, rank, describe_error(exc))
            return
        if rank != 0:
            send("done", rid, rank, None)
            return
        if need_bytes and result.video_bytes is None and result.frames is not None:
            from fastvideo.runtime.media import encode_mp4

            result.video_bytes = encode_mp4(result.frames, result.metadata["fps"])
        if not wants_frames:
            result.frames = None
        result.samples = None  # a tensor view of the frames: rebuilt by the parent, not pickled
        send("done", rid, rank, result)

    def job_loop() -> None:
        while True:
            job = jobs.get()
            if job is _STOP:
                return
            try:
                run_job(*job)
            except BaseException as exc:  # noqa: BLE001 - e.g. a collective that timed out
                logging.getLogger(__name__).exception("request %s failed", job[0])
                send("error", job[0], rank, describe_error(exc))

    worker = threading.Thread(target=job_loop, name=f"sp-rank-{rank}", daemon=True)
    worker.start()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        kind = message[0]
        if kind == "generate":
            jobs.put(message[1:])
        elif kind == "cancel":
            stop_flag.add(message[1])
        elif kind == "stop":
            break
    stopping.set()  # what is queued is agreed cancelled (rank 0 broadcasts it), then every rank leaves
    jobs.put(_STOP)
    worker.join()
    generator.shutdown()
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - leaving anyway
        pass
    conn.close()

