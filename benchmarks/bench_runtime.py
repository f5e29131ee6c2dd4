"""Runtime benchmark: concurrent load versus one at a time, CUDA graphs versus eager, stream overlap.

All in one process and one run, on the same loaded model:

* **Load** (any device): the same list of requests served through :class:`VideoService` three ways:
  ``sequential`` (one client, one request at a time, no batching), ``concurrent`` (``--concurrency``
  closed-loop clients, no batching) and ``batched`` (same clients, same-shape jobs share one DiT
  forward, up to ``--max-batch``). Reported: throughput (requests/s over the wall time of the
  mode), end-to-end latency p50/p99 (submit -> completed, queue included), mean queue time and the
  mean DiT batch size the scheduler actually formed. Each mode gets its own service and a warmup
  (both branches) before the clock starts.
* **Stream overlap** (``--device cuda``, or ``--overlap`` on a CPU): the ``batched`` mode again with
  the encode / denoise / decode stages on separate threads and CUDA streams versus one thread; the
  throughput ratio is the overlap gained.
* **CUDA graphs** (``--device cuda`` only): one DiT step replayed from a captured graph
  (:class:`DiTGraphRunner` with its static-buffer copies and output clone included) versus the
  same step run eagerly, at the health-check shape (256x256, 8 frames, batch 1) and at a bigger
  shape; median of interleaved iterations, plus the max |diff| between the two outputs.
  Default model: the built-in one (bigger shape 480x832x33, CFG batch 2). ``--full`` times the DiT
  of the real Wan2.1-T2V-1.3B config with random weights (they time exactly like trained ones) in
  bf16 at the health-check shape and at 480x832x81 with CFG batch 2.

* **Few-step** (``--few-step``, any device): end-to-end latency (``generate``: text encode, denoise, VAE
  decode) of a FastWan-style preset (``sampler="dmd"``, 3 steps at 1000/757/522, guidance 1, no CFG) against
  Wan's 50-step preset (UniPC, guidance 5, CFG), same model, shape (``--size``), seed and run; the two take
  turns (``--few-step-iters`` timed calls each after a warmup); medians and their ratio, for the whole call
  and for its denoising stage alone (the part the preset changes; text encode and decode stay the same).

Throughput is the median over ``--rounds`` rounds (all modes run once per round, interleaved, so
drift and other processes' load hit every mode alike); latency percentiles pool every round.
Prints a table; ``--json PATH`` writes the exact workload and every figure. On a CPU the default
shape is small (64x64, 9 frames, 4 steps, CFG) so the whole run takes a couple of minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleaved_seconds, peak_memory  # noqa: E402
from benchmarks.wan_configs import WAN_1_3B_DIT  # noqa: E402
from fastvideo.serving.bench import percentile  # noqa: E402


# ---------------------------------------------------------------------------------------------- load
@dataclass
class ModeResult:
    name: str
    concurrency: int
    max_batch: int
    overlap: bool
    requests: int
    wall_s: float
    #: Per round: (completed, wall seconds); throughput is the median over rounds.
    rounds: list[tuple[int, float]] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    queue_s: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    stage_s: dict[str, list[float]] = field(default_factory=dict)
    failures: int = 0

    def merge(self, other: "ModeResult") -> None:
        """Pool another round of the same mode into this one."""
        self.requests += other.requests
        self.wall_s += other.wall_s
        self.rounds += other.rounds
        self.latencies_s += other.latencies_s
        self.queue_s += other.queue_s
        self.batch_sizes += other.batch_sizes
        for k, v in other.stage_s.items():
            self.stage_s.setdefault(k, []).extend(v)
        self.failures += other.failures

    def summary(self) -> dict[str, Any]:
        ok = len(self.latencies_s)
        per_round = [done / wall for done, wall in self.rounds if wall > 0]
        return {
            "mode": self.name, "concurrency": self.concurrency, "max_batch": self.max_batch, "overlap": self.overlap,
            "requests": self.requests, "completed": ok, "failed": self.failures, "wall_s": self.wall_s,
            "rounds": len(self.rounds), "throughput_rps_per_round": per_round,
            "throughput_rps": statistics.median(per_round) if per_round else 0.0,
            "latency_p50_s": percentile(self.latencies_s, 50) if ok else None,
            "latency_p99_s": percentile(self.latencies_s, 99) if ok else None,
            "latency_mean_s": statistics.fmean(self.latencies_s) if ok else None,
            "queue_mean_s": statistics.fmean(self.queue_s) if ok else None,
            "mean_batch": statistics.fmean(self.batch_sizes) if self.batch_sizes else None,
            #: Mean seconds per stage as each request's metadata reports them (denoise: its whole batch).
            "stage_mean_s": {k: statistics.fmean(v) for k, v in sorted(self.stage_s.items()) if v},
        }


def make_requests(args: argparse.Namespace) -> list[dict[str, Any]]:
    h, w, f = parse_shape(args.size)
    prompts = ["a red fox running through snow", "waves breaking on a rocky shore", "a city street at night",
               "a hot air balloon over hills"]
    return [{"prompt": prompts[i % len(prompts)],
             "sampling": {"width": w, "height": h, "num_frames": f, "num_inference_steps": args.steps,
                          "guidance_scale": args.guidance, "seed": 1000 + i},
             "output": {"save_video": False, "return_frames": False}}
            for i in range(args.requests)]


async def run_mode(generator: Any, name: str, requests: list[dict[str, Any]], *, concurrency: int, max_batch: int,
                   overlap: bool) -> ModeResult:
    from fastvideo.api import GenerationRequest, parse_config
    from fastvideo.runtime.scheduler import SchedulerConfig
    from fastvideo.runtime.service import ServiceConfig, VideoService
    from fastvideo.runtime.worker import WorkerConfig

    warm = parse_config(GenerationRequest, {**requests[0], "request_id": None})
    scheduler = SchedulerConfig(max_queue=len(requests) + concurrency, max_batch=max_batch)
    service = VideoService(generator, ServiceConfig(WorkerConfig(scheduler, overlap=overlap, warmup_request=warm)))
    await service.start()
    await service.warmup()
    pending = list(requests)
    result = ModeResult(name, concurrency, max_batch, overlap, len(requests), 0.0)

    async def client() -> None:
        while pending:
            job = service.submit(pending.pop(0))
            await job.wait()
            if job.status != "completed" or job.completed_at is None:
                result.failures += 1
                continue
            result.latencies_s.append(job.completed_at - job.created_at)
            result.queue_s.append((job.started_at or job.created_at) - job.created_at)
            if job.result is not None:
                result.batch_sizes.append(int(job.result.metadata.get("batch_size", 1)))
                for stage, seconds in (job.result.metadata.get("timings") or {}).items():
                    if isinstance(seconds, (int, float)):
                        result.stage_s.setdefault(stage, []).append(float(seconds))

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - t0
    result.rounds.append((len(result.latencies_s), result.wall_s))
    await service.stop(graceful=True)
    return result


# ---------------------------------------------------------------------------------------------- graphs
def graph_vs_eager(dit: Any, shape: tuple[int, int, int], lat_f: int, batch: int, text_len: int, dtype: torch.dtype,
                   device: torch.device, iters: int, warmup: int, label: str, backend: Any) -> dict[str, Any]:
    """Median DiT step time: graph replay (through DiTGraphRunner) versus eager, interleaved."""
    from fastvideo.runtime.counters import RuntimeCounters
    from fastvideo.runtime.cuda_graphs import DiTGraphRunner

    h, w, f = shape
    cfg = dit.config
    _, ph, pw = cfg.patch_size
    lat_h, lat_w = h // 8, w // 8
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn((batch, cfg.in_channels, lat_f, lat_h, lat_w), generator=gen).to(device, dtype)
    timestep = torch.full((batch,), 500.0, device=device)
    embeds = torch.randn((batch, text_len, cfg.text_dim), generator=gen).to(device, dtype)

    def step(lat: torch.Tensor, t: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return dit(lat, t, e)

    counters = RuntimeCounters()
    runner = DiTGraphRunner(step, backend, counters=counters, warmup_iters=2, keep_alive=dit.step_constants)
    with torch.no_grad():
        eager_out = step(latents, timestep, embeds)
        captured = runner.capture(latents, timestep, embeds, label=label)
        graph_out = runner(latents, timestep, embeds)
        diff = (graph_out.float() - eager_out.float()).abs().max().item()
        runs = {"eager": lambda: step(latents, timestep, embeds),
                "graph": lambda: runner(latents, timestep, embeds)}
        times = interleaved_seconds(runs, warmup, iters, device.type == "cuda")
        memory = {name: peak_memory(fn, device) for name, fn in runs.items()}
    eager_s, graph_s = statistics.median(times["eager"]), statistics.median(times["graph"])
    tokens = lat_f * (lat_h // ph) * (lat_w // pw)
    return {"label": label, "video": f"{h}x{w}x{f}", "batch": batch, "tokens": tokens, "captured": captured,
            "eager_median_s": eager_s, "graph_median_s": graph_s, "speedup": eager_s / graph_s,
            "max_abs_diff": diff, "graph_replays": counters.graph_replays, "graph_captures": counters.graph_captures,
            "peak_memory": memory}


def parse_shape(text: str) -> tuple[int, int, int]:
    """``HEIGHTxWIDTHxFRAMES`` -> (h, w, f)."""
    h, w, f = (int(v) for v in text.lower().split("x"))
    return h, w, f


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"], help="default: fp32 CPU, bf16 CUDA")
    p.add_argument("--model-path", default=None, help="model folder (default: the built-in model)")
    p.add_argument("--size", default="64x64x9", help="HEIGHTxWIDTHxFRAMES of the load requests")
    p.add_argument("--steps", type=int, default=4, help="denoising steps per load request")
    p.add_argument("--guidance", type=float, default=5.0, help="guidance scale (> 1: CFG, two rows per request)")
    p.add_argument("--requests", type=int, default=8, help="requests per load mode and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds of all modes, interleaved (median throughput)")
    p.add_argument("--concurrency", type=int, default=4, help="closed-loop clients in the concurrent modes")
    p.add_argument("--max-batch", type=int, default=4, help="largest batch in the batched mode")
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=None,
                   help="also compare stage overlap (threads + CUDA streams) on/off; default: on for CUDA")
    p.add_argument("--graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="time CUDA-graph replay vs eager (CUDA only; default on for CUDA)")
    p.add_argument("--graph-backend", default="cuda", choices=["cuda", "recording"],
                   help="recording: the CPU stand-in of cuda_graphs.py, only to check this script runs on a CPU "
                        "(its times mean nothing)")
    p.add_argument("--full", action="store_true",
                   help="graph timing on the Wan2.1-1.3B DiT config with random weights (bf16, 480x832x81)")
    p.add_argument("--graph-size", default=None, help="bigger graph shape HxWxF (default 480x832x81 full, "
                                                      "480x832x33 built-in)")
    p.add_argument("--iters", type=int, default=20, help="timed DiT steps per variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--skip-load", action="store_true", help="skip the load modes")
    p.add_argument("--few-step", action="store_true",
                   help="also time a FastWan-style 3-step DMD preset against the 50-step preset (same shape)")
    p.add_argument("--few-step-iters", type=int, default=3, help="timed generations per few-step variant")
    p.add_argument("--json", default=None, help="write the workload and results to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    do_overlap = args.overlap if args.overlap is not None else device.type == "cuda"
    do_graphs = args.graphs if args.graphs is not None else device.type == "cuda"
    if do_graphs and device.type != "cuda" and args.graph_backend == "cuda":
        p.error("--graphs needs --device cuda (CUDA graphs do not exist on a CPU; --graph-backend recording "
                "only checks the script)")

    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained(args.model_path, device=str(device), dtype=dtype_name)
    workload = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                else "cpu", "dtype": dtype_name, "model": generator.pipeline.preset.name, "size": args.size,
                "steps": args.steps, "guidance": args.guidance, "requests_per_mode": args.requests,
                "rounds": args.rounds,
                "concurrency": args.concurrency, "max_batch": args.max_batch, "torch": torch.__version__,
                "threads": torch.get_num_threads()}
    out: dict[str, Any] = {"workload": workload, "load": [], "graphs": [], "few_step": []}

    def save() -> None:  # after each phase and graph row, so a run stopped early keeps what it measured
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(out, handle, indent=2)
    try:
        if not args.skip_load:
            requests = make_requests(args)
            modes = [("sequential", 1, 1, False), ("concurrent", args.concurrency, 1, False),
                     ("batched", args.concurrency, args.max_batch, False)]
            if do_overlap:
                modes.append(("batched+overlap", args.concurrency, args.max_batch, True))
            merged: dict[str, ModeResult] = {}
            peaks: dict[str, int] = {}
            for _ in range(args.rounds):  # modes interleaved, so drift and neighbours' load hit each alike
                for name, conc, batch, overlap in modes:
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    res = asyncio.run(run_mode(generator, name, requests, concurrency=conc, max_batch=batch,
                                               overlap=overlap))
                    if device.type == "cuda":
                        peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated(device))
                    if name in merged:
                        merged[name].merge(res)
                    else:
                        merged[name] = res
            out["load"] = [merged[name].summary() for name, *_ in modes]
            base = out["load"][0]["throughput_rps"]
            for row in out["load"]:
                row["throughput_vs_sequential"] = row["throughput_rps"] / base if base else None
                row["peak_memory_bytes"] = peaks.get(row["mode"])
            if do_overlap:
                by = {r["mode"]: r for r in out["load"]}
                out["overlap_gain"] = by["batched+overlap"]["throughput_rps"] / by["batched"]["throughput_rps"]
        save()
        if args.few_step:
            out["few_step"] = run_few_step(args, generator, device)
            save()
        if do_graphs:
            run_graphs(args, generator, device, dtype, out["graphs"], save)
    finally:
        generator.shutdown()
    print_table(out)
    save()
    return 0


#: The two presets the few-step comparison runs: (label, sampling values besides the shape and seed).
FEW_STEP_VARIANTS = (
    ("50-step (UniPC, CFG 5)", {"num_inference_steps": 50, "guidance_scale": 5.0, "sampler": "unipc"}),
    ("3-step DMD (FastWan)", {"sampler": "dmd", "dmd_denoising_steps": [1000, 757, 522], "guidance_scale": 1.0}),
)


def run_few_step(args: argparse.Namespace, generator: Any, device: torch.device) -> list[dict[str, Any]]:
    """End-to-end latency of each :data:`FEW_STEP_VARIANTS` entry, interleaved (see module contract)."""
    height, width, frames = parse_shape(args.size)
    runs = {}
    denoise: dict[str, list[float]] = {label: [] for label, _ in FEW_STEP_VARIANTS}

    def run(label: str, request: dict[str, Any]) -> None:
        denoise[label].append(generator.generate(request).metadata["timings"]["denoise_s"])

    for label, sampling in FEW_STEP_VARIANTS:
        request = {"prompt": "a red fox running through fresh snow", "sampling": {
            "height": height, "width": width, "num_frames": frames, "seed": 7, **sampling}}
        runs[label] = lambda label=label, request=request: run(label, request)
    times = interleaved_seconds(runs, warmup=1, iters=args.few_step_iters, cuda=device.type == "cuda")
    base = statistics.median(times[FEW_STEP_VARIANTS[0][0]])
    base_denoise = statistics.median(denoise[FEW_STEP_VARIANTS[0][0]][1:])
    rows = []
    for label, sampling in FEW_STEP_VARIANTS:
        median = statistics.median(times[label])
        median_denoise = statistics.median(denoise[label][1:])  # [0] is the warmup call
        rows.append({"variant": label, "sampling": sampling, "size": args.size, "median_s": median,
                     "runs_s": times[label], "speedup_vs_50_step": base / median,
                     "denoise_median_s": median_denoise, "denoise_speedup_vs_50_step": base_denoise / median_denoise})
    return rows


def run_graphs(args: argparse.Namespace, generator: Any, device: torch.device, dtype: torch.dtype, rows: list[dict],
               save: Any) -> None:
    """Graph vs eager rows appended to ``rows`` (``save()`` after each)."""
    from fastvideo.runtime.cuda_graphs import CudaGraphBackend, RecordingGraphBackend

    backend = CudaGraphBackend(device) if args.graph_backend == "cuda" else RecordingGraphBackend()
    _, health = generator.resolve(generator.default_health_check_request())
    health_shape = (health.height, health.width, health.num_frames)
    if args.full:
        from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel, inference_param_dtype

        torch.manual_seed(0)
        with torch.device(device):  # random init on the device (fast), not on the CPU
            dit = WanTransformer3DModel(WanDiTConfig.from_dict(WAN_1_3B_DIT)).eval()
        with torch.no_grad():
            for name, param in dit.named_parameters():
                param.data = param.data.to(inference_param_dtype(name, dtype))
        text_len, model = 512, "wan2.1-1.3b (random weights)"
        big = parse_shape(args.graph_size or "480x832x81")
    else:
        dit = generator.pipeline.dit
        dtype = generator.pipeline.dtype
        text_len = int(generator.pipeline.encode_prompts("probe", "", False).shape[1])
        model = f"{generator.pipeline.preset.name} (the loaded model)"
        big = parse_shape(args.graph_size or "480x832x33")
    if (big[2] - 1) % 4:
        raise SystemExit(f"--graph-size frames must be 4k+1, got {big[2]}")
    shapes = ((health_shape, health.latent_frames, 1, "health-check"),
              (big, (big[2] - 1) // 4 + 1, 2, "bigger (CFG batch 2)"))
    for shape, lat_f, batch, label in shapes:
        row = graph_vs_eager(dit, shape, lat_f, batch, text_len, dtype, device, args.iters, args.warmup, label, backend)
        row["model"], row["backend"] = model, backend.name
        rows.append(row)
        save()


def print_table(out: dict[str, Any]) -> None:
    w = out["workload"]
    if out["load"]:
        print(f"Load: {w['rounds']} rounds x {w['requests_per_mode']} requests of {w['size']} (HxWxF), "
              f"{w['steps']} steps, guidance "
              f"{w['guidance']}, model {w['model']} on {w['device_name']} ({w['dtype']}, {w['threads']} threads)")
        print(f"{'mode':<16}{'clients':>8}{'batch':>6}{'req/s':>9}{'vs seq':>8}{'p50 s':>9}{'p99 s':>9}"
              f"{'queue s':>9}{'mean b':>8}{'failed':>7}")
        for r in out["load"]:
            print(f"{r['mode']:<16}{r['concurrency']:>8}{r['max_batch']:>6}{r['throughput_rps']:>9.3f}"
                  f"{r['throughput_vs_sequential']:>7.2f}x{r['latency_p50_s']:>9.3f}{r['latency_p99_s']:>9.3f}"
                  f"{r['queue_mean_s']:>9.3f}{r['mean_batch']:>8.2f}{r['failed']:>7}")
        if "overlap_gain" in out:
            print(f"stream overlap gained (batched+overlap / batched): {out['overlap_gain']:.3f}x")
    if out["graphs"]:
        backend = out["graphs"][0]["backend"]
        note = "" if backend == "cuda" else " [CPU stand-in backend: these times mean nothing]"
        print(f"DiT step, CUDA graph replay vs eager on {w['device_name']}{note}:")
        print(f"{'shape':<22}{'video':>14}{'batch':>6}{'tokens':>8}{'eager ms':>10}{'graph ms':>10}{'speedup':>9}"
              f"{'max|diff|':>11}")
        for r in out["graphs"]:
            print(f"{r['label']:<22}{r['video']:>14}{r['batch']:>6}{r['tokens']:>8}{r['eager_median_s'] * 1e3:>10.2f}"
                  f"{r['graph_median_s'] * 1e3:>10.2f}{r['speedup']:>8.2f}x{r['max_abs_diff']:>11.2e}")
        print(f"  model: {out['graphs'][0]['model']}")
    if out["few_step"]:
        print(f"Few-step vs 50-step, end to end (generate), {out['few_step'][0]['size']} (HxWxF), model {w['model']} "
              f"on {w['device_name']} ({w['dtype']}):")
        print(f"{'variant':<26}{'median s':>10}{'speed-up':>10}{'denoise s':>11}{'speed-up':>10}")
        for r in out["few_step"]:
            print(f"{r['variant']:<26}{r['median_s']:>10.3f}{r['speedup_vs_50_step']:>9.2f}x"
                  f"{r['denoise_median_s']:>11.3f}{r['denoise_speedup_vs_50_step']:>9.2f}x")
    if not out["graphs"] and w["device"].startswith("cpu"):
        print("CUDA graphs / stream overlap: not measured (needs --device cuda)")


if __name__ == "__main__":
    sys.exit(main())
