"""GPU pool: several workers (one per GPU), request routing, sticky sessions, snapshot + hydrate.

Contract:
- Workers implement :class:`WorkerHandle`: :class:`LocalWorker` (in-process: a BatchWorker on its
  own device, threads only) and :class:`~fastvideo.runtime.pool_process.ProcessWorker` (one
  ``multiprocessing`` *spawn* process per GPU). A worker boots from a ``GeneratorConfig`` (its
  ``engine.device`` names the GPU), warms up both branches and only then reports ``ready``.
- :meth:`GpuPool.start` boots every worker concurrently and waits (:meth:`GpuPool.boot` starts the
  boots and returns at once, :meth:`GpuPool.wait_booted` waits, up to ``boot_timeout_s``); workers
  that fail to boot are *excluded* (status ``failed``, ``error`` says why) and never receive work;
  if none is ready it raises :class:`PoolBootError` listing every worker's error.
- Each worker counts the requests it completed and failed (``WorkerInfo.completed`` / ``failed``),
  so a caller can see which worker served what. :meth:`GpuPool.stop` gives each worker
  ``stop_timeout_s`` to finish before it is stopped harder.
- A :class:`PoolConfig` with ``devices`` describes a pool built from devices
  (:class:`~fastvideo.runtime.device_pool.DevicePool`, what ``fastvideo serve --devices`` and the
  Dynamo worker run); a GpuPool given its workers directly refuses devices that are not theirs.
- :meth:`GpuPool.submit` routes a request (``concurrent.futures.Future[VideoResult]``; ``on_start``
  is called once when its batch starts, ``on_progress(step, total)`` after every step): without a
  session to the least-loaded ready worker; with a ``session_id`` to the worker that holds the
  session's hot state (sticky), else to the least-loaded one (a session unknown to the pool whose
  record is in the SessionStore is resumed from it first: state survives a server restart). Each
  finished session segment is written through to the SessionStore (tensors above the blob
  threshold go to the BlobStore by id) unless ``write_through`` is off.
- A worker that dies (process exit, kill) is marked ``dead``: its in-flight requests fail with
  :class:`WorkerDied`, and every session it held is *lost*: the session's next request raises
  :class:`SessionLost` saying which worker died and how to go on (``resume(session_id)`` from the
  last stored snapshot, or send a continuation state); other workers keep serving.
- :meth:`migrate` moves a session by snapshot (hot state -> SessionStore) + hydrate (SessionStore
  -> target worker); :meth:`resume` hydrates a session from the SessionStore onto a worker;
  :meth:`snapshot` persists and returns the session's state (blob references for large tensors).
- Requests carrying a state that references blobs are resolved against the pool's BlobStore before
  they reach a worker, so workers need no store connection.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from fastvideo.api import (ConfigError, ContinuationState, FastVideoError, GenerationRequest, RequestError, VideoResult,
                           parse_config)
from fastvideo.api.serve import PoolConfig, normalize_device, normalize_devices  # the serve config's pool section
from fastvideo.runtime.session import HostCallbacks, SessionHost, SessionLost
from fastvideo.runtime.state_blobs import externalize_state, has_blob_refs, internalize_state
from fastvideo.runtime.stores import SessionRecord, StoreConfig, Stores, open_stores

logger = logging.getLogger(__name__)

__all__ = ["GpuPool", "LocalWorker", "PoolBootError", "PoolConfig", "PoolRequestFailed", "SessionLost",
           "WorkerDied", "WorkerHandle", "WorkerInfo", "normalize_device", "normalize_devices"]

ProgressFn = Callable[[int, int], None]
StartFn = Callable[[], None]


class PoolBootError(FastVideoError, RuntimeError):
    """No worker of the pool became ready."""


class PoolRequestFailed(FastVideoError, RuntimeError):
    """A request the pool routed did not complete (``code``: cancelled, queue_full, generation_failed...)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class WorkerDied(PoolRequestFailed):
    """The worker running the request died."""

    def __init__(self, message: str) -> None:
        super().__init__("worker_died", message)


@dataclass
class WorkerInfo:
    worker_id: str
    status: str
    device: str
    pid: int | None
    load: int
    error: str | None
    sessions: list[str] = field(default_factory=list)
    #: Requests this worker completed / failed (cancellations included) since it booted.
    completed: int = 0
    failed: int = 0


@dataclass
class _Pending:
    request_id: str
    session_id: str | None
    future: Future
    on_progress: ProgressFn | None
    on_start: StartFn | None = None


def _error_to_exception(code: str, message: str, field_name: str | None) -> BaseException:
    if code == "invalid_request" and field_name:  # the message is the error's reason, without the field
        return RequestError(field_name, message)
    return PoolRequestFailed(code, message)


class WorkerHandle(ABC):
    """One worker as the pool sees it (statuses: booting, ready, failed, dead, stopped)."""

    def __init__(self, worker_id: str, device: str) -> None:
        self.worker_id = worker_id
        self.device = device
        self.status = "booting"
        self.error: str | None = None
        self.pid: int | None = None
        self.pending: dict[str, _Pending] = {}
        self.ready_event = threading.Event()
        self.lock = threading.Lock()
        #: Set by the pool: called once when a ready worker dies, and with every finished session state.
        self.on_death: Callable[["WorkerHandle"], None] | None = None
        self.on_session_state: Callable[[str, ContinuationState, str], None] | None = None
        self.completed = 0
        self.failed = 0
        #: What the worker's warmup reported (timings, graph labels, branches), once it is ready.
        self.warmup_info: dict[str, Any] = {}

    @property
    def alive(self) -> bool:
        return self.status == "ready"

    @property
    def load(self) -> int:
        with self.lock:
            return len(self.pending)

    def wait_ready(self, timeout: float | None = None) -> bool:
        self.ready_event.wait(timeout)
        return self.status == "ready"

    # -- requests ---------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, session_id: str | None,
               on_progress: ProgressFn | None = None, on_start: StartFn | None = None) -> Future:
        assert request.request_id is not None
        future: Future = Future()
        if not self.alive:
            future.set_exception(WorkerDied(f"worker {self.worker_id} is {self.status}: {self.error or ''}".strip()))
            return future
        with self.lock:
            self.pending[request.request_id] = _Pending(request.request_id, session_id, future, on_progress, on_start)
        self._send_generate(request, session_id)
        return future

    def _started(self, request_id: str) -> None:
        pending = self.pending.get(request_id)
        if pending is not None and pending.on_start is not None:
            try:
                pending.on_start()
            except Exception:  # noqa: BLE001
                logger.exception("start callback failed for %s", request_id)

    def _progress(self, request_id: str, step: int, total: int) -> None:
        pending = self.pending.get(request_id)
        if pending is not None and pending.on_progress is not None:
            try:
                pending.on_progress(step, total)
            except Exception:  # noqa: BLE001
                logger.exception("progress callback failed for %s", request_id)

    def _done(self, request_id: str, result: VideoResult, session_state: ContinuationState | None) -> None:
        with self.lock:
            pending = self.pending.pop(request_id, None)
            self.completed += pending is not None
        if pending is None:
            return
        if pending.session_id is not None and session_state is not None and self.on_session_state is not None:
            try:
                self.on_session_state(pending.session_id, session_state, self.worker_id)
            except Exception:  # noqa: BLE001 - persisting must not lose the result
                logger.exception("writing session %s through failed", pending.session_id)
        pending.future.set_result(result)

    def _error(self, request_id: str, code: str, message: str, field_name: str | None) -> None:
        with self.lock:
            pending = self.pending.pop(request_id, None)
            self.failed += pending is not None
        if pending is not None:
            pending.future.set_exception(_error_to_exception(code, message, field_name))

    def _fail_all(self, message: str) -> None:
        with self.lock:
            pending, self.pending = list(self.pending.values()), {}
            self.failed += len(pending)
        for p in pending:
            if not p.future.done():
                p.future.set_exception(WorkerDied(f"{message} while running request {p.request_id}"))

    def _mark_dead(self, message: str) -> None:
        was_ready = self.status == "ready"
        self.status, self.error = ("dead", message) if was_ready else ("failed", message)
        self.ready_event.set()
        self._fail_all(message)
        if was_ready and self.on_death is not None:
            self.on_death(self)

    # -- abstract -----------------------------------------------------------------------------------
    @abstractmethod
    def start(self) -> None:
        """Begin booting (returns at once; ``wait_ready`` blocks)."""

    @abstractmethod
    def _send_generate(self, request: GenerationRequest, session_id: str | None) -> None: ...

    @abstractmethod
    def cancel(self, request_id: str) -> None: ...

    @abstractmethod
    def snapshot(self, session_id: str, timeout: float = 60.0) -> ContinuationState | None: ...

    @abstractmethod
    def hydrate(self, session_id: str, state: ContinuationState, timeout: float = 60.0) -> None: ...

    @abstractmethod
    def drop(self, session_id: str) -> None: ...

    @abstractmethod
    def session_ids(self) -> list[str]: ...

    def request_stop(self, timeout: float = 30.0) -> None:
        """Begin stopping without waiting (so a pool stops its workers in parallel), giving running work
        ``timeout`` s; default: nothing."""

    @abstractmethod
    def stop(self, timeout: float = 30.0) -> None: ...


class LocalWorker(WorkerHandle):
    """In-process worker: a BatchWorker over its own generator (built from a config, or given)."""

    def __init__(self, worker_id: str, *, generator_config: Any = None, generator: Any = None,
                 worker_config: Any = None, device: str | None = None) -> None:
        if (generator_config is None) == (generator is None):
            raise ValueError("pass exactly one of generator_config or generator")
        dev = device or (str(generator.pipeline.device) if generator is not None else "auto")
        super().__init__(worker_id, dev)
        self._generator_config = generator_config
        self._generator = generator
        self._worker_config = worker_config
        self.pid = os.getpid()  # it runs in this process
        self.host: SessionHost | None = None
        self._owns_generator = generator is None

    def start(self) -> None:
        threading.Thread(target=self._boot, name=f"boot-{self.worker_id}", daemon=True).start()

    def _boot(self) -> None:
        from fastvideo.runtime.generator import VideoGenerator
        from fastvideo.runtime.worker import BatchWorker

        try:
            if self._generator is None:
                self._generator = VideoGenerator.from_config(self._generator_config)
            worker = BatchWorker(self._generator, self._worker_config, name=f"fastvideo-{self.worker_id}")
            worker.start()
            self.warmup_info = worker.warmup()
            self.host = SessionHost(worker)
        except Exception as exc:  # noqa: BLE001 - a failed boot excludes this worker
            logger.error("worker %s failed to boot: %s: %s", self.worker_id, type(exc).__name__, exc)
            self._mark_dead(f"boot failed: {type(exc).__name__}: {exc}")
            return
        self.status = "ready"
        self.ready_event.set()

    def _send_generate(self, request: GenerationRequest, session_id: str | None) -> None:
        assert self.host is not None and request.request_id is not None
        rid = request.request_id
        self.host.generate(request, session_id, HostCallbacks(
            on_step=lambda step, total: self._progress(rid, step, total),
            on_done=lambda result, state: self._done(rid, result, state),
            on_error=lambda code, message, fld: self._error(rid, code, message, fld),
            on_start=lambda: self._started(rid)))

    def cancel(self, request_id: str) -> None:
        if self.host is not None:
            self.host.cancel(request_id)

    def snapshot(self, session_id: str, timeout: float = 60.0) -> ContinuationState | None:
        return None if self.host is None else self.host.snapshot(session_id)

    def hydrate(self, session_id: str, state: ContinuationState, timeout: float = 60.0) -> None:
        assert self.host is not None
        self.host.hydrate(session_id, state)

    def drop(self, session_id: str) -> None:
        if self.host is not None:
            self.host.drop(session_id)

    def session_ids(self) -> list[str]:
        return [] if self.host is None else self.host.session_ids()

    def stop(self, timeout: float = 30.0) -> None:
        if self.host is not None:
            self.host.worker.stop(timeout)
        if self._owns_generator and self._generator is not None:
            self._generator.shutdown()
        if self.status == "ready":
            self.status = "stopped"


@dataclass
class _Binding:
    session_id: str
    worker_id: str | None
    segment_index: int = -1
    lost: str | None = None


class GpuPool:
    """Routes requests and sessions over workers (see module contract)."""

    def __init__(self, workers: list[WorkerHandle], *, stores: Stores | None = None,
                 config: PoolConfig | None = None) -> None:
        if not workers:
            raise ValueError("a pool needs at least one worker")
        ids = [w.worker_id for w in workers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"worker ids must be unique, got {ids}")
        self.workers = {w.worker_id: w for w in workers}
        self.stores = stores or open_stores(StoreConfig())
        self.config = config or PoolConfig()
        theirs = [normalize_device(w.device) for w in workers]
        if self.config.devices and self.config.devices != theirs:
            raise ConfigError("pool.devices", f"{self.config.devices} are not the devices of these workers ({theirs}): "
                                              "a pool built from devices has one worker per device (DevicePool)")
        self.sessions: dict[str, _Binding] = {}
        self._lock = threading.RLock()
        for w in workers:
            w.on_death = self._on_death
            w.on_session_state = self._on_session_state

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> list[WorkerInfo]:
        """Boot every worker; exclude failures; raise PoolBootError if none is ready."""
        self.boot()
        return self.wait_booted()

    def boot(self) -> None:
        """Start every worker's boot (returns at once; :meth:`wait_booted` waits for them)."""
        for w in self.workers.values():
            w.start()

    def wait_booted(self) -> list[WorkerInfo]:
        """Wait for every booting worker (``boot_timeout_s`` in all); exclude failures; raise PoolBootError if
        none is ready."""
        deadline = time.monotonic() + self.config.boot_timeout_s
        for w in self.workers.values():
            if not w.wait_ready(max(0.0, deadline - time.monotonic())) and w.status == "booting":
                w.status, w.error = "failed", f"boot timed out after {self.config.boot_timeout_s:.0f}s"
        infos = self.info()
        failed = [i for i in infos if i.status != "ready"]
        for i in failed:
            logger.error("worker %s excluded from the pool: %s", i.worker_id, i.error)
        if len(failed) == len(infos):
            raise PoolBootError("no worker became ready: " + "; ".join(f"{i.worker_id}: {i.error}" for i in infos))
        logger.info("pool ready: %d/%d workers", len(infos) - len(failed), len(infos))
        return infos

    def stop(self) -> None:
        """Ask every worker to stop, then wait for each (a process worker is reaped before this returns)."""
        for w in self.workers.values():
            try:
                w.request_stop(self.config.stop_timeout_s)
            except Exception:  # noqa: BLE001
                logger.exception("asking worker %s to stop failed", w.worker_id)
        for w in self.workers.values():
            try:
                w.stop(self.config.stop_timeout_s)
            except Exception:  # noqa: BLE001
                logger.exception("stopping worker %s failed", w.worker_id)

    def info(self) -> list[WorkerInfo]:
        return [WorkerInfo(w.worker_id, w.status, w.device, w.pid, w.load, w.error,
                           sorted(s for s, b in self.sessions.items() if b.worker_id == w.worker_id and not b.lost),
                           completed=w.completed, failed=w.failed)
                for w in self.workers.values()]

    @property
    def ready_workers(self) -> list[WorkerHandle]:
        return [w for w in self.workers.values() if w.alive]

    # ------------------------------------------------------------------ routing
    def _least_loaded(self, exclude: str | None = None) -> WorkerHandle:
        ready = [w for w in self.ready_workers if w.worker_id != exclude]
        if not ready:
            raise PoolRequestFailed("no_worker", "no ready worker in the pool")
        bound: dict[str, int] = {}
        for b in self.sessions.values():
            if b.worker_id is not None and not b.lost:
                bound[b.worker_id] = bound.get(b.worker_id, 0) + 1
        return min(ready, key=lambda w: (w.load, bound.get(w.worker_id, 0), w.worker_id))

    def submit(self, request: GenerationRequest | dict, *, session_id: str | None = None,
               on_progress: ProgressFn | None = None, on_start: StartFn | None = None) -> Future:
        """Route one request; the future holds its VideoResult or the failure (see module contract)."""
        req = parse_config(GenerationRequest, request)
        if req.request_id is None:
            req = replace(req, request_id=f"video_{uuid.uuid4().hex[:24]}")
        if req.state is not None and has_blob_refs(req.state):
            try:
                req = replace(req, state=internalize_state(req.state, self.stores.blobs))
            except ValueError as exc:
                raise RequestError("state", str(exc)) from exc
        with self._lock:
            worker = self._route(req, session_id)
        return worker.submit(req, session_id, on_progress, on_start)

    def generate(self, request: GenerationRequest | dict, *, session_id: str | None = None,
                 timeout: float | None = None) -> VideoResult:
        return self.submit(request, session_id=session_id).result(timeout)

    def _route(self, req: GenerationRequest, session_id: str | None) -> WorkerHandle:
        if session_id is None:
            return self._least_loaded()
        binding = self.sessions.get(session_id)
        if binding is not None and binding.lost:
            raise SessionLost(session_id, binding.lost)
        if binding is not None and binding.worker_id is not None:
            worker = self.workers[binding.worker_id]
            if worker.alive:
                return worker
            self._lose(binding, worker)
            raise SessionLost(session_id, binding.lost or "")
        if req.state is None and self.stores.sessions.get(session_id) is not None:
            self._resume_locked(session_id, None)
            return self.workers[self.sessions[session_id].worker_id or ""]
        worker = self._least_loaded()
        self.sessions[session_id] = _Binding(session_id, worker.worker_id)
        return worker

    def cancel(self, request_id: str) -> bool:
        for w in self.workers.values():
            if request_id in w.pending:
                w.cancel(request_id)
                return True
        return False

    # ------------------------------------------------------------------ sessions
    def _lose(self, binding: _Binding, worker: WorkerHandle) -> None:
        record = self.stores.sessions.get(binding.session_id)
        hint = (f"the last stored snapshot is segment {record.segment_index}: call resume({binding.session_id!r}) "
                "to continue from it, or send a continuation_state"
                if record is not None and record.state is not None else
                "no snapshot was stored: send a continuation_state to continue, or start a new session")
        binding.lost = (f"session {binding.session_id!r} was on worker {worker.worker_id}, which "
                        f"{'died' if worker.status == 'dead' else 'is ' + worker.status} "
                        f"({worker.error or 'no detail'}); its hot state is gone; {hint}")

    def _on_death(self, worker: WorkerHandle) -> None:
        logger.error("worker %s died: %s", worker.worker_id, worker.error)
        with self._lock:
            for binding in self.sessions.values():
                if binding.worker_id == worker.worker_id and not binding.lost:
                    self._lose(binding, worker)

    def _on_session_state(self, session_id: str, state: ContinuationState, worker_id: str) -> None:
        index = state.payload.get("segment_index", -1)
        with self._lock:
            binding = self.sessions.get(session_id)
            if binding is not None:
                binding.segment_index = index if isinstance(index, int) else -1
        if self.config.write_through:
            self._persist(session_id, state, worker_id)

    def _persist(self, session_id: str, state: ContinuationState, worker_id: str | None) -> ContinuationState:
        cfg = self.stores.config
        stored = externalize_state(state, self.stores.blobs, cfg.blob_threshold_bytes, ttl_s=cfg.blob_ttl_s)
        index = state.payload.get("segment_index", -1)
        self.stores.sessions.put(SessionRecord(session_id=session_id, state=stored.to_dict(), worker_id=worker_id,
                                               segment_index=index if isinstance(index, int) else -1),
                                 ttl_s=cfg.session_ttl_s)
        return stored

    def snapshot(self, session_id: str) -> ContinuationState:
        """Persist the session's hot state to the SessionStore and return it (large tensors by blob id)."""
        with self._lock:
            binding = self.sessions.get(session_id)
            if binding is None or binding.worker_id is None:
                raise KeyError(f"session {session_id!r} is not bound to a worker in this pool")
            if binding.lost:
                raise SessionLost(session_id, binding.lost)
            worker = self.workers[binding.worker_id]
        state = worker.snapshot(session_id, self.config.rpc_timeout_s)
        if state is None:
            raise KeyError(f"session {session_id!r} has no state yet (no segment finished)")
        return self._persist(session_id, state, worker.worker_id)

    def migrate(self, session_id: str, to: str | None = None) -> str:
        """Move a session: snapshot to the SessionStore, hydrate on ``to`` (or the least-loaded other)."""
        self.snapshot(session_id)
        with self._lock:
            source = self.sessions[session_id].worker_id
            target = self.workers[to] if to is not None else self._least_loaded(exclude=source)
            if not target.alive:
                raise PoolRequestFailed("no_worker", f"worker {target.worker_id} is {target.status}")
            self._resume_locked(session_id, target.worker_id)
            if source is not None and source != target.worker_id and self.workers[source].alive:
                self.workers[source].drop(session_id)
            return target.worker_id

    def resume(self, session_id: str, to: str | None = None) -> str:
        """Hydrate a session from the SessionStore onto a worker (after a restart or a worker's death)."""
        with self._lock:
            return self._resume_locked(session_id, to)

    def _resume_locked(self, session_id: str, to: str | None) -> str:
        record = self.stores.sessions.get(session_id)
        if record is None or record.state is None:
            raise KeyError(f"session {session_id!r} has no stored snapshot (expired, or never persisted)")
        try:
            state = internalize_state(ContinuationState.from_dict(record.state), self.stores.blobs)
        except ValueError as exc:
            raise SessionLost(session_id, f"session {session_id!r} snapshot cannot be restored: {exc}") from exc
        target = self.workers[to] if to is not None else self._least_loaded()
        target.hydrate(session_id, state, self.config.rpc_timeout_s)
        self.sessions[session_id] = _Binding(session_id, target.worker_id, record.segment_index)
        logger.info("session %s hydrated on worker %s (segment %d)", session_id, target.worker_id,
                    record.segment_index)
        return target.worker_id

    def close_session(self, session_id: str, *, forget_stored: bool = True) -> None:
        with self._lock:
            binding = self.sessions.pop(session_id, None)
        if binding is not None and binding.worker_id is not None and self.workers[binding.worker_id].alive:
            self.workers[binding.worker_id].drop(session_id)
        if forget_stored:
            self.stores.sessions.delete(session_id)
