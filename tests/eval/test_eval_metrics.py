"""fastvideo.eval metrics on synthetic frames with known answers, the registry, and pairing errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fastvideo.eval import EvalError, EvalOptions, Metric, evaluate, get_metric, list_metrics, register
from fastvideo.eval.pixel import gaussian_window, ssim_per_frame


def checkerboard(shape: tuple[int, ...]) -> np.ndarray:
    """+1 / -1 alternating over every element (exactly balanced when the element count is even)."""
    return np.where(np.indices(shape).sum(axis=0) % 2 == 0, 1.0, -1.0)


def score(video, metric: str, **kwargs) -> float:
    return evaluate(video, metric, **kwargs).videos[0].score(metric)


# ------------------------------------------------------------------------------------------- PSNR / MSE
def test_psnr_of_identical_videos_is_inf_and_json_safe():
    video = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    report = evaluate(video, ["common.psnr", "common.mse"], reference=video.copy())
    assert report.videos[0].score("common.psnr") == math.inf
    assert report.videos[0].score("common.mse") == 0.0
    payload = json.loads(report.to_json())  # strict JSON (allow_nan=False): inf is spelled out
    assert payload["summary"]["common.psnr"] == "inf"
    assert payload["videos"][0]["metrics"]["common.psnr"]["details"]["per_frame"] == ["inf"] * 3


def test_psnr_and_mse_of_a_known_noise_level():
    base = np.full((2, 8, 8, 3), 0.5, dtype=np.float32)
    noisy = (base + 0.01 * checkerboard(base.shape)).astype(np.float32)  # |error| = 0.01 everywhere
    report = evaluate(noisy, ["psnr", "mse"], reference=base)
    assert report.videos[0].score("common.mse") == pytest.approx(1e-4, rel=1e-5)
    assert report.videos[0].score("common.psnr") == pytest.approx(40.0, abs=1e-3)
    # uint8: +-8 levels -> PSNR = 20 log10(255 / 8)
    ref8 = np.full((2, 8, 8, 3), 128, dtype=np.uint8)
    noisy8 = (ref8 + 8 * checkerboard(ref8.shape)).astype(np.uint8)
    assert score(noisy8, "common.psnr", reference=ref8) == pytest.approx(20 * math.log10(255 / 8), abs=1e-9)


def test_psnr_score_is_the_clip_psnr_so_one_identical_frame_cannot_hide_the_others():
    ref = np.full((2, 8, 8, 1), 0.5, dtype=np.float32)
    video = ref.copy()
    video[1] += 0.1 * checkerboard(video[1].shape).astype(np.float32)  # frame 1: MSE 0.01 (20 dB); frame 0 exact
    result = evaluate(video, "common.psnr", reference=ref).videos[0].metrics["common.psnr"]
    assert result.details["per_frame"][0] == math.inf
    assert result.details["per_frame"][1] == pytest.approx(20.0, abs=1e-4)
    assert result.details["min_frame"] == pytest.approx(20.0, abs=1e-4)
    assert result.score == pytest.approx(10 * math.log10(1 / 0.005), abs=1e-4)  # mean MSE 0.005 -> 23.01 dB


# ------------------------------------------------------------------------------------------------- SSIM
def naive_ssim(x: np.ndarray, y: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """Wang et al. 2004 written out: for every window position, Gaussian-weighted means, variances and
    covariance, then the SSIM formula; mean over the valid positions. One 2-D channel, floats in [0, 1]."""
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    r = np.arange(size) - (size - 1) / 2
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    w /= w.sum()
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            px, py = x[i:i + size, j:j + size], y[i:i + size, j:j + size]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cov = (w * (px - mx) * (py - my)).sum()
            values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_an_independent_per_window_computation():
    rng = np.random.default_rng(3)
    x = rng.random((2, 13, 15, 3))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    got = ssim_per_frame(x, y)
    want = [np.mean([naive_ssim(x[t, :, :, c], y[t, :, :, c]) for c in range(3)]) for t in range(2)]
    assert got == pytest.approx(want, abs=1e-12)
    assert 0.0 < got.min() < 0.9  # the noise is visible: far from 1


def test_ssim_known_values_identical_and_constant_shift():
    rng = np.random.default_rng(4)
    video = rng.random((2, 16, 16, 3)).astype(np.float32)
    assert score(video, "common.ssim", reference=video.copy()) == pytest.approx(1.0, abs=1e-12)
    # constant images m and m + c: variances vanish, SSIM = (2 m (m + c) + C1) / (m^2 + (m + c)^2 + C1)
    m, c, c1 = 0.5, 0.1, 1e-4
    flat = np.full((1, 12, 12, 1), m)
    got = score(flat + c, "common.ssim", reference=flat)
    # (float frames are kept as float32: 0.6 is stored to ~1e-8)
    assert got == pytest.approx((2 * m * (m + c) + c1) / (m * m + (m + c) ** 2 + c1), abs=1e-7)
    assert gaussian_window().sum().item() == pytest.approx(1.0) and gaussian_window().numel() == 11


def test_ssim_decreases_as_noise_grows():
    rng = np.random.default_rng(5)
    ref = rng.random((2, 24, 24, 3))
    noise = rng.standard_normal(ref.shape)
    values = [score(np.clip(ref + s * noise, 0, 1), "common.ssim", reference=ref) for s in (0.0, 0.02, 0.05, 0.1,
                                                                                             0.3)]
    assert values[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(values, values[1:])), values


def test_ssim_refuses_frames_smaller_than_its_window():
    tiny = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(EvalError, match="at least 11x11"):
        evaluate(tiny, "common.ssim", reference=tiny)


# ------------------------------------------------------------------------------------------- temporal
def test_flicker_and_motion_of_a_static_video_are_zero():
    static = np.repeat(np.random.default_rng(6).integers(0, 256, (1, 20, 20, 3), dtype=np.uint8), 5, axis=0)
    report = evaluate(static, "temporal")
    assert report.metrics == ["temporal.flicker", "temporal.motion"]
    assert report.videos[0].score("temporal.flicker") == 0.0
    assert report.videos[0].score("temporal.motion") == 0.0
    assert report.videos[0].metrics["temporal.motion"].details["moving_fraction"] == 0.0


def test_flicker_of_alternating_frames_is_their_difference():
    frames = np.zeros((4, 8, 8, 3), dtype=np.float32)
    frames[1::2] = 0.2
    result = evaluate(frames, "temporal.flicker").videos[0].metrics["temporal.flicker"]
    assert result.score == pytest.approx(0.2) and result.details["per_pair"] == pytest.approx([0.2] * 3)


def test_motion_sees_a_moving_square_and_grows_with_its_speed():
    def moving(step: int) -> np.ndarray:
        frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
        for t in range(4):
            frames[t, 10:18, 2 + step * t:10 + step * t] = 255
        return frames

    slow, fast = (evaluate(moving(s), "temporal.motion").videos[0].metrics["temporal.motion"] for s in (1, 4))
    assert 0 < slow.score < fast.score
    assert 0 < slow.details["moving_fraction"] < fast.details["moving_fraction"] < 0.5


def test_temporal_metrics_need_two_frames():
    with pytest.raises(EvalError, match="at least 2 frames"):
        evaluate(np.zeros((1, 16, 16, 3), dtype=np.uint8), "temporal.flicker")


# ------------------------------------------------------------------------------------ registry / runner
def test_registry_lists_every_metric_with_what_it_needs():
    assert list_metrics() == ["clip.clip_score", "common.mse", "common.psnr", "common.ssim", "temporal.flicker",
                              "temporal.motion"]
    assert list_metrics("common") == ["common.mse", "common.psnr", "common.ssim"]
    assert get_metric("psnr").needs_reference and not get_metric("flicker").needs_reference
    clip = get_metric("clip.clip_score")
    assert clip.model_option == "clip_model" and clip.needs_prompt
    assert "--clip-model" in clip.unavailable_reason(EvalOptions())


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(EvalError, match="unknown metric 'lpips'") as info:
        evaluate(np.zeros((2, 16, 16, 3), dtype=np.uint8), "psnr,lpips")
    assert "common.psnr" in str(info.value) and "temporal.flicker" in str(info.value)


def test_register_refuses_a_malformed_or_duplicate_metric():
    class NoGroup(Metric):
        name = "psnr2"
        description = "x"

        def compute(self, sample):  # pragma: no cover
            raise AssertionError

    with pytest.raises(ValueError, match="group.name"):
        register(NoGroup)

    class Duplicate(NoGroup):
        name = "common.psnr"

    with pytest.raises(ValueError, match="already registered"):
        register(Duplicate)


def test_all_skips_what_the_input_cannot_feed_but_a_named_metric_is_refused():
    video = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    report = evaluate(video)  # no reference, no prompt, no CLIP model
    assert report.metrics == ["temporal.flicker", "temporal.motion"]
    assert set(report.skipped) == {"clip.clip_score", "common.mse", "common.psnr", "common.ssim"}
    assert "--reference" in report.skipped["common.psnr"] and "--clip-model" in report.skipped["clip.clip_score"]
    with pytest.raises(EvalError, match="--reference"):
        evaluate(video, "psnr")
    with pytest.raises(EvalError, match="--clip-model"):
        evaluate(video, "clip.clip_score", prompts="a cat")


@pytest.mark.parametrize("ref_shape, message", [
    ((4, 16, 16, 3), "3 frames vs 4"),
    ((3, 16, 24, 3), "size 16x16 vs 24x16"),
    ((3, 16, 16, 1), "3 channels vs 1"),
])
def test_reference_mismatch_says_what_differs(ref_shape, message):
    video = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(EvalError, match=message) as info:
        evaluate(video, "common.psnr", reference=np.zeros(ref_shape, dtype=np.uint8))
    assert "nothing is trimmed" in str(info.value)


def test_several_videos_pair_with_references_and_summarise():
    rng = np.random.default_rng(7)
    refs = [rng.random((2, 16, 16, 3)).astype(np.float32) for _ in range(2)]
    videos = [refs[0], np.clip(refs[1] + 0.01 * checkerboard(refs[1].shape), 0, 1).astype(np.float32)]
    report = evaluate(videos, "common.mse", reference=refs)
    per_video = [v.score("common.mse") for v in report.videos]
    assert per_video[0] == 0.0 and per_video[1] > 0
    assert report.summary["common.mse"] == pytest.approx(sum(per_video) / 2)
    with pytest.raises(EvalError, match="2 videos but 3 references"):
        evaluate(videos, "common.mse", reference=[*refs, refs[0]])
    with pytest.raises(EvalError, match="2 videos but 3 prompts"):
        evaluate(videos, "temporal.flicker", prompts=["a", "b", "c"])
