"""Sequence-parallel launcher: one generator spanning ``engine.num_gpus`` devices (Ulysses SP over the DiT tokens).

Contract:
- :func:`sp_devices(config)` checks a ``GeneratorConfig`` with ``engine.num_gpus = N > 1`` against this machine
  and returns the N rank devices: on CUDA ``cuda:K .. cuda:K+N-1`` (``engine.device`` ``auto``/``cuda`` is K=0,
  ``cuda:K`` starts there), refusing with a ConfigError naming ``engine.num_gpus`` when fewer GPUs are visible; on
  the CPU N ranks named ``cpu`` (for tests and debugging: gloo). The field combinations themselves
  (``engine.parallelism.sp_size`` in {-1, N}, ...) are checked by :mod:`fastvideo.runtime.config_support`.
- :class:`SequenceParallelGroup` spawns N processes (``multiprocessing`` *spawn*: a calling script needs the
  ``if __name__ == "__main__":`` guard, as with FastVideo's launcher), rank ``r`` on device ``r``, on a free
  127.0.0.1 port, collectives timing out after ``engine.parallelism.dist_timeout`` s (default 300). What runs inside
  a rank (process group, its one-device VideoGenerator, the SP wiring into every DiT, the per-step agreement) is
  :mod:`fastvideo.runtime.sp_rank`; this module is the parent side. ``start``
  returns once every rank is ready; a rank that fails to boot, or no boot within ``boot_timeout_s``, stops all
  ranks and raises :class:`SequenceParallelGroupError` (ConfigError / ModelLoadError when the rank raised one).
- Every request is sent to every rank, in the same order (one lock), with ``request_id`` and ``sampling.seed``
  fixed by the parent, so every rank draws the same noise and holds the same replicated latents. Each rank runs
  its requests one at a time, in order, through its generator's ``generate``. Only rank 0 writes the MP4 and
  returns frames / bytes / state; other ranks save and return nothing. Progress (``on_step``) comes from rank 0.
- Agreement: before a request starts and after every denoising step all ranks broadcast rank 0's "cancel or stop
  this request" flag, so a cancellation (:meth:`SequenceParallelGroup.cancel`) or a shutdown takes effect at the
  same point on every rank (before the request, or at the next step) and no rank is left in a collective.
- Outcome: a request resolves when every rank has reported. All done: rank 0's VideoResult (``metadata`` gains
  ``sp_size`` and ``sp_devices``). All failed (a RequestError or GenerationFailed is the same on every rank):
  rank 0's error, rebuilt as its type (RequestError, ConfigError, GenerationFailed, GenerationCancelled,
  ModelLoadError; anything else a SequenceParallelGroupError naming the rank and the error). The ranks disagreeing
  (one failed, another finished, or still running ``divergence_grace_s`` after the first failure), or a rank process
  dying, *breaks* the group: every pending and later request fails with a SequenceParallelGroupError naming the
  rank and why, and all ranks are stopped (no hang: the parent never waits on a collective).
- :meth:`SequenceParallelGroup.stop` cancels what is pending (agreed as above), lets the ranks exit, and after
  ``timeout`` s terminates and then kills what is left; no rank process outlives it.
- :class:`SequenceParallelGenerator` is what ``VideoGenerator.from_config`` returns for ``num_gpus > 1``:
  ``generate(request, on_step=None)`` (a list prompt fans out like VideoGenerator's), ``generate_async`` (one
  progress event per step from rank 0, then one final event with the MP4 bytes; closing early cancels;
  previews are refused with a RequestError on ``output.preview_interval_steps``), ``shutdown``, ``preset``,
  ``config`` (the caller's), ``num_gpus``, ``devices``, ``model_path``, ``default_health_check_request`` /
  ``warmup_request``: what ``fastvideo generate`` and the Dynamo worker use. LoRA switching, blob stores,
  ``fastvideo serve`` and a DevicePool over such a generator are not offered (refused naming ``engine.num_gpus``).
- :class:`SequenceParallelWorker` is a whole group as one :class:`~fastvideo.runtime.pool.GpuPool` worker: it boots
  the group and runs the health-check request before it reports ``ready`` (a failure excludes it), reports the
  first step as the request's start, maps failures to the pool's codes (``invalid_request`` with the field,
  ``cancelled``, ``worker_died`` for a broken group, which also marks the worker dead); a request with a
  ``session_id`` is refused (no sessions on such a worker yet).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing as mp
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait as wait_ready
from typing import Any

from fastvideo.api import (ConfigError, FastVideoError, GenerationCancelled, GenerationRequest, GeneratorConfig,
                           RequestError, VideoFinalEvent, VideoProgressEvent, VideoResult, config_to_dict,
                           parse_config)
from fastvideo.api import ContinuationState
from fastvideo.runtime.pool import WorkerHandle
from fastvideo.runtime.sp_rank import ErrorInfo, SequenceParallelGroupError, rank_config, rank_main, rebuild_error

logger = logging.getLogger(__name__)

__all__ = ["SequenceParallelGenerator", "SequenceParallelGroup", "SequenceParallelGroupError",
           "SequenceParallelWorker", "sp_devices"]

DEFAULT_DIST_TIMEOUT_S = 300


# ---------------------------------------------------------------------------------------------- config
def sp_devices(config: GeneratorConfig) -> list[str]:
    """The devices of the ``engine.num_gpus`` ranks (see module contract); ConfigError when they do not exist."""
    import torch

    n = config.engine.num_gpus
    name = config.engine.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError("engine.device", f"{name!r} is not a device: {exc}") from None
    if device.type == "cpu":
        return ["cpu"] * n
    if device.type != "cuda":
        raise ConfigError("engine.device", f"{name!r}: a sequence-parallel group (engine.num_gpus={n}) runs on CUDA "
                                           "GPUs (NCCL) or, for tests, on the CPU (gloo); use 'cuda' or 'cpu'")
    first = device.index or 0
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if first + n > visible:
        raise ConfigError("engine.num_gpus", f"{n} GPUs from cuda:{first} requested but only {visible} are visible "
                                             f"(CUDA_VISIBLE_DEVICES); set engine.num_gpus to at most "
                                             f"{max(visible - first, 1)}")
    return [f"cuda:{first + r}" for r in range(n)]


# ---------------------------------------------------------------------------------------------- parent side
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _Pending:
    request_id: str
    future: Future
    on_step: Callable[[int, int], None] | None
    outcomes: dict[int, tuple[str, Any]] = field(default_factory=dict)
    first_error_at: float | None = None


class SequenceParallelGroup:
    """N rank processes running one generator with Ulysses sequence parallelism (see module contract)."""

    def __init__(self, config: GeneratorConfig, *, boot_timeout_s: float = 600.0, divergence_grace_s: float = 30.0,
                 threads: int | None = None, log_level: str = "WARNING") -> None:
        self.config = config
        self.devices = sp_devices(config)
        self.world = len(self.devices)
        self.boot_timeout_s = boot_timeout_s
        self.divergence_grace_s = divergence_grace_s
        self.threads = threads if threads is not None else (
            max(1, (os.cpu_count() or 1) // self.world) if self.devices[0] == "cpu" else None)
        self.log_level = log_level
        self.dist_timeout_s = float(config.engine.parallelism.dist_timeout or DEFAULT_DIST_TIMEOUT_S)
        self.preset: Any = None
        self.pids: list[int | None] = [None] * self.world
        #: What each rank reported when ready: pid, device, preset, ``dit_sp_world_size`` (its DiT's SP ranks).
        self.rank_info: dict[int, dict] = {}
        self._processes: list[Any] = []
        self._conns: list[Any] = []
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._reap_lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._boot_errors: dict[int, ErrorInfo] = {}
        self._booted = threading.Event()
        self._broken: str | None = None
        self._closed = False
        self._watchdog: threading.Thread | None = None
        #: Called once with the reason when the group breaks (a pool marks its worker dead).
        self.on_broken: Callable[[str], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Spawn every rank and wait until all are ready (see module contract)."""
        ctx = mp.get_context("spawn")
        init_method = f"tcp://127.0.0.1:{_free_port()}"
        for rank, device in enumerate(self.devices):
            parent, child = ctx.Pipe(duplex=True)
            process = ctx.Process(target=rank_main, name=f"fastvideo-sp-rank{rank}", daemon=True,
                                  args=(rank, self.world, init_method, config_to_dict(rank_config(self.config, device)),
                                        child, self.threads, self.dist_timeout_s, self.log_level))
            process.start()
            child.close()  # the rank's exit closes the pipe for our reader
            self._processes.append(process)
            self._conns.append(parent)
            self.pids[rank] = process.pid
        for rank in range(self.world):
            threading.Thread(target=self._read_loop, args=(rank,), name=f"sp-reader-{rank}", daemon=True).start()
        if not self._booted.wait(self.boot_timeout_s):
            self._break(f"the sequence-parallel group did not boot within {self.boot_timeout_s:.0f}s")
        if self._broken is not None:
            error = self._boot_error()
            self.stop(timeout=1.0)  # a rank still booting reads no "stop": terminate it soon
            raise error
        self._watchdog = threading.Thread(target=self._watch, name="sp-watchdog", daemon=True)
        self._watchdog.start()
        logger.info("sequence-parallel group ready: %d ranks on %s (pids %s)", self.world, self.devices, self.pids)

    def _boot_error(self) -> BaseException:
        if self._boot_errors:
            rank = min(self._boot_errors)
            info = self._boot_errors[rank]
            if info[0] in ("config", "model"):
                return rebuild_error(info, rank)
            return SequenceParallelGroupError(f"sequence-parallel rank {rank} failed to boot: {info[2]}")
        return SequenceParallelGroupError(str(self._broken))

    @property
    def alive(self) -> bool:
        return self._broken is None and not self._closed

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel what is pending, let the ranks exit, then terminate / kill what is left (see module contract)."""
        with self._lock:
            self._closed = True
            pending = list(self._pending)
        for rid in pending:
            self._send_all("cancel", rid)
        self._send_all("stop")
        alive = self._wait_all(timeout)
        for how in ("terminate", "kill"):
            if not alive:
                break
            logger.warning("sequence-parallel ranks %s did not exit; sending %s", [p.pid for p in alive], how)
            for p in alive:
                self._signal(p, how)
            alive = self._wait_all(5.0)
        if alive:
            logger.error("sequence-parallel ranks %s still run after SIGKILL", [p.pid for p in alive])
        self._fail_pending(GenerationCancelled("the generator is shutting down", shutting_down=True))

    # -- requests --------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, *, need_bytes: bool = False,
               on_step: Callable[[int, int], None] | None = None) -> "Future[VideoResult]":
        """Send ``request`` to every rank; a Future of rank 0's result (see module contract)."""
        if request.request_id is None:
            request = replace(request, request_id=f"video_{uuid.uuid4().hex[:24]}")
        if request.sampling.seed is None:  # every rank must draw the same noise
            request = replace(request, sampling=replace(request.sampling, seed=random.randrange(2**31)))
        rid = request.request_id
        assert rid is not None
        future: Future = Future()
        with self._lock:
            self._check_usable()
            if rid in self._pending:
                raise RequestError("request_id", f"{rid!r} is already running; use a new id")
            self._pending[rid] = _Pending(rid, future, on_step)
            self._send_all("generate", rid, request, need_bytes)
        return future

    def cancel(self, request_id: str) -> None:
        """Stop ``request_id`` on every rank before it starts or at its next step (agreed through rank 0)."""
        if self._conns and self._broken is None:
            self._send_all("cancel", request_id)

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise SequenceParallelGroupError(f"the sequence-parallel group is broken ({self._broken}); create a new "
                                             "generator")
        if self._closed:
            raise SequenceParallelGroupError("the sequence-parallel group has been stopped")

    def _send_all(self, *message: Any) -> None:
        with self._send_lock:  # every rank sees every message in the same order
            for rank, conn in enumerate(self._conns):
                try:
                    conn.send(message)
                except (OSError, EOFError, BrokenPipeError, ValueError):
                    logger.debug("rank %d is gone; %s not delivered", rank, message[0])

    # -- rank reports ----------------------------------------------------------------------------
    def _read_loop(self, rank: int) -> None:
        conn = self._conns[rank]
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # noqa: BLE001 - an unpicklable message: log, keep reading
                logger.exception("sequence-parallel rank %d sent an unreadable message", rank)
                continue
            kind = message[0]
            if kind == "ready":
                self.pids[rank] = message[2]["pid"]
                if rank == 0:
                    self.preset = message[2]["preset"]
                with self._lock:
                    self.rank_info[rank] = message[2]
                    if len(self.rank_info) == self.world:
                        self._booted.set()
            elif kind == "boot_failed":
                self._boot_errors[rank] = message[2]
                self._break(f"rank {rank} failed to boot: {message[2][2]}")
            elif kind == "progress":
                pending = self._pending.get(message[1])
                if pending is not None and pending.on_step is not None:
                    try:
                        pending.on_step(message[2], message[3])
                    except Exception:  # noqa: BLE001
                        logger.exception("progress callback failed for %s", message[1])
            elif kind in ("done", "error"):
                self._report(message[1], message[2], kind, message[3])
        process = self._processes[rank]
        code = self._reap(process, 5.0)
        if not self._closed:
            detail = f"exit code {code}" if code is not None else "its pipe closed"
            if code is not None and code < 0:
                detail += f" (killed by signal {-code})"
            self._break(f"rank {rank} (pid {process.pid}, {self.devices[rank]}) died: {detail}")

    def _report(self, rid: str, rank: int, kind: str, value: Any) -> None:
        with self._lock:
            pending = self._pending.get(rid)
            if pending is None:
                return
            pending.outcomes[rank] = (kind, value)
            if kind == "error" and pending.first_error_at is None:
                pending.first_error_at = time.monotonic()
            if len(pending.outcomes) < self.world:
                return
            del self._pending[rid]
        kinds = {k for k, _ in pending.outcomes.values()}
        if kinds == {"done"}:
            result: VideoResult = pending.outcomes[0][1]
            self._finish_result(result)
            pending.future.set_result(result)
        elif kinds == {"error"}:
            pending.future.set_exception(rebuild_error(pending.outcomes[0][1], 0))
        else:
            failed = min(r for r, (k, _) in pending.outcomes.items() if k == "error")
            message = f"rank {failed} failed request {rid} while others finished it: " \
                      f"{pending.outcomes[failed][1][2]}"
            pending.future.set_exception(SequenceParallelGroupError(f"the sequence-parallel ranks disagreed: "
                                                                    f"{message}"))
            self._break(message)

    def _finish_result(self, result: VideoResult) -> None:
        if result.frames is not None:
            import torch

            result.samples = torch.from_numpy(result.frames).permute(3, 0, 1, 2).unsqueeze(0)
        result.metadata["sp_size"] = self.world
        result.metadata["sp_devices"] = list(self.devices)

    def _watch(self) -> None:
        """Break the group when a request failed on some ranks and the others did not follow in time."""
        while self.alive:
            time.sleep(0.2)
            now = time.monotonic()
            with self._lock:
                late = [p for p in self._pending.values()
                        if p.first_error_at is not None and now - p.first_error_at > self.divergence_grace_s]
            for pending in late:
                failed = min(r for r, (k, _) in pending.outcomes.items() if k == "error")
                silent = sorted(set(range(self.world)) - set(pending.outcomes))
                self._break(f"rank {failed} failed request {pending.request_id} ({pending.outcomes[failed][1][2]}) "
                            f"and ranks {silent} did not finish it within {self.divergence_grace_s:.0f}s")
                return

    def _break(self, reason: str) -> None:
        """Mark the group unusable, fail every pending request, stop the ranks (in the background)."""
        with self._lock:
            if self._broken is not None or self._closed:
                self._booted.set()
                return
            self._broken = reason
        logger.error("sequence-parallel group broken: %s", reason)
        self._booted.set()
        if self.on_broken is not None:
            try:
                self.on_broken(reason)
            except Exception:  # noqa: BLE001
                logger.exception("on_broken callback failed")
        self._fail_pending(SequenceParallelGroupError(f"the sequence-parallel group failed: {reason}"))
        if self._watchdog is not None or self.rank_info:  # booted (or booting): stop what is left
            threading.Thread(target=self._kill_all, name="sp-teardown", daemon=True).start()

    def _kill_all(self) -> None:
        for how in ("terminate", "kill"):
            for p in self._processes:
                self._signal(p, how)
            if not self._wait_all(5.0):
                return

    # -- reaping: every waitpid on a rank and every signal to it under one lock (two threads joining one
    # process race in waitpid: the loser sees a dead rank as alive and would signal a pid that may be reused)
    def _reap(self, process: Any, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for ``process`` to exit (on its sentinel), reap it; its exit code or None."""
        exited = bool(wait_ready([process.sentinel], max(0.0, timeout)))
        with self._reap_lock:
            if exited:
                process.join(1.0)
            return process.exitcode

    def _wait_all(self, timeout: float) -> list[Any]:
        """Wait up to ``timeout`` s in all for every rank to exit; the ones still running."""
        deadline = time.monotonic() + timeout
        for p in self._processes:
            self._reap(p, deadline - time.monotonic())
        return [p for p in self._processes if self._reap(p, 0.0) is None]

    def _signal(self, process: Any, how: str) -> None:
        with self._reap_lock:
            if process.exitcode is None:
                getattr(process, how)()

    def _fail_pending(self, exc: BaseException) -> None:
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for p in pending:
            if not p.future.done():
                p.future.set_exception(exc)


# ---------------------------------------------------------------------------------------------- facade
class SequenceParallelGenerator:
    """The generator ``VideoGenerator.from_config`` returns for ``engine.num_gpus > 1`` (see module contract)."""

    def __init__(self, config: GeneratorConfig, group: SequenceParallelGroup) -> None:
        self.config = config
        self.group = group

    @classmethod
    def launch(cls, config: GeneratorConfig, **group_options: Any) -> "SequenceParallelGenerator":
        """Boot the ranks of ``config`` (already checked by ``check_generator_config``) and wait for them. A model
        path that is not a local folder is refused here, before anything is spawned; a built-in model is
        synthesized here once, not by every rank."""
        from fastvideo.api.presets import check_local_model_path
        from fastvideo.engine.models.wan.pipeline import is_builtin_name, model_path_or_default
        from fastvideo.envs import read_env

        if config.model_path and not is_builtin_name(config.model_path):
            check_local_model_path(config.model_path)
        else:
            model_path_or_default(config.model_path, read_env().cache_dir)
        group = SequenceParallelGroup(config, **group_options)
        group.start()
        return cls(config, group)

    @property
    def num_gpus(self) -> int:
        return self.group.world

    @property
    def devices(self) -> list[str]:
        return list(self.group.devices)

    @property
    def preset(self) -> Any:
        return self.group.preset

    @property
    def model_path(self) -> str | None:
        return self.config.model_path

    @staticmethod
    def default_health_check_request() -> GenerationRequest:
        """VideoGenerator's probe request (256x256, 8 frames, 1 step, nothing saved)."""
        from fastvideo.runtime.generator import VideoGenerator

        return VideoGenerator.default_health_check_request()

    def warmup_request(self) -> GenerationRequest:
        """The probe request with the inputs this model needs (a grey image for image-to-video models)."""
        from fastvideo.runtime.generator import VideoGenerator

        probe = self.default_health_check_request()
        return replace(probe, inputs=VideoGenerator.probe_inputs(self))  # type: ignore[arg-type]  # reads .preset

    def _check_open(self) -> None:
        from fastvideo.runtime.generator import GeneratorClosed

        if self.group._closed:
            raise GeneratorClosed("this VideoGenerator has been shut down; create a new one")

    @staticmethod
    def _requests(request: GenerationRequest | Mapping[str, Any]) -> tuple[list[GenerationRequest], bool]:
        from fastvideo.runtime.generator import VideoGenerator

        req = parse_config(GenerationRequest, request)
        fanned = VideoGenerator._fan_out(req)
        return (fanned, True) if fanned is not None else ([req], False)

    def generate(self, request: GenerationRequest | Mapping[str, Any], *,
                 on_step: Callable[[int, int], None] | None = None) -> Any:
        """Generate on every rank; rank 0's VideoResult (a list of them for a list prompt)."""
        self._check_open()
        subs, fanned = self._requests(request)
        results = []
        for index, sub in enumerate(subs):
            result = self.group.submit(sub, on_step=on_step).result()
            if fanned:
                result.prompt_index = index
            results.append(result)
        return results if fanned else results[0]

    async def generate_async(self, request: GenerationRequest | Mapping[str, Any]) -> AsyncIterator[Any]:
        """One progress event per step (rank 0's), then one final event; closing early cancels."""
        self._check_open()
        subs, fanned = self._requests(request)
        loop = asyncio.get_running_loop()
        for index, sub in enumerate(subs):
            if sub.output.preview_interval_steps is not None:
                raise RequestError("output.preview_interval_steps", "previews are not supported with "
                                                                    "engine.num_gpus > 1 yet; drop it")
            events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
            started = time.perf_counter()

            def put(kind: str, value: Any, events: asyncio.Queue = events) -> None:
                try:
                    loop.call_soon_threadsafe(events.put_nowait, (kind, value))
                except RuntimeError:  # the loop is closed: nobody listens any more
                    pass

            if sub.request_id is None:
                sub = replace(sub, request_id=f"video_{uuid.uuid4().hex[:24]}")
            rid = sub.request_id
            assert rid is not None

            def progress(step: int, total: int, rid: str = rid, put: Callable[[str, Any], None] = put,
                         started: float = started) -> None:
                put("event", VideoProgressEvent(request_id=rid, step=step, total_steps=total, stage="denoise",
                                                elapsed_s=time.perf_counter() - started))

            future = self.group.submit(sub, need_bytes=True, on_step=progress)
            future.add_done_callback(functools.partial(put, "done"))
            finished = False
            try:
                while True:
                    kind, value = await events.get()
                    if kind == "event":
                        yield value
                        continue
                    result = value.result()  # raises the failure
                    if fanned:
                        result.prompt_index = index
                    finished = True
                    yield VideoFinalEvent(request_id=rid, video_bytes=result.video_bytes, frames=result.frames,
                                          metadata=result.metadata, continuation_state=result.state, result=result)
                    break
            finally:
                if not finished and not future.done():
                    self.group.cancel(rid)

    def shutdown(self) -> None:
        """Stop every rank (pending requests are cancelled); later calls raise GeneratorClosed. Safe twice."""
        if self.group._closed:
            return
        self.group.stop()
        logger.info("sequence-parallel generator shut down")

    def __enter__(self) -> "SequenceParallelGenerator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


# ---------------------------------------------------------------------------------------------- pool worker
class SequenceParallelWorker(WorkerHandle):
    """A whole sequence-parallel group as one :class:`~fastvideo.runtime.pool.GpuPool` worker (see module
    contract): ``device`` lists the group's devices; sessions (sticky hot state) are not supported."""

    def __init__(self, worker_id: str, generator_config: GeneratorConfig | Mapping[str, Any],
                 **group_options: Any) -> None:
        config = parse_config(GeneratorConfig, generator_config)
        self.group = SequenceParallelGroup(config, **group_options)
        super().__init__(worker_id, ",".join(self.group.devices))
        self._begun: set[str] = set()

    def start(self) -> None:
        threading.Thread(target=self._boot, name=f"boot-{self.worker_id}", daemon=True).start()

    def _boot(self) -> None:
        from fastvideo.runtime.generator import VideoGenerator

        try:
            self.group.start()
            self.pid = self.group.pids[0]
            started = time.perf_counter()
            self.group.submit(VideoGenerator.default_health_check_request()).result()
            self.warmup_info = {"sp_size": self.group.world, "devices": list(self.group.devices),
                                "warmup_s": time.perf_counter() - started}
        except Exception as exc:  # noqa: BLE001 - a failed boot excludes this worker
            logger.error("worker %s failed to boot: %s: %s", self.worker_id, type(exc).__name__, exc)
            self.group.stop(timeout=5.0)
            self._mark_dead(f"boot failed: {type(exc).__name__}: {exc}")
            return
        self.group.on_broken = self._mark_dead
        self.status = "ready"
        self.ready_event.set()

    def _send_generate(self, request: GenerationRequest, session_id: str | None) -> None:
        rid = request.request_id
        assert rid is not None
        if session_id is not None:
            self._error(rid, "invalid_request", "sessions are not supported on a sequence-parallel worker yet; "
                                                "send the continuation state in the request instead", "session_id")
            return

        def on_step(step: int, total: int) -> None:
            if rid not in self._begun:
                self._begun.add(rid)
                self._started(rid)
            self._progress(rid, step, total)

        try:
            future = self.group.submit(request, on_step=on_step)
        except FastVideoError as exc:
            self._error(rid, "worker_died", str(exc), None)
            return
        future.add_done_callback(functools.partial(self._finished, rid))

    def _finished(self, rid: str, future: Future) -> None:
        self._begun.discard(rid)
        exc = future.exception()
        if exc is None:
            self._done(rid, future.result(), None)
        elif isinstance(exc, RequestError):
            self._error(rid, "invalid_request", exc.reason, exc.field)
        elif isinstance(exc, GenerationCancelled):
            self._error(rid, "cancelled", str(exc), None)
        elif isinstance(exc, SequenceParallelGroupError):
            self._error(rid, "worker_died", str(exc), None)
        else:
            self._error(rid, "generation_failed", f"{type(exc).__name__}: {exc}", None)

    def cancel(self, request_id: str) -> None:
        self.group.cancel(request_id)

    def snapshot(self, session_id: str, timeout: float = 60.0) -> ContinuationState | None:
        return None  # no session lives on a sequence-parallel worker

    def hydrate(self, session_id: str, state: ContinuationState, timeout: float = 60.0) -> None:
        raise SequenceParallelGroupError(f"worker {self.worker_id}: sessions are not supported on a "
                                         "sequence-parallel worker yet")

    def drop(self, session_id: str) -> None:
        pass

    def session_ids(self) -> list[str]:
        return []

    def stop(self, timeout: float = 30.0) -> None:
        if self.status in ("ready", "booting"):
            self.status = "stopped"
        self.group.stop(timeout)
