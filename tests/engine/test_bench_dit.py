"""``benchmarks/bench_dit.py`` runs end to end on the CPU for every Wan ``--model`` (tiny configs of each
architecture), against diffusers on identical weights, and its ``--json`` records the workload it timed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_dit.py"


def _bench_main():
    root = str(BENCH.parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location("_bench_dit", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model,channels,spatial,per_token", [
    ("wan2.1-t2v-1.3b", 16, 8, False),
    ("wan2.1-i2v-14b", 36, 8, False),
    ("wan2.2-ti2v-5b", 48, 16, True),
])
def test_tiny_run_matches_diffusers_and_records_the_workload(model: str, channels: int, spatial: int,
                                                             per_token: bool, tmp_path: Path) -> None:
    out = tmp_path / "dit.json"
    bench = _bench_main()
    assert bench.main(["--model", model, "--device", "cpu", "--size", "64x64x9", "--iters", "1", "--warmup", "0",
                       "--no-compile", "--no-fast-path", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    workload = result["workload"]
    assert workload["latent_shape"] == [2, channels, 3, 64 // spatial, 64 // spatial]
    assert workload["per_token_timesteps"] is per_token
    assert result["max_abs_diff"] <= 1e-4
    assert result["ours_median_s"] > 0 and result["diffusers_median_s"] > 0
