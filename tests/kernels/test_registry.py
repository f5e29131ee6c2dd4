"""Attention backend registry with the optional backends, the Triton device/dtype rule, and the
JSON block-size configs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from fastvideo.kernels.attention import flash_attn_check
from fastvideo.kernels.attention import tuning
from fastvideo.kernels.registry import AttentionBackendError, available_backends, select_attention_backend
from fastvideo.kernels.triton_utils import normalize_gpu_name, triton_device_reason

HAS_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None


def test_available_backends() -> None:
    names = available_backends()
    assert {"sdpa", "triton"} <= set(names)
    assert ("flash_attn" in names) == HAS_FLASH_ATTN


def test_select_triton_runs_and_matches_sdpa(device: torch.device) -> None:
    backend = select_attention_backend(" Triton ", dtype=torch.float16, head_dim=32, device=device)
    sdpa = select_attention_backend(None, dtype=torch.float16, head_dim=32, device=device)
    assert (backend.name, sdpa.name) == ("triton", "sdpa")
    q, k, v = (torch.randn(1, n, 2, 32, dtype=torch.float16, device=device) for n in (9, 20, 20))
    torch.testing.assert_close(backend(q, k, v), sdpa(q, k, v), rtol=2e-3, atol=2e-3)


def test_unknown_backend() -> None:
    with pytest.raises(AttentionBackendError, match="unknown attention backend 'flashinfer'.*triton"):
        select_attention_backend("flashinfer", dtype=torch.bfloat16, head_dim=128, device="cpu")


@pytest.mark.parametrize("dtype,head_dim,dev,reason", [
    (torch.float64, 64, None, "dtype torch.float64 not supported"),
    (torch.bfloat16, 96, None, "head_dim 96 not supported"),
    (torch.bfloat16, 256, None, "head_dim 256 not supported"),
    (torch.bfloat16, 64, "meta", "device meta not supported"),
])
def test_triton_rejections(dtype: torch.dtype, head_dim: int, dev: str | None, reason: str,
                           device: torch.device) -> None:
    with pytest.raises(AttentionBackendError, match=f"attention backend 'triton' rejected: {reason}"):
        select_attention_backend("triton", dtype=dtype, head_dim=head_dim, device=dev or device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_triton_rejects_cuda_without_gpu() -> None:
    with pytest.raises(AttentionBackendError, match="torch.cuda.is_available"):
        select_attention_backend("triton", dtype=torch.bfloat16, head_dim=128, device="cuda")


def test_device_rule() -> None:
    cpu = torch.device("cpu")
    assert triton_device_reason(torch.float32, cpu, interpreted=True) is None
    assert "TRITON_INTERPRET=1" in triton_device_reason(torch.bfloat16, cpu, interpreted=False)
    assert "float64" in triton_device_reason(torch.float64, cpu, interpreted=True)
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        assert triton_device_reason(torch.bfloat16, cuda, interpreted=False) is None
        assert "float32" in triton_device_reason(torch.float32, cuda, interpreted=False)
        assert "interpreter" in triton_device_reason(torch.bfloat16, cuda, interpreted=True)


@pytest.mark.parametrize("dtype,head_dim,dev,reason", [
    (torch.bfloat16, 128, "cpu", "CUDA"),
    (torch.float32, 128, "cuda", "float32"),
    (torch.bfloat16, 260, "cuda", "head_dim 260"),
])
def test_flash_attn_check(dtype: torch.dtype, head_dim: int, dev: str, reason: str) -> None:
    if dev == "cuda" and not torch.cuda.is_available():
        reason = "CUDA"
    assert reason in flash_attn_check(dtype, head_dim, torch.device(dev))


@pytest.mark.skipif(HAS_FLASH_ATTN, reason="flash_attn is installed")
def test_flash_attn_absent_is_unknown() -> None:
    with pytest.raises(AttentionBackendError, match="unknown attention backend 'flash_attn'"):
        select_attention_backend("flash_attn", dtype=torch.bfloat16, head_dim=128, device="cuda")


# ------------------------------------------------------------------------------- JSON configs
def test_shipped_configs_parse() -> None:
    files = sorted(tuning.CONFIG_DIR.glob("*.json"))
    assert {"default.json", "interpreter.json"} <= {f.name for f in files}
    for path in files:
        for head_dim in (16, 32, 64, 128):
            cfg = tuning.load_attention_config(head_dim, path.stem)
            assert cfg.block_m >= 16 and cfg.block_n >= 16


@pytest.mark.parametrize("gpu,expected", [
    ("NVIDIA H100 80GB HBM3", "h100.json"),
    ("NVIDIA H100 PCIe", "h100.json"),
    ("NVIDIA H200", "h200.json"),
    ("NVIDIA A100-SXM4-80GB", "a100.json"),
    ("NVIDIA GeForce RTX 4090", "default.json"),
    ("interpreter", "interpreter.json"),
])
def test_config_file_matching(gpu: str, expected: str) -> None:
    assert tuning.config_file_for(normalize_gpu_name(gpu)).name == expected


def _write(dir_: Path, name: str, data: object) -> None:
    (dir_ / name).write_text(json.dumps(data) if not isinstance(data, str) else data)


def test_loader_head_dim_fallback_and_longest_match(tmp_path: Path) -> None:
    entry = {"block_m": 32, "block_n": 16}
    _write(tmp_path, "default.json", {"match": [], "attention": {"default": {"block_m": 16, "block_n": 16}}})
    _write(tmp_path, "x.json", {"match": ["h1"], "attention": {"default": entry}})
    _write(tmp_path, "y.json", {"match": ["h100"], "attention": {
        "default": entry, "128": {"block_m": 128, "block_n": 64, "num_warps": 8, "num_stages": 3}}})
    cfg = tuning.load_attention_config(128, "nvidia-h100-80gb", tmp_path)
    assert (cfg.block_m, cfg.block_n, cfg.num_warps, cfg.num_stages) == (128, 64, 8, 3)
    assert tuning.load_attention_config(64, "nvidia-h100-80gb", tmp_path).block_m == 32
    assert tuning.load_attention_config(64, "nvidia-h10", tmp_path).block_m == 32  # x.json
    assert tuning.load_attention_config(64, "amd-mi300x", tmp_path).block_m == 16


@pytest.mark.parametrize("content,message", [
    ("{not json", "cannot read"),
    ({"match": ["zz"], "attention": {"128": {"block_m": 64, "block_n": 64}}}, "'default' entry"),
    ({"match": ["zz"], "attention": {"default": {"block_m": 48, "block_n": 64}}}, "power of two"),
    ({"match": ["zz"], "attention": {"default": {"block_m": 64, "block_n": 64, "warps": 4}}}, "unknown keys"),
])
def test_loader_rejects_broken_files(tmp_path: Path, content: object, message: str) -> None:
    tuning._read_file.cache_clear()
    _write(tmp_path, "default.json", {"match": [], "attention": {"default": {"block_m": 16, "block_n": 16}}})
    _write(tmp_path, "zz.json", content)
    with pytest.raises(ValueError, match=message):
        tuning.load_attention_config(64, "gpu-zz", tmp_path)


def test_config_to_json_round_trip(tmp_path: Path) -> None:
    entries = {"128": tuning.AttentionConfig(128, 64, 8, 3)}
    (tmp_path / "default.json").write_text(tuning.config_to_json("d", [], entries, "n"))
    (tmp_path / "mine.json").write_text(tuning.config_to_json("Mine", ["mine"], entries, "tuned"))
    cfg = tuning.load_attention_config(128, "my-mine-gpu", tmp_path)
    assert (cfg.block_m, cfg.block_n, cfg.num_warps, cfg.num_stages) == (128, 64, 8, 3)
