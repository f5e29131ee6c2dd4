"""The fp8 attention kernel compiles ahead of time for sm_89 and sm_90 without a GPU, with no spills,
within shared memory, and really on fp8 tensor cores (e4m3 MMA in the PTX and SASS).

Runs ``benchmarks/kernels/aot_attention_fp8.py --config fallback`` (Wan2.1-1.3B self- and cross-
attention shapes, the config every GPU can fall back to) in a subprocess, because the kernels must be
imported compiled and this test session imports them interpreted. The full set of configs:
``python benchmarks/kernels/aot_attention_fp8.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]


def test_fp8_attention_compiles_to_fp8_tensor_cores(tmp_path: Path) -> None:
    out = tmp_path / "aot.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/kernels/aot_attention_fp8.py"), "--config",
                           "fallback", "--json", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert {r["target"] for r in rows} == {"sm_89", "sm_90"} and len(rows) == 4
    bad = [f"{r['target']} {r['name']}: {'; '.join(r['problems'])}" for r in rows if r["problems"]]
    assert not bad, "\n".join(bad)
    for r in rows:
        assert r["spill_store_bytes"] == r["spill_load_bytes"] == 0
        if r["target"] == "sm_90":
            assert r["wgmma"] and any(".e4m3.e4m3" in i and i.startswith("wgmma") for i in r["fp8_mma_ptx"])
            assert any(op.startswith("QGMMA") for op in r["sass_mma"]), r["sass_mma"]
        else:
            assert any(i.startswith("mma.") and "e4m3" in i for i in r["fp8_mma_ptx"])
            assert any(op.startswith("QMMA") for op in r["sass_mma"]), r["sass_mma"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
