"""Shared helpers of the build tests: the profile they build and a subprocess runner for the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fastvideo.build import manifest as mf

PROFILE = "64x64x5"
#: The tiny LTX-2's build profile (32-multiples, k*2+1 frames): token grid 3x16x16, 5 audio latent frames at 24 fps.
LTX2_PROFILE = "32x32x5"
#: Latent (frames, height, width) of PROFILE: (5 - 1) // 4 + 1 frames, 64 / 8 pixels.
LATENT = (2, 8, 8)


@dataclass
class CliRun:
    """One finished ``fastvideo-build`` process."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    out: Path

    @property
    def folder(self) -> Path:
        """The single build folder under ``out``."""
        builds = [p for p in self.out.iterdir() if (p / "manifest.json").is_file()]
        assert len(builds) == 1, f"expected one build in {self.out}, found {os.listdir(self.out)}"
        return builds[0]


def run_cli(args: list[str], out: Path, cache_dir: Path, timeout: float = 900) -> CliRun:
    """Run ``fastvideo-build ARGS --out OUT`` in a fresh process with the session's model cache."""
    env = dict(os.environ, FASTVIDEO_CACHE_DIR=str(cache_dir))
    env.pop("FASTVIDEO_ATTENTION_BACKEND", None)
    argv = [sys.executable, "-m", "fastvideo.build.cli", *args, "--out", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    return CliRun(argv, proc.returncode, proc.stdout, proc.stderr, out)


def clone_build(src: Path, parent: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Copy a build folder; ``edit`` rewrites its manifest as a build elsewhere would have written it."""
    work = parent / f".clone-{len(list(parent.iterdir())) if parent.exists() else 0}"
    shutil.copytree(src, work)
    data = json.loads((work / "manifest.json").read_text())
    if edit is not None:
        edit(data)
        data["identity_hash"] = mf.identity_hash(data["identity"])
        data["name"] = mf.folder_name(data["backend"], data["precision"], data["identity_hash"])
    (work / "manifest.json").write_text(json.dumps(data, indent=2, sort_keys=True))
    final = parent / data["name"]
    work.rename(final)
    return final


def write_tiny_a14b(base: Path, target: Path, seed: int = 4242) -> Path:
    """A tiny Wan2.2 A14B folder: ``base`` (the built-in tiny model) plus ``transformer_2/``, a second expert of the
    same config with other random weights, and ``model_index.json``'s ``transformer_2`` + ``boundary_ratio``
    (0.875, the real A14B value: the tiny model's 2-step schedule, timesteps 999 and 750, runs step 0 on
    ``transformer`` and step 1 on ``transformer_2``)."""
    import torch
    from safetensors.torch import save_file

    from fastvideo.engine.builtin_model import synthesize_state_dict
    from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel

    shutil.copytree(base, target)
    config = json.loads((target / "transformer" / "config.json").read_text())
    (target / "transformer_2").mkdir()
    (target / "transformer_2" / "config.json").write_text(json.dumps(config, indent=1))
    with torch.device("meta"):
        dit = WanTransformer3DModel(WanDiTConfig.from_dict(config))
    save_file(synthesize_state_dict(dit, seed), str(target / "transformer_2" / "diffusion_pytorch_model.safetensors"),
              metadata={"format": "pt"})
    index = json.loads((target / "model_index.json").read_text())
    index.update({"transformer_2": ["diffusers", "WanTransformer3DModel"], "boundary_ratio": 0.875})
    (target / "model_index.json").write_text(json.dumps(index, indent=1))
    return target
