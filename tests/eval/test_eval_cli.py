"""``fastvideo eval list|run`` end to end: a real subprocess, JSON out, and one-line errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastvideo.serving import cli

ROOT = Path(__file__).resolve().parents[2]


def eval_main(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    noisy = np.clip(ref.astype(int) + rng.integers(-4, 5, ref.shape), 0, 255).astype(np.uint8)
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "gen.npy", noisy)
    return tmp_path / "gen.npy", tmp_path / "ref.npy"


def test_subprocess_run_prints_json_and_help_explains(pair, tmp_path):
    gen, ref = pair
    proc = subprocess.run([sys.executable, "-m", "fastvideo", "eval", "run", "--videos", str(gen), "--reference",
                           str(ref), "--metrics", "psnr,ssim,temporal.flicker"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["metrics"] == ["common.psnr", "common.ssim", "temporal.flicker"]
    video = report["videos"][0]
    assert video["video"] == str(gen) and video["reference"] == str(ref) and video["num_frames"] == 3
    assert 30 < video["metrics"]["common.psnr"]["score"] < 60 and video["metrics"]["common.psnr"]["unit"] == "dB"
    helped = subprocess.run([sys.executable, "-m", "fastvideo", "eval", "run", "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert helped.returncode == 0
    for flag in ("--videos", "--reference", "--metrics", "--clip-model", "--output", "--prompt", "eval list"):
        assert flag in helped.stdout


def test_list_prints_every_metric_and_what_it_needs(capsys):
    code, out, _ = eval_main(capsys, "list")
    assert code == 0
    for name in ("common.psnr", "common.ssim", "common.mse", "temporal.flicker", "temporal.motion",
                 "clip.clip_score"):
        assert name in out
    assert "--clip-model" in out and "reference" in out
    code, out, _ = eval_main(capsys, "list", "--group", "temporal", "--json")
    assert code == 0 and [m["name"] for m in json.loads(out)] == ["temporal.flicker", "temporal.motion"]
    code, _, err = eval_main(capsys, "list", "--group", "vbench")
    assert code == 2 and "no metric in group 'vbench'" in err


def test_output_file_holds_the_report(pair, tmp_path, capsys):
    gen, ref = pair
    out_file = tmp_path / "scores.json"
    code, out, err = eval_main(capsys, "run", "--videos", str(gen), "--reference", str(ref), "--out", str(out_file))
    assert code == 0 and out == "" and "wrote" in err
    report = json.loads(out_file.read_text())
    assert set(report["metrics"]) == {"common.mse", "common.psnr", "common.ssim", "temporal.flicker",
                                      "temporal.motion"}
    assert "clip.clip_score" in report["skipped"]
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("args, message", [
    (["--videos", "{tmp}/missing.mp4"], "missing.mp4: no such file"),
    (["--videos", "{gen}", "--metrics", "lpips"], "unknown metric 'lpips'; known metrics: clip.clip_score"),
    (["--videos", "{gen}", "--metrics", "psnr"], "pass --reference PATH"),
    (["--videos", "{gen}", "--reference", "{short}", "--metrics", "psnr"], "3 frames vs 2"),
    (["--videos", "{gen}", "--metrics", "clip_score", "--prompt", "a fox"], "pass --clip-model"),
    (["--videos", "{junk}"], "cannot decode it as a video"),
    (["--videos", "{gen}", "--output", "{tmp}/no/such/dir/out.json"], "does not exist"),
    (["--videos", "{gen}", "--device", "banana"], "is not a torch device"),
    (["--videos", "{gen}", "--device", "cuda:64"], "--device cuda:64"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(pair, tmp_path, capsys, args, message):
    gen, _ = pair
    np.save(tmp_path / "short.npy", np.zeros((2, 16, 16, 3), dtype=np.uint8))
    (tmp_path / "junk.mp4").write_bytes(b"\x00not a video" * 64)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(tmp=tmp_path, gen=gen, short=tmp_path / "short.npy", junk=tmp_path / "junk.mp4") for a in args]
    code, out, err = eval_main(capsys, "run", *args)
    assert code == 2 and out == ""
    assert err.startswith("fastvideo eval: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_eval_needs_an_action(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["eval"])
    assert info.value.code == 2
    assert "list" in capsys.readouterr().err
