"""The whole LTX-2 pipeline in bfloat16 against diffusers 0.42's ``LTX2Pipeline`` (tiny random components, CPU).

bf16 results of two correct implementations differ by rounding, so the bound is relative to diffusers' own bf16
error: the tiny timestep-conditioned ``LTX2Pipeline`` of ``ltx2_side_fixtures`` (the session fixture
``ltx2_diffusers_folders``) runs in float32 as the reference, diffusers loads the same folder in bf16
(``from_pretrained(dtype=torch.bfloat16)``) and our :func:`load_ltx2_pipeline` loads it in bf16; same prompt, seed,
steps and guidance (CFG + STG + modality isolation with rescale, decode noise). Our bf16 video frames and waveform
must be within 1.5x (+ a tiny absolute epsilon) of diffusers' bf16 error against the fp32 reference, in max and in
mean abs error, and within an absolute bound.

Measured (CPU, torch 2.13, diffusers 0.42.1): diffusers bf16 vs fp32 video max 0.0733 / mean 0.0030 (video std
0.42), waveform max 0.0052 / mean 0.0010 (std 0.095); ours the same numbers: our bf16 output is bit-equal to
diffusers' bf16 output (max abs 0), so the ratio is 1.0 (no bf16 layer of ours is computed differently). Cost: this
file alone takes ~48 s of CPU (user time, with imports and the folder build; three pipeline runs of 3 steps x 4 DiT
calls).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).parent))
from ltx2_side_fixtures import FULL_GUIDANCE, MAX_SEQ, run_reference  # noqa: E402

from fastvideo.engine.models.ltx2.pipeline import LTX2Request, load_ltx2_pipeline  # noqa: E402

RATIO = 1.5  # our bf16 error may be at most this multiple of diffusers' own bf16 error ...
EPS = {"video": 1e-3, "waveform": 1e-4}  # ... plus this (video in [0, 1]; the waveform's std is ~0.1)
ABS_MAX = {"video": 0.15, "waveform": 0.02}  # absolute sanity: max abs error against the fp32 reference
ABS_MEAN = {"video": 0.01, "waveform": 0.003}  # and mean abs error
REQ = LTX2Request(prompt="a red fox runs through the snow", negative_prompt="robot dancing", width=64, height=64,
                  num_frames=9, fps=24.0, steps=3, seed=7, guidance=FULL_GUIDANCE, decode_timestep=0.05,
                  decode_noise_scale=0.025)


def _errors(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    assert got.shape == want.shape and np.isfinite(got).all()
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return float(diff.max()), float(diff.mean())


def test_bf16_pipeline_is_as_close_to_fp32_as_diffusers_bf16(
        ltx2_diffusers_folders: Callable[..., tuple[Any, Path]]) -> None:
    from diffusers import LTX2Pipeline

    pipe32, folder = ltx2_diffusers_folders(True)
    ref = dict(zip(("video", "waveform"), run_reference(pipe32, REQ)))
    pipe16 = LTX2Pipeline.from_pretrained(str(folder), dtype=torch.bfloat16)
    theirs = dict(zip(("video", "waveform"), run_reference(pipe16, REQ)))
    ours_pipe = load_ltx2_pipeline(folder, torch.bfloat16, "cpu", max_sequence_length=MAX_SEQ)
    modules = (ours_pipe.transformer, ours_pipe.vae, ours_pipe.audio_vae, ours_pipe.vocoder, ours_pipe.connectors,
               ours_pipe.text_encoder.model)
    assert {p.dtype for m in modules for p in m.parameters()} == {torch.bfloat16}
    out = ours_pipe.run(REQ)
    assert out.waveform.dtype == torch.float32 and out.frames.dtype == np.uint8
    ours = {"video": out.video, "waveform": out.waveform.numpy()}
    assert out.sample_rate == pipe32.vocoder.config.output_sampling_rate

    for key in ("video", "waveform"):
        t_max, t_mean = _errors(theirs[key], ref[key])
        o_max, o_mean = _errors(ours[key], ref[key])
        between = _errors(ours[key], theirs[key])[0]
        print(f"{key} (std {ref[key].std():.3g}) vs fp32: diffusers bf16 max {t_max:.4g} mean {t_mean:.4g}; "
              f"ours bf16 max {o_max:.4g} mean {o_mean:.4g}; ours vs diffusers bf16 max {between:.4g}")
        assert ref[key].std() > 1e-3  # not a trivially constant output
        assert t_mean > 1e-5  # bf16 really ran (else the relative bound says nothing)
        assert o_max <= RATIO * t_max + EPS[key] and o_mean <= RATIO * t_mean + EPS[key] / 10, key
        assert o_max <= ABS_MAX[key] and o_mean <= ABS_MEAN[key], key
