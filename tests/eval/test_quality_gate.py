"""benchmarks/quality_gate.py on the built-in tiny model, minimal steps: table, JSON, README block, gate."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import quality_gate  # noqa: E402

SMALL = ["--device", "cpu", "--width", "32", "--height", "32", "--num-frames", "5", "--steps", "2",
         "--prompts", "a red fox", "--seeds", "3", "--warmup", "0"]


def test_real_levers_off_and_on_with_eval_deltas_and_speedup(tiny_model_dir, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{quality_gate.README_BEGIN}\nold table\n{quality_gate.README_END}\nafter\n")
    code = quality_gate.main([*SMALL, "--model-path", str(tiny_model_dir), "--levers", "ops_backend.torch,dtype.bf16,"
                              "attention.triton", "--json", str(tmp_path / "gate.json"),
                              "--markdown", str(tmp_path / "gate.md"), "--update-readme", str(readme)])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "gate.json").read_text())
    rows = {row["lever"]: row for row in report["levers"]}
    # the torch references of the fused ops reproduce the eager model exactly
    exact = rows["ops_backend.torch"]
    assert exact["status"] == "pass" and exact["psnr_db_min"] == "inf" and exact["ssim_min"] == 1.0
    assert exact["flicker_delta"] == 0.0 and exact["speedup_total"] > 0 and exact["speedup_denoise"] > 0
    assert len(exact["seconds"]["total"]["off"]) == len(exact["seconds"]["total"]["on"]) == 1
    # bf16 changes the video a little: a finite PSNR, judged against the thresholds
    bf16 = rows["dtype.bf16"]
    assert 15 < bf16["psnr_db_min"] < 80 and 0 < bf16["ssim_min"] < 1
    assert bf16["status"] == ("pass" if bf16["psnr_db_min"] >= 30 and bf16["ssim_min"] >= 0.95 else "fail")
    assert code == (0 if bf16["status"] == "pass" else 1)
    # no CUDA here: the Triton lever is listed as skipped with the reason, and does not fail the gate
    assert rows["attention.triton"]["status"] == "skipped" and "CUDA" in rows["attention.triton"]["reason"]
    assert report["thresholds"] == {"min_psnr": 30.0, "min_ssim": 0.95}
    assert report["workload"]["width"] == 32 and report["workload"]["seeds"] == [3]
    table = (tmp_path / "gate.md").read_text()
    assert "| ops_backend.torch | engine.ops_backend default -> torch | inf (identical) |" in table
    assert table in out
    text = readme.read_text()
    assert "old table" not in text and table in text and text.startswith("# x\n\nbefore\n") and "after" in text


def test_a_lever_that_breaks_the_video_fails_the_gate(tiny_model_dir, tmp_path, capsys):
    lever = quality_gate.Lever("test.other_seed", "a different seed: nothing like the reference",
                               request_on={"sampling.seed": 4})
    quality_gate.register_lever(lever)
    try:
        code = quality_gate.main([*SMALL, "--model-path", str(tiny_model_dir), "--levers", "test.other_seed",
                                  "--json", str(tmp_path / "gate.json")])
    finally:
        del quality_gate.LEVERS["test.other_seed"]
    assert code == 1
    row = json.loads((tmp_path / "gate.json").read_text())["levers"][0]
    assert row["status"] == "fail" and row["psnr_db_min"] < 30 and math.isfinite(row["psnr_db_min"])
    assert row["change"] == "sampling.seed default -> 4"
    assert "FAIL: PSNR" in capsys.readouterr().out


def test_latent_level_on_a_dit_config(tmp_path, capsys):
    lever = quality_gate.Lever("test.other_seed_request", "a request setting: not expressible as a DiT forward",
                               request_on={"sampling.seed": 4})
    quality_gate.register_lever(lever)
    readme = tmp_path / "README.md"
    frame_block = f"{quality_gate.README_BEGIN}\nframe table\n{quality_gate.README_END}\n"
    readme.write_text(f"{frame_block}{quality_gate.README_DIT_BEGIN}\nold\n{quality_gate.README_DIT_END}\n")
    try:
        code = quality_gate.main(["--device", "cpu", "--dit-config", "tiny", "--seeds", "0", "1", "--repeats", "2",
                                  "--levers", "dtype.bf16,ops_backend.torch,test.other_seed_request",
                                  "--json", str(tmp_path / "gate.json"), "--update-readme", str(readme)])
    finally:
        del quality_gate.LEVERS["test.other_seed_request"]
    rows = {row["lever"]: row for row in json.loads((tmp_path / "gate.json").read_text())["levers"]}
    exact, bf16 = rows["ops_backend.torch"], rows["dtype.bf16"]
    assert exact["psnr_db_min"] == "inf" and exact["cosine_min"] == pytest.approx(1.0) and exact["status"] == "pass"
    assert 30 < bf16["psnr_db_min"] < 120 and bf16["cosine_min"] > 0.999 and bf16["status"] == "pass"
    assert len(bf16["samples"]) == 2 and len(bf16["seconds"]["dit_step"]["on"]) == 4 and bf16["speedup_denoise"] > 0
    assert bf16["latent_shape"] == [1, 16, 3, 8, 8]  # the default 64x64x9 video's latents
    skipped = rows["test.other_seed_request"]
    assert skipped["status"] == "skipped" and "not a DiT-level setting (sampling.seed)" in skipped["reason"]
    assert code == 0
    assert "| latent PSNR dB (worst) | cosine (worst) | speed-up (DiT step) | gate |" in capsys.readouterr().out
    text = readme.read_text()
    assert text.startswith(frame_block) and "old" not in text and "| dtype.bf16 |" in text  # only the DiT block


def test_latent_psnr_known_values():
    ref = quality_gate.torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert quality_gate.latent_psnr(ref.clone(), ref) == float("inf")
    assert quality_gate.latent_psnr(ref + 0.01, ref) == pytest.approx(40.0)  # peak 1, MSE 1e-4


@pytest.mark.parametrize("args, message", [
    (["--levers", "teacache"], "unknown lever(s) teacache; known: dtype.bf16"),
    (["--update-readme", "/nonexistent/README.md"], "no such file"),
])
def test_bad_input_exits_2(args, message, capsys):
    assert quality_gate.main(args) == 2
    assert message in capsys.readouterr().err


def test_help_lists_the_levers_and_thresholds(capsys):
    with pytest.raises(SystemExit) as info:
        quality_gate.main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for text in ("--min-psnr", "--min-ssim", "--levers", "dtype.bf16", "attention.triton", "--update-readme"):
        assert text in out


def test_readme_holds_the_gate_table_with_its_thresholds():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index(quality_gate.README_BEGIN):text.index(quality_gate.README_END)]
    assert quality_gate.Thresholds().describe() in block  # the defaults the script gates on
    for lever in ("dtype.bf16", "ops_backend.torch", "attention.triton"):
        assert f"| {lever} |" in block
    dit_block = text[text.index(quality_gate.README_DIT_BEGIN):text.index(quality_gate.README_DIT_END)]
    assert "wan2.1-1.3b config" in dit_block and "| dtype.bf16 |" in dit_block


def test_fp8_lever_at_the_latent_level(tmp_path):
    """The fp8 lever quantizes its own copy of the DiT: a real, small, gated difference (not identical)."""
    code = quality_gate.main(["--device", "cpu", "--dit-config", "tiny", "--seeds", "0", "--repeats", "1",
                              "--warmup", "0", "--levers", "fp8", "--json", str(tmp_path / "gate.json")])
    (row,) = json.loads((tmp_path / "gate.json").read_text())["levers"]
    assert row["change"] == "engine.quantization.transformer_quant default -> FP8"
    assert row["status"] == "pass" and code == 0
    assert 30 < row["psnr_db_min"] < 120 and row["cosine_min"] > 0.999
