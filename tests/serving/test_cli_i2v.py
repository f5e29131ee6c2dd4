"""``fastvideo generate --model-path fastvideo-tiny-i2v --image in.png``: the built-in image-to-video model end to
end as a user runs it (a real subprocess writing a real MP4), and the image flags' errors naming them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastvideo.runtime.media import decode_mp4
from fastvideo.serving import cli

SMALL = ["--width", "32", "--height", "32", "--num-frames", "5", "--steps", "2", "--seed", "3"]


def _png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (48, 40), (200, 40, 30)).save(path)
    return path


def test_generate_image_to_video_writes_mp4(fastvideo_cache, tmp_path):
    image = _png(tmp_path / "in.png")
    out = tmp_path / "out" / "cat.mp4"
    env = {**os.environ, "FASTVIDEO_CACHE_DIR": str(fastvideo_cache)}
    proc = subprocess.run([sys.executable, "-m", "fastvideo", "generate", "--model-path", "fastvideo-tiny-i2v",
                           "--image", str(image), "--prompt", "a cat", "--output", str(out), *SMALL],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    frames, _ = decode_mp4(out.read_bytes())
    assert frames.shape == (5, 32, 32, 3)


def test_image_flags_errors_name_the_flag(fastvideo_cache, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    cases = [
        # an image-to-video model given no image
        (["--model-path", "fastvideo-tiny-i2v"], "--image", "image-to-video model"),
        # a text-to-video model given an image
        (["--image", str(_png(tmp_path / "a.png"))], "--image", "is text-to-video"),
        (["--model-path", "fastvideo-tiny-i2v", "--image", str(tmp_path / "missing.png")], "--image",
         "does not exist"),
    ]
    for extra, name, words in cases:
        assert cli.main(["generate", "--prompt", "x", "--output", str(out), *SMALL, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert f"{name}: " in err and words in err and "Traceback" not in err, (extra, err)
    assert not out.exists()
