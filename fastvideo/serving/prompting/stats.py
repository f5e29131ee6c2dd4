"""What the prompt enhancer and the safety filter record: an in-process stats object and Prometheus metrics.

Contract:
- :class:`EnhancerStats` (``PromptEnhancer.stats``) counts operations (``calls``, ``succeeded``, ``failed``:
  no provider answered), ``fallbacks`` (answered by a provider after the first one failed), and per provider
  the attempts, failures (retryable or not) and the latency of its answers. ``as_dict()`` is JSON-safe.
- :class:`PromptMetrics` registers, in the registry it is given (a server's private one), the counters
  ``fastvideo_prompt_llm_requests_total{operation,provider,outcome}`` (outcome ``ok``, ``retryable_error``,
  ``error``), ``fastvideo_prompt_fallbacks_total{operation}``,
  ``fastvideo_prompt_safety_decisions_total{decision}`` and the histogram
  ``fastvideo_prompt_llm_latency_seconds{operation,provider}`` (answers only). Optional everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

LLM_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)


@dataclass
class ProviderStats:
    attempts: int = 0
    answers: int = 0
    retryable_failures: int = 0
    failures: int = 0
    total_latency_ms: float = 0.0
    last_latency_ms: float | None = None

    @property
    def mean_latency_ms(self) -> float | None:
        return self.total_latency_ms / self.answers if self.answers else None


@dataclass
class EnhancerStats:
    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    fallbacks: int = 0
    by_provider: dict[str, ProviderStats] = field(default_factory=dict)

    def provider(self, name: str) -> ProviderStats:
        return self.by_provider.setdefault(name, ProviderStats())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name, stats in self.by_provider.items():
            out["by_provider"][name]["mean_latency_ms"] = stats.mean_latency_ms
        return out


class PromptMetrics:
    """Prometheus counters of the prompt pipeline (see module contract)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("fastvideo_prompt_llm_requests_total", "LLM provider calls by operation and outcome",
                                ["operation", "provider", "outcome"], registry=registry)
        self.latency = Histogram("fastvideo_prompt_llm_latency_seconds", "Latency of LLM provider answers",
                                 ["operation", "provider"], buckets=LLM_LATENCY_BUCKETS, registry=registry)
        self.fallbacks = Counter("fastvideo_prompt_fallbacks_total",
                                 "Prompt operations answered by a fallback provider", ["operation"], registry=registry)
        self.safety = Counter("fastvideo_prompt_safety_decisions_total", "Prompt safety filter decisions",
                              ["decision"], registry=registry)


__all__ = ["EnhancerStats", "PromptMetrics", "ProviderStats"]
