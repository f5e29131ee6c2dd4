"""Reference metrics on pixels: ``common.mse``, ``common.psnr`` and ``common.ssim``.

Contract: each compares a video with a reference of exactly the same shape (frame count, size, channels;
the runner refuses a mismatch) on frames scaled to ``[0, 1]`` (uint8 / 255), frame by frame, and reports
the per-frame values in ``details["per_frame"]``:

- ``common.mse``: mean squared error per frame; score = the mean over frames (lower is better).
- ``common.psnr``: ``10 log10(1 / MSE)`` dB. The score is the PSNR of the whole clip, from the MSE averaged
  over all frames, so one identical frame (infinite PSNR) cannot hide the others; it is ``inf`` only when
  the two videos are identical. ``details`` add the per-frame values and their minimum.
- ``common.ssim``: the structural similarity of Wang et al. (2004): an 11x11 Gaussian window (sigma 1.5,
  normalised to sum 1), K1 = 0.01, K2 = 0.03, dynamic range L = 1, weighted (population) statistics, the
  mean of the SSIM map over the "valid" window positions (no padding), per channel then averaged over
  channels -- the convention of scikit-image's ``structural_similarity(gaussian_weights=True,
  use_sample_covariance=False, data_range=1, channel_axis=-1)``. Frames must be at least 11x11.
  Score = the mean over frames (1 for identical frames; higher is better).

Computation runs in float64 on ``EvalOptions.device``, a few frames at a time.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from fastvideo.eval.registry import EvalError, Metric, MetricResult, Sample, register

#: Frames per chunk (bounds the float64 working set at large sizes).
CHUNK_FRAMES = 8
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def per_frame_mse(video: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mean squared error of each frame pair; float64 inputs in [0, 1] shaped (T, H, W, C)."""
    diff = video - reference
    return np.mean(diff * diff, axis=(1, 2, 3))


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """``10 log10(range^2 / mse)`` in dB; ``inf`` for a zero MSE."""
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range * data_range / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The 1-D Gaussian of the SSIM window (float64, sums to 1); the 2-D window is its outer product."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords * coords) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering of (N, 1, H, W) at the valid positions only (no padding)."""
    size = window.numel()
    x = F.conv2d(x, window.view(1, 1, 1, size))
    return F.conv2d(x, window.view(1, 1, size, 1))


def ssim_per_frame(video: np.ndarray, reference: np.ndarray, *, device: str = "cpu", data_range: float = 1.0,
                   window_size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """SSIM of each frame pair (mean over the valid SSIM map, then over channels); inputs (T, H, W, C) floats."""
    t, h, w, c = video.shape
    if h < window_size or w < window_size:
        raise EvalError(f"SSIM needs frames of at least {window_size}x{window_size} pixels, got {w}x{h}")
    window = gaussian_window(window_size, sigma).to(device)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    x = torch.from_numpy(np.ascontiguousarray(video)).to(device=device, dtype=torch.float64)
    y = torch.from_numpy(np.ascontiguousarray(reference)).to(device=device, dtype=torch.float64)
    x = x.permute(0, 3, 1, 2).reshape(t * c, 1, h, w)
    y = y.permute(0, 3, 1, 2).reshape(t * c, 1, h, w)
    mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
    var_x = _filter_valid(x * x, window) - mu_x * mu_x
    var_y = _filter_valid(y * y, window) - mu_y * mu_y
    cov = _filter_valid(x * y, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    per_channel = ssim_map.mean(dim=(1, 2, 3)).reshape(t, c)
    return per_channel.mean(dim=1).cpu().numpy()


def _chunks(sample: Sample):
    assert sample.reference is not None
    for start in range(0, sample.video.num_frames, CHUNK_FRAMES):
        stop = start + CHUNK_FRAMES
        yield sample.video.as_float(start, stop), sample.reference.as_float(start, stop)


@register
class MSE(Metric):
    name = "common.mse"
    description = "mean squared error per frame against the reference, frames in [0, 1] (lower is better)"
    needs_reference = True
    higher_is_better = False

    def compute(self, sample: Sample) -> MetricResult:
        per_frame = np.concatenate([per_frame_mse(v, r) for v, r in _chunks(sample)])
        return self.result(per_frame.mean(), per_frame=per_frame.tolist())


@register
class PSNR(Metric):
    name = "common.psnr"
    description = ("peak signal-to-noise ratio against the reference, dB, of the whole clip (from the mean MSE); "
                   "inf when identical")
    needs_reference = True
    higher_is_better = True
    unit = "dB"

    def compute(self, sample: Sample) -> MetricResult:
        mse = np.concatenate([per_frame_mse(v, r) for v, r in _chunks(sample)])
        per_frame = [psnr_from_mse(float(m)) for m in mse]
        return self.result(psnr_from_mse(float(mse.mean())), per_frame=per_frame, min_frame=min(per_frame))


@register
class SSIM(Metric):
    name = "common.ssim"
    description = ("structural similarity against the reference (Wang et al. 2004: 11x11 Gaussian window, "
                   "sigma 1.5), mean over frames; 1 when identical")
    needs_reference = True
    higher_is_better = True

    def compute(self, sample: Sample) -> MetricResult:
        per_frame = np.concatenate([ssim_per_frame(v, r, device=self.options.device) for v, r in _chunks(sample)])
        return self.result(per_frame.mean(), per_frame=per_frame.tolist(), min_frame=float(per_frame.min()))
