"""``fastvideo generate`` as a user runs it: a real subprocess writing a real MP4, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastvideo.runtime.media import decode_mp4

SMALL = ["--width", "64", "--height", "32", "--num-frames", "5", "--steps", "2", "--seed", "3"]


def run_cli(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FASTVIDEO_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "fastvideo", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_generate_writes_playable_mp4(tiny_model_dir, fastvideo_cache, tmp_path):
    out = tmp_path / "fox.mp4"
    proc = run_cli(["generate", "--prompt", "a red fox", "--output", str(out), "--fps", "8", *SMALL], fastvideo_cache)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stderr
    frames, fps = decode_mp4(out.read_bytes())
    assert frames.shape == (5, 32, 64, 3) and fps == 8
    assert out.stat().st_mode & 0o777 == 0o644  # an ordinary readable file, not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["fox.mp4"]  # no temporary left behind


def test_bad_input_exits_2_and_writes_nothing(tiny_model_dir, fastvideo_cache, tmp_path):
    out = tmp_path / "bad.mp4"
    proc = run_cli(["generate", "--prompt", "x", "--output", str(out), "--width", "250"], fastvideo_cache)
    assert proc.returncode == 2
    assert "--width: 250 is not a multiple of 16" in proc.stderr  # the engine's check, named by the flag
    assert "Traceback" not in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_missing_model_folder(fastvideo_cache, tmp_path):
    proc = run_cli(["generate", "--prompt", "x", "--model-path", str(tmp_path / "nope"),
                    "--output", str(tmp_path / "o.mp4")], fastvideo_cache)
    assert proc.returncode == 2
    assert "cannot load the model" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_explains_options(fastvideo_cache):
    proc = run_cli(["generate", "--help"], fastvideo_cache)
    assert proc.returncode == 0
    for flag in ("--prompt", "--model-path", "--num-frames", "--guidance-scale", "multiple of 16"):
        assert flag in proc.stdout
