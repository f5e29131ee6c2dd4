"""The prepared GPU check: everything a GPU window measures, as one command (``scripts/gpu_check.sh``).

Contract:
- Stages run in order, each in its own subprocess with its own time budget; a stage that overruns gets
  SIGINT (pytest then writes its report; the benchmarks save their JSON after every phase anyway),
  then its whole process group is killed :data:`GRACE_S` later; it is reported ``timed_out`` with the
  figures it saved and whatever it printed, and the next stage starts. A stage starts only if its
  minimum time is left before the global deadline (``--budget-s``, default 540 s: a 10-minute device
  call with room to install and return; 1000 s for ``--dry-run``, whose CPU rehearsal of the same stages is
  slower than the device run it stands for), else it is reported ``skipped``. ``--stages a,b`` runs a
  subset (e.g. the AOTI build alone in a later window).
- Stages: ``tests`` (``pytest -m gpu tests/gpu``), ``attention`` (our Triton kernel against every SDPA
  backend at the Wan2.1-1.3B shapes; the fp8 ``triton_fp8`` kernel against the bf16 one on sm_89+),
  ``fused`` (fused ops GB/s against a device copy), ``dit`` (the DiT step at the full Wan2.1-1.3B config,
  random weights, bf16, 480x832x81, CFG batch 2: ours eager SDPA, ours Triton+fused, ours under
  torch.compile, diffusers eager, in one run), ``fp8`` (the same DiT step at 480x832x21 with FP8 weights
  against bf16, same run; on sm_89+ only, elsewhere reported skipped: ``benchmarks/bench_fp8.py``),
  ``graphs`` (CUDA-graph replay against eager at the health-check shape and at 480x832x81), ``batching`` (4
  concurrent requests batched against one at a time), ``vae`` (VAE decode against diffusers), ``aoti`` (an
  AOTI build of the full DiT and VAE decoder, then their step times). Peak memory is reported where the
  benchmark measures it.
- Every figure carries the exact command that produced it and its ratio to its same-run baseline;
  the three targets of issue 11 are marked met / missed (attention >= the fastest SDPA backend; the
  compiled Triton+fused DiT step >= 1.3x diffusers eager; CUDA graphs >= 1.5x eager at the
  health-check shape). ``report.json`` and ``report.md`` are written to ``--out`` (default ``$OUT``)
  after every stage, so partial results survive; ``logs.txt`` holds every stage's output.
- ``--dry-run``: the same stages and orchestration on the CPU at tiny shapes (the GPU tests rehearsed
  with ``FASTVIDEO_GPU_REHEARSAL=1``, kernel benchmarks through the Triton interpreter, the stand-in
  graph backend); CI runs it so this script is tested. Its timings mean nothing.
- Exit status: 0 when every stage that ran succeeded, 1 otherwise (failed, timed out, or skipped).
- ``--prepare-wheels DIR`` (on a machine with a registry, before the window): downloads, as cp312
  manylinux wheels at the versions installed here (what CI tests), the packages the GPU image lacks
  (:data:`CARRIED`) and every dependency of theirs that the image does not already hold
  (:data:`GPU_IMAGE_HAS`, from the device tool's package list), so the GPU side installs them with
  ``--no-index --no-deps``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
#: What the tests and benchmarks need that the GPU image lacks: diffusers (the reference), the server, PyAV.
CARRIED = ("diffusers", "pydantic", "fastapi", "starlette", "uvicorn", "python-multipart", "websockets", "av",
           "typing-extensions")
#: Packages the GPU image already holds (their own dependencies included): never carried, never descended into.
GPU_IMAGE_HAS = frozenset("""
anyio annotated-doc certifi charset-normalizer click filelock fsspec h11 hf-xet httpcore httpx huggingface-hub idna
jinja2 markupsafe mpmath networkx numpy packaging pillow prometheus-client protobuf psutil pyyaml regex requests
safetensors six sympy tokenizers torch tqdm transformers triton urllib3 zipp""".split())
#: Seconds a stage gets after SIGINT at its deadline before its process group is killed.
GRACE_S = 15.0
#: Global deadline of a device run (a 10-minute call with room to install and return) and of the CPU dry run.
DEVICE_BUDGET_S = 540.0
DRY_BUDGET_S = 1000.0
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                   "manylinux1_x86_64")


@dataclass
class Figure:
    """One measured number, its same-run baseline and the command that produced both."""

    name: str
    value: float | None
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    #: The ratio ``target`` asks for (met when ``ratio >= target_ratio``).
    target_ratio: float | None = None
    met: bool | None = None


@dataclass
class Stage:
    name: str
    title: str
    argv: list[str]
    budget_s: float
    min_s: float
    extract: Callable[[Path], list[Figure]]
    env: dict[str, str] = field(default_factory=dict)
    result_file: str = ""


@dataclass
class StageReport:
    name: str
    title: str
    command: str
    status: str = "pending"  # ok | failed | timed_out | skipped | pending
    seconds: float = 0.0
    returncode: int | None = None
    figures: list[Figure] = field(default_factory=list)
    note: str = ""
    output_tail: str = ""


def _speedup(name: str, value_s: float | None, base: str, base_s: float | None, **kw: Any) -> Figure:
    ratio = base_s / value_s if value_s and base_s else None
    return Figure(name, None if value_s is None else value_s * 1e3, "ms", base,
                  None if base_s is None else base_s * 1e3, ratio, **kw)


def _target(ratio: float, baseline: str) -> dict[str, Any]:
    return {"target": f">= {ratio:.1f}x {baseline}", "target_ratio": ratio}


def _memory(name: str, memory: dict | None) -> list[Figure]:
    if not memory:
        return []
    return [Figure(f"{name} peak memory", memory["peak_bytes"] / 2**30, "GiB",
                   "added by one call", memory["added_bytes"] / 2**30)]


# ------------------------------------------------------------------------------------------ extractors
def extract_tests(path: Path) -> list[Figure]:
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    figures = [Figure("gpu tests passed", counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
                      "tests", "collected", counts["tests"])]
    for key in ("failures", "errors", "skipped"):
        figures.append(Figure(f"gpu tests {key}", counts[key], "tests"))
    return figures


def test_failures(path: Path) -> list[str]:
    """``name: message`` of each failed or errored test in a junit file."""
    failed = []
    for case in ET.parse(path).getroot().iter("testcase"):
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                failed.append(f"{case.get('name')}: {(node.get('message') or '')[:300]}")
    return failed


#: The fp8 attention kernel's row in bench_attention.py (compared with the bf16 kernel, not a target).
FP8_IMPL = "fastvideo-triton-fp8"


def extract_attention(path: Path) -> list[Figure]:
    rows = json.loads(path.read_text())["rows"]
    figures = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        mine = [r for r in rows if r["shape"] == shape]
        ours = next(r for r in mine if r["impl"] == "fastvideo-triton")
        others = [r for r in mine if r["impl"] not in ("fastvideo-triton", FP8_IMPL) and r.get("tflops")]
        best = max(others, key=lambda r: r["tflops"], default=None)
        figures.append(Figure(f"attention {shape}: fastvideo-triton", ours.get("tflops"), "TFLOP/s",
                              f"fastest other: {best['impl']}" if best else None, best["tflops"] if best else None,
                              ours["tflops"] / best["tflops"] if best and ours.get("tflops") else None,
                              **_target(1.0, "the fastest SDPA backend") if shape.endswith("self") else {}))
        for r in others:
            figures.append(Figure(f"attention {shape}: {r['impl']}", r["tflops"], "TFLOP/s", "fastvideo-triton",
                                  ours.get("tflops"), r["tflops"] / ours["tflops"] if ours.get("tflops") else None))
        fp8 = next((r for r in mine if r["impl"] == FP8_IMPL), None)
        if fp8 is None:
            figures.append(Figure(f"attention {shape}: {FP8_IMPL}: skipped (needs sm_89+)", None, "TFLOP/s"))
        else:
            figures.append(Figure(f"attention {shape}: {FP8_IMPL} (q/k e4m3, p.v bf16)", fp8.get("tflops"), "TFLOP/s",
                                  "fastvideo-triton (bf16)", ours.get("tflops"),
                                  fp8["tflops"] / ours["tflops"] if fp8.get("tflops") and ours.get("tflops") else None))
    return figures


def extract_fused(path: Path) -> list[Figure]:
    rows = json.loads(path.read_text())["rows"]
    figures = []
    for r in rows:
        if r["impl"] == "triton":
            figures.append(Figure(f"fused {r['shape']} {r['op']}: triton", r["gbps"], "GB/s", "device copy",
                                  r["gbps"] / r["of_copy"] if r["of_copy"] else None, r["of_copy"]))
        elif r["impl"] != "d2d-copy":
            figures.append(Figure(f"fused {r['shape']} {r['op']}: {r['impl']}", r["gbps"], "GB/s", "triton",
                                  None, 1.0 / r["time_over_triton"] if r.get("time_over_triton") else None))
    return figures


def extract_dit(path: Path) -> list[Figure]:
    d = json.loads(path.read_text())
    ref = d["diffusers_median_s"]
    figures = [_speedup("DiT step diffusers eager", ref, "diffusers eager", ref),
               _speedup("DiT step ours eager sdpa", d["ours_median_s"], "diffusers eager", ref)]
    if "fast_median_s" in d:
        figures.append(_speedup("DiT step ours triton+fused", d["fast_median_s"], "diffusers eager", ref))
    if "compiled_median_s" in d:
        figures.append(_speedup(f"DiT step ours torch.compile ({d['compiled_variant']})", d["compiled_median_s"],
                                "diffusers eager (timed beside it)", d.get("compiled_diffusers_median_s", ref),
                                **_target(1.3, "diffusers eager")))
    names = {"ours": "ours eager sdpa", "fast": "ours triton+fused", "compiled": "ours torch.compile",
             "diffusers": "diffusers eager"}
    for key, memory in (d.get("peak_memory") or {}).items():
        figures += _memory(f"DiT step {names.get(key, key)}", memory)
    return figures


def extract_graphs(path: Path) -> list[Figure]:
    figures = []
    for row in json.loads(path.read_text())["graphs"]:
        figures.append(_speedup(f"DiT step CUDA graph, {row['label']} {row['video']} batch {row['batch']}",
                                row["graph_median_s"], "eager", row["eager_median_s"],
                                **_target(1.5, "eager") if row["label"] == "health-check" else {}))
        for key, memory in (row.get("peak_memory") or {}).items():
            figures += _memory(f"{row['label']} {key}", memory)
    return figures


def extract_batching(path: Path) -> list[Figure]:
    figures = []
    rows = json.loads(path.read_text())["load"]
    base = rows[0]["throughput_rps"] if rows else None
    for row in rows:
        figures.append(Figure(f"load {row['mode']} (concurrency {row['concurrency']}, max batch {row['max_batch']}, "
                              f"mean batch {row['mean_batch']:.2f})", row["throughput_rps"], "requests/s",
                              "sequential", base, row.get("throughput_vs_sequential")))
        figures.append(Figure(f"load {row['mode']} latency p50", row["latency_p50_s"], "s"))
        if row.get("peak_memory_bytes"):
            figures.append(Figure(f"load {row['mode']} peak memory", row["peak_memory_bytes"] / 2**30, "GiB"))
    return figures


def extract_build(path: Path) -> list[Figure]:
    d = json.loads(path.read_text())
    figures = []
    for backend, row in d.get("builds", {}).items():
        figures.append(Figure(f"{backend} build time" + (f" (failed: {row['error'][:120]})" if "error" in row else ""),
                              row.get("seconds"), "s"))
    for table, title in (("dit", "DiT step"), ("vae_decode", "VAE decode")):
        rows = d.get(table, {})
        ref = rows.get("diffusers", {}).get("median_s")
        for label, row in rows.items():
            figures.append(_speedup(f"{title} {label}", row["median_s"], "diffusers eager", ref))
            figures += _memory(f"{title} {label}", row.get("peak_memory"))
    return figures


def extract_fp8(path: Path) -> list[Figure]:
    d = json.loads(path.read_text())
    if "skipped" in d:
        return [Figure(f"FP8 DiT step: skipped ({d['skipped']})", None, "ms")]
    name = f"DiT step FP8 weights ({d['granularity']}-wise, {'+'.join(d['paths'])})"
    return [_speedup("DiT step bf16 (FP8 baseline)", d["bf16_median_s"], "bf16, same run", d["bf16_median_s"]),
            _speedup(name, d["fp8_median_s"], "bf16, same run", d["bf16_median_s"]),
            Figure("DiT FP8 vs bf16 latent PSNR", d["latent_psnr_db"], "dB"),
            *_memory("DiT step FP8", (d.get("peak_memory") or {}).get("fp8"))]


# ------------------------------------------------------------------------------------------ stages
def make_stages(dry: bool, work: Path) -> list[Stage]:
    bench = str(ROOT / "benchmarks")
    pytest_env = {"FASTVIDEO_GPU_REHEARSAL": "1"} if dry else {}
    junit = str(work / "tests.xml")

    def j(name: str) -> str:
        return str(work / f"{name}.json")

    if dry:
        attention = ["--smoke"]
        fused = ["--smoke"]
        dit = ["--iters", "2", "--warmup", "1", "--compile"]
        graphs = ["--device", "cpu", "--skip-load", "--graphs", "--graph-backend", "recording", "--graph-size",
                  "64x64x5", "--iters", "3", "--warmup", "1"]
        batching = ["--device", "cpu", "--size", "64x64x5", "--steps", "2"]
        build = ["--no-startup", "--iters", "1", "--warmup", "0"]
        fp8 = ["--smoke", "--iters", "2", "--warmup", "1"]
    else:
        attention = ["--shapes", "wan1.3b-self", "wan1.3b-cross", "--iters", "10", "--warmup", "3"]
        fused = ["--iters", "20"]
        dit = ["--full", "--iters", "3", "--warmup", "1", "--compile"]
        graphs = ["--device", "cuda", "--full", "--skip-load", "--graphs", "--graph-size", "480x832x33", "--iters",
                  "8", "--warmup", "2"]
        batching = ["--device", "cuda", "--size", "256x256x9", "--steps", "8"]
        build = ["--full", "--no-startup", "--iters", "2", "--warmup", "1"]
        fp8 = ["--size", "480x832x21", "--iters", "5", "--warmup", "2"]
    load = ["--no-graphs", "--requests", "4", "--concurrency", "4", "--max-batch", "4", "--rounds", "1"]
    build += ["--workdir", str(work / "bench-build")]  # the vae and aoti stages share one model folder
    scale = 3.0 if dry else 1.0  # CPU rehearsal runs are slower than the GPU ones they stand for
    return [
        Stage("tests", "GPU test suite (pytest -m gpu tests/gpu)",
              [PY, "-m", "pytest", "-v", "-rfEs", "-m", "gpu", "tests/gpu", "-p", "no:cacheprovider",
               f"--timeout={int(150 * scale)}", f"--junitxml={junit}"],
              170 * scale, 60, extract_tests, pytest_env, "tests.xml"),
        Stage("attention", "attention TFLOP/s vs every SDPA backend (Wan2.1-1.3B shapes)",
              [PY, f"{bench}/kernels/bench_attention.py", *attention, "--json", j("attention")], 30, 15,
              extract_attention, result_file="attention.json"),
        Stage("fused", "fused ops GB/s vs a device copy",
              [PY, f"{bench}/kernels/bench_fused.py", *fused, "--json", j("fused")], 20, 10, extract_fused,
              result_file="fused.json"),
        Stage("dit", "DiT step, Wan2.1-1.3B, 480x832x81, bf16, CFG batch 2",
              [PY, f"{bench}/bench_dit.py", *dit, "--json", j("dit")], 140 * (1 if not dry else 2), 60, extract_dit,
              result_file="dit.json"),
        Stage("fp8", "DiT step with FP8 weights vs bf16, same run (Wan2.1-1.3B, 480x832x21, CFG batch 2; sm_89+)",
              [PY, f"{bench}/bench_fp8.py", *fp8, "--json", j("fp8")], 60 * scale, 20, extract_fp8,
              result_file="fp8.json"),
        Stage("graphs", "CUDA graphs vs eager",
              [PY, f"{bench}/bench_runtime.py", *graphs, "--json", j("graphs")], 50 * scale, 20, extract_graphs,
              result_file="graphs.json"),
        Stage("batching", "4 concurrent requests: batched vs one at a time",
              [PY, f"{bench}/bench_runtime.py", *batching, *load, "--json", j("batching")], 30 * scale, 15,
              extract_batching, result_file="batching.json"),
        Stage("vae", "VAE decode (and DiT step) vs diffusers",
              [PY, f"{bench}/bench_build.py", *build, "--backends", "", "--json", j("vae")], 100 * scale, 30,
              extract_build, result_file="vae.json"),
        Stage("aoti", "AOTI build of the DiT and VAE decoder at 480x832x21, then their step times",
              [PY, f"{bench}/bench_build.py", *build, *([] if dry else ["--profile", "480x832x21"]), "--backends",
               "aoti", "--json", j("aoti")], 240, 60,
              extract_build, result_file="aoti.json"),
    ]


# ------------------------------------------------------------------------------------------ running
def environment() -> dict[str, Any]:
    code = ("import json, torch; d = {'torch': torch.__version__, 'cuda': torch.version.cuda, "
            "'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None}\n"
            "try:\n import triton; d['triton'] = triton.__version__\nexcept ImportError: d['triton'] = None\n"
            "print(json.dumps(d))")
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    info = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-500:]}
    return {**info, "python": sys.version.split()[0], "host": os.uname().nodename}


def _interruptible() -> None:
    """In the stage's process: SIGINT raises KeyboardInterrupt again, even if this script inherited it ignored
    (a background job of a non-interactive shell does), so the deadline's SIGINT lets pytest write its report."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_stage(stage: Stage, budget: float, work: Path, log: Any) -> StageReport:
    report = StageReport(stage.name, stage.title, shlex.join(stage.argv))
    env = {**os.environ, **stage.env, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log.write(f"\n===== {stage.name}: {report.command} (budget {budget:.0f}s)\n")
    log.flush()
    out_path = work / f"{stage.name}.log"
    t0 = time.perf_counter()
    with open(out_path, "w") as out:
        proc = subprocess.Popen(stage.argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_interruptible)
        try:
            report.returncode = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            # SIGINT first: pytest writes its junit report and summary, benchmarks keep the JSON saved so far.
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            report.status = "timed_out"
    report.seconds = time.perf_counter() - t0
    text = out_path.read_text(errors="replace")
    log.write(text)
    log.flush()
    report.output_tail = text[-3000:]
    if report.status != "timed_out":
        report.status = "ok" if report.returncode == 0 else "failed"
    result = work / stage.result_file
    if stage.result_file and result.is_file():
        try:
            report.figures = stage.extract(result)
            if stage.name == "tests":
                failed = test_failures(result)
                report.note = "; ".join(failed)[:3000]
        except Exception as exc:  # noqa: BLE001 - a malformed result is reported, not fatal
            report.note = f"could not read {result.name}: {type(exc).__name__}: {exc}"
            report.status = "failed"
    elif report.status == "ok":
        report.status, report.note = "failed", f"{stage.result_file} was not written"
    for fig in report.figures:
        if fig.target_ratio is not None and fig.ratio is not None:
            fig.met = fig.ratio >= fig.target_ratio
    return report


def render_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    dry = " (dry run: CPU, tiny shapes, timings meaningless)" if report["dry_run"] else ""
    lines = [f"# FastVideo GPU check{dry}", "",
             f"- GPU: {env.get('gpu')}; torch {env.get('torch')} (CUDA {env.get('cuda')}), "
             f"triton {env.get('triton')}, python {env.get('python')}",
             f"- started {report['started']}, {report['seconds']:.0f} s in all "
             f"(budget {report['budget_s']:.0f} s); command: `{report['command']}`", ""]
    targets = [(s["name"], f) for s in report["stages"] for f in s["figures"] if f["target"]]
    if targets:
        lines += ["## Targets", "", "| figure | ratio | target | met |", "|---|---|---|---|"]
        for _, f in targets:
            ratio = "n/a" if f["ratio"] is None else f"{f['ratio']:.2f}x"
            lines.append(f"| {f['name']} | {ratio} | {f['target']} | {'yes' if f['met'] else 'NO'} |")
        lines.append("")
    for s in report["stages"]:
        lines += [f"## {s['name']}: {s['title']}", "",
                  f"status **{s['status']}** in {s['seconds']:.1f} s" + (f" (exit {s['returncode']})"
                                                                          if s['returncode'] not in (0, None) else ""),
                  "", f"command: `{s['command']}`", ""]
        if s["note"]:
            lines += [f"note: {s['note']}", ""]
        if s["figures"]:
            lines += ["| figure | value | baseline | ratio |", "|---|---|---|---|"]
            for f in s["figures"]:
                value = "n/a" if f["value"] is None else f"{f['value']:.4g} {f['unit']}"
                base = "" if f["baseline"] is None else (f["baseline"] + ("" if f["baseline_value"] is None else
                                                                          f" ({f['baseline_value']:.4g})"))
                ratio = "" if f["ratio"] is None else f"{f['ratio']:.2f}x"
                lines.append(f"| {f['name']} | {value} | {base} | {ratio} |")
            lines.append("")
        elif s["status"] in ("failed", "timed_out"):
            lines += ["```", s["output_tail"][-1500:], "```", ""]
    return "\n".join(lines) + "\n"


def carried_requirements() -> list[str]:
    """``name==version`` of :data:`CARRIED` and their dependencies the image lacks, at this machine's versions."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    target = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix", "extra": "",
              "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    pins: dict[str, str] = {}
    stack = [canonicalize_name(n) for n in CARRIED]
    forced = set(stack)
    while stack:
        name = stack.pop()
        if name in pins or (name in GPU_IMAGE_HAS and name not in forced):
            continue
        try:
            pins[name] = version(name)
        except PackageNotFoundError:
            raise SystemExit(f"{name} is not installed here; run `bash scripts/install.sh dev` first (the carried "
                             "wheels are pinned to this environment's versions)") from None
        for text in requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(target):
                stack.append(canonicalize_name(req.name))
    return [f"{name}=={v}" for name, v in sorted(pins.items())]


def prepare_wheels(dest: Path) -> int:
    specs = carried_requirements()
    if dest.exists():
        for old in dest.glob("*.whl"):
            old.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for plat in WHEEL_PLATFORMS for arg in ("--platform", plat)]
    subprocess.run([PY, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
                    "3.12", "--implementation", "cp", *platforms, "-d", str(dest), *specs], check=True)
    size = sum(f.stat().st_size for f in dest.glob("*.whl"))
    sys.stdout.write(f"wrote {len(specs)} wheels ({size / 2**20:.1f} MiB) to {dest}: {' '.join(specs)}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "gpu-report"),
                   help="where report.json, report.md and logs.txt go (default: $OUT, else ./gpu-report)")
    p.add_argument("--dry-run", action="store_true", help="CPU rehearsal at tiny shapes (what CI runs)")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"global deadline for all stages (default {DEVICE_BUDGET_S:.0f}; {DRY_BUDGET_S:.0f} with "
                        "--dry-run)")
    p.add_argument("--stages", default=None, help="comma list of stages to run (default: all, in order)")
    p.add_argument("--prepare-wheels", type=Path, default=None, metavar="DIR",
                   help="download the wheels the GPU image lacks into DIR and exit (needs a package registry)")
    args = p.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = DRY_BUDGET_S if args.dry_run else DEVICE_BUDGET_S
    if args.prepare_wheels is not None:
        return prepare_wheels(args.prepare_wheels)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fastvideo-gpu-check-"))
    stages = make_stages(args.dry_run, work)
    if args.stages:
        wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {s.name for s in stages})
        if unknown:
            p.error(f"unknown stages {unknown}; known: {', '.join(s.name for s in stages)}")
        stages = [s for s in stages if s.name in wanted]
    started = time.time()
    deadline = time.perf_counter() + args.budget_s
    report: dict[str, Any] = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                                time.gmtime(started)),
                              "budget_s": args.budget_s, "command": shlex.join([Path(PY).name, *sys.argv]),
                              "environment": environment(), "seconds": 0.0, "stages": []}

    def write() -> None:
        report["seconds"] = time.time() - started
        (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
        (args.out / "report.md").write_text(render_markdown(report))

    ok = True
    with open(args.out / "logs.txt", "w") as log:
        for stage in stages:
            left = deadline - time.perf_counter()
            if left < stage.min_s:
                entry = StageReport(stage.name, stage.title, shlex.join(stage.argv), status="skipped",
                                    note=f"only {max(left, 0):.0f} s of the {args.budget_s:.0f} s budget left "
                                         f"(needs {stage.min_s:.0f}); run it alone with --stages {stage.name}")
            else:
                entry = run_stage(stage, min(stage.budget_s, left), work, log)
            ok &= entry.status == "ok"
            report["stages"].append(asdict(entry))
            write()
            sys.stdout.write(f"{stage.name:<10} {entry.status:<10} {entry.seconds:6.1f}s  {entry.note[:150]}\n")
            sys.stdout.flush()
    write()
    sys.stdout.write(f"report: {args.out / 'report.md'}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
