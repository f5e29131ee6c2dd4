"""Kernel launches: planning on meta tensors records instead of running, the device guard, and the
GPU-capability rule (kernels and dtype ``auto`` below sm_80)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from fastvideo.engine.models.wan.pipeline import model_dtype
from fastvideo.kernels import device as device_mod
from fastvideo.kernels import triton_utils
from fastvideo.kernels.attention import triton_attention as ta
from fastvideo.kernels.triton_utils import KernelLaunch, planning_launches, triton_device_reason

ROOT = Path(__file__).resolve().parents[2]


_PLANNING_SCRIPT = r"""
import torch
from fastvideo.kernels import fused_triton as ft
from fastvideo.kernels.attention import triton_attention as ta
from fastvideo.kernels.attention.tuning import AttentionConfig
from fastvideo.kernels.triton_utils import planning_launches

assert not ta.INTERPRETED
q = torch.empty(2, 100, 4, 64, dtype=torch.bfloat16, device="meta")
try:
    ta.flash_attention_triton(q, q, q)
    raise SystemExit("meta tensors were accepted outside planning")
except ValueError as exc:
    assert "device meta not supported outside launch planning" in str(exc), exc
cfg = AttentionConfig(64, 32, num_warps=4, num_stages=2)
x = torch.empty(2, 7, 96, dtype=torch.float16, device="meta")
with planning_launches() as planned:
    out = ta.flash_attention_triton(q, q, q, config=cfg)
    ft.rms_norm_triton(x, torch.empty(96, dtype=torch.float16, device="meta"), 1e-6)
    try:
        ta.flash_attention_triton(q.double(), q.double(), q.double(), config=cfg)
        raise SystemExit("float64 was planned")
    except ValueError as exc:
        assert "dtype torch.float64 not supported" in str(exc), exc
assert out.device.type == "meta" and out.shape == q.shape
assert [p.name for p in planned] == ["attention[builtin]", "rms_norm"], planned
attn = planned[0]
assert attn.grid == (2, 8), attn.grid  # ceil(100 / 64) query tiles x batch*heads
assert (attn.options["BLOCK_M"], attn.options["BLOCK_N"]) == (64, 32)
assert attn.options["EVEN_N"] is False  # 100 % 32: the masked tail tile
assert (attn.options["num_warps"], attn.options["num_stages"], attn.options["SOFT_BF16"]) == (4, 2, False)
print("OK")
"""


def test_meta_tensors_are_planned_not_launched() -> None:
    """Planning needs the kernels compiled (this session imports them interpreted): a subprocess."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", _PLANNING_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout[-2000:] + proc.stderr[-3000:]


def test_interpreted_kernels_cannot_be_planned() -> None:
    if not ta.INTERPRETED:
        pytest.skip("this session runs the kernels compiled")
    q = torch.empty(1, 8, 2, 64, dtype=torch.bfloat16, device="meta")
    with planning_launches(), pytest.raises(ValueError, match="built for the interpreter"):
        ta.flash_attention_triton(q, q, q)


def test_launch_runs_under_the_device_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, torch.device]] = []

    @contextlib.contextmanager
    def guard(device):
        seen.append(("enter", device))
        yield
        seen.append(("exit", device))

    class Kernel:
        def __getitem__(self, grid):
            def run(*args, **options):
                seen.append(("launch", grid))
            return run

    monkeypatch.setattr(triton_utils, "device_guard", guard)
    t = torch.zeros(3)
    KernelLaunch("k", Kernel(), (5,), (t, 3), {"BLOCK": 16}).run()
    assert seen == [("enter", t.device), ("launch", (5,)), ("exit", t.device)]


def test_device_guard_switches_only_to_another_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    switched: list[int] = []

    @contextlib.contextmanager
    def fake_device(index):
        switched.append(index)
        yield

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", fake_device)
    for device in ("cpu", "meta", "cuda:0", None):
        with device_mod.device_guard(device):
            pass
    assert switched == []
    with device_mod.device_guard("cuda:1"):
        pass
    assert switched == [1]


def test_gpus_below_sm80_are_refused_clearly_and_auto_dtype_is_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    reason = triton_device_reason(torch.float16, torch.device("cuda"), interpreted=False)
    assert reason is not None and "Tesla T4 is sm_75" in reason and "sm_80 or newer" in reason and "sdpa" in reason
    assert model_dtype("auto", torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert triton_device_reason(torch.bfloat16, torch.device("cuda"), interpreted=False) is None
    assert model_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert model_dtype("auto", torch.device("cpu")) == torch.float32
