"""The whole LTX-2 text-to-video+audio pipeline against diffusers 0.42's ``LTX2Pipeline`` (tiny random components).

A tiny ``LTX2Pipeline`` built from the real diffusers / transformers classes (``ltx2_side_fixtures.tiny_pipeline``,
with the published dynamic-shift scheduler settings) is saved with ``save_pretrained`` and loaded back through
:func:`load_ltx2_pipeline`; both run with the same seed, CFG on, and the decoded frames and waveforms are compared.
Nothing of diffusers is patched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).parent))
from ltx2_side_fixtures import PUBLISHED_SCHEDULER, tiny_pipeline_with_video_vae  # noqa: E402

from fastvideo.api.errors import ModelLoadError  # noqa: E402
from fastvideo.engine.models.ltx2.pipeline import (LTX2Guidance, LTX2Request, LTX2ScheduleConfig,  # noqa: E402
                                                   load_ltx2_pipeline, ltx2_sigmas)

TOL = 1e-4
MAX_SEQ = 16
# (CFG, STG and modality-isolation guidance with rescale: the defaults of LTX2Pipeline.__call__ but a block index
# the tiny DiT has)
GUIDANCE = LTX2Guidance(guidance_scale=3.0, stg_scale=1.0, modality_scale=3.0, guidance_rescale=0.7,
                        audio_guidance_scale=7.0, audio_stg_scale=1.0, audio_modality_scale=3.0,
                        audio_guidance_rescale=0.7, stg_blocks=(0,), use_cross_timestep=True)
CFG_ONLY = LTX2Guidance(guidance_scale=4.0, stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0,
                        audio_guidance_scale=None, audio_stg_scale=0.0, audio_modality_scale=1.0,
                        audio_guidance_rescale=0.0, stg_blocks=None, use_cross_timestep=False)


def _call_reference(pipe: Any, req: LTX2Request) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = req.guidance
    common = dict(prompt=req.prompt, negative_prompt=req.negative_prompt, height=req.height, width=req.width,
                  num_frames=req.num_frames, frame_rate=req.fps, num_inference_steps=req.steps,
                  guidance_scale=g.guidance_scale, stg_scale=g.stg_scale, modality_scale=g.modality_scale,
                  guidance_rescale=g.guidance_rescale, audio_guidance_scale=g.audio_guidance_scale,
                  audio_stg_scale=g.audio_stg_scale, audio_modality_scale=g.audio_modality_scale,
                  audio_guidance_rescale=g.audio_guidance_rescale,
                  spatio_temporal_guidance_blocks=list(g.stg_blocks) if g.stg_blocks else None,
                  use_cross_timestep=g.use_cross_timestep, decode_timestep=req.decode_timestep,
                  decode_noise_scale=req.decode_noise_scale, max_sequence_length=MAX_SEQ, return_dict=False)
    with torch.no_grad():
        video, audio = pipe(**common, output_type="np", generator=torch.Generator().manual_seed(req.seed))
    u8 = np.stack([np.asarray(frame) for frame in pipe.video_processor.numpy_to_pil(video[0])])  # "pil" frames
    return video[0], u8, audio[0].float().numpy()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path]]:
    out = {}
    for name, timestep_vae in (("plain", False), ("timestep-vae", True)):
        pipe = tiny_pipeline_with_video_vae(timestep_vae)
        folder = tmp_path_factory.mktemp(f"ltx2-{name}")
        pipe.save_pretrained(str(folder))
        out[name] = (pipe, folder)
    return out


CASES = [
    ("plain", LTX2Request(prompt="a red fox runs through the snow", negative_prompt="robot dancing", width=64,
                          height=64, num_frames=9, fps=24.0, steps=3, seed=7, guidance=GUIDANCE)),
    ("plain", LTX2Request(prompt="two people walk on beach", width=64, height=32, num_frames=9, fps=25.0, steps=2,
                          seed=3, guidance=CFG_ONLY)),
    ("timestep-vae", LTX2Request(prompt="cat in rain", negative_prompt="snow", width=64, height=64, num_frames=9,
                                 fps=24.0, steps=2, seed=11, guidance=CFG_ONLY, decode_timestep=0.05,
                                 decode_noise_scale=0.025)),
]


@pytest.mark.parametrize("name,req", CASES, ids=["cfg-stg-modality-rescale", "cfg-only", "timestep-vae"])
def test_pipeline_matches_diffusers_ltx2pipeline_fp32(folders: dict[str, tuple[Any, Path]], name: str,
                                                      req: LTX2Request) -> None:
    pipe, folder = folders[name]
    ours = load_ltx2_pipeline(folder, torch.float32, "cpu", max_sequence_length=MAX_SEQ)
    ref_video, ref_u8, ref_audio = _call_reference(pipe, req)
    out = ours.run(req)
    assert out.video.shape == ref_video.shape and out.waveform.shape == ref_audio.shape
    video_err = float(np.abs(out.video - ref_video).max())
    audio_err = float(np.abs(out.waveform.numpy() - ref_audio).max())
    print(f"[{name}] max abs: video {video_err:.3g}, waveform {audio_err:.3g}; "
          f"video std {ref_video.std():.3g}, waveform std {ref_audio.std():.3g}")
    assert video_err <= TOL and audio_err <= TOL
    assert ref_video.std() > 1e-3 and ref_audio.std() > 1e-4  # not a trivially constant output
    assert out.frames.dtype == np.uint8 and np.abs(out.frames.astype(int) - ref_u8.astype(int)).max() <= 1
    assert out.sample_rate == pipe.vocoder.config.output_sampling_rate


def test_stepwise_api_equals_generate(folders: dict[str, tuple[Any, Path]]) -> None:
    _, folder = folders["plain"]
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


def test_unsupported_scheduler_settings_and_bad_folders_are_refused(folders: dict[str, tuple[Any, Path]],
                                                                     tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        LTX2ScheduleConfig.from_dict({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_karras_sigmas": True})
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(ModelLoadError, match="WanPipeline"):
        load_ltx2_pipeline(tmp_path)
    _, folder = folders["plain"]
    ours = load_ltx2_pipeline(folder, max_sequence_length=MAX_SEQ)
    with pytest.raises(ValueError, match="width"):
        ours.prepare(LTX2Request(prompt="a", width=48, height=64, num_frames=9))
    with pytest.raises(ValueError, match="stg_blocks"):
        ours.prepare(LTX2Request(prompt="a", width=64, height=64, num_frames=9,
                                 guidance=LTX2Guidance(stg_blocks=None)))
