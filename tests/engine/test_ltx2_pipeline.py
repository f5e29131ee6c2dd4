"""The whole LTX-2 text-to-video+audio pipeline against diffusers 0.42's ``LTX2Pipeline`` (tiny random components).

A tiny ``LTX2Pipeline`` built from the real diffusers / transformers classes (``ltx2_side_fixtures``, with the
published dynamic-shift scheduler settings) is saved with ``save_pretrained`` (the session fixture
``ltx2_diffusers_folders``) and loaded back through :func:`load_ltx2_pipeline`; both run with the same seed, CFG on,
and the decoded frames and waveforms are compared. Nothing of diffusers is patched. bf16: test_ltx2_bf16.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).parent))
from ltx2_side_fixtures import (CFG_ONLY, FULL_GUIDANCE, MAX_SEQ, PUBLISHED_SCHEDULER,  # noqa: E402
                                assert_matches, run_reference)

from fastvideo.api.errors import ModelLoadError  # noqa: E402
from fastvideo.engine.models.ltx2.pipeline import (LTX2Guidance, LTX2Request, LTX2ScheduleConfig,  # noqa: E402
                                                   load_ltx2_pipeline, ltx2_sigmas)

TOL = 1e-4
FolderOf = Callable[..., tuple[Any, Path]]


CASES = [
    ("plain", LTX2Request(prompt="a red fox runs through the snow", negative_prompt="robot dancing", width=64,
                          height=64, num_frames=9, fps=24.0, steps=3, seed=7, guidance=FULL_GUIDANCE)),
    ("plain", LTX2Request(prompt="two people walk on beach", width=64, height=32, num_frames=9, fps=25.0, steps=2,
                          seed=3, guidance=CFG_ONLY)),
    ("timestep-vae", LTX2Request(prompt="cat in rain", negative_prompt="snow", width=64, height=64, num_frames=9,
                                 fps=24.0, steps=2, seed=11, guidance=CFG_ONLY, decode_timestep=0.05,
                                 decode_noise_scale=0.025)),
]


@pytest.mark.parametrize("name,req", CASES, ids=["cfg-stg-modality-rescale", "cfg-only", "timestep-vae"])
def test_pipeline_matches_diffusers_ltx2pipeline_fp32(ltx2_diffusers_folders: FolderOf, name: str,
                                                      req: LTX2Request) -> None:
    pipe, folder = ltx2_diffusers_folders(name == "timestep-vae")
    ours = load_ltx2_pipeline(folder, torch.float32, "cpu", max_sequence_length=MAX_SEQ)
    ref_video, ref_audio = run_reference(pipe, req)
    ref_u8 = np.stack([np.asarray(frame) for frame in pipe.video_processor.numpy_to_pil(ref_video)])  # "pil" frames
    out = ours.run(req)
    assert_matches(out, ref_video, ref_audio, TOL)
    assert out.frames.dtype == np.uint8 and np.abs(out.frames.astype(int) - ref_u8.astype(int)).max() <= 1
    assert out.sample_rate == pipe.vocoder.config.output_sampling_rate


def test_stepwise_api_equals_generate(ltx2_diffusers_folders: FolderOf) -> None:
    _, folder = ltx2_diffusers_folders()
    ours = load_ltx2_pipeline(folder, torch.float32, "cpu", max_sequence_length=MAX_SEQ)
    frames, waveform, rate = ours.generate("a red fox", "snow", width=64, height=32, num_frames=9, fps=24.0,
                                           steps=2, guidance_scale=3.0, seed=5, guidance=CFG_ONLY)
    st = ours.prepare(LTX2Request(prompt="a red fox", negative_prompt="snow", width=64, height=32, num_frames=9,
                                  fps=24.0, steps=2, seed=5, guidance=CFG_ONLY.__class__(
                                      **{**CFG_ONLY.__dict__, "guidance_scale": 3.0})))
    with pytest.raises(ValueError, match="run them all"):
        ours.decode(st)
    with pytest.raises(ValueError, match="in order"):
        ours.denoise_step(st, 1)
    for i in range(st.steps):
        ours.denoise_step(st, i)
    out = ours.decode(st)
    assert np.array_equal(out.frames, frames) and torch.equal(out.waveform, waveform) and rate == out.sample_rate
    assert frames.shape == (9, 32, 64, 3) and waveform.ndim == 2


@pytest.mark.parametrize("config", [dict(), PUBLISHED_SCHEDULER, dict(shift=3.0),
                                    dict(PUBLISHED_SCHEDULER, time_shift_type="linear", shift_terminal=None)])
@pytest.mark.parametrize("steps,tokens", [(1, 64), (4, 5120), (30, 6144)])
def test_schedule_equals_diffusers_set_timesteps(config: dict[str, Any], steps: int, tokens: int) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ltx2.pipeline_ltx2 import calculate_shift

    sched = FlowMatchEulerDiscreteScheduler(**config)
    c = sched.config
    if steps == 1 and c.shift_terminal:  # diffusers' stretch divides 0 by 0 (NaN sigmas): we refuse
        with pytest.raises(ValueError, match="shift_terminal"):
            ltx2_sigmas(steps, LTX2ScheduleConfig.from_dict(dict(c)), tokens)
        return
    mu = calculate_shift(tokens, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
    sched.set_timesteps(steps, sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    ours = ltx2_sigmas(steps, LTX2ScheduleConfig.from_dict(dict(c)), tokens)
    assert np.array_equal(ours, sched.sigmas[:-1].numpy())
    assert np.array_equal(ours * c.num_train_timesteps, sched.timesteps.numpy())


def test_unsupported_scheduler_settings_and_bad_folders_are_refused(ltx2_diffusers_folders: FolderOf,
                                                                     tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        LTX2ScheduleConfig.from_dict({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_karras_sigmas": True})
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(ModelLoadError, match="WanPipeline"):
        load_ltx2_pipeline(tmp_path)
    _, folder = ltx2_diffusers_folders()
    ours = load_ltx2_pipeline(folder, max_sequence_length=MAX_SEQ)
    with pytest.raises(ValueError, match="width"):
        ours.prepare(LTX2Request(prompt="a", width=48, height=64, num_frames=9))
    with pytest.raises(ValueError, match="stg_blocks"):
        ours.prepare(LTX2Request(prompt="a", width=64, height=64, num_frames=9,
                                 guidance=LTX2Guidance(stg_blocks=None)))
