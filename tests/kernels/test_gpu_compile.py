"""Every Triton kernel compiles ahead of time for real GPUs (sm_90, sm_80, ...) without a GPU.

The interpreter tests never run the code behind ``SOFT_BF16=False`` (native bf16/fp16 ``tl.dot``,
native casts). ``python -m fastvideo.kernels.aot`` plans each launch through our own op wrappers on
meta tensors at Wan shapes (attention d=64/128, 32,760-token self-attention with its masked tail,
512-token cross-attention, bf16/fp16, every shipped config for every capability it declares, the
out-of-resources fallback; fused ops at the 1.3B and 14B widths), compiles it with Triton's JIT
binder for the named target and runs the wheel's ptxas on it, once with the installed (newest)
triton and once with triton 3.6, the GPU image's (``.triton36/``, installed by
``scripts/install.sh dev``). It runs in subprocesses because the kernels must be imported compiled
(this test session imports them interpreted). The run fails on
a compile error, shared memory over the target's limit, any register spill, a ptxas performance
warning (C7515: serialized wgmma) or an sm_90 attention kernel without wgmma.
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
TRITON_36 = ROOT / ".triton36"


@pytest.fixture(scope="module", params=["installed", "3.6"])
def aot_reports(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, list[dict]]:
    extra = []
    if request.param == "3.6":
        if not (TRITON_36 / "triton").is_dir():
            pytest.skip(f"triton 3.6 is not installed in {TRITON_36} (bash scripts/install.sh dev installs it)")
        extra = [str(TRITON_36)]
    out = tmp_path_factory.mktemp("aot") / "reports.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*extra, str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "fastvideo.kernels.aot", "--json", str(out)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert out.exists(), f"the AOT run wrote no report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n" \
                         f"{proc.stderr[-3000:]}"
    version = subprocess.run([sys.executable, "-c", "import triton; print(triton.__version__)"], env=env,
                             capture_output=True, text=True).stdout.strip()
    assert request.param == "installed" or version.startswith("3.6"), version
    return proc, json.loads(out.read_text())


def test_every_kernel_compiles_without_spills_or_serialized_wgmma(aot_reports) -> None:
    proc, reports = aot_reports
    bad = [f"{r['target']} {r['name']}: {'; '.join(r['problems'])}" for r in reports if r["problems"]]
    assert not bad, "\n".join(bad)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_the_cases_cover_wan_shapes_configs_and_targets(aot_reports) -> None:
    _, reports = aot_reports
    names = {(r["target"], r["name"]) for r in reports}
    attention = [r for r in reports if r["kernel"].startswith("attention")]
    for target, source in [("sm_90", "h100"), ("sm_90", "h200"), ("sm_80", "a100"), ("sm_80", "default"),
                           ("sm_86", "default"), ("sm_90", "default"), ("sm_80", "fallback"), ("sm_90", "fallback")]:
        for head_dim in (64, 128):
            for kind, len_k in (("self", 32760), ("cross", 512)):
                for dtype in ("bfloat16", "float16"):
                    assert any(t == target and n.startswith(f"attention {source}[{head_dim}] {kind} Lq=32760 "
                                                            f"Lk={len_k} d={head_dim} {dtype}") for t, n in names), \
                        (target, source, head_dim, kind, dtype)
    assert all(r["wgmma"] for r in attention if r["target"] == "sm_90")
    assert any(t == "sm_90" and n.startswith("attention h200[128] self-14b Lq=75600 Lk=75600") for t, n in names)
    for kernel in ("rms_norm", "layer_norm_modulate", "gated_residual", "apply_rope"):
        for width in (1536, 5120):
            for target in ("sm_80", "sm_90"):
                assert any(t == target and n.startswith(f"{kernel} ") and f"C={width} " in n for t, n in names), \
                    (kernel, width, target)
