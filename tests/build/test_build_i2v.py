"""``fastvideo-build`` on an image-to-video folder: refused with a clear error naming the transformer config (it does
not export the I2V DiT yet), exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastvideo.build import cli


def test_i2v_folder_is_refused_clearly(fastvideo_cache: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from fastvideo.engine.builtin_model import ensure_builtin_model

    model = ensure_builtin_model(fastvideo_cache, "fastvideo-tiny-i2v")
    out = tmp_path / "artifacts"
    code = cli.main(["--backend", "aoti", "--profile", "64x64x5", "--precision", "fp32", "--quiet",
                     "--model-path", str(model), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "transformer/config.json is an image-to-video transformer" in err and "Traceback" not in err, err
    assert not out.exists()
