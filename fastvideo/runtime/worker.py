"""``BatchWorker``: one generator served through the scheduler, dispatcher and batch executor.

Contract:
- Built from a loaded :class:`VideoGenerator` and a :class:`WorkerConfig` (scheduler limits,
  stage overlap, CUDA-graph buckets); the config's nested :class:`SchedulerConfig` and
  :class:`ExecutorConfig` are handed to the scheduler and executor as they are (never copied field
  by field). Thread-based and loop-agnostic: the asyncio
  :class:`~fastvideo.runtime.service.VideoService` and the GPU pool's workers both sit on it.
- ``submit(request, listener=...)`` validates (``RequestError``), admits (``QueueFull`` before
  anything is queued) and returns the :class:`WorkItem`; the listener gets the dispatcher's
  callbacks. ``cancel(request_id)`` cancels queued or running work. ``generate(request)`` is the
  blocking convenience.
- ``warmup()`` captures the declared DiT-step graphs, then runs the health-check request through
  the normal path for every branch the generator serves (both, unless its compiled artifacts were
  built for the initial branch only): a first segment, then a continuation from its state (so the
  continuation's shapes, the state codec and the VAE's overlap trim are exercised too). ``ready`` is
  true only after it succeeded; it returns what it did (timings, graph labels). A generator that serves the
  initial branch only (image-to-video) asks for no continuation state in its probe.
- The executor is chosen by registry lookup: :data:`EXECUTORS` maps the generator's family runtime binding
  (:attr:`fastvideo.engine.families.ModelFamily.runtime`; ``"wan"`` for a generator without a ``family``) to the
  batch executor class (``"module:Class"``, imported on use): :class:`~fastvideo.runtime.executor.WanBatchExecutor`
  for Wan, :class:`~fastvideo.runtime.ltx2_executor.LTX2BatchExecutor` for LTX-2. :func:`executor_class` resolves
  it; an unknown binding is a ConfigError.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from fastvideo.api import ConfigError, GenerationRequest, OutputConfig, VideoResult
from fastvideo.runtime.cuda_graphs import GraphConfig
from fastvideo.runtime.dispatcher import Dispatcher, SyncListener
from fastvideo.engine.models.registry import resolve_dotted
from fastvideo.runtime.executor import ExecutorConfig
from fastvideo.runtime.scheduler import Scheduler, SchedulerConfig, WorkItem

logger = logging.getLogger(__name__)

#: Family runtime binding -> the batch executor class that runs its work items (module contract).
EXECUTORS: dict[str, str] = {
    "wan": "fastvideo.runtime.executor:WanBatchExecutor",
    "ltx2": "fastvideo.runtime.ltx2_executor:LTX2BatchExecutor",
}


def executor_class(generator: Any) -> Any:
    """The batch executor class of ``generator``'s family binding (module contract)."""
    family = getattr(generator, "family", None)
    binding = "wan" if family is None else family.runtime
    target = EXECUTORS.get(binding)
    if target is None:
        raise ConfigError("model_path", f"model family {getattr(family, 'name', binding)!r} (runtime binding "
                                        f"{binding!r}) has no batch executor; known: {sorted(EXECUTORS)}")
    return resolve_dotted(target)


@dataclass
class WorkerConfig:
    """How one generator is served (held by ``ServiceConfig.worker``; every pool worker gets the same one)."""

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    #: Encode / denoise / decode on separate threads (and CUDA streams); None: on for CUDA.
    overlap: bool | None = None
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    #: Seconds warmup may take before it is reported as failed.
    warmup_timeout_s: float = 600.0
    #: The request warmup runs (both branches); None: ``generator.warmup_request()`` (the health-check
    #: request, at a size the compiled artifacts serve when there are any).
    warmup_request: GenerationRequest | None = None

    def __post_init__(self) -> None:
        if self.warmup_timeout_s <= 0:
            raise ConfigError("warmup_timeout_s", f"must be > 0, got {self.warmup_timeout_s}")


class BatchWorker:
    """Scheduler + executor + dispatcher over one generator (see module contract)."""

    def __init__(self, generator: Any, config: WorkerConfig | None = None, *, name: str = "fastvideo",
                 graph_backend: Any = None, stream_backend: Any = None) -> None:
        self.generator = generator
        self.config = config or WorkerConfig()
        self.scheduler = Scheduler(self.config.scheduler)
        self.executor = executor_class(generator)(generator, self.config.executor, graph_backend=graph_backend,
                                         stream_backend=stream_backend)
        overlap = self.config.overlap
        if overlap is None:
            overlap = self.executor.device.type == "cuda"
        self.dispatcher = Dispatcher(self.scheduler, self.executor, overlap=overlap, name=name)
        self.ready = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.dispatcher.start()

    def stop(self, timeout: float | None = None) -> None:
        self.ready = False
        self.dispatcher.stop(timeout)

    @property
    def graph_config(self) -> GraphConfig:
        return self.executor.graphs

    def warmup(self) -> dict[str, Any]:
        """Capture declared graphs, run both branches once; then ``ready`` (see module contract)."""
        t0 = time.perf_counter()
        labels = self.executor.capture_declared()
        probe = self.config.warmup_request or self.generator.warmup_request()
        probe = replace(probe, request_id=f"warmup_initial_{id(self):x}",
                        output=replace(probe.output,
                                       return_state="continuation" in self.generator.served_branches))
        first = self._run_forced(probe)
        branches = ["initial"]
        if "continuation" in self.generator.served_branches:
            follow = replace(probe, request_id=f"warmup_continuation_{id(self):x}", state=first.state,
                             output=OutputConfig(save_video=False, return_frames=False, return_state=False))
            second = self._run_forced(follow)
            if second.metadata.get("branch") != "continuation":  # pragma: no cover - defensive
                raise RuntimeError("warmup continuation did not run the continuation branch")
            branches.append("continuation")
        self.ready = True
        took = time.perf_counter() - t0
        logger.info("warmup done in %.2fs (branches: %s; graphs: %s)", took, ", ".join(branches), labels or "none")
        return {"warmup_s": took, "graphs": labels, "branches": branches}

    def _run_forced(self, request: GenerationRequest) -> VideoResult:
        req, resolved = self.generator.resolve(request)
        item = self.executor.make_item(req, resolved, listener=SyncListener(), need_bytes=False)
        return self.dispatcher.run_sync(item, timeout=self.config.warmup_timeout_s, force=True)

    # ------------------------------------------------------------------ work
    def submit(self, request: GenerationRequest | dict, *, listener: Any = None, need_bytes: bool = True,
               notify: bool = True, should_cancel: Any = None) -> WorkItem:
        """Validate and admit (RequestError / QueueFull); the listener receives the callbacks."""
        req, resolved = self.generator.resolve(request)
        return self.submit_resolved(req, resolved, listener=listener, need_bytes=need_bytes, notify=notify,
                                    should_cancel=should_cancel)

    def submit_resolved(self, req: GenerationRequest, resolved: Any, *, listener: Any = None,
                        need_bytes: bool = True, notify: bool = True, should_cancel: Any = None,
                        force: bool = False) -> WorkItem:
        """Admit an already resolved request (``force``: past ``max_queue``, for callers that wait in line)."""
        item = self.executor.make_item(req, resolved, listener=listener, need_bytes=need_bytes,
                                       should_cancel=should_cancel)
        self.dispatcher.submit(item, notify=notify, force=force)
        return item

    def notify(self) -> None:
        self.scheduler.notify()

    def cancel(self, request_id: str) -> str:
        return self.dispatcher.cancel(request_id)

    def generate(self, request: GenerationRequest | dict, timeout: float | None = None) -> VideoResult:
        """Blocking: submit and wait for the result (raises the failure)."""
        listener = SyncListener()
        self.submit(request, listener=listener, need_bytes=False)
        return listener.wait(timeout)

    @property
    def queue_depth(self) -> int:
        return self.scheduler.queue_depth

    @property
    def running(self) -> int:
        return self.scheduler.running_count
