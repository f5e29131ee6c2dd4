"""A CUDA-graph runner over a tuple of static input tensors: ``fn(*inputs) -> tuple of outputs``, keyed by the caller.

Contract
--------
- :class:`StaticGraphRunner` captures, per caller-chosen hashable key, one call ``fn(*inputs)`` whose inputs are a
  tuple of tensors (``None`` entries allowed: passed through as ``None``, never copied) and whose result is a
  tensor or a tuple of tensors. It is the model-agnostic sibling of
  :class:`~fastvideo.runtime.cuda_graphs.DiTGraphRunner` (Wan's ``(latents, timestep, embeds)`` step) and uses the
  same backends (:class:`~fastvideo.runtime.cuda_graphs.CudaGraphBackend`, the CPU stand-in
  :class:`~fastvideo.runtime.cuda_graphs.RecordingGraphBackend`), the same process-wide capture lock and the same
  sequence: ``warmup_iters`` eager calls on the backend's warm-up stream, a device sync, the capture into the
  runner's one memory pool, a sync.
- The key must determine everything ``fn`` does besides the input values (shapes, dtypes, static settings): the
  caller builds it (e.g. :meth:`~fastvideo.engine.models.ltx2.denoise.LTX2DiTInputs.shape_key`). The ``fn`` given
  at capture is the one the graph holds; ``fn`` given at :meth:`run` is only called eagerly (no graph for the key).
- :meth:`run` ``(key, fn, inputs)``: with a graph for ``key`` every non-``None`` input is copied into its static
  buffer (always: no identity shortcut), the graph is replayed, and clones of the static outputs are returned (the
  caller never aliases memory the next replay overwrites); the ``None`` pattern must match the capture's, else
  ``ValueError``. Without one, ``fn(*inputs)`` runs eagerly and ``stats["eager_calls"]`` counts it.
- A capture that raises is logged, counted in ``stats["capture_failures"]``, remembered (that key runs eagerly from
  then on) and returns False. ``RuntimeCounters.graph_captures`` / ``graph_replays`` count successful captures and
  replays, as Wan's runner does. ``keep_alive`` (given at capture) is held with the graph (e.g. cached RoPE tables
  the graph reads, which a cache could otherwise evict and free).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fastvideo.runtime.counters import RuntimeCounters
from fastvideo.runtime.cuda_graphs import _CAPTURE_LOCK, GraphBackend

logger = logging.getLogger(__name__)

__all__ = ["StaticGraphRunner"]

Inputs = Sequence[torch.Tensor | None]


@dataclass
class _Entry:
    graph: Any
    inputs: tuple[torch.Tensor | None, ...]
    outputs: tuple[torch.Tensor, ...]
    single: bool  #: fn returned one tensor, not a tuple
    label: str
    keep_alive: Any = None
    replays: int = 0


def _as_tuple(result: Any) -> tuple[tuple[torch.Tensor, ...], bool]:
    if isinstance(result, torch.Tensor):
        return (result,), True
    if isinstance(result, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in result):
        return tuple(result), False
    raise TypeError(f"a captured function must return a tensor or a tuple of tensors, got {type(result).__name__}")


@dataclass
class StaticGraphRunner:
    """Per-key captured calls over static input tensors (see module contract)."""

    backend: GraphBackend
    counters: RuntimeCounters = field(default_factory=RuntimeCounters)
    warmup_iters: int = 2

    def __post_init__(self) -> None:
        self.graphs: dict[Hashable, _Entry] = {}
        self.failed: dict[Hashable, str] = {}
        self.stats = {"captures": 0, "replays": 0, "eager_calls": 0, "capture_failures": 0}
        self._pool: Any = None
        self._lock = threading.Lock()

    def captured_labels(self) -> list[str]:
        return sorted(e.label for e in self.graphs.values())

    def has_graph(self, key: Hashable) -> bool:
        return key in self.graphs

    @torch.no_grad()
    def capture(self, key: Hashable, fn: Callable[..., Any], inputs: Inputs, *, label: str = "",
                keep_alive: Any = None) -> bool:
        """Capture ``fn`` on copies of ``inputs`` (values only warm it up) for ``key``; True when captured."""
        with self._lock:
            if key in self.graphs:
                return True
            if key in self.failed:
                return False
            statics = tuple(None if t is None else t.clone() for t in inputs)
            try:
                with _CAPTURE_LOCK, self.backend.guard():  # warmup syncs the device: no capture may be open
                    with self.backend.warmup_stream():
                        for _ in range(self.warmup_iters):
                            fn(*statics)
                    self.backend.synchronize()
                    if self._pool is None:
                        self._pool = self.backend.new_pool()
                    graph = self.backend.new_graph()
                    with self.backend.capture(graph, self._pool):
                        result = fn(*statics)
                    self.backend.synchronize()
                outputs, single = _as_tuple(result)
            except Exception as exc:  # noqa: BLE001 - a shape that cannot be captured runs eagerly
                logger.warning("CUDA graph capture failed for %s (%s): %s; that shape runs eagerly",
                               label or key, type(exc).__name__, exc)
                self.failed[key] = f"{type(exc).__name__}: {exc}"
                self.stats["capture_failures"] += 1
                return False
            self.graphs[key] = _Entry(graph, statics, outputs, single, label or str(key), keep_alive)
            self.stats["captures"] += 1
            self.counters.add("graph_captures")
            logger.info("captured graph %s", label or key)
            return True

    @torch.no_grad()
    def run(self, key: Hashable, fn: Callable[..., Any], inputs: Inputs) -> Any:
        """Replay the graph of ``key`` on ``inputs``, or run ``fn(*inputs)`` eagerly (module contract)."""
        with self._lock:
            entry = self.graphs.get(key)
            if entry is None:
                self.stats["eager_calls"] += 1
                return fn(*inputs)
            if len(inputs) != len(entry.inputs):
                raise ValueError(f"graph {entry.label}: {len(inputs)} inputs, captured with {len(entry.inputs)}")
            for index, (static, value) in enumerate(zip(entry.inputs, inputs)):
                if (static is None) != (value is None):
                    raise ValueError(f"graph {entry.label}: input {index} is "
                                     f"{'None' if value is None else 'given'}, unlike at capture")
                if static is not None and value is not None:
                    static.copy_(value)
            with self.backend.guard():
                entry.graph.replay()
            entry.replays += 1
            self.stats["replays"] += 1
            self.counters.add("graph_replays")
            outputs = tuple(o.clone() for o in entry.outputs)
            return outputs[0] if entry.single else outputs

    def reset(self) -> None:
        """Drop every graph (frees their memory once callers let go)."""
        with self._lock:
            for entry in self.graphs.values():
                reset = getattr(entry.graph, "reset", None)
                if reset is not None:
                    reset()
            self.graphs.clear()
            self.failed.clear()
            self._pool = None
