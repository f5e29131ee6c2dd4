"""LTX-2 image-to-video and frame conditioning against diffusers 0.42's ``LTX2ImageToVideoPipeline`` and
``LTX2ConditionPipeline`` (tiny random components, fp32, CPU).

The tiny ``LTX2Pipeline`` of ``ltx2_side_fixtures`` is saved with ``save_pretrained`` (the session fixture
``ltx2_diffusers_folders``) and loaded back through :func:`load_ltx2_pipeline`; the two diffusers pipelines are
built from the same components. Both sides run with the same seed and inputs, and the decoded frames and waveforms
are compared. Nothing of diffusers is patched.
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
from ltx2_side_fixtures import CFG_ONLY, FULL_GUIDANCE, MAX_SEQ, assert_matches, run_reference  # noqa: E402

from fastvideo.engine.models.ltx2.conditioning import LTX2Condition, h264_roundtrip  # noqa: E402
from fastvideo.engine.models.ltx2.pipeline import LTX2Guidance, LTX2Request, load_ltx2_pipeline  # noqa: E402

TOL = 1e-4


def _rgb(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth random RGB image / clip (H.264 and resizing behave as on real content)."""
    gen = np.random.default_rng(seed)
    coarse = gen.integers(0, 256, size=shape[:-3] + (4, 4, 3)).astype(np.float32)
    t = torch.from_numpy(coarse).reshape(-1, 4, 4, 3).permute(0, 3, 1, 2)
    t = torch.nn.functional.interpolate(t, size=shape[-3:-1], mode="bilinear", align_corners=False)
    return t.permute(0, 2, 3, 1).reshape(shape).round().clamp(0, 255).numpy().astype(np.uint8)


@pytest.fixture(scope="module")
def setup(ltx2_diffusers_folders: Callable[..., tuple[Any, Path]]) -> tuple[Any, Any]:
    pipe, folder = ltx2_diffusers_folders()
    return pipe, load_ltx2_pipeline(folder, torch.float32, "cpu", max_sequence_length=MAX_SEQ)


I2V_CASES = [  # (image shape, crf, guidance)
    ((64, 64, 3), None, FULL_GUIDANCE),  # diffusers' default H.264 re-compression (CRF 33), no resize
    ((48, 80, 3), 0, CFG_ONLY),  # PIL bilinear stretch to 64x64, no re-compression
]


@pytest.mark.parametrize("shape,crf,guidance", I2V_CASES, ids=["crf33-full-guidance", "resize-cfg"])
def test_image_to_video_matches_diffusers(setup: tuple[Any, Any], shape: tuple[int, ...], crf: int | None,
                                          guidance: LTX2Guidance) -> None:
    import PIL.Image
    from diffusers import LTX2ImageToVideoPipeline

    pipe, ours = setup
    image = _rgb(1, shape)
    req = LTX2Request(prompt="a red fox runs through the snow", negative_prompt="robot dancing", width=64,
                      height=64, num_frames=9, fps=24.0, steps=2, seed=7, guidance=guidance, image=image,
                      image_crf=crf)
    i2v = LTX2ImageToVideoPipeline(**pipe.components)
    assert_matches(ours.run(req), *run_reference(i2v, req, image=PIL.Image.fromarray(image), image_crf=crf), TOL)


def test_h264_roundtrip_equals_diffusers_and_changes_the_image() -> None:
    from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf

    image = _rgb(3, (34, 50, 3))
    ours = h264_roundtrip(image, 33)
    assert np.array_equal(ours, apply_image_conditioning_crf(image, 33))
    assert ours.shape == (34, 50, 3) and np.abs(ours.astype(int) - image.astype(int)).max() > 0
    assert h264_roundtrip(image, 0) is image


COND_CASES = [
    # one image at latent index 0, full strength (an I2V through the condition path)
    ("first-image", lambda: (LTX2Condition(_rgb(2, (64, 64, 3)), index=0, strength=1.0, crf=0),), FULL_GUIDANCE),
    # a 5-frame clip at index 0 at strength 0.6 and an image keyframe at latent index 2 (appended tokens)
    ("clip-and-keyframe", lambda: (LTX2Condition(_rgb(4, (5, 48, 80, 3)), index=0, strength=0.6),
                                   LTX2Condition(_rgb(5, (64, 64, 3)), index=2, strength=0.9, crf=0)), CFG_ONLY),
    # the last latent frame by a negative index, default CRF
    ("last-keyframe", lambda: (LTX2Condition(_rgb(6, (64, 64, 3)), index=-1, strength=1.0),), CFG_ONLY),
]


@pytest.mark.parametrize("name,make,guidance", COND_CASES, ids=[c[0] for c in COND_CASES])
def test_frame_conditioning_matches_diffusers(setup: tuple[Any, Any], name: str, make: Any,
                                              guidance: LTX2Guidance) -> None:
    from diffusers import LTX2ConditionPipeline
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

    pipe, ours = setup
    conditions = make()
    req = LTX2Request(prompt="two people walk on beach", negative_prompt="snow", width=64, height=64,
                      num_frames=9, fps=25.0, steps=2, seed=3, guidance=guidance, conditions=conditions)
    ref_conditions = [LTX2VideoCondition(frames=c.frames, index=c.index, strength=c.strength, crf=c.crf)
                      for c in conditions]
    cond_pipe = LTX2ConditionPipeline(**pipe.components)
    assert_matches(ours.run(req), *run_reference(cond_pipe, req, conditions=ref_conditions), TOL)


def test_stepwise_api_and_refusals(setup: tuple[Any, Any]) -> None:
    _, ours = setup
    image = _rgb(1, (64, 64, 3))
    req = LTX2Request(prompt="cat in rain", width=64, height=32, num_frames=9, steps=2, seed=1, guidance=CFG_ONLY,
                      image=image, image_crf=0)
    st = ours.prepare(req)
    first = st.latents[:, :st.conditioning.first_frame_tokens].clone()
    for i in range(st.steps):
        ours.denoise_step(st, i)
        assert torch.equal(st.latents[:, :st.conditioning.first_frame_tokens], first)  # never stepped
    out = ours.decode(st)
    assert np.array_equal(out.frames, ours.run(req).frames)
    with pytest.raises(ValueError, match="not both"):
        ours.prepare(LTX2Request(prompt="a", width=64, height=64, num_frames=9, image=image,
                                 conditions=(LTX2Condition(image),)))
    with pytest.raises(ValueError, match="past the 5 latent frames"):
        ours.prepare(LTX2Request(prompt="a", width=64, height=64, num_frames=9,
                                 conditions=(LTX2Condition(image, index=5),)))
    with pytest.raises(ValueError, match="uint8"):
        ours.prepare(LTX2Request(prompt="a", width=64, height=64, num_frames=9,
                                 conditions=(LTX2Condition(image.astype(np.float32)),)))
    with pytest.raises(ValueError, match="strength"):
        ours.prepare(LTX2Request(prompt="a", width=64, height=64, num_frames=9,
                                 conditions=(LTX2Condition(image, strength=1.5),)))
    from fastvideo.engine.models.ltx2.state import LTX2ContinuationState

    for state, match in ((LTX2ContinuationState(video_frames=[image], video_position_offset_sec=0.5),
                          "video_position_offset_sec"),
                         (LTX2ContinuationState(video_frames_blob_id="b1"), "blob"),
                         (LTX2ContinuationState(video_frames=[image], video_conditioning_frame_idx=2),
                          "video_conditioning_frame_idx"),
                         (LTX2ContinuationState(audio_conditioning_num_frames=2), "audio_latents")):
        with pytest.raises(ValueError, match=match):
            ours.prepare(LTX2Request(prompt="a", width=64, height=64, num_frames=9, continuation=state))


def test_continuation_carries_the_previous_segment(setup: tuple[Any, Any]) -> None:
    """Segment N+1 through ``continue_from`` and the JSON wire state: its first latent frames are the encoded tail
    frames of segment N and its first audio latent frames are N's last ones, held clean through every step. In
    pixel / waveform space the reference is N's tail *as the VAEs reproduce it* (decode(encode(frames)), and the
    carried audio latents decoded): tiny random VAEs are no autoencoders, so N's own frames are not a fair target."""
    from dataclasses import replace

    from fastvideo.engine.models.ltx2.audio_vae import pack_audio_latents
    from fastvideo.engine.models.ltx2.latents import normalize_latents, pack_latents
    from fastvideo.engine.models.ltx2.state import LTX2ContinuationState
    from fastvideo.engine.models.ltx2.vocoder import mel_to_waveform

    _, ours = setup
    out0 = ours.run(LTX2Request(prompt="a red fox runs through the snow", width=64, height=64, num_frames=9,
                                steps=2, seed=1, guidance=CFG_ONLY))
    tail_frames, audio_frames = 3, 6
    state = ours.continuation_state(out0, video_frames=tail_frames, audio_frames=audio_frames)
    state = LTX2ContinuationState.from_continuation_state(state.to_continuation_state())  # through the wire
    req = LTX2Request(prompt="two people walk on beach", width=64, height=64, num_frames=9, steps=2, seed=2,
                      guidance=CFG_ONLY)

    tail = torch.from_numpy(out0.frames[-tail_frames:].astype(np.float32)).permute(3, 0, 1, 2)[None] / 127.5 - 1
    clean = normalize_latents(ours.vae.encode(tail).mode(), ours.vae.latents_mean, ours.vae.latents_std)
    clean_tokens = pack_latents(clean)
    carried = pack_audio_latents(out0.audio_latents[:, :, -audio_frames:])
    st = ours.prepare(replace(req, continuation=state))
    n = clean_tokens.shape[1]
    for i in range(st.steps + 1):
        assert torch.equal(st.latents[:, :n], clean_tokens)  # kept clean (strength 1)
        assert torch.equal(st.audio_latents[:, :audio_frames], carried)  # kept as they were (strength 0)
        assert not torch.equal(st.audio_latents[:, audio_frames:2 * audio_frames], carried)
        if i < st.steps:
            ours.denoise_step(st, i)
    cont = ours.decode(st)
    assert np.array_equal(cont.frames, ours.continue_from(out0, req, video_frames=tail_frames,
                                                          audio_frames=audio_frames).frames)
    free = ours.run(req)

    reproduced = ((ours.vae.decode(ours.vae.encode(tail).mode()) * 0.5 + 0.5).clamp(0, 1))
    reproduced_np = reproduced[0].permute(1, 2, 3, 0).numpy()
    k = tail_frames - 1
    d_cont = float(np.abs(cont.video[:k] - reproduced_np[:k]).mean())
    d_free = float(np.abs(free.video[:k] - reproduced_np[:k]).mean())
    carried_wave = mel_to_waveform(ours.audio_vae, ours.vocoder, carried)[0]
    # the audio VAE decodes causally and the vocoder sees a few mel frames ahead: the first (n - 4) latent frames'
    # worth of samples (4 mel frames each, 4 samples per mel frame in the tiny vocoder) depend on the carried ones only
    m = 16 * (audio_frames - 4)
    w_cont = float((cont.waveform[:, :m] - carried_wave[:, :m]).abs().mean())
    w_free = float((free.waveform[:, :m] - carried_wave[:, :m]).abs().mean())
    print(f"first {k} frames vs the reproduced tail: continued {d_cont:.3g}, free {d_free:.3g}; first {m} samples "
          f"vs the carried audio: continued {w_cont:.3g}, free {w_free:.3g}")
    assert d_cont < 0.7 * d_free  # measured 0.26 vs 0.46: the non-causal decoder mixes in what follows
    assert w_cont < 0.2 * w_free
