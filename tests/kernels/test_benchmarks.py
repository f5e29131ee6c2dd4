"""The benchmark scripts run end to end: ``--smoke`` on CPU (Triton interpreter), ``--json``
output, and the clean "no CUDA device" exit."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["bench_attention", "bench_fused"])
def test_smoke_writes_json(name: str, tmp_path: Path, device: torch.device,
                           capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    if device.type != "cpu":
        pytest.skip("--smoke is the CPU (interpreter) mode")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # --smoke sets it; restored after the test
    out = tmp_path / "out.json"
    assert _load(name).main(["--smoke", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows and all(r["ms"] is not None for r in rows)
    fp8 = [r for r in rows if r["impl"] == "fastvideo-triton-fp8"]
    rows = [r for r in rows if r not in fp8]
    diffs = [r[k] for r in rows for k in ("max_abs_diff_vs_ours", "max_abs_diff_vs_torch") if k in r]
    assert diffs and max(diffs) < 0.05
    if name == "bench_attention":  # q/k in e4m3: further from the bf16 kernel, still close (randn q, k, v)
        assert len(fp8) == 2 and all(0 < r["max_abs_diff_vs_ours"] < 0.25 for r in fp8)
    assert "smoke" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
@pytest.mark.parametrize("name", ["bench_attention", "bench_fused"])
def test_no_cuda_exits_zero(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _load(name).main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out
