"""Dynamo scale-out benchmark: Dynamo's frontend with 1 then 2 FastVideo workers, against `fastvideo serve`.

Contract: one run measures, on the same machine and workload (the built-in model by default at its
default shape 256x256, 9 frames, 8 steps; b64_json replies so no file I/O differs):

1. ``direct``: ``fastvideo serve`` (our own server, ``POST /v1/videos/generations``) with one engine;
2. ``dynamo-1``: ``python -m dynamo.frontend --discovery-backend file`` + 1 worker
   (``python -m fastvideo.serving.dynamo``), ``POST /v1/videos``;
3. ``dynamo-2``: the same with 2 workers.

Every server process gets the same CPU budget: ``--cores-per-worker`` cores (pinned with
``sched_setaffinity``, ``OMP_NUM_THREADS`` set to match); the frontend is not pinned. For each
setup it sends ``--num-requests`` requests at ``--concurrency`` (default 4) and reports throughput
(requests/s) and p50/p99 end-to-end latency; with ``--overhead-requests`` > 0 it also sends that
many requests one at a time to ``direct`` and ``dynamo-1`` and reports Dynamo's added latency two
ways: the difference of their p50 end-to-end latencies (moves with CPU contention, which changes
the generation time itself) and the difference of their p50 *overheads* (end-to-end minus the
server-reported queue + inference time: what HTTP, routing and transport add around the engine).
Targets (issue 7): dynamo-2 throughput >= 1.7x dynamo-1 at concurrency 4; added latency < 50 ms.
Run it on an otherwise idle machine with at least 2 cores per measured worker count.
Prints a table and writes ``--output-json``. Every process it starts is stopped before it exits.

    python benchmarks/bench_dynamo.py --num-requests 16 --overhead-requests 8 --output-json dyn.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from fastvideo.serving.bench import percentile
from fastvideo.serving.dynamo.local import ClusterConfig, LocalDynamoCluster, free_port, http_json

MODEL = "fastvideo-tiny"


#: A request sender: index -> (ok, error, server-reported queue + inference seconds).
Sender = Callable[[int], tuple[bool, str | None, float | None]]


def run_load(send: Sender, n: int, concurrency: int) -> dict[str, Any]:
    """Send ``n`` requests, at most ``concurrency`` in flight; latency and throughput figures.

    ``overhead_p50_ms``: the p50 of (client end-to-end - server-reported queue + inference time), i.e.
    what HTTP, routing, transport and encoding add around the engine; unlike raw latency it does not
    move when a busy CPU slows the generation itself. Printed for concurrency 1 only: Dynamo's reply
    has no queue time, so under load its figure would include the wait for the worker."""
    latencies: list[float] = []
    overheads: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        started = time.perf_counter()
        ok, error, server_s = send(index)
        elapsed = time.perf_counter() - started
        with lock:
            if ok:
                latencies.append(elapsed)
                if server_s is not None:
                    overheads.append(elapsed - server_s)
            else:
                errors.append(error or "failed")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(n)))
    duration = time.perf_counter() - started
    return {"requests": n, "ok": len(latencies), "failed": len(errors), "errors": errors[:3],
            "concurrency": concurrency, "duration_s": duration,
            "throughput_rps": len(latencies) / duration if duration > 0 else None,
            "p50_s": percentile(latencies, 50), "p99_s": percentile(latencies, 99),
            "mean_s": sum(latencies) / len(latencies) if latencies else None,
            "overhead_p50_ms": 1000 * p50 if (p50 := percentile(overheads, 50)) is not None else None}


def _shape(args: argparse.Namespace) -> dict[str, Any]:
    return {"size": args.size, "num_frames": args.num_frames, "num_inference_steps": args.steps, "fps": args.fps}


def _server_s(reply: Any) -> float | None:
    if not isinstance(reply, dict) or not isinstance(reply.get("inference_time_s"), (int, float)):
        return None
    return float(reply["inference_time_s"]) + float(reply.get("queue_time_s") or 0.0)


def dynamo_sender(base_url: str, args: argparse.Namespace) -> Sender:
    s = _shape(args)

    def send(index: int) -> tuple[bool, str | None]:
        body = {"prompt": f"a red fox running through snow, take {index}", "model": MODEL, "size": s["size"],
                "response_format": "b64_json",
                "nvext": {"num_frames": s["num_frames"], "num_inference_steps": s["num_inference_steps"],
                          "fps": s["fps"], "seed": index}}
        status, reply = http_json("POST", base_url, "/v1/videos", body, timeout=args.timeout)
        ok = status == 200 and isinstance(reply, dict) and reply.get("status") == "completed" and bool(
            reply.get("data") and reply["data"][0].get("b64_json"))
        return ok, None if ok else f"HTTP {status}: {str(reply)[:200]}", _server_s(reply)

    return send


def direct_sender(base_url: str, args: argparse.Namespace) -> Sender:
    s = _shape(args)

    def send(index: int) -> tuple[bool, str | None]:
        body = {"prompt": f"a red fox running through snow, take {index}", "model": MODEL, "size": s["size"],
                "num_frames": s["num_frames"], "num_inference_steps": s["num_inference_steps"], "fps": s["fps"],
                "seed": index, "response_format": "b64_json"}
        status, reply = http_json("POST", base_url, "/v1/videos/generations", body, timeout=args.timeout)
        ok = status == 200 and isinstance(reply, dict) and reply.get("status") == "completed" and bool(
            reply.get("data") and reply["data"][0].get("b64_json"))
        return ok, None if ok else f"HTTP {status}: {str(reply)[:200]}", _server_s(reply)

    return send


def _cores(args: argparse.Namespace, index: int) -> list[int]:
    available = sorted(os.sched_getaffinity(0))
    k = args.cores_per_worker
    return [available[(index * k + j) % len(available)] for j in range(k)]


@contextlib.contextmanager
def direct_server(args: argparse.Namespace, workdir: Path, env: dict[str, str]):
    """``fastvideo serve`` on a free port with worker 0's cores; stopped on exit whatever happens."""
    port = free_port()
    cores = set(_cores(args, 0))
    log = workdir / "direct.log"
    argv = [sys.executable, "-m", "fastvideo.serving.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--device", "cpu", "--served-model-name", MODEL, "--output-dir", str(workdir / "direct-out"),
            "--max-queue", "64", *(["--model-path", args.model_path] if args.model_path else [])]
    with open(log, "wb") as handle:
        proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=lambda: os.sched_setaffinity(0, cores))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + args.startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"fastvideo serve exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
            with contextlib.suppress(OSError, ValueError):
                status, _ = http_json("GET", base, "/readyz", timeout=5)
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"fastvideo serve not ready:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, 9)
            proc.wait(timeout=5)


def dynamo_cluster(args: argparse.Namespace, workers: int, env: dict[str, str]) -> LocalDynamoCluster:
    # ClusterConfig pins one core per worker; with more cores per worker we pin via taskset-like env below.
    worker_args = ["--device", "cpu", *(["--model-path", args.model_path] if args.model_path else [])]
    config = ClusterConfig(workers=workers, worker_args=worker_args, served_model_name=MODEL,
                           threads_per_worker=args.cores_per_worker,
                           cores=[_cores(args, i)[0] for i in range(workers)] if args.cores_per_worker == 1 else None,
                           env=env, startup_timeout_s=args.startup_timeout)
    return LocalDynamoCluster(config)


def warm(send: Sender, n: int) -> None:
    for i in range(n):
        ok, error, _ = send(10_000 + i)
        if not ok:
            raise RuntimeError(f"warm-up request failed: {error}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-path", default=None, help="model folder (default: the built-in model)")
    p.add_argument("--size", default="256x256")
    p.add_argument("--num-frames", type=int, default=9)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--fps", type=int, default=16)
    p.add_argument("--num-requests", type=int, default=16, help="requests per setup at --concurrency")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--overhead-requests", type=int, default=8, help="sequential requests for the overhead figure")
    p.add_argument("--cores-per-worker", type=int, default=1, help="cores pinned to each engine process")
    p.add_argument("--workers", default="1,2", help="Dynamo worker counts to measure")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--output-json", default=None)
    args = p.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench-dynamo-"))
    env = {"FASTVIDEO_CACHE_DIR": os.environ.get("FASTVIDEO_CACHE_DIR", str(workdir / "cache")),
           "OMP_NUM_THREADS": str(args.cores_per_worker), "MKL_NUM_THREADS": str(args.cores_per_worker)}
    report: dict[str, Any] = {"shape": _shape(args), "cores_per_worker": args.cores_per_worker,
                              "machine_cores": os.cpu_count(), "setups": {}}
    if args.cores_per_worker > 1:
        print("note: Dynamo workers are pinned only with --cores-per-worker 1; they share the machine otherwise",
              file=sys.stderr)

    print(f"direct: fastvideo serve, {args.cores_per_worker} core(s)", file=sys.stderr)
    with direct_server(args, workdir, {**os.environ, **env}) as base:
        send = direct_sender(base, args)
        warm(send, 1)
        report["setups"]["direct"] = run_load(send, args.num_requests, args.concurrency)
        if args.overhead_requests:
            report["setups"]["direct-c1"] = run_load(send, args.overhead_requests, 1)

    for workers in (int(w) for w in args.workers.split(",")):
        name = f"dynamo-{workers}"
        print(f"{name}: dynamo.frontend + {workers} worker(s), {args.cores_per_worker} core(s) each", file=sys.stderr)
        with dynamo_cluster(args, workers, env) as cluster:
            send = dynamo_sender(cluster.base_url, args)
            warm(send, workers)
            report["setups"][name] = run_load(send, args.num_requests, args.concurrency)
            if workers == 1 and args.overhead_requests:
                report["setups"]["dynamo-1-c1"] = run_load(send, args.overhead_requests, 1)
            logs = [cluster.worker_log(i) for i in range(workers)]
            report["setups"][name]["served_per_worker"] = [log.count(" finished request video-") for log in logs]

    setups = report["setups"]
    if "dynamo-1" in setups and "dynamo-2" in setups and setups["dynamo-1"]["throughput_rps"]:
        report["scaling_2_over_1"] = setups["dynamo-2"]["throughput_rps"] / setups["dynamo-1"]["throughput_rps"]
    if "direct-c1" in setups and "dynamo-1-c1" in setups and setups["direct-c1"]["p50_s"] is not None \
            and setups["dynamo-1-c1"]["p50_s"] is not None:
        added = setups["dynamo-1-c1"]["p50_s"] - setups["direct-c1"]["p50_s"]
        report["dynamo_added_latency_p50_ms"] = 1000 * added
        if setups["dynamo-1-c1"]["overhead_p50_ms"] is not None and setups["direct-c1"]["overhead_p50_ms"] is not None:
            report["dynamo_added_overhead_p50_ms"] = (setups["dynamo-1-c1"]["overhead_p50_ms"]
                                                      - setups["direct-c1"]["overhead_p50_ms"])

    print(f"{'setup':<12} {'ok/n':>7} {'conc':>4} {'req/s':>8} {'p50 s':>8} {'p99 s':>8} {'ovh ms':>8}  "
          "served per worker (incl. warm-up)")
    for name, r in setups.items():
        fmt = lambda v: f"{v:8.3f}" if isinstance(v, (int, float)) else f"{'-':>8}"  # noqa: E731
        print(f"{name:<12} {r['ok']:>3}/{r['requests']:<3} {r['concurrency']:>4} {fmt(r['throughput_rps'])} "
              f"{fmt(r['p50_s'])} {fmt(r['p99_s'])} {fmt(r['overhead_p50_ms'] if r['concurrency'] == 1 else None)}  "
              f"{r.get('served_per_worker', '')}"
              + (f"  errors: {r['errors']}" if r["errors"] else ""))
    if "scaling_2_over_1" in report:
        print(f"2 workers / 1 worker throughput: {report['scaling_2_over_1']:.2f}x (target >= 1.7x)")
    if "dynamo_added_latency_p50_ms" in report:
        print(f"Dynamo added latency (p50, one at a time): {report['dynamo_added_latency_p50_ms']:.1f} ms "
              f"(target < 50 ms)")
    if "dynamo_added_overhead_p50_ms" in report:
        print(f"Dynamo added overhead around the engine (p50 of e2e - server-reported time, one at a time): "
              f"{report['dynamo_added_overhead_p50_ms']:.1f} ms")
    print(f"cores per engine process: {args.cores_per_worker} (machine: {os.cpu_count()})")
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(report, indent=2))
    failed = sum(r["failed"] for r in setups.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
