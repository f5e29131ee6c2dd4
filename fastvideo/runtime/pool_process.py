"""Process-per-GPU worker: a ``multiprocessing`` *spawn* child running a BatchWorker + SessionHost.

Contract:
- :class:`ProcessWorker` starts one spawn process (no fork: CUDA and threads are safe) that builds
  a :class:`VideoGenerator` from the given ``GeneratorConfig`` (sent as a plain dict), starts a
  :class:`BatchWorker`, runs its warmup (both branches) and only then sends ``ready``; any boot
  exception is sent as ``boot_failed`` with the error text and the child exits, so the pool
  excludes it.
- Parent and child talk over one duplex ``Pipe`` with tuples. Parent -> child: ``generate``,
  ``cancel``, ``snapshot``, ``hydrate``, ``drop``, ``stop`` (with the seconds the child's engine gets to
  finish). Child -> parent: ``ready`` (pid, device, warmup report), ``boot_failed``, ``started`` (the
  request's batch began), ``progress``, ``done`` (the VideoResult and the session's new state), ``error``
  (code, message, field), ``reply`` (snapshot/hydrate answers). Objects cross as pickles of the
  public dataclasses.
- One reader thread per worker in the parent. When the pipe breaks (the child exited or was
  killed) the worker is marked ``dead`` with the exit code, its pending requests and RPCs fail with
  :class:`~fastvideo.runtime.pool.WorkerDied`, and the pool marks its sessions lost. A child whose
  parent disappears exits on its own (the pipe closes). A child whose boot failed exits with code 1.
- Reaping: the reader thread and :meth:`ProcessWorker.stop` may both wait for the child's exit, so
  every ``waitpid`` on it (join, exit-code poll) and every signal sent to it happen under one lock;
  the waiting itself is done on the process sentinel outside the lock. (Two threads joining one
  ``multiprocessing.Process`` race in ``waitpid``: the loser gets ECHILD and sees a dead child as
  alive, and would then signal a pid that may already be reused.) ``stop`` escalates: ``stop``
  message, wait ``timeout``; SIGTERM, wait; SIGKILL, wait; each step only while the child is not
  reaped.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from multiprocessing.connection import wait as wait_ready
from typing import Any

from fastvideo.api import ContinuationState, GenerationRequest, GeneratorConfig, config_to_dict, parse_config
from fastvideo.runtime.pool import WorkerDied, WorkerHandle

logger = logging.getLogger(__name__)


def child_process_setup(conn: Any, log_level: str, label: str) -> Callable[..., None]:
    """In a spawned child (a pool worker or a sequence-parallel rank): configure logging with ``label`` in each
    line and return a thread-safe ``send(*message)`` over the child's pipe end, which drops the message once the
    parent has gone (the child then notices on its next receive)."""
    logging.basicConfig(level=log_level, format=f"%(asctime)s [{label}] %(levelname)s %(name)s: %(message)s")
    send_lock = threading.Lock()

    def send(*message: Any) -> None:
        with send_lock:
            try:
                conn.send(message)
            except (OSError, EOFError, BrokenPipeError):
                pass

    return send


def _child_main(worker_id: str, config_dict: dict, worker_config: Any, conn: Any, threads: int | None,
                log_level: str) -> None:
    """Entry point of the worker process (module-level so spawn can import it)."""
    send = child_process_setup(conn, log_level, worker_id)

    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        from fastvideo.runtime.generator import VideoGenerator
        from fastvideo.runtime.session import HostCallbacks, SessionHost
        from fastvideo.runtime.worker import BatchWorker

        generator = VideoGenerator.from_config(parse_config(GeneratorConfig, config_dict))
        worker = BatchWorker(generator, worker_config, name=f"fastvideo-{worker_id}")
        worker.start()
        info = worker.warmup()
        host = SessionHost(worker)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which excludes this worker
        send("boot_failed", f"{type(exc).__name__}: {exc}")
        conn.close()
        sys.exit(1)
    send("ready", {"pid": os.getpid(), "device": str(generator.pipeline.device), "warmup": info})

    def callbacks(rid: str) -> HostCallbacks:
        return HostCallbacks(on_step=lambda step, total: send("progress", rid, step, total),
                             on_done=lambda result, state: send("done", rid, result, state),
                             on_error=lambda code, message, fld: send("error", rid, code, message, fld),
                             on_start=lambda: send("started", rid))

    stop_timeout_s = 30.0
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        kind = message[0]
        try:
            if kind == "generate":
                _, rid, request, session_id = message
                host.generate(request, session_id, callbacks(rid))
            elif kind == "cancel":
                host.cancel(message[1])
            elif kind == "snapshot":
                _, rid, session_id = message
                send("reply", rid, host.snapshot(session_id), None)
            elif kind == "hydrate":
                _, rid, session_id, state = message
                host.hydrate(session_id, state)
                send("reply", rid, True, None)
            elif kind == "drop":
                host.drop(message[1])
            elif kind == "stop":
                stop_timeout_s = message[1]
                break
        except Exception as exc:  # noqa: BLE001 - one bad command must not kill the worker
            logging.getLogger(__name__).exception("command %s failed", kind)
            if kind in ("snapshot", "hydrate"):
                send("reply", message[1], None, f"{type(exc).__name__}: {exc}")
    worker.stop(timeout=stop_timeout_s)
    generator.shutdown()
    conn.close()


class ProcessWorker(WorkerHandle):
    """A worker in its own spawn process (see module contract)."""

    def __init__(self, worker_id: str, generator_config: GeneratorConfig | dict, *, worker_config: Any = None,
                 threads: int | None = None, log_level: str = "WARNING") -> None:
        config = parse_config(GeneratorConfig, generator_config)
        super().__init__(worker_id, config.engine.device)
        self._config_dict = config_to_dict(config)
        self._worker_config = worker_config
        self._threads = threads
        self._log_level = log_level
        self._conn: Any = None
        self._process: Any = None
        self._send_lock = threading.Lock()
        self._rpcs: dict[str, Future] = {}
        self._reader: threading.Thread | None = None
        #: Held around every waitpid on the child and every signal sent to it (see module contract).
        self._reap_lock = threading.Lock()

    @property
    def exitcode(self) -> int | None:
        if self._process is None:
            return None
        with self._reap_lock:
            return self._process.exitcode

    def _wait_exit(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the child to exit and reap it; its exit code, or None if alive."""
        process = self._process
        if process is None:
            return None
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            # Wait on the sentinel (readable once the child has exited) without reaping; only the
            # thread holding the lock calls waitpid, so a concurrent waiter never sees ECHILD.
            exited = bool(wait_ready([process.sentinel], max(0.0, deadline - time.monotonic())))
            with self._reap_lock:
                if exited:
                    process.join(1.0)  # the child is exiting: waitpid returns at once
                code = process.exitcode
            if code is not None or time.monotonic() >= deadline:
                return code

    def _signal(self, how: str) -> bool:
        """``terminate`` or ``kill`` the child if it is not reaped yet; True when a signal was sent."""
        with self._reap_lock:
            if self._process is None or self._process.exitcode is not None:
                return False
            getattr(self._process, how)()
            return True

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self._process = ctx.Process(target=_child_main, name=f"fastvideo-{self.worker_id}", daemon=True,
                                    args=(self.worker_id, self._config_dict, self._worker_config, child,
                                          self._threads, self._log_level))
        self._process.start()
        child.close()  # only the child holds its end: its exit closes the pipe for our reader
        self._conn = parent
        self.pid = self._process.pid
        self._reader = threading.Thread(target=self._read_loop, name=f"reader-{self.worker_id}", daemon=True)
        self._reader.start()

    def _send(self, *message: Any) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _read_loop(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # noqa: BLE001 - an unpicklable message: log, keep reading
                logger.exception("worker %s sent an unreadable message", self.worker_id)
                continue
            kind = message[0]
            if kind == "ready":
                info = message[1]
                self.pid, self.device = info["pid"], info["device"]
                self.warmup_info = info["warmup"]
                self.status = "ready"
                self.ready_event.set()
            elif kind == "boot_failed":
                self.error = f"boot failed: {message[1]}"
                self.status = "failed"
                self.ready_event.set()
            elif kind == "started":
                self._started(message[1])
            elif kind == "progress":
                self._progress(message[1], message[2], message[3])
            elif kind == "done":
                self._done(message[1], message[2], message[3])
            elif kind == "error":
                self._error(message[1], message[2], message[3], message[4])
            elif kind == "reply":
                future = self._rpcs.pop(message[1], None)
                if future is not None:
                    if message[3] is not None:
                        future.set_exception(RuntimeError(message[3]))
                    else:
                        future.set_result(message[2])
        self._on_pipe_closed()

    def _on_pipe_closed(self) -> None:
        code = self._wait_exit(5.0)
        if self.status in ("stopped", "failed"):
            self._fail_rpcs(f"worker {self.worker_id} is {self.status}")
            self._fail_all(f"worker {self.worker_id} is {self.status}")
            return
        detail = f"exit code {code}" if code is not None else "pipe closed"
        if code is not None and code < 0:
            detail += f" (killed by signal {-code})"
        message = f"worker {self.worker_id} (pid {self.pid}) died: {detail}"
        if self.status == "booting":
            message = f"worker {self.worker_id} exited during boot: {detail}"
        self._fail_rpcs(message)
        self._mark_dead(message)

    def _fail_rpcs(self, message: str) -> None:
        rpcs, self._rpcs = list(self._rpcs.values()), {}
        for future in rpcs:
            if not future.done():
                future.set_exception(WorkerDied(message))

    def _rpc(self, timeout: float, *message: Any) -> Any:
        if not self.alive:
            raise WorkerDied(f"worker {self.worker_id} is {self.status}: {self.error or ''}".strip())
        rid = f"rpc_{uuid.uuid4().hex[:12]}"
        future: Future = Future()
        self._rpcs[rid] = future
        self._send(message[0], rid, *message[1:])
        try:
            return future.result(timeout)
        except FutureTimeout as exc:
            self._rpcs.pop(rid, None)
            raise TimeoutError(f"worker {self.worker_id} did not answer {message[0]} within {timeout}s") from exc

    # -- WorkerHandle -------------------------------------------------------------------------------
    def _send_generate(self, request: GenerationRequest, session_id: str | None) -> None:
        try:
            self._send("generate", request.request_id, request, session_id)
        except (OSError, EOFError, BrokenPipeError) as exc:
            self._error(request.request_id or "", "worker_died", f"worker {self.worker_id}: {exc}", None)

    def cancel(self, request_id: str) -> None:
        if self.alive:
            self._send("cancel", request_id)

    def snapshot(self, session_id: str, timeout: float = 60.0) -> ContinuationState | None:
        return self._rpc(timeout, "snapshot", session_id)

    def hydrate(self, session_id: str, state: ContinuationState, timeout: float = 60.0) -> None:
        self._rpc(timeout, "hydrate", session_id, replace(state))

    def drop(self, session_id: str) -> None:
        if self.alive:
            self._send("drop", session_id)

    def session_ids(self) -> list[str]:
        return []  # the pool's bindings are authoritative for process workers

    def request_stop(self, timeout: float = 30.0) -> None:
        """Ask the child to stop, giving its engine ``timeout`` s (returns at once; :meth:`stop` waits and
        escalates)."""
        if self.status in ("ready", "booting"):
            self.status = "stopped"
            try:
                self._send("stop", timeout)
            except (OSError, EOFError, BrokenPipeError):
                pass

    def stop(self, timeout: float = 30.0, *, grace_s: float = 10.0) -> None:
        """Stop the child: ``stop`` message and ``timeout`` s, then SIGTERM and ``grace_s`` s, then SIGKILL;
        returns once it is reaped (or logs that even SIGKILL did not end it)."""
        self.request_stop(timeout)
        if self._process is None:
            return
        if self._wait_exit(timeout) is not None:
            return
        for how, grace in (("terminate", grace_s), ("kill", grace_s)):
            logger.warning("worker %s (pid %s) did not exit within %.0fs; sending %s", self.worker_id, self.pid,
                           timeout, "SIGTERM" if how == "terminate" else "SIGKILL")
            if not self._signal(how) or self._wait_exit(grace) is not None:
                return
            timeout = grace
        logger.error("worker %s (pid %s) is still running after SIGKILL", self.worker_id, self.pid)
