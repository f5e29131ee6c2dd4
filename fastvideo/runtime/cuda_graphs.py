"""CUDA-graph runner for the DiT denoising step, with an eager fallback and exact bookkeeping.

Graph boundary
--------------
Inside one graph: exactly one ``WanTransformer3DModel.forward(latents, timestep, text_embeds)`` for a
whole batch, i.e. one denoising step of every request in it, with CFG's conditional and
unconditional rows already stacked into the batch (patch embedding, timestep and text conditioning,
every transformer block, the output head and unpatchify).

Outside (eager, every step): CFG combination, the sampler step (per-request solver state), the
continuation conditioning, cancellation checks and progress callbacks, so requests in one batch may
have different guidance scales, shifts and conditioning without another capture.

Static (fixed address for the graph's lifetime): the input buffers ``latents (B, C, T, h, w)`` in
the model dtype, ``timestep (B,)`` in the sampler's dtype, ``text_embeds (B, L, D)``; the output
buffer; every intermediate activation (one private memory pool shared by the runner's graphs); the
weights; the RoPE tables of the latent grid (the runner keeps a reference, so the DiT's RoPE cache
evicting them cannot free memory the graph reads).

Per step: the new latents and timesteps are copied into the static inputs, the graph is replayed,
and a clone of the static output is returned (so the caller never aliases memory the next replay
overwrites). Text embeddings are copied unless the caller passes the very tensor object copied at
that graph's last replay, unmodified since (same object, same in-place version counter); the runner
holds a reference to it, so its identity cannot be reused. Nothing is keyed on request ids: two
requests with the same id (client-supplied, or a WebSocket segment id reused after a reset) are two
different embedding tensors and are always copied.

Keys and fallback: a graph is keyed by :class:`GraphKey` (shapes and dtypes of the three inputs).
The executor captures one per declared bucket x branch (initial, continuation) x batch size at
warmup; any other shape runs eagerly and is counted in ``stats["eager_calls"]``. A capture that
fails is logged, counted in ``stats["capture_failures"]`` and that key runs eagerly from then on.
``RuntimeCounters.graph_captures`` / ``graph_replays`` count successful captures and replays.

Devices and threads: capture and replay run under the backend's device guard (a runner for
``cuda:1`` captures and replays on GPU 1 whatever the calling thread's current device), capture
uses a side stream created on that device, and the whole capture sequence (warm-up forwards,
device syncs, capture) is serialized process-wide (``_CAPTURE_LOCK``: several in-process workers
warming up at once take turns). CUDA graphs are captured with ``capture_error_mode="thread_local"``:
other threads' stream-ordered work on other streams may go on during a capture, but a device-wide
``torch.cuda.synchronize()`` from another thread would break it; the runtime syncs streams, not
devices, outside warmup. Embeddings that are inference tensors (no version counter) are always copied.

Backends: :class:`CudaGraphBackend` uses ``torch.cuda.CUDAGraph`` / ``torch.cuda.graph``.
:class:`RecordingGraphBackend` is the CPU stand-in: :class:`RecordingGraph` has the same interface
(``capture_begin``, ``capture_end``, ``replay``, ``reset``, ``pool``), records every aten op run
during capture (with its tensors, which stay alive like a graph pool) and replays them by recomputing
each op and writing the result into the originally produced tensor: the same fixed-address semantics
as a real graph, so tests catch a runner that forgets to refresh a static input.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastvideo.kernels.device import device_guard
from fastvideo.runtime.counters import RuntimeCounters

logger = logging.getLogger(__name__)

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: One graph capture at a time in this process (see module contract).
_CAPTURE_LOCK = threading.Lock()


@dataclass(frozen=True)
class GraphBucket:
    """A request shape to capture (both branches, every listed batch size)."""

    width: int
    height: int
    num_frames: int
    cfg: bool = True
    batch_sizes: tuple[int, ...] = (1,)
    sampler: Literal["unipc", "euler"] | None = None


@dataclass
class GraphConfig:
    """Which DiT-step graphs the executor captures at warmup."""

    enabled: bool = False
    buckets: tuple[GraphBucket, ...] = ()
    #: Eager forwards on a side stream before each capture (allocator and autotuning warm-up).
    warmup_iters: int = 2


@dataclass(frozen=True)
class GraphKey:
    latents: tuple[int, ...]
    latents_dtype: str
    timestep: tuple[int, ...]
    timestep_dtype: str
    embeds: tuple[int, ...]
    embeds_dtype: str

    @classmethod
    def of(cls, latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> "GraphKey":
        return cls(tuple(latents.shape), str(latents.dtype), tuple(timestep.shape), str(timestep.dtype),
                   tuple(embeds.shape), str(embeds.dtype))


class GraphBackend(Protocol):
    name: str

    def new_graph(self) -> Any: ...

    def new_pool(self) -> Any: ...

    def capture(self, graph: Any, pool: Any) -> contextlib.AbstractContextManager: ...

    def warmup_stream(self) -> contextlib.AbstractContextManager: ...

    def guard(self) -> contextlib.AbstractContextManager: ...

    def synchronize(self) -> None: ...


class CudaGraphBackend:
    """Real CUDA graphs on ``device``."""

    name = "cuda"

    def __init__(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise ValueError(f"CudaGraphBackend needs a CUDA device, got {device}")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self._capture_stream: Any = None

    def guard(self) -> contextlib.AbstractContextManager:
        return device_guard(self.device)

    def new_graph(self) -> Any:
        return torch.cuda.CUDAGraph()

    def new_pool(self) -> Any:
        return torch.cuda.graph_pool_handle()

    def capture(self, graph: Any, pool: Any) -> contextlib.AbstractContextManager:
        if self._capture_stream is None:
            self._capture_stream = torch.cuda.Stream(self.device)
        return torch.cuda.graph(graph, pool=pool, stream=self._capture_stream, capture_error_mode="thread_local")

    @contextlib.contextmanager
    def warmup_stream(self) -> Iterator[None]:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(side):
                yield
        finally:  # also on failure: the side stream's work must finish before its inputs can be freed
            torch.cuda.current_stream(self.device).wait_stream(side)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)


class _Recorder(TorchDispatchMode):
    def __init__(self, ops: list) -> None:
        super().__init__()
        self.ops = ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, out))
        return out


def _write_back(old: Any, new: Any) -> None:
    if isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor):
        if old is not new:
            old.copy_(new)
    elif isinstance(old, (tuple, list)) and isinstance(new, (tuple, list)):
        for o, n in zip(old, new):
            _write_back(o, n)


class RecordingGraph:
    """CPU stand-in with ``torch.cuda.CUDAGraph``'s interface (see module contract)."""

    def __init__(self) -> None:
        self._ops: list = []
        self._mode: _Recorder | None = None
        self.captured = False
        self.replay_count = 0

    def capture_begin(self, pool: Any = None, capture_error_mode: str = "global") -> None:
        if self._mode is not None or self.captured:
            raise RuntimeError("RecordingGraph: capture already begun or done (reset() first)")
        self._mode = _Recorder(self._ops)
        self._mode.__enter__()

    def capture_end(self) -> None:
        if self._mode is None:
            raise RuntimeError("RecordingGraph: capture_end without capture_begin")
        self._mode.__exit__(None, None, None)
        self._mode = None
        self.captured = True

    def replay(self) -> None:
        if not self.captured:
            raise RuntimeError("RecordingGraph: replay before capture")
        for func, args, kwargs, out in self._ops:
            _write_back(out, func(*args, **kwargs))
        self.replay_count += 1

    def reset(self) -> None:
        self._ops = []
        self.captured = False

    def pool(self) -> tuple[int, int]:
        return (0, id(self))

    @property
    def num_ops(self) -> int:
        return len(self._ops)


class RecordingGraphBackend:
    """CPU stand-in backend: :class:`RecordingGraph` objects, no streams."""

    name = "recording"

    def __init__(self) -> None:
        self.graphs: list[RecordingGraph] = []
        self.warmup_runs = 0

    def new_graph(self) -> RecordingGraph:
        graph = RecordingGraph()
        self.graphs.append(graph)
        return graph

    def new_pool(self) -> Any:
        return None

    @contextlib.contextmanager
    def capture(self, graph: RecordingGraph, pool: Any) -> Iterator[None]:
        graph.capture_begin(pool=pool)
        try:
            yield
        finally:
            graph.capture_end()

    @contextlib.contextmanager
    def warmup_stream(self) -> Iterator[None]:
        self.warmup_runs += 1
        yield

    def guard(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        pass


@dataclass
class _Captured:
    graph: Any
    latents: torch.Tensor
    timestep: torch.Tensor
    embeds: torch.Tensor
    output: torch.Tensor
    label: str
    keep_alive: Any = None
    #: The embeddings tensor copied at the last replay and its version then (see module contract).
    embeds_source: torch.Tensor | None = None
    embeds_version: int = -1
    replays: int = 0


@dataclass
class DiTGraphRunner:
    """Replays captured DiT-step graphs; runs everything else eagerly (see module contract)."""

    fn: StepFn
    backend: GraphBackend
    counters: RuntimeCounters = field(default_factory=RuntimeCounters)
    warmup_iters: int = 2
    #: Called with the static latents at capture; whatever it returns is kept alive with the graph.
    keep_alive: Callable[[torch.Tensor], Any] | None = None

    def __post_init__(self) -> None:
        self.graphs: dict[GraphKey, _Captured] = {}
        self.failed: dict[GraphKey, str] = {}
        self.stats = {"captures": 0, "replays": 0, "eager_calls": 0, "capture_failures": 0, "embed_copies": 0}
        self._pool: Any = None
        self._lock = threading.Lock()

    def captured_labels(self) -> list[str]:
        return sorted(c.label for c in self.graphs.values())

    def has_graph(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> bool:
        return GraphKey.of(latents, timestep, embeds) in self.graphs

    @torch.no_grad()
    def capture(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor, *, label: str = "") -> bool:
        """Capture the step for these shapes (values are only used to warm up); True when captured."""
        key = GraphKey.of(latents, timestep, embeds)
        with self._lock:
            if key in self.graphs:
                return True
            if key in self.failed:
                return False
            static_l, static_t, static_e = latents.clone(), timestep.clone(), embeds.clone()
            try:
                with _CAPTURE_LOCK, self.backend.guard():  # warmup syncs the device: no capture may be open
                    with self.backend.warmup_stream():
                        for _ in range(self.warmup_iters):
                            self.fn(static_l, static_t, static_e)
                    self.backend.synchronize()
                    if self._pool is None:
                        self._pool = self.backend.new_pool()
                    graph = self.backend.new_graph()
                    with self.backend.capture(graph, self._pool):
                        output = self.fn(static_l, static_t, static_e)
                    self.backend.synchronize()
            except Exception as exc:  # noqa: BLE001 - a shape that cannot be captured runs eagerly
                logger.warning("CUDA graph capture failed for %s (%s): %s; that shape runs eagerly",
                               label or key, type(exc).__name__, exc)
                self.failed[key] = f"{type(exc).__name__}: {exc}"
                self.stats["capture_failures"] += 1
                return False
            keep = self.keep_alive(static_l) if self.keep_alive is not None else None
            self.graphs[key] = _Captured(graph, static_l, static_t, static_e, output, label or str(key), keep)
            self.stats["captures"] += 1
            self.counters.add("graph_captures")
            logger.info("captured DiT step graph %s", label or key)
            return True

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """One DiT step: replay the matching graph, or run eagerly."""
        key = GraphKey.of(latents, timestep, embeds)
        with self._lock:
            entry = self.graphs.get(key)
            if entry is None:
                self.stats["eager_calls"] += 1
                return self.fn(latents, timestep, embeds)
            entry.latents.copy_(latents)
            entry.timestep.copy_(timestep)
            if (embeds is not entry.embeds_source or embeds.is_inference()  # inference tensors have no version
                    or embeds._version != entry.embeds_version):
                entry.embeds.copy_(embeds)
                entry.embeds_source = embeds
                entry.embeds_version = -1 if embeds.is_inference() else embeds._version
                self.stats["embed_copies"] += 1
            with self.backend.guard():
                entry.graph.replay()
            entry.replays += 1
            self.stats["replays"] += 1
            self.counters.add("graph_replays")
            return entry.output.clone()

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
