"""A local Dynamo deployment for tests, benchmarks and demos: one frontend + N FastVideo workers.

Contract: ``LocalDynamoCluster(ClusterConfig(...))`` used as a context manager starts
``python -m dynamo.frontend --discovery-backend file`` on ``127.0.0.1:<free port>`` and N
``python -m fastvideo.serving.dynamo`` workers sharing a private ``DYN_FILE_KV`` folder (no etcd,
no NATS; TCP request plane bound to 127.0.0.1), each in its own process group with its own log
file. ``__enter__`` returns once the model is listed in ``/v1/models`` and the frontend's
``/health`` shows all N worker instances, or raises ``RuntimeError`` with the log tails (a process
that exits, or ``startup_timeout_s`` passing). ``stop()`` / ``__exit__`` always end every process
it started (SIGTERM to the group, SIGKILL after ``stop_timeout_s``). ``kill_worker(i)`` SIGKILLs
one worker. With ``worker_devices`` worker i serves a device pool (``--devices`` of its entry: one
Dynamo instance, several devices; the pool's processes are in the worker's process group, so they
end with it). The HTTP helpers use only the standard library. ``python -m
fastvideo.serving.dynamo.local --workers 2`` runs one until Ctrl-C or SIGTERM (what container runtimes
send): either signal, also while it is still starting, stops the frontend and every worker and waits
for them before the launcher exits (status 0; 1 when the cluster failed to start).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"


def free_port(below: int | None = None) -> int:
    """A TCP port free on 127.0.0.1 right now (``below``: smaller than that, tried at random)."""
    if below is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            return int(sock.getsockname()[1])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, below)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {below}")


@dataclass
class ClusterConfig:
    """What to start."""

    workers: int = 2
    #: Extra worker flags (e.g. ``["--model-path", DIR, "--device", "cpu"]``); default: built-in model.
    worker_args: Sequence[str] = ()
    #: Worker i serves a device pool: ``--devices worker_devices[i]`` (e.g. ``["0,1", "2,3"]``, or ``["cpu,cpu"]``);
    #: None: each worker runs one engine.
    worker_devices: Sequence[str] | None = None
    served_model_name: str = "fastvideo-tiny"
    #: torch/OpenMP threads per worker (``OMP_NUM_THREADS``); None leaves torch's default.
    threads_per_worker: int | None = None
    #: Pin worker i to CPU core ``cores[i % len(cores)]`` (None: no pinning).
    cores: Sequence[int] | None = None
    workdir: Path | None = None
    http_port: int | None = None
    startup_timeout_s: float = 180.0
    stop_timeout_s: float = 15.0
    env: dict[str, str] = field(default_factory=dict)
    #: Extra environment for workers only (e.g. ``DYN_HEALTH_CHECK_ENABLED``).
    worker_env: dict[str, str] = field(default_factory=dict)
    #: Give each worker Dynamo's system status server on a free port (``DYN_SYSTEM_PORT``).
    worker_system_ports: bool = False


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalDynamoCluster:
    """Frontend + workers on this machine (see module contract)."""

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.config = config or ClusterConfig()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir = self.config.workdir
        self.port = self.config.http_port or free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.frontend: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_logs: list[Path] = []
        #: Worker i's system status server port (with ``worker_system_ports``), else None.
        self.system_ports: list[int | None] = []
        self.frontend_log: Path | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "LocalDynamoCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        assert self.workdir is not None
        env = dict(os.environ)
        env.update({"DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": str(self.workdir / "kv"),
                    "DYN_REQUEST_PLANE": "tcp", "DYN_TCP_RPC_HOST": HOST, "DYN_TCP_RESPONSE_STREAM_HOST": HOST,
                    "DYN_HTTP_HOST": HOST, "PYTHONUNBUFFERED": "1"})
        env.update(self.config.env)
        return env

    def _spawn(self, argv: list[str], log: Path, env: dict[str, str], core: int | None) -> subprocess.Popen[bytes]:
        def pin() -> None:  # runs in the child before exec
            if core is not None:
                os.sched_setaffinity(0, {core})

        with open(log, "wb") as handle:
            return subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    preexec_fn=pin if core is not None else None)

    def start(self) -> None:
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fastvideo-dynamo-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = self._env()
        self.frontend_log = self.workdir / "frontend.log"
        self.frontend = self._spawn([sys.executable, "-m", "dynamo.frontend", "--http-host", HOST, "--http-port",
                                     str(self.port), "--discovery-backend", "file", "--request-plane", "tcp"],
                                    self.frontend_log, env, None)
        for index in range(self.config.workers):
            self.add_worker(index)
        self.wait_ready(self.config.workers)

    def add_worker(self, index: int | None = None) -> int:
        """Start one more worker; returns its index (call ``wait_ready`` to wait for it)."""
        assert self.workdir is not None
        index = len(self.workers) if index is None else index
        env = self._env()
        if self.config.threads_per_worker:
            for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env[name] = str(self.config.threads_per_worker)
        env.update(self.config.worker_env)
        # Dynamo 1.6.1 parses DYN_SYSTEM_PORT as a signed 16-bit integer: it must be below 32768.
        system_port = free_port(below=32768) if self.config.worker_system_ports else None
        if system_port is not None:
            env.update({"DYN_SYSTEM_PORT": str(system_port), "DYN_SYSTEM_HOST": HOST})
        self.system_ports.append(system_port)
        cores = self.config.cores
        core = cores[index % len(cores)] if cores else None
        log = self.workdir / f"worker{index}.log"
        argv = [sys.executable, "-m", "fastvideo.serving.dynamo", "--discovery-backend", "file",
                "--served-model-name", self.config.served_model_name,
                "--media-output-fs-url", f"file://{self.workdir / 'media'}", *self.config.worker_args]
        if self.config.worker_devices:
            argv += ["--devices", self.config.worker_devices[index % len(self.config.worker_devices)]]
        self.workers.append(self._spawn(argv, log, env, core))
        self.worker_logs.append(log)
        return index

    def _check_alive(self) -> None:
        procs = [("frontend", self.frontend, self.frontend_log)]
        procs += [(f"worker{i}", p, self.worker_logs[i]) for i, p in enumerate(self.workers)]
        for name, proc, log in procs:
            if proc is not None and proc.poll() is not None and log is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode} during startup; log tail:\n"
                                   f"{_tail(log)}")

    def instances(self) -> int:
        """How many worker instances the frontend currently routes to."""
        status, body = http_json("GET", self.base_url, "/health", timeout=5)
        if status != 200 or not isinstance(body, dict):
            return 0
        return sum(1 for inst in body.get("instances") or [] if inst.get("endpoint") == "generate")

    def wait_ready(self, workers: int) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        while True:
            self._check_alive()
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                status, body = http_json("GET", self.base_url, "/v1/models", timeout=5)
                listed = status == 200 and any(m.get("id") == self.config.served_model_name
                                               for m in body.get("data", []))
                if listed and self.instances() >= workers:
                    logger.info("dynamo cluster ready at %s with %d worker(s)", self.base_url, workers)
                    return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- worker{i}\n{_tail(p)}" for i, p in enumerate(self.worker_logs))
                raise RuntimeError(f"dynamo cluster not ready after {self.config.startup_timeout_s:.0f}s\n"
                                   f"--- frontend\n{_tail(self.frontend_log) if self.frontend_log else ''}\n{logs}")
            time.sleep(0.5)

    def kill_worker(self, index: int, sig: int = signal.SIGKILL) -> None:
        _signal_group(self.workers[index], sig)

    def worker_log(self, index: int) -> str:
        return self.worker_logs[index].read_text(errors="replace")

    def worker_for(self, response_id: str) -> int | None:
        """The index of the worker whose log shows it started ``response_id``."""
        for index in range(len(self.workers)):
            if f"started request {response_id} " in self.worker_log(index):
                return index
        return None

    def stop(self) -> None:
        procs = [p for p in self.workers if p is not None] + ([self.frontend] if self.frontend else [])
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_timeout_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("pid %d did not stop on SIGTERM; killing its process group", proc.pid)
        for proc in procs:
            _signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session=True: the group id is the child's pid


# ---------------------------------------------------------------------- HTTP helpers (stdlib only)
def _split(base_url: str) -> tuple[str, int]:
    hostport = base_url.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.partition(":")
    return host, int(port or 80)


def http_json(method: str, base_url: str, path: str, body: Any = None,
              timeout: float = 60.0) -> tuple[int, Any]:
    """One JSON request; returns (status, parsed body or raw text)."""
    host, port = _split(base_url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"content-type": "application/json"})
        response = conn.getresponse()
        raw = response.read().decode(errors="replace")
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw
    finally:
        conn.close()


def http_sse(base_url: str, path: str, body: Any, timeout: float = 60.0) -> Iterator[Any]:
    """POST and yield each SSE ``data:`` payload (parsed JSON, or the raw string such as ``[DONE]``)."""
    host, port = _split(base_url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"content-type": "application/json", "accept": "text/event-stream"})
        response = conn.getresponse()
        if response.status != 200:
            yield {"http_status": response.status, "body": response.read().decode(errors="replace")}
            return
        while True:
            line = response.readline()
            if not line:
                return
            text = line.decode(errors="replace").strip()
            if not text.startswith("data:"):
                continue
            payload = text[len("data:"):].strip()
            try:
                yield json.loads(payload)
            except ValueError:
                yield payload
    finally:
        conn.close()


class _Terminated(BaseException):
    """SIGTERM reached the launcher (a BaseException, so nothing on the way swallows it)."""


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the stopping itself
    raise _Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastvideo.serving.dynamo.local",
                                     description="Run Dynamo's frontend and N FastVideo workers locally "
                                                 "(file discovery, no etcd/NATS) until Ctrl-C.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--threads-per-worker", type=int, default=None)
    parser.add_argument("--worker-devices", nargs="+", default=None, metavar="LIST",
                        help="worker i serves a device pool: --devices of the i-th LIST (e.g. 0,1 2,3)")
    parser.add_argument("worker_args", nargs=argparse.REMAINDER, help="after --: flags passed to every worker")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    extra = [a for a in ns.worker_args if a != "--"]
    # Default SIGTERM would end this process at once and leave the children (own sessions) orphaned:
    # turn it into an exception so the context manager stops and waits for them.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with LocalDynamoCluster(ClusterConfig(workers=ns.workers, http_port=ns.http_port, worker_args=extra,
                                              threads_per_worker=ns.threads_per_worker,
                                              worker_devices=ns.worker_devices)) as cluster:
            logger.info("POST %s/v1/videos (logs in %s); Ctrl-C or SIGTERM stops everything", cluster.base_url,
                        cluster.workdir)
            while all(p.poll() is None for p in cluster.workers):
                time.sleep(1)
    except (KeyboardInterrupt, _Terminated):
        logger.info("stopped: the frontend and the workers have exited")
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
