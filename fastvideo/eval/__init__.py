"""``fastvideo.eval``: the quality gate -- video metrics behind one registry, a Python API and ``fastvideo eval``.

Contract: the registry holds every built-in metric (``common.mse``, ``common.psnr``, ``common.ssim``
against a reference; ``temporal.flicker``, ``temporal.motion`` on one video; ``clip.clip_score`` with a
local CLIP folder) as soon as it is queried. :func:`evaluate` scores videos (MP4 and other FFmpeg
containers, frame folders, ``.npy``, numpy arrays) and returns an :class:`EvalReport` whose ``to_dict`` is
JSON-safe; :func:`list_metrics` / :func:`metric_info` describe the registry; new metrics subclass
:class:`Metric` and use :func:`register`. Bad input raises :class:`EvalError` (a ``FastVideoError``).
Names resolve lazily, so ``import fastvideo.eval`` (and the CLI's parser) does not import torch. Nothing
here downloads anything or imports the runtime or the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from fastvideo.eval.readers import Video, expand_sources, load_video
    from fastvideo.eval.registry import (
        EvalError,
        EvalOptions,
        Metric,
        MetricResult,
        MetricUnavailable,
        Sample,
        get_metric,
        list_metrics,
        metric_info,
        register,
        resolve_metrics,
    )
    from fastvideo.eval.runner import EvalReport, VideoReport, evaluate

_WHERE = {
    "Video": "readers", "expand_sources": "readers", "load_video": "readers",
    "EvalError": "registry", "EvalOptions": "registry", "Metric": "registry", "MetricResult": "registry",
    "MetricUnavailable": "registry", "Sample": "registry", "get_metric": "registry", "list_metrics": "registry",
    "metric_info": "registry", "register": "registry", "resolve_metrics": "registry",
    "EvalReport": "runner", "VideoReport": "runner", "evaluate": "runner",
}
__all__ = [
    "EvalError",
    "EvalOptions",
    "EvalReport",
    "Metric",
    "MetricResult",
    "MetricUnavailable",
    "Sample",
    "Video",
    "VideoReport",
    "evaluate",
    "expand_sources",
    "get_metric",
    "list_metrics",
    "load_video",
    "metric_info",
    "register",
    "resolve_metrics",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"fastvideo.eval.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'fastvideo.eval' has no attribute {name!r}")
