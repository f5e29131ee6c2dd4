"""``fastvideo bench``: a load generator against a running server (or the engine alone, for a baseline).

Contract:
- Workload: ``--num-prompts`` requests drawn in order (cycling) from a prompt set (``builtin``, a
  ``.txt`` file with one prompt per line, or ``.jsonl`` with a ``prompt`` key), with the given
  shape; arrivals are all at once (``--request-rate inf``) or a Poisson process at that rate
  (exponential gaps from ``--seed``); at most ``--max-concurrency`` requests are in flight.
- Backends: ``videos`` (``POST /v1/videos``, poll, download the MP4), ``generations`` (synchronous
  ``POST /v1/videos/generations``), ``stream`` (``/v1/stream``: one session per request with
  ``--segments`` continued segments; time to first fragment measured), and ``engine`` (an
  in-process :class:`VideoGenerator` with no HTTP, no queue and no MP4 encode: the baseline the
  serving overhead is measured against).
- Report: success / failure counts (with the first errors), duration, throughput (requests/s,
  frames/s), and mean/p50/p90/p99 of end-to-end latency split into queue time and generation time
  (server-reported), client overhead (e2e - queue - generation) and, for streams, time to first
  fragment. ``--output-json`` writes the report with the exact workload (every argument, every
  prompt and every arrival offset) so a run can be repeated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BUILTIN_PROMPTS = (
    "a red fox running through fresh snow at dawn",
    "waves crashing on a rocky shore, slow motion",
    "a city street at night with neon reflections in puddles",
    "a hot air balloon drifting over green hills",
    "a cat chasing a ball of yarn across a wooden floor",
    "timelapse of clouds rolling over mountain peaks",
    "a sailboat on a calm lake at sunset",
    "rain falling on autumn leaves in a forest",
)


@dataclass
class Outcome:
    index: int
    ok: bool
    prompt: str
    arrival_s: float
    start_s: float = 0.0
    e2e_s: float | None = None
    queue_s: float | None = None
    generation_s: float | None = None
    ttff_s: float | None = None
    frames: int = 0
    bytes: int = 0
    error: str | None = None
    id: str | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)


def load_prompts(spec: str) -> list[str]:
    if spec == "builtin":
        return list(BUILTIN_PROMPTS)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ValueError(f"--prompt-set {spec!r}: no such file (or use 'builtin')")
    prompts: list[str] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        if path.suffix == ".jsonl":
            prompts.append(str(json.loads(line)["prompt"]))
        else:
            prompts.append(line)
    if not prompts:
        raise ValueError(f"--prompt-set {spec!r} holds no prompts")
    return prompts


def arrival_offsets(n: int, rate: float, seed: int) -> list[float]:
    """Poisson arrivals at ``rate`` per second (all at 0 when ``rate`` is infinite)."""
    if math.isinf(rate) or rate <= 0:
        return [0.0] * n
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: Sequence[float | None]) -> dict[str, float | None] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"mean": sum(vals) / len(vals), "p50": percentile(vals, 50), "p90": percentile(vals, 90),
            "p99": percentile(vals, 99), "min": min(vals), "max": max(vals), "n": len(vals)}


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    width, height = (int(x) for x in args.size.lower().split("x"))
    out: dict[str, Any] = {"width": width, "height": height, "num_frames": args.num_frames, "fps": args.fps,
                           "num_inference_steps": args.steps}
    if args.guidance_scale is not None:
        out["guidance_scale"] = args.guidance_scale
    return out


def _headers(args: argparse.Namespace) -> dict[str, str]:
    return {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}


async def _run_videos(client: Any, args: argparse.Namespace, o: Outcome, sync: bool) -> None:
    s = _sampling(args)
    body: dict[str, Any] = {"prompt": o.prompt, "size": f"{s['width']}x{s['height']}", "num_frames": s["num_frames"],
                            "fps": s["fps"], "num_inference_steps": s["num_inference_steps"],
                            "seed": args.seed + o.index}
    if args.model:
        body["model"] = args.model
    if "guidance_scale" in s:
        body["guidance_scale"] = s["guidance_scale"]
    if sync:
        body["response_format"] = "b64_json" if args.download else "url"
        r = await client.post("/v1/videos/generations", json=body, headers=_headers(args))
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        data = r.json()
        o.id, o.generation_s, o.queue_s = data["id"], data.get("inference_time_s"), data.get("queue_time_s")
        item = data["data"][0]
        o.bytes = len(item.get("b64_json", "")) * 3 // 4
        o.frames = s["num_frames"]
        return
    r = await client.post("/v1/videos", json=body, headers=_headers(args))
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
    video = r.json()
    o.id = video["id"]
    interval = args.poll_interval_ms / 1000.0
    while video["status"] in ("queued", "in_progress"):
        await asyncio.sleep(interval)
        r = await client.get(f"/v1/videos/{o.id}", headers=_headers(args))
        if r.status_code != 200:
            raise RuntimeError(f"poll HTTP {r.status_code}: {r.text[:200]}")
        video = r.json()
    if video["status"] != "completed":
        raise RuntimeError(f"job {video['status']}: {video.get('error')}")
    o.queue_s, o.generation_s = video.get("queue_time_s"), video.get("inference_time_s")
    o.frames = video.get("num_frames") or s["num_frames"]
    if args.download:
        r = await client.get(f"/v1/videos/{o.id}/content", headers=_headers(args))
        if r.status_code != 200:
            raise RuntimeError(f"download HTTP {r.status_code}")
        o.bytes = len(r.content)
    if args.delete:
        await client.delete(f"/v1/videos/{o.id}", headers=_headers(args))


async def _run_stream(args: argparse.Namespace, o: Outcome) -> None:
    from websockets.asyncio.client import connect

    s = _sampling(args)
    url = args.base_url.replace("http", "ws", 1).rstrip("/") + "/v1/stream"
    t0 = time.perf_counter()
    async with connect(url, additional_headers=_headers(args), max_size=None, open_timeout=args.timeout) as ws:
        await ws.send(json.dumps({"type": "session_init_v2", "prompt": o.prompt, "seed": args.seed + o.index, **s}))
        seg_start = t0
        queue_total = gen_total = 0.0
        done = 0
        while True:
            msg = await asyncio.wait_for(ws.recv(), args.timeout)
            if isinstance(msg, bytes):
                o.bytes += len(msg)
                if o.ttff_s is None:
                    o.ttff_s = time.perf_counter() - t0
                continue
            frame = json.loads(msg)
            kind = frame.get("type")
            if kind == "error":
                raise RuntimeError(f"{frame.get('code')}: {frame.get('message')}")
            if kind == "ltx2_segment_complete":
                done += 1
                o.frames += int(frame.get("frames") or 0)
                queue_total += frame.get("queue_time_s") or 0.0
                gen_total += frame.get("inference_time_s") or 0.0
                o.segments.append({"segment_idx": frame["segment_idx"], "latency_s": time.perf_counter() - seg_start,
                                   "queue_s": frame.get("queue_time_s"), "generation_s": frame.get("inference_time_s"),
                                   "ttff_s": frame.get("time_to_first_fragment_s")})
                seg_start = time.perf_counter()
                if done < args.segments:
                    await ws.send(json.dumps({"type": "segment_prompt_source", "prompt": o.prompt}))
                else:
                    await ws.send(json.dumps({"type": "end_stream"}))
            elif kind == "ltx2_stream_complete":
                break
        o.queue_s, o.generation_s = queue_total, gen_total


async def _drive(args: argparse.Namespace, prompts: list[str], offsets: list[float]) -> tuple[list[Outcome], float]:
    import httpx

    sem = asyncio.Semaphore(args.max_concurrency)
    outcomes = [Outcome(index=i, ok=False, prompt=prompts[i % len(prompts)], arrival_s=offsets[i])
                for i in range(args.num_prompts)]
    limits = httpx.Limits(max_connections=max(args.max_concurrency * 2, 10))
    async with httpx.AsyncClient(base_url=args.base_url, timeout=args.timeout, limits=limits) as client:
        t_begin = time.perf_counter()

        async def one(o: Outcome) -> None:
            delay = o.arrival_s - (time.perf_counter() - t_begin)
            if delay > 0:
                await asyncio.sleep(delay)
            async with sem:
                o.start_s = time.perf_counter() - t_begin
                t0 = time.perf_counter()
                try:
                    if args.backend == "stream":
                        await _run_stream(args, o)
                    else:
                        await _run_videos(client, args, o, sync=args.backend == "generations")
                    o.ok = True
                except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                    o.error = f"{type(exc).__name__}: {exc}"
                o.e2e_s = time.perf_counter() - t0

        await asyncio.gather(*(one(o) for o in outcomes))
        return outcomes, time.perf_counter() - t_begin


def _run_engine(args: argparse.Namespace, prompts: list[str], offsets: list[float]) -> tuple[list[Outcome], float]:
    from fastvideo.runtime.generator import VideoGenerator

    config: dict[str, Any] = {"model_path": args.model_path, "engine": {"device": args.device, "dtype": args.dtype}}
    generator = VideoGenerator.from_config(config)
    try:
        if args.engine_warmup:
            generator.generate(generator.warmup_request())
        s = _sampling(args)
        outcomes = []
        t_begin = time.perf_counter()
        for i in range(args.num_prompts):
            o = Outcome(index=i, ok=False, prompt=prompts[i % len(prompts)], arrival_s=offsets[i])
            o.start_s = time.perf_counter() - t_begin
            t0 = time.perf_counter()
            try:
                result = generator.generate({"prompt": o.prompt, "sampling": {**s, "seed": args.seed + i},
                                             "output": {"save_video": False, "return_frames": True}})
                o.ok, o.frames = True, len(result.frames)
                o.generation_s, o.queue_s = result.generation_time, 0.0
            except Exception as exc:  # noqa: BLE001
                o.error = f"{type(exc).__name__}: {exc}"
            o.e2e_s = time.perf_counter() - t0
            outcomes.append(o)
        return outcomes, time.perf_counter() - t_begin
    finally:
        generator.shutdown()


def build_report(args: argparse.Namespace, prompts: list[str], offsets: list[float], outcomes: list[Outcome],
                 duration: float) -> dict[str, Any]:
    ok = [o for o in outcomes if o.ok]
    overhead = [o.e2e_s - (o.queue_s or 0.0) - (o.generation_s or 0.0) for o in ok
                if o.e2e_s is not None and o.generation_s is not None]
    workload = {k: v for k, v in vars(args).items() if k != "func" and k != "api_key"}
    workload["prompts"] = [o.prompt for o in outcomes]
    workload["arrival_offsets_s"] = offsets
    return {
        "workload": workload,
        "completed": len(ok), "failed": len(outcomes) - len(ok),
        "errors": [o.error for o in outcomes if not o.ok][:10],
        "duration_s": duration,
        "throughput_rps": len(ok) / duration if duration > 0 else None,
        "throughput_frames_per_s": sum(o.frames for o in ok) / duration if duration > 0 else None,
        "e2e_latency_s": summarize([o.e2e_s for o in ok]),
        "queue_time_s": summarize([o.queue_s for o in ok]),
        "generation_time_s": summarize([o.generation_s for o in ok]),
        "client_overhead_s": summarize(overhead),
        "time_to_first_fragment_s": summarize([o.ttff_s for o in ok]),
        "bytes_total": sum(o.bytes for o in ok),
        "requests": [asdict(o) for o in outcomes],
    }


def _fmt(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "-"
    return " ".join(f"{k}={stats[k]:.3f}" for k in ("mean", "p50", "p90", "p99"))


def print_report(report: dict[str, Any], out: Any = sys.stdout) -> None:
    w = report["workload"]
    print(f"backend={w['backend']} prompts={w['num_prompts']} concurrency={w['max_concurrency']} "
          f"rate={w['request_rate']} shape={w['size']}x{w['num_frames']}f/{w['steps']} steps", file=out)
    print(f"completed {report['completed']}, failed {report['failed']} in {report['duration_s']:.2f}s "
          f"-> {report['throughput_rps'] or 0:.3f} req/s, {report['throughput_frames_per_s'] or 0:.2f} frames/s",
          file=out)
    for key, label in (("e2e_latency_s", "e2e"), ("queue_time_s", "queue"), ("generation_time_s", "generation"),
                       ("client_overhead_s", "overhead"), ("time_to_first_fragment_s", "ttff")):
        if report.get(key):
            print(f"  {label:<10} {_fmt(report[key])}", file=out)
    for error in report["errors"][:3]:
        print(f"  error: {error}", file=out)


def cmd_bench(args: argparse.Namespace) -> int:
    from fastvideo.envs import read_env

    args.api_key = args.api_key or read_env().api_key
    try:
        _w, _h = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {args.size!r} is not WIDTHxHEIGHT") from None
    if args.num_prompts < 1 or args.max_concurrency < 1:
        raise ValueError("--num-prompts and --max-concurrency must be >= 1")
    prompts_all = load_prompts(args.prompt_set)
    offsets = arrival_offsets(args.num_prompts, args.request_rate, args.seed)
    prompts = [prompts_all[i % len(prompts_all)] for i in range(args.num_prompts)]
    if args.backend == "engine":
        outcomes, duration = _run_engine(args, prompts, offsets)
    else:
        outcomes, duration = asyncio.run(_drive(args, prompts, offsets))
    report = build_report(args, prompts, offsets, outcomes, duration)
    print_report(report)
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.output_json}", file=sys.stderr)
    return 0 if report["completed"] else 1


def build_bench_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="load-test a running server (or the engine alone)",
                       description="Send a workload to a running fastvideo server and report throughput and "
                                   "latency (e2e, queue, generation, time to first fragment).")
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="server (or router) URL")
    p.add_argument("--backend", choices=["videos", "generations", "stream", "engine"], default="videos",
                   help="videos: create+poll+download; generations: synchronous; stream: /v1/stream sessions; "
                        "engine: in-process generator, no HTTP (baseline)")
    p.add_argument("--num-prompts", type=int, default=10, help="requests to send")
    p.add_argument("--max-concurrency", type=int, default=1, help="requests in flight at most")
    p.add_argument("--request-rate", type=float, default=float("inf"),
                   help="mean arrivals per second (Poisson); inf sends all at once (default)")
    p.add_argument("--prompt-set", default="builtin", help="builtin, a .txt (one prompt per line) or .jsonl file")
    p.add_argument("--size", default="256x256", help="WIDTHxHEIGHT (default 256x256, the built-in model's)")
    p.add_argument("--num-frames", type=int, default=9, help="frames per video / segment")
    p.add_argument("--fps", type=int, default=16)
    p.add_argument("--steps", type=int, default=8, help="denoising steps")
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--segments", type=int, default=2, help="segments per stream session (stream backend)")
    p.add_argument("--seed", type=int, default=0, help="seeds requests (seed + index) and the arrival process")
    p.add_argument("--model", default=None, help="model id to send")
    p.add_argument("--api-key", default=None, help="Bearer key (default: $FASTVIDEO_API_KEY)")
    p.add_argument("--poll-interval-ms", type=int, default=100, help="job poll interval (videos backend)")
    p.add_argument("--no-download", dest="download", action="store_false", help="do not download results")
    p.add_argument("--delete", action="store_true", help="delete each video after downloading it")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    p.add_argument("--output-json", default=None, help="write the full report (with the exact workload) here")
    e = p.add_argument_group("engine backend")
    e.add_argument("--model-path", default=None, help="model folder (default: the built-in model)")
    e.add_argument("--device", default="auto")
    e.add_argument("--dtype", default="auto")
    e.add_argument("--no-engine-warmup", dest="engine_warmup", action="store_false",
                   help="skip the health-check warmup before measuring")
    p.set_defaults(func=cmd_bench)
    return p
