"""Scheduling policy: a bounded request queue, admission control, shape-bucket batching, fairness.

Contract (pure policy: no threads of its own, no tensors, no device work; thread-safe under one lock):
- :meth:`Scheduler.admit` puts a :class:`WorkItem` in the queue or raises :class:`QueueFull` *before*
  anything is queued when ``max_queue`` items already wait (servers answer 429/503 with
  ``retry-after``). ``force=True`` admits anyway (internal warmup work).
- :meth:`Scheduler.next_batch` picks the next batch: items that share a :class:`BucketKey` (size,
  latent frames, steps, branch, guidance on/off, sampler) can run as one DiT forward. Among the
  waiting buckets it takes the one that fills the largest batch (up to ``max_batch``), oldest
  first on ties; with ``max_batch=1`` that is plain FIFO. Fairness: every queued item counts how
  many dispatched batches jumped it (held a later arrival while it waited); once an item has been
  jumped ``max_bypass`` times its bucket goes next, so an odd-shaped request waits for at most
  ``max_bypass`` batches, never forever. Inside a bucket, items leave in arrival order.
- :meth:`Scheduler.cancel` removes a queued item at once (returned so the caller reports it) or
  flags a running one; the executor polls :meth:`WorkItem.is_cancelled` before every denoising step
  and drops only that member from its batch.
- :meth:`Scheduler.wait_for_work` blocks a dispatcher until an item is queued and the queue has
  been *notified* (:meth:`notify`, or ``admit(..., notify=True)``): callers that admit several
  items in one go (an event-loop tick) notify once so the batcher sees them together.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fastvideo.api.errors import FastVideoError, RequestError
from fastvideo.api.serve import SchedulerConfig  # the serve config's queue section

BRANCHES = ("initial", "continuation")


class QueueFull(FastVideoError, RuntimeError):
    """The service cannot take another job now; retry after ``retry_after_s`` seconds."""

    def __init__(self, depth: int, retry_after_s: int) -> None:
        self.depth = depth
        self.retry_after_s = retry_after_s
        super().__init__(f"the queue is full ({depth} jobs waiting); retry in {retry_after_s}s")


@dataclass(frozen=True)
class BucketKey:
    """What must match for requests to share one batched DiT forward (and one captured graph)."""

    width: int
    height: int
    latent_frames: int
    steps: int
    branch: str = "initial"
    cfg: bool = True
    sampler: str | None = None
    #: "t2v", "i2v" or "flf2v": the extra DiT inputs a step takes (never mixed in one forward).
    workload: str = "t2v"

    def __post_init__(self) -> None:
        if self.branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, got {self.branch!r}")

    @classmethod
    def of(cls, resolved: Any, branch: str = "initial") -> "BucketKey":
        """The bucket of a :class:`fastvideo.engine.validation.ResolvedSampling` (duck-typed)."""
        return cls(width=resolved.width, height=resolved.height, latent_frames=resolved.latent_frames,
                   steps=resolved.num_inference_steps, branch=branch, cfg=bool(resolved.do_cfg),
                   sampler=resolved.sampler, workload=getattr(resolved, "workload", "t2v"))

    def describe(self) -> str:
        cfg = "cfg" if self.cfg else "nocfg"
        return (f"{self.width}x{self.height}/{self.latent_frames}lf/{self.steps}steps/{self.branch}/{cfg}"
                + (f"/{self.sampler}" if self.sampler else "")
                + ("" if self.workload == "t2v" else f"/{self.workload}"))


_SEQ = itertools.count()


@dataclass
class RequestWork:
    """A batch executor's payload of a WorkItem: the request, its resolved sampling, and whether the caller
    wants encoded bytes (an MP4) besides frames."""

    request: Any  #: GenerationRequest
    resolved: Any  #: ResolvedSampling
    need_bytes: bool = True


@dataclass(eq=False)
class WorkItem:
    """One request as the scheduler sees it; ``payload`` and ``ctx`` belong to the executor."""

    request_id: str
    key: BucketKey
    payload: Any = None
    listener: Any = None
    seq: int = field(default_factory=lambda: next(_SEQ))
    admitted_at: float = field(default_factory=time.perf_counter)
    started_at: float | None = None
    bypassed: int = 0
    ctx: Any = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _external_cancel: Any = field(default=None, repr=False)

    def is_cancelled(self) -> bool:
        if self._cancel.is_set():
            return True
        check = self._external_cancel
        return bool(check is not None and check())

    def request_cancel(self) -> None:
        self._cancel.set()


class Scheduler:
    """Queue + policy (see module contract)."""

    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self._queue: OrderedDict[str, WorkItem] = OrderedDict()
        self._running: dict[str, WorkItem] = {}
        self._cond = threading.Condition()
        self._notified = False
        self._closed = False
        self.batches_dispatched = 0

    # ------------------------------------------------------------------ admission
    def admit(self, item: WorkItem, *, notify: bool = True, force: bool = False) -> None:
        """Queue ``item`` (raises QueueFull when ``max_queue`` items wait, unless ``force``)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            if item.request_id in self._queue or item.request_id in self._running:
                raise RequestError("request_id", f"{item.request_id!r} is already queued or running; use another id "
                                                 "(or none: one is generated)")
            depth = len(self._queue)
            if not force and depth >= self.config.max_queue:
                raise QueueFull(depth, self.config.retry_after_s)
            self._queue[item.request_id] = item
            if notify:
                self._notified = True
                self._cond.notify_all()

    def notify(self) -> None:
        """Let a waiting dispatcher look at the queue now."""
        with self._cond:
            self._notified = True
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiter; later admits fail."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ introspection
    @property
    def queue_depth(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def running_count(self) -> int:
        with self._cond:
            return len(self._running)

    def queued_ids(self) -> list[str]:
        with self._cond:
            return list(self._queue)

    def get(self, request_id: str) -> WorkItem | None:
        with self._cond:
            return self._queue.get(request_id) or self._running.get(request_id)

    # ------------------------------------------------------------------ dispatch
    def wait_for_work(self, timeout: float | None = None) -> bool:
        """Block until the queue is non-empty and notified (True) or closed / timed out (False)."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._closed and not (self._queue and self._notified):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return not self._closed

    def next_batch(self) -> tuple[list[WorkItem], list[WorkItem]]:
        """``(batch, dropped)``: the next batch (moved to running) and queued items found cancelled."""
        with self._cond:
            dropped = [item for item in self._queue.values() if item.is_cancelled()]
            for item in dropped:
                del self._queue[item.request_id]
            if not self._queue:
                self._notified = False
                return [], dropped
            key = self._choose_bucket()
            batch = [item for item in self._queue.values() if item.key == key][: self.config.max_batch]
            newest = max(item.seq for item in batch)
            chosen = {id(item) for item in batch}
            now = time.perf_counter()
            for item in list(self._queue.values()):
                if id(item) in chosen:
                    del self._queue[item.request_id]
                    item.started_at = now
                    self._running[item.request_id] = item
                elif item.seq < newest:
                    item.bypassed += 1
            if not self._queue:
                self._notified = False
            self.batches_dispatched += 1
            return batch, dropped

    def _choose_bucket(self) -> BucketKey:
        items = list(self._queue.values())
        oldest = items[0]
        if oldest.bypassed >= self.config.max_bypass:
            return oldest.key  # fairness: this item has been jumped often enough
        sizes: dict[BucketKey, int] = {}
        first_seen: dict[BucketKey, int] = {}
        for item in items:
            sizes[item.key] = sizes.get(item.key, 0) + 1
            first_seen.setdefault(item.key, item.seq)
        cap = self.config.max_batch
        return max(sizes, key=lambda k: (min(sizes[k], cap), -first_seen[k]))

    def finish(self, item: WorkItem) -> None:
        """The item left the device (completed, failed or cancelled)."""
        with self._cond:
            self._running.pop(item.request_id, None)

    def cancel(self, request_id: str) -> tuple[str, WorkItem | None]:
        """``("queued", item)`` removed now; ``("running", item)`` flagged; ``("unknown", None)``."""
        with self._cond:
            item = self._queue.pop(request_id, None)
            if item is not None:
                item.request_cancel()
                return "queued", item
            item = self._running.get(request_id)
            if item is not None:
                item.request_cancel()
                return "running", item
            return "unknown", None

    def drain_queue(self) -> list[WorkItem]:
        """Remove and return every queued item (shutdown)."""
        with self._cond:
            items = list(self._queue.values())
            self._queue.clear()
            for item in items:
                item.request_cancel()
            return items
