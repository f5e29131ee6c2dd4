"""The metric registry of ``fastvideo eval``: one table of named metrics, what each needs, and its errors.

Contract: a metric is a :class:`Metric` subclass registered with :func:`register` under a unique dotted
``group.name`` (``common.psnr``, ``temporal.flicker``, ``clip.clip_score``); its class attributes say what it
needs (``needs_reference``: a reference video of the same shape; ``needs_prompt``: a text prompt;
``model_option``: the :class:`EvalOptions` field holding a local model path, ``None`` when it needs no model)
and how to read it (``higher_is_better``, ``unit``). :func:`resolve_metrics` turns user names (full names,
an unambiguous short name such as ``psnr``, a group such as ``common``, or ``all``) into registered names;
an unknown name raises :class:`EvalError` listing the known ones. A metric whose model path is not given
cannot be built: :meth:`Metric.unavailable_reason` says how to enable it and the constructor raises
:class:`MetricUnavailable`. Every error here is an :class:`EvalError` (a ``FastVideoError`` and a
``ValueError``): bad input, reported in one line; the CLI exits 2 on it.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from fastvideo.api.errors import FastVideoError

if TYPE_CHECKING:
    from fastvideo.eval.readers import Video


class EvalError(FastVideoError, ValueError):
    """Bad input to an evaluation: a missing or unreadable file, mismatched shapes, an unknown metric."""


class MetricUnavailable(EvalError):
    """A metric that cannot run as configured (its model path is not given); the message says how to enable it."""


@dataclass
class EvalOptions:
    """Settings of an evaluation run (the CLI's flags map one to one)."""

    #: Torch device the metrics compute on ("cpu", "cuda", "cuda:1").
    device: str = "cpu"
    #: Local folder of a transformers CLIP model (config.json, weights, tokenizer files); enables clip.clip_score.
    clip_model: str | None = None
    #: Frames per CLIP forward.
    clip_batch_size: int = 16


@dataclass
class MetricResult:
    """One metric on one video: the headline ``score`` and per-frame or supporting ``details``."""

    name: str
    score: float
    higher_is_better: bool | None
    unit: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sample:
    """What a metric sees: the video, its reference (same shape) when given, and its prompt when given."""

    video: "Video"
    reference: "Video | None" = None
    prompt: str | None = None


class Metric(ABC):
    """Base of every metric. Subclasses set the class attributes and implement :meth:`compute`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_reference: ClassVar[bool] = False
    needs_prompt: ClassVar[bool] = False
    #: The :class:`EvalOptions` field naming the metric's local model path (None: no model).
    model_option: ClassVar[str | None] = None
    #: The CLI flag that sets ``model_option`` (for the "how to enable" message).
    model_flag: ClassVar[str | None] = None
    higher_is_better: ClassVar[bool | None] = None
    unit: ClassVar[str] = ""

    def __init__(self, options: EvalOptions) -> None:
        reason = self.unavailable_reason(options)
        if reason is not None:
            raise MetricUnavailable(reason)
        self.options = options

    @classmethod
    def unavailable_reason(cls, options: EvalOptions) -> str | None:
        """Why this metric cannot run with ``options`` (and how to enable it), or None when it can."""
        if cls.model_option is not None and not getattr(options, cls.model_option):
            return (f"{cls.name} needs a local model folder: pass {cls.model_flag} /path/to/model on the CLI "
                    f"(Python: EvalOptions({cls.model_option}='/path/to/model')); nothing is downloaded")
        return None

    @abstractmethod
    def compute(self, sample: Sample) -> MetricResult:
        """The metric on one sample. Inputs were checked against :attr:`needs_reference` / :attr:`needs_prompt`."""

    def result(self, score: float, **details: Any) -> MetricResult:
        return MetricResult(name=self.name, score=float(score), higher_is_better=self.higher_is_better,
                            unit=self.unit, details=details)


_REGISTRY: dict[str, type[Metric]] = {}
#: Modules whose import registers the built-in metrics (loaded on the registry's first query).
BUILTIN_MODULES = ("fastvideo.eval.pixel", "fastvideo.eval.temporal", "fastvideo.eval.clip_score")


def _registry() -> dict[str, type[Metric]]:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return _REGISTRY


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator: add a metric to the registry under ``cls.name`` (``group.name``, unique)."""
    group, dot, short = cls.name.partition(".")
    if not (group and dot and short):
        raise ValueError(f"metric name {cls.name!r} must be 'group.name'")
    if not cls.description:
        raise ValueError(f"metric {cls.name} needs a description")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"metric {cls.name} is already registered by {_REGISTRY[cls.name].__module__}")
    _REGISTRY[cls.name] = cls
    return cls


def list_metrics(group: str | None = None) -> list[str]:
    """Registered metric names, sorted; only those of ``group`` (e.g. "common") when given."""
    names = sorted(_registry())
    if group is not None:
        names = [n for n in names if n.split(".", 1)[0] == group.rstrip(".")]
    return names


def get_metric(name: str) -> type[Metric]:
    """The metric class registered under ``name`` (full or unambiguous short name)."""
    resolved = resolve_metrics([name])
    if len(resolved) != 1:
        raise EvalError(f"{name!r} names {len(resolved)} metrics ({', '.join(resolved)}); give one")
    return _registry()[resolved[0]]


def metric_info(name: str) -> dict[str, Any]:
    """A JSON-safe description of one metric (what ``fastvideo eval list --json`` prints)."""
    cls = get_metric(name)
    return {"name": cls.name, "description": cls.description, "needs_reference": cls.needs_reference,
            "needs_prompt": cls.needs_prompt, "needs_model": cls.model_option is not None,
            "model_flag": cls.model_flag, "higher_is_better": cls.higher_is_better, "unit": cls.unit}


def resolve_metrics(names: list[str] | str) -> list[str]:
    """Registered names for user names: ``all``, a group (``common``), a full name, or a unique short name."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    registry = _registry()
    out: list[str] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name == "all":
            matches = sorted(registry)
        elif name in registry:
            matches = [name]
        else:
            matches = list_metrics(name)  # a group
            if not matches:
                matches = [n for n in sorted(registry) if n.split(".", 1)[1] == name]  # a short name
                if len(matches) > 1:
                    raise EvalError(f"metric name {name!r} is ambiguous: {', '.join(matches)}; give the full name")
        if not matches:
            groups = sorted({n.split(".")[0] for n in registry})
            raise EvalError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(registry))} "
                            f"(or a group: {', '.join(groups)}; or all)")
        out += [m for m in matches if m not in out]
    if not out:
        raise EvalError("no metric given; known metrics: " + ", ".join(sorted(registry)))
    return out
