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


def _run_yaml(tmp_path: Path, model_dir: Path, **request: object) -> Path:
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "generator": {"model_path": str(model_dir), "engine": {"device": "cpu", "dtype": "fp32"}},
        "request": {"prompt": "a red fox", "sampling": {"width": 64, "height": 32, "num_frames": 5,
                                                        "num_inference_steps": 3, "seed": 1},
                    "output": {"output_path": str(tmp_path / "from-config.mp4")}, **request}}))
    return path


def test_generate_from_a_run_config_with_dotted_overrides_and_flags(tiny_model_dir, tmp_path, capsys):
    """FastVideo's `fastvideo generate --config run.yaml --request.sampling.seed 3`: file < dotted overrides < flags."""
    import json as _json

    from fastvideo.serving import cli

    config = _run_yaml(tmp_path, tiny_model_dir)
    code = cli.main(["generate", "--config", str(config), "--request.sampling.seed", "3",
                     "--request.sampling.num_frames=9", "--steps", "2", "--json"])
    assert code == 0, capsys.readouterr().err
    meta = _json.loads(capsys.readouterr().out)
    assert meta["video_path"] == str(tmp_path / "from-config.mp4") and Path(meta["video_path"]).stat().st_size > 0
    assert (meta["seed"], meta["num_frames"], meta["width"], meta["height"]) == (3, 9, 64, 32)
    assert meta["num_inference_steps"] == 2  # the flag wins over the file's 3


def test_run_config_errors_name_what_the_user_wrote(tiny_model_dir, tmp_path, capsys):
    from fastvideo.serving import cli

    config = _run_yaml(tmp_path, tiny_model_dir)
    cases = [
        (["--config", str(config), "--request.sampling.sedd", "1"], "request.sampling.sedd: unknown field"),
        (["--config", str(config), "--server.port", "8001"], "server.port: unsupported override path"),
        (["--request.sampling.seed", "1", "--prompt", "p"], "config: dotted overrides change a run config"),
        (["--config", str(tmp_path / "nope.yaml")], "config: Config file not found"),
        (["--config", str(config), "--request.prompt", ""], "request.prompt: is required"),
        (["--config", str(config), "--request.sampling.num_inference_steps", "0"],
         "request.sampling.num_inference_steps: 0 is out of range; use 1..1000"),  # the engine's check, file's name
        (["--config", str(config), "--steps", "0"], "--steps: 0 is out of range"),
    ]
    for extra, message in cases:
        assert cli.main(["generate", *extra]) == 2, extra
        err = capsys.readouterr().err
        assert f"invalid input: {message}" in err and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "from-config.mp4").exists()
