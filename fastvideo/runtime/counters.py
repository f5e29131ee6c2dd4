"""Runtime counters: one small object recording what the runtime did, so tests assert it exactly.

Contract: plain integer fields, incremented under a lock by the runtime (model loads, compiles,
graph captures and replays, generations started/completed/failed/cancelled, preview decodes, TeaCache-skipped
steps, forwards per expert of a two-expert model); :meth:`snapshot`
returns a JSON-safe dict. No globals: each VideoGenerator owns one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


@dataclass
class RuntimeCounters:
    """Counts of runtime events for one generator."""

    model_loads: int = 0
    compiles: int = 0
    graph_captures: int = 0
    graph_replays: int = 0
    generations_started: int = 0
    generations_completed: int = 0
    generations_failed: int = 0
    generations_cancelled: int = 0
    #: Preview decodes (``VideoPartialEvent``) made while denoising.
    previews_decoded: int = 0
    #: Denoising steps whose DiT blocks TeaCache skipped (``runtime.enable_teacache``), summed over requests.
    teacache_steps_skipped: int = 0
    #: Two-expert models (Wan2.2 A14B): DiT forwards through ``transformer`` (expert 0) and ``transformer_2``.
    expert_0_forwards: int = 0
    expert_1_forwards: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
