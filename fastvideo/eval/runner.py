"""``evaluate``: run registered metrics over videos and collect an :class:`EvalReport`.

Contract: :func:`evaluate(videos, metrics=..., reference=..., prompts=..., options=...)` checks what is cheap
before it decodes anything: metric names resolve (unknown ones raise listing the known ones), a metric
that needs a reference / prompt / model is refused naming what is missing (``all`` and group names skip
such metrics instead and list them in ``EvalReport.skipped`` with the reason), the device exists, every
path exists, and model metrics load. Then it decodes one video (and its reference) at a time, so memory holds one pair:
each must decode, and a pair must have the same frame count, size and channel count (the error says
which differs and the two values; nothing is trimmed or resized silently). Any error raises: there is no
partial report. ``reference`` is one source for every video
or one per video; a list of references is paired by file name (stem) when the names match, else by
position. The report holds one :class:`VideoReport` per video in input order and, per metric, the mean
score over videos in ``summary``; :meth:`EvalReport.to_dict` is JSON-safe (an infinite PSNR becomes
the string ``"inf"``, NaN ``"nan"``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, cast

from fastvideo.eval.readers import Video, VideoSource, load_video
from fastvideo.eval.registry import EvalError, EvalOptions, Metric, MetricResult, Sample, get_metric, resolve_metrics

logger = logging.getLogger(__name__)


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as strings ("inf", "-inf", "nan") and numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


@dataclass
class VideoReport:
    """Every metric on one video."""

    video: str
    reference: str | None
    num_frames: int
    height: int
    width: int
    fps: float | None
    metrics: dict[str, MetricResult] = field(default_factory=dict)

    def score(self, metric: str) -> float:
        return self.metrics[metric].score

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "video": self.video, "reference": self.reference, "num_frames": self.num_frames,
            "height": self.height, "width": self.width, "fps": self.fps,
            "metrics": {name: {"score": r.score, "unit": r.unit, "higher_is_better": r.higher_is_better,
                               "details": r.details} for name, r in self.metrics.items()},
        })


@dataclass
class EvalReport:
    """The result of :func:`evaluate`: per-video reports, per-metric means, skipped metrics with reasons."""

    videos: list[VideoReport]
    metrics: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def summary(self) -> dict[str, float]:
        """Mean score of each metric over the videos."""
        return {name: sum(v.score(name) for v in self.videos) / len(self.videos) for name in self.metrics}

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"metrics": self.metrics, "summary": self.summary, "skipped": self.skipped,
                          "videos": [v.to_dict() for v in self.videos], "elapsed_s": round(self.elapsed_s, 3)})

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def _label(source: VideoSource, index: int, role: str) -> str:
    if isinstance(source, Video):
        return source.source
    if isinstance(source, (str, Path)):
        return str(source)
    return f"<{role} {index}>"


def _as_list(sources: VideoSource | Sequence[VideoSource]) -> list[VideoSource]:
    """One source or a list/tuple of them, as a list (an array is one video, never a list of frames)."""
    if isinstance(sources, (list, tuple)):
        return list(sources)
    return [cast(VideoSource, sources)]


def pair_references(videos: Sequence[VideoSource], reference: VideoSource | Sequence[VideoSource] | None
                    ) -> list[VideoSource | None]:
    """One reference (or None) per video: the same one for all, or a list paired by stem, else by position."""
    if reference is None:
        return [None] * len(videos)
    refs: list[VideoSource | None] = list(_as_list(reference))
    if len(refs) == 1:
        return refs * len(videos)
    if len(refs) != len(videos):
        raise EvalError(f"{len(videos)} videos but {len(refs)} references: give one reference for all videos or "
                        "one per video")
    if all(isinstance(s, (str, Path)) for s in [*videos, *refs]):
        by_stem = {Path(str(r)).stem: r for r in refs}
        stems = [Path(str(v)).stem for v in videos]
        if len(by_stem) == len(refs) and all(s in by_stem for s in stems):
            return [by_stem[s] for s in stems]
    return refs


def check_pair(video: Video, reference: Video) -> None:
    """Refuse a reference whose frame count, size or channels differ from the video's, naming both values."""
    problems = []
    if video.num_frames != reference.num_frames:
        problems.append(f"{video.num_frames} frames vs {reference.num_frames}")
    if (video.height, video.width) != (reference.height, reference.width):
        problems.append(f"size {video.width}x{video.height} vs {reference.width}x{reference.height}")
    if video.channels != reference.channels:
        problems.append(f"{video.channels} channels vs {reference.channels}")
    if problems:
        raise EvalError(f"{video.source} does not match its reference {reference.source}: {'; '.join(problems)}. "
                        "Reference metrics compare frame by frame: generate both with the same size and frame "
                        "count (nothing is trimmed or resized)")


def _select(names: list[str], explicit: set[str], has_reference: bool, has_prompts: bool,
            options: EvalOptions) -> tuple[list[type[Metric]], dict[str, str]]:
    chosen: list[type[Metric]] = []
    skipped: dict[str, str] = {}
    for name in names:
        cls = get_metric(name)
        reason = cls.unavailable_reason(options)
        if reason is None and cls.needs_reference and not has_reference:
            reason = f"{name} compares against a reference: pass --reference PATH (Python: reference=...)"
        if reason is None and cls.needs_prompt and not has_prompts:
            reason = f"{name} needs a prompt per video: pass --prompt TEXT (Python: prompts=[...])"
        if reason is None:
            chosen.append(cls)
        elif name in explicit:
            raise EvalError(reason)
        else:
            skipped[name] = reason
    if not chosen:
        raise EvalError("no metric can run on this input: " + "; ".join(skipped.values()))
    return chosen, skipped


def check_device(name: str) -> None:
    """Refuse a device string torch cannot parse, or a CUDA device on a machine without one."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise EvalError(f"--device {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvalError(f"--device {name}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise EvalError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")


def evaluate(videos: VideoSource | Sequence[VideoSource], metrics: str | Sequence[str] = "all", *,
             reference: VideoSource | Sequence[VideoSource] | None = None,
             prompts: str | Sequence[str] | None = None, options: EvalOptions | None = None) -> EvalReport:
    """Score ``videos`` (paths of videos / frame folders / .npy, arrays, or :class:`Video`) with ``metrics``."""
    started = time.perf_counter()
    options = options or EvalOptions()
    check_device(options.device)
    sources = _as_list(videos)
    if not sources:
        raise EvalError("no video given")
    requested = [metrics] if isinstance(metrics, str) else list(metrics)
    names = resolve_metrics(",".join(requested))
    explicit = {n for n in names if any(r.strip() == n or r.strip() == n.split(".", 1)[1]
                                        for m in requested for r in m.split(","))}
    prompt_list: list[str] | None = None
    if prompts is not None:
        prompt_list = [prompts] * len(sources) if isinstance(prompts, str) else list(prompts)
        if len(prompt_list) == 1:
            prompt_list = prompt_list * len(sources)
        if len(prompt_list) != len(sources):
            raise EvalError(f"{len(sources)} videos but {len(prompt_list)} prompts: give one prompt for all videos "
                            "or one per video")
    refs = pair_references(sources, reference)
    classes, skipped = _select(names, explicit, reference is not None, prompt_list is not None, options)

    for source in [*sources, *refs]:
        if isinstance(source, (str, Path)) and not Path(source).exists():
            raise EvalError(f"{source}: no such file or folder")

    instances = [cls(options) for cls in classes]
    reports: list[VideoReport] = []
    for i, (source, ref) in enumerate(zip(sources, refs)):
        video = load_video(source, name=_label(source, i, "video"))
        ref_video = None if ref is None else load_video(ref, name=_label(ref, i, "reference"))
        if ref_video is not None and any(cls.needs_reference for cls in classes):
            check_pair(video, ref_video)
        logger.debug("scoring %s (%d/%d): %s", video.source, i + 1, len(sources), video.shape_text())
        sample = Sample(video=video, reference=ref_video, prompt=prompt_list[i] if prompt_list else None)
        report = VideoReport(video=video.source, reference=ref_video.source if ref_video else None,
                             num_frames=video.num_frames, height=video.height, width=video.width, fps=video.fps)
        for metric in instances:
            report.metrics[metric.name] = metric.compute(sample)
        reports.append(report)
    return EvalReport(videos=reports, metrics=[cls.name for cls in classes], skipped=skipped,
                      elapsed_s=time.perf_counter() - started)
