"""The prompt safety filter: a fastText classifier that blocks prompts before any GPU time is spent.

Contract:
- :class:`PromptSafetyFilter` (the reference's signature: ``classifier_path``, ``enabled``,
  ``block_threshold``) loads the fastText model at ``classifier_path`` on its first ``classify`` (one load,
  under a lock), so building it costs nothing. A prompt is BLOCKed when the classifier's probability of
  ``block_label`` (``unsafe``: the model's ``__label__unsafe``) is at least ``block_threshold``; otherwise
  ALLOWed. The probability of that label is read from all the model's labels, not only the top one, through
  the binding's ``predict`` (the ``fasttext`` wrapper's numpy code is wrong under numpy 2 in fasttext-wheel).
- UNAVAILABLE when the filter cannot run: disabled, no ``classifier_path``, the ``fasttext`` package not
  installed (``pip install fastvideo-engine[safety]``), the file missing or not a fastText model, or the
  classifier raising. UNAVAILABLE allows the prompt (``SafetyResult.allowed``); the reason is logged once
  per filter as a warning, so operators see the filter is off. A failed load is not retried.
- ``classify`` is synchronous and CPU-only (microseconds once loaded; the first call reads the file): an
  async caller runs it with ``asyncio.to_thread``. :func:`first_blocked` checks a list of prompts.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastvideo.api import ConfigError

logger = logging.getLogger(__name__)

#: The label whose probability decides (the classifier is trained with ``__label__unsafe``).
DEFAULT_BLOCK_LABEL = "unsafe"


class SafetyDecision(enum.Enum):
    ALLOW = "allow"
    BLOCK = "block"
    #: The classifier cannot run (see module contract): treated as ALLOW, and logged once.
    UNAVAILABLE = "unavailable"


@dataclass
class SafetyResult:
    prompt: str
    decision: SafetyDecision
    #: Probability of the block label (0.0 when unavailable).
    score: float = 0.0
    #: The classifier's top label (without ``__label__``).
    label: str | None = None
    reason: str | None = None

    @property
    def allowed(self) -> bool:
        return self.decision is not SafetyDecision.BLOCK


class PromptSafetyFilter:
    """fastText prompt classifier, loaded lazily (see module contract)."""

    def __init__(self, *, classifier_path: str | None, enabled: bool = True, block_threshold: float = 0.5,
                 block_label: str = DEFAULT_BLOCK_LABEL) -> None:
        if not 0.0 <= block_threshold <= 1.0:
            raise ConfigError("block_threshold", f"must be between 0 and 1, got {block_threshold}")
        self._classifier_path = classifier_path
        self._enabled = enabled
        self._block_threshold = block_threshold
        self._block_label = block_label
        self._model: Any | None = None
        self._load_attempted = False
        self._unavailable: str | None = None
        self._load_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._enabled and self._classifier_path is not None

    @property
    def unavailable_reason(self) -> str | None:
        """Why the filter cannot run (None while it can, or before its first use)."""
        if not self.enabled:
            return "the safety filter is not enabled" if not self._enabled else "no classifier_path"
        return self._unavailable

    def classify(self, prompt: str) -> SafetyResult:
        model = self._ensure_loaded() if self.enabled else None
        if model is None:
            return SafetyResult(prompt, SafetyDecision.UNAVAILABLE, reason=self.unavailable_reason)
        try:
            # The binding's predict: (probability, label) pairs as Python floats. The Python wrapper's
            # ``predict`` goes through numpy, which under numpy 2 raises (one text) or repeats the top
            # probability for every label (a list) in fasttext-wheel 0.9.2.
            pairs = model.f.predict(" ".join(prompt.split()), -1, 0.0, "replace")
        except Exception as exc:  # a broken model must not take the session down: allow, and say so once
            self._mark_unavailable(f"the classifier failed: {type(exc).__name__}: {exc}")
            return SafetyResult(prompt, SafetyDecision.UNAVAILABLE, reason=self._unavailable)
        scores = {str(lab).removeprefix("__label__"): float(p) for p, lab in pairs}
        score = scores.get(self._block_label, 0.0)
        top = str(pairs[0][1]).removeprefix("__label__") if pairs else None
        decision = SafetyDecision.BLOCK if score >= self._block_threshold else SafetyDecision.ALLOW
        return SafetyResult(prompt, decision, score=score, label=top)

    def _ensure_loaded(self) -> Any | None:
        if self._model is not None or self._load_attempted:
            return self._model
        with self._load_lock:
            if self._load_attempted:
                return self._model
            self._load_attempted = True
            path = Path(str(self._classifier_path)).expanduser()
            try:
                import fasttext  # type: ignore[import-not-found,import-untyped,unused-ignore]
            except ImportError:
                self._mark_unavailable("the fasttext package is not installed (pip install 'fastvideo-engine[safety]')")
                return None
            if not path.is_file():
                self._mark_unavailable(f"no classifier file at {str(path)!r}")
                return None
            try:
                self._model = fasttext.load_model(str(path))
            except Exception as exc:  # fasttext raises ValueError/RuntimeError for a bad file
                self._mark_unavailable(f"cannot load {str(path)!r} as a fastText model: {exc}")
                return None
            logger.info("prompt safety: loaded the classifier %s (labels %s, block at %s >= %.2f)", path,
                        ", ".join(str(lab).removeprefix("__label__") for lab in self._model.get_labels()),
                        self._block_label, self._block_threshold)
            return self._model

    def _mark_unavailable(self, reason: str) -> None:
        if self._unavailable is None:
            logger.warning("prompt safety filter unavailable, prompts are allowed unchecked: %s", reason)
        self._unavailable = reason
        self._model = None


def first_blocked(filter_: PromptSafetyFilter, prompts: list[str]) -> SafetyResult | None:
    """The first of ``prompts`` the filter blocks, or None."""
    for prompt in prompts:
        result = filter_.classify(prompt)
        if result.decision is SafetyDecision.BLOCK:
            return result
    return None


__all__ = ["DEFAULT_BLOCK_LABEL", "PromptSafetyFilter", "SafetyDecision", "SafetyResult", "first_blocked"]
