"""No-reference temporal metrics: ``temporal.flicker`` and ``temporal.motion``.

Contract: both read one video (frames scaled to ``[0, 1]``, at least 2 frames) and report per frame-pair
values in ``details["per_pair"]`` (pair ``i`` is frames ``i`` and ``i + 1``):

- ``temporal.flicker``: the mean absolute difference of consecutive frames over every pixel and channel;
  score = the mean over pairs. 0 for a static video; it rises with both flicker and motion, so compare it
  between runs of the same prompt and seed (the quality gate reports its delta), not across prompts.
- ``temporal.motion``: a motion statistic from frame differences: the luma (BT.601) of each frame is
  blurred by a Gaussian (sigma 1.5, 11 taps; frames smaller than that are used unblurred) so pixel noise
  counts less, and the score is the mean absolute difference of consecutive blurred frames.
  ``details["moving_fraction"]`` is the fraction of pixels whose blurred luma changes by more than
  :data:`MOVING_THRESHOLD` between frames, averaged over pairs. 0 for a static video.

Neither is "better" in one direction: ``higher_is_better`` is None.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fastvideo.eval.pixel import CHUNK_FRAMES, SSIM_SIGMA, SSIM_WINDOW, gaussian_window
from fastvideo.eval.registry import EvalError, Metric, MetricResult, Sample, register

#: Luma change (frames in [0, 1]) above which a pixel counts as moving in ``temporal.motion``.
MOVING_THRESHOLD = 0.05
_LUMA = np.array([0.299, 0.587, 0.114])


def _pairs(sample: Sample, metric: str):
    """Consecutive frame pairs, a chunk at a time: yields (frames[i:j], frames[i+1:j+1]) as float64."""
    video = sample.video
    if video.num_frames < 2:
        raise EvalError(f"{video.source}: {metric} needs at least 2 frames, the video has {video.num_frames}")
    for start in range(0, video.num_frames - 1, CHUNK_FRAMES):
        stop = min(start + CHUNK_FRAMES, video.num_frames - 1)
        frames = video.as_float(start, stop + 1)
        yield frames[:-1], frames[1:]


@register
class Flicker(Metric):
    name = "temporal.flicker"
    description = "mean absolute difference of consecutive frames, in [0, 1] (0: static)"

    def compute(self, sample: Sample) -> MetricResult:
        per_pair = np.concatenate([np.abs(b - a).mean(axis=(1, 2, 3)) for a, b in _pairs(sample, self.name)])
        return self.result(per_pair.mean(), per_pair=per_pair.tolist())


def blurred_luma(frames: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """(T, H, W, C) floats -> (T, H', W') Gaussian-blurred luma (valid positions; unblurred if smaller)."""
    luma = frames @ _LUMA if frames.shape[-1] == 3 else frames[..., 0]
    x = torch.from_numpy(np.ascontiguousarray(luma)).to(device=device, dtype=torch.float64).unsqueeze(1)
    if x.shape[-1] < SSIM_WINDOW or x.shape[-2] < SSIM_WINDOW:
        return x[:, 0]
    g = gaussian_window(SSIM_WINDOW, SSIM_SIGMA).to(device)
    x = F.conv2d(F.conv2d(x, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    return x[:, 0]


@register
class Motion(Metric):
    name = "temporal.motion"
    description = ("motion from frame differences: mean absolute change of the blurred luma between consecutive "
                   f"frames (0: static); details: fraction of pixels moving more than {MOVING_THRESHOLD}")

    def compute(self, sample: Sample) -> MetricResult:
        energy: list[float] = []
        moving: list[float] = []
        for a, b in _pairs(sample, self.name):
            delta = (blurred_luma(b, self.options.device) - blurred_luma(a, self.options.device)).abs()
            energy += delta.mean(dim=(1, 2)).tolist()
            moving += (delta > MOVING_THRESHOLD).double().mean(dim=(1, 2)).tolist()
        return self.result(float(np.mean(energy)), per_pair=energy, moving_fraction=float(np.mean(moving)),
                           moving_fraction_per_pair=moving)
