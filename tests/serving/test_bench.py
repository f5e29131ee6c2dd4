"""``fastvideo bench`` (a real subprocess) against a running server: its report and the exact workload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("httpx")

SHAPE = ["--size", "64x64", "--num-frames", "5", "--fps", "8", "--steps", "2"]
STATS = {"mean", "p50", "p90", "p99", "min", "max", "n"}


def run_bench(base_url: str, out: Path, *args: str) -> tuple[dict, str]:
    env = {**os.environ}
    proc = subprocess.run([sys.executable, "-m", "fastvideo", "bench", "--base-url", base_url, *SHAPE, *args,
                           "--output-json", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


def test_bench_videos_poisson_with_prompt_file(live_server, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a lighthouse in fog\n\na river at dusk\n")
    report, stdout = run_bench(live_server.base_url, tmp_path / "videos.json", "--backend", "videos",
                               "--num-prompts", "3", "--max-concurrency", "2", "--request-rate", "20",
                               "--prompt-set", str(prompts), "--seed", "11", "--delete")
    assert report["completed"] == 3 and report["failed"] == 0 and report["errors"] == []
    assert "completed 3, failed 0" in stdout
    assert report["throughput_rps"] > 0 and report["throughput_frames_per_s"] == pytest.approx(
        15 / report["duration_s"])
    for key in ("e2e_latency_s", "queue_time_s", "generation_time_s", "client_overhead_s"):
        assert set(report[key]) == STATS and report[key]["n"] == 3, key
    e2e, gen = report["e2e_latency_s"], report["generation_time_s"]
    assert e2e["p50"] <= e2e["p90"] <= e2e["p99"] <= e2e["max"] and gen["mean"] > 0
    assert e2e["mean"] >= gen["mean"]  # the server-reported split fits inside the client's e2e
    assert report["time_to_first_fragment_s"] is None and report["bytes_total"] > 0
    w = report["workload"]
    assert (w["backend"], w["num_prompts"], w["max_concurrency"], w["request_rate"]) == ("videos", 3, 2, 20.0)
    assert (w["size"], w["num_frames"], w["fps"], w["steps"], w["seed"]) == ("64x64", 5, 8, 2, 11)
    assert w["prompts"] == ["a lighthouse in fog", "a river at dusk", "a lighthouse in fog"]
    offsets = w["arrival_offsets_s"]
    assert offsets[0] == 0 and offsets == sorted(offsets) and len(set(offsets)) == 3  # Poisson arrivals
    assert "api_key" not in w
    assert [r["ok"] for r in report["requests"]] == [True] * 3


def test_bench_stream_time_to_first_fragment(live_server, tmp_path):
    report, _ = run_bench(live_server.base_url, tmp_path / "stream.json", "--backend", "stream",
                          "--num-prompts", "2", "--max-concurrency", "2", "--segments", "2")
    assert report["completed"] == 2 and report["failed"] == 0, report["errors"]
    ttff = report["time_to_first_fragment_s"]
    assert set(ttff) == STATS and ttff["n"] == 2 and 0 < ttff["mean"] <= report["e2e_latency_s"]["mean"]
    assert report["throughput_frames_per_s"] == pytest.approx(20 / report["duration_s"])  # 2 x 2 segments x 5
    for request in report["requests"]:
        assert [s["segment_idx"] for s in request["segments"]] == [0, 1]
        assert all(s["generation_s"] > 0 and s["ttff_s"] > 0 for s in request["segments"])
    assert report["workload"]["segments"] == 2 and report["workload"]["arrival_offsets_s"] == [0.0, 0.0]
