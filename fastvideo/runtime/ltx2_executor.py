"""``LTX2BatchExecutor``: the dispatcher's device work for LTX-2 (video + audio), on the step-wise LTX-2 API.

Contract (the :class:`fastvideo.runtime.dispatcher.BatchExecutor` interface the worker drives, as
:class:`~fastvideo.runtime.executor.WanBatchExecutor` implements it for Wan):
- Chosen by the worker's executor registry for the ``ltx2`` runtime binding; built from a
  :class:`~fastvideo.runtime.generator.VideoGenerator` whose ``pipeline`` is an
  :class:`~fastvideo.engine.models.ltx2.served.LTX2ServedPipeline`.
- :meth:`resolve_sampling` ``(generator, request)`` is the family's request rules, called by
  ``VideoGenerator.resolve``: :func:`~fastvideo.engine.request_support.check_ltx2_request_fields` (Wan-only and
  not-yet-supported fields refused by name: ``inputs.last_image``, shift, non-Euler samplers, TeaCache,
  previews, ...; the first-frame image given once and not with a ``state``), then the common
  :func:`~fastvideo.engine.validation.resolve_sampling` against the LTX-2 preset
  (defaults; RequestError naming the field), then the model's sizes (``LTX2ServedPipeline.check_resolved``), then
  a continuation ``state``: it must be an ``ltx2.v1`` state (:class:`~fastvideo.engine.models.ltx2.state.
  LTX2ContinuationState`) with inline media, no video RoPE offset, and frames of the request's size, else a
  RequestError on ``state``. With ``engine.artifacts_path``, ``VideoGenerator.resolve`` then checks the built
  programs cover the request (``LoadedArtifacts.check_request``) on the branch :meth:`artifact_branch_field` names:
  ``continuation`` for a ``state`` and for image-to-video (both run the DiT with per-token timesteps), else
  ``initial``; an uncovered request is a RequestError before any compute.
- Image-to-video: a request with ``inputs.image_path`` or ``inputs.pil_image`` (checked by the family's rules,
  then left out of the common ones, which refuse images for a text-to-video preset) resolves with workload
  ``i2v``, so it never shares a bucket with text-to-video requests; ``LTX2ServedPipeline.to_request`` loads the
  image as RGB uint8 and the engine conditions the first latent frame on it (``LTX2Request.image``,
  diffusers' ``LTX2ImageToVideoPipeline``: resized to the video size, CRF 33 round trip).
- Continuation: a request with a ``state`` runs the ``continuation`` branch (its own bucket): the state's trailing
  frames condition the new segment (``LTX2Request.continuation``; the engine's frame-condition path), and its
  ``segment_index + 1`` is the new segment's. With ``output.return_state`` the result carries the ``ltx2.v1`` state
  after this segment (``LTX2Components.continuation_state``: its last ``temporal_ratio + 1`` frames at frame 0,
  strength 1; no audio latents conditioned).
- ``make_item`` / ``prepare`` (prompt encoding, seeded noise and schedule: ``LTX2Components.prepare`` on the
  mapped :class:`~fastvideo.engine.models.ltx2.pipeline.LTX2Request`) / ``denoise(batch, on_step)`` /
  ``finish`` (``decode``: frames + waveform; MP4 with an AAC track via ``VideoGenerator.encode_outputs``;
  ``VideoResult.audio`` / ``audio_sample_rate`` set) / ``release``.
- Batching: the scheduler may hand a batch of several same-bucket requests (prompts, seeds and guidance scales
  may differ); every step runs them together through ``LTX2Components.denoise_steps``: one DiT forward per
  guidance pass (CFG rows of every member, then the STG rows, then the modality rows) for the whole batch, guidance
  and the sampler step per member. A batched member's result equals its solo run up to float rounding of the
  batched kernels (tests/runtime/test_ltx2_batching.py measures it). ``on_step(item, step, total)`` follows every
  member's step, in batch order. A member whose ``is_cancelled()`` turns true is dropped before its next step
  (``GenerationCancelled``); one whose video/audio latents are non-finite after the first or the last step is
  dropped with :class:`~fastvideo.api.GenerationFailed`; the others go on. A step that raises in the shared call is
  retried member by member (alone, the batch of one, for every member the failed call left at that step): the
  members that fail alone are dropped with their own error, the others go on with that step done (so one bad
  member never fails its batch-mates; the retry is logged). Counters as Wan's: ``generations_started`` /
  ``generations_completed`` / ``generations_failed`` / ``generations_cancelled``.
- CUDA graphs (``engine.cuda_graphs``; a graph backend: :class:`~fastvideo.runtime.cuda_graphs.CudaGraphBackend`
  on a CUDA device, or the one given, e.g. the CPU stand-in
  :class:`~fastvideo.runtime.cuda_graphs.RecordingGraphBackend`): the DiT call alone (video and audio tokens, the two
  text embeddings, the mask, the timestep(s), the conditioned tokens' per-token timesteps and coordinates; STG and
  modality passes are calls of their own) is captured by a :class:`~fastvideo.runtime.graph_runner.
  StaticGraphRunner` keyed by :meth:`~fastvideo.engine.models.ltx2.denoise.LTX2DiTInputs.shape_key` (rows, static
  settings, per-row shapes and dtypes); guidance and the sampler stay eager. :meth:`capture_declared` captures,
  for every declared bucket x served branch x batch size, every pass a step of such a batch runs (the initial
  branch as text-to-video; the continuation branch with the state this executor returns: its frames at frame 0,
  per-token timesteps, no appended tokens, no audio prefix; an image-to-video step has that same shape key, so it
  replays the continuation graphs). Any call without a graph (another size or batch size, a continuation with
  appended condition tokens or an audio prefix) runs eagerly, counted in ``runner.stats["eager_calls"]``.
  Without a graph backend (CPU and none given) the DiT runs eagerly, with a warning. No CUDA stage streams
  (stages run in order on the dispatcher's threads).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from fastvideo.api import GenerationCancelled, GenerationFailed, GenerationRequest, RequestError
from fastvideo.api.ltx2_state import LTX2_CONTINUATION_KIND
from fastvideo.engine.models.ltx2.denoise import LTX2DiTInputs, run_dit, step_passes
from fastvideo.engine.models.ltx2.state import LTX2ContinuationState
from fastvideo.engine.request_support import check_ltx2_request_fields
from fastvideo.engine.validation import ResolvedSampling, resolve_sampling
from fastvideo.runtime.cuda_graphs import CudaGraphBackend, GraphBucket, GraphConfig
from fastvideo.runtime.graph_runner import StaticGraphRunner
from fastvideo.runtime.executor import ExecutorConfig
from fastvideo.runtime.scheduler import BucketKey, RequestWork, WorkItem

logger = logging.getLogger(__name__)

__all__ = ["LTX2BatchExecutor"]


@dataclass
class _Ctx:
    start: float
    state: Any  #: LTX2State
    timings: dict[str, float] = field(default_factory=dict)
    batch_size: int = 1
    #: The previous segment's index (-1: none).
    previous: int = -1


class LTX2BatchExecutor:
    """BatchExecutor over a VideoGenerator serving LTX-2 (see module contract)."""

    def __init__(self, generator: Any, config: ExecutorConfig | None = None, *, graph_backend: Any = None,
                 stream_backend: Any = None) -> None:
        self.generator = generator
        self.config = config or ExecutorConfig()
        self.pipeline = generator.pipeline
        self.device: torch.device = self.pipeline.device
        self.graphs: GraphConfig = self.config.graphs if self.config.graphs is not None else generator.graph_config()
        self.runner: StaticGraphRunner | None = None
        if self.graphs.enabled:
            if graph_backend is None and self.device.type == "cuda":
                graph_backend = CudaGraphBackend(self.device)
            if graph_backend is None:
                logger.warning("CUDA graphs requested on %s without a graph backend; the DiT runs eagerly",
                               self.device)
            else:
                self.runner = StaticGraphRunner(graph_backend, counters=generator.counters,
                                                warmup_iters=self.graphs.warmup_iters)

    # ------------------------------------------------------------------ requests
    @staticmethod
    def resolve_sampling(generator: Any, request: GenerationRequest) -> ResolvedSampling:
        """LTX-2's request rules (module contract); RequestError naming the field."""
        preset = generator.preset
        check_ltx2_request_fields(request, preset.name)  # the first-frame image included (given once, no state)
        inputs = request.inputs
        image = inputs.image_path is not None or inputs.pil_image is not None
        if image:  # checked above; the common rules would refuse it for the text-to-video preset
            request = replace(request, inputs=replace(inputs, image_path=None, pil_image=None))
        resolved = resolve_sampling(request, preset)
        if image:  # image-to-video requests batch among themselves (module contract)
            resolved = replace(resolved, workload="i2v")
        generator.pipeline.check_resolved(resolved.width, resolved.height, resolved.num_frames,
                                          resolved.num_inference_steps)
        if request.state is not None:
            state = LTX2BatchExecutor.continuation_of(request)
            if state.video_frames_blob_id is not None or state.audio_latents_blob_id is not None:
                raise RequestError("state", "the LTX-2 state's media are blob-backed (video_frames_blob_id / "
                                            "audio_latents_blob_id); send them inline")
            if state.video_position_offset_sec:
                raise RequestError("state", f"video_position_offset_sec={state.video_position_offset_sec!r}: "
                                            "shifting the video RoPE of a continuation is not supported; use 0")
            frames = state.video_frames or []
            if frames and tuple(frames[0].shape[:2]) != (resolved.height, resolved.width):
                height, width = frames[0].shape[:2]
                raise RequestError("state", f"the continuation state's frames are {width}x{height}; this request "
                                            f"is {resolved.width}x{resolved.height}: continue with the same size")
        return resolved

    @staticmethod
    def artifact_branch_field(request: GenerationRequest, resolved: ResolvedSampling) -> str | None:
        """The request field that makes the DiT run the built artifacts' continuation branch (per-token timesteps,
        :mod:`fastvideo.build.ltx2_export`): ``state`` (a continuation), ``inputs.image_path`` (image-to-video: the
        first frame is a conditioning), else None (the initial branch)."""
        if request.state is not None:
            return "state"
        return "inputs.image_path" if resolved.workload == "i2v" else None

    @staticmethod
    def continuation_of(request: GenerationRequest) -> LTX2ContinuationState:
        """The request's ``ltx2.v1`` state, parsed; RequestError on ``state`` for another kind or a bad one."""
        assert request.state is not None
        if request.state.kind != LTX2_CONTINUATION_KIND:
            raise RequestError("state", f"continuation state kind {request.state.kind!r} cannot continue an LTX-2 "
                                        f"model (needs {LTX2_CONTINUATION_KIND!r})")
        try:
            return LTX2ContinuationState.from_continuation_state(request.state)
        except ValueError as exc:
            raise RequestError("state", str(exc)) from exc

    def make_item(self, request: GenerationRequest, resolved: ResolvedSampling, *, listener: Any = None,
                  need_bytes: bool = True, should_cancel: Any = None) -> WorkItem:
        assert request.request_id is not None
        branch = "initial" if request.state is None else "continuation"
        item = WorkItem(request_id=request.request_id, key=BucketKey.of(resolved, branch),
                        payload=RequestWork(request, resolved, need_bytes), listener=listener)
        item._external_cancel = should_cancel
        return item

    # ------------------------------------------------------------------ stages
    @torch.no_grad()
    def prepare(self, item: WorkItem) -> None:
        work: RequestWork = item.payload
        start = time.perf_counter()
        self.generator.counters.add("generations_started")
        try:
            continuation = None if work.request.state is None else self.continuation_of(work.request)
            ltx2_request = replace(self.pipeline.to_request(work.request, work.resolved), continuation=continuation)
            state = self.pipeline.components.prepare(ltx2_request)
        except BaseException:
            self.generator.counters.add("generations_failed")
            raise
        item.ctx = _Ctx(start=start, state=state,
                        previous=-1 if continuation is None else int(continuation.segment_index))
        item.ctx.timings["text_encode_s"] = time.perf_counter() - start

    @torch.no_grad()
    def denoise(self, batch: list[WorkItem], on_step: Any) -> list[tuple[WorkItem, BaseException]]:
        keys = {item.key for item in batch}
        if len(keys) != 1:
            raise ValueError(f"a batch must share one bucket, got {sorted(k.describe() for k in keys)}")
        total = batch[0].payload.resolved.num_inference_steps
        dropped: list[tuple[WorkItem, BaseException]] = []
        members = list(batch)
        t0 = time.perf_counter()
        for index in range(total):
            alive = []
            for item in members:
                if item.is_cancelled():
                    self.generator.counters.add("generations_cancelled")
                    dropped.append((item, GenerationCancelled(f"cancelled before step {index + 1}/{total}")))
                else:
                    alive.append(item)
            errors = self._step(alive, index) if alive else []
            members = []
            for item, error in zip(alive, errors):
                if error is None and (index == 0 or index == total - 1) and not self._finite(item.ctx.state):
                    error = GenerationFailed(
                        f"the model produced non-finite values (NaN/Inf) at denoising step {index + 1}/{total}, "
                        "so no video was made: its weights are probably corrupt (re-download the model files)",
                        step=index + 1)
                if error is not None:
                    logger.error("request %s failed at step %d/%d: %s", item.request_id, index + 1, total, error)
                    self.generator.counters.add("generations_failed")
                    dropped.append((item, error))
                    continue
                on_step(item, index + 1, total)
                members.append(item)
            if not members:
                break
        elapsed = time.perf_counter() - t0
        for item in members:
            item.ctx.timings["denoise_s"] = elapsed
            item.ctx.batch_size = len(batch)
        return dropped

    def _forward(self, inputs: LTX2DiTInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """One DiT call: the captured graph of its shape key, else eager (module contract)."""
        transformer = self.pipeline.components.transformer
        if self.runner is None:
            return run_dit(transformer, inputs)

        def call(*tensors: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            return run_dit(transformer, inputs.with_tensors(tensors))

        return self.runner.run(inputs.shape_key(), call, inputs.tensors())

    def _step(self, members: list[WorkItem], index: int) -> list[BaseException | None]:
        """Step ``index`` of every member, batched; on a failure each member left at that step retries alone
        (module contract). Returns each member's error (None: stepped)."""
        components = self.pipeline.components
        states = [item.ctx.state for item in members]
        try:
            components.denoise_steps(states, index, forward=self._forward)
            return [None] * len(members)
        except Exception as exc:  # noqa: BLE001 - attributed below, member by member
            if len(members) == 1:
                return [exc]
            logger.warning("the batched LTX-2 step %d of %d requests failed (%s: %s); retrying each alone",
                           index + 1, len(members), type(exc).__name__, exc)
        errors: list[BaseException | None] = []
        for state in states:
            error: BaseException | None = None
            if state.next_step == index:  # not advanced before the failure
                try:
                    components.denoise_steps([state], index, forward=self._forward)
                except Exception as solo:  # noqa: BLE001 - reported on that request only; the batch goes on
                    error = solo
            errors.append(error)
        return errors

    @staticmethod
    def _finite(state: Any) -> bool:
        checks = torch.stack([torch.isfinite(state.latents).all(), torch.isfinite(state.audio_latents).all()])
        return bool(checks.all().item())

    @torch.no_grad()
    def finish(self, item: WorkItem) -> Any:
        work: RequestWork = item.payload
        req, s = work.request, work.resolved
        ctx: _Ctx = item.ctx
        try:
            t0 = time.perf_counter()
            out = self.pipeline.components.decode(ctx.state)
            ctx.timings["decode_s"] = time.perf_counter() - t0
            timings = dict(ctx.timings)
            waveform = out.waveform.detach().float().cpu().numpy()
            video_bytes, video_path = self.generator.encode_outputs(req, s, out.frames, timings, work.need_bytes,
                                                                    audio=waveform,
                                                                    audio_sample_rate=out.sample_rate)
            queue_s = (item.started_at - item.admitted_at) if item.started_at is not None else 0.0
            returned = None
            if req.output.return_state:
                returned = self.pipeline.components.continuation_state(
                    out, segment_index=ctx.previous + 1).to_continuation_state()
            result = self.generator.build_result(
                req, s, out.frames, ctx.state.latents, timings, start=ctx.start, previous=ctx.previous,
                video_bytes=video_bytes, video_path=video_path, audio=waveform, audio_sample_rate=out.sample_rate,
                state=returned,
                extra_metadata={"batch_size": ctx.batch_size, "queue_s": queue_s, "shift": None,
                                "audio_sample_rate": out.sample_rate, "audio_channels": int(waveform.shape[0]),
                                "audio_samples": int(waveform.shape[1])})
        except BaseException:
            self.generator.counters.add("generations_failed")
            raise
        self.generator.counters.add("generations_completed")
        return result

    def release(self, item: WorkItem) -> None:
        item.ctx = None

    # ------------------------------------------------------------------ graphs
    def capture_declared(self, graphs: GraphConfig | None = None) -> list[str]:
        """Capture every DiT call of a step for each declared bucket x served branch x batch size (module
        contract); returns the labels captured."""
        graphs = graphs or self.graphs
        if self.runner is None or not graphs.buckets:
            return []
        labels = []
        transformer = self.pipeline.components.transformer
        for bucket in graphs.buckets:
            for branch in self.generator.served_branches:
                for batch in bucket.batch_sizes:
                    base = f"{bucket.width}x{bucket.height}x{bucket.num_frames}/{branch}/b{batch}/" + \
                           ("cfg" if bucket.cfg else "nocfg")
                    for name, inputs in self.example_step_calls(bucket, branch, batch).items():
                        if inputs.video_coords is None:  # the graph reads the cached grid RoPE tables
                            keep = transformer.rope_tables(inputs.grid, inputs.fps, inputs.audio_frames,
                                                           inputs.video.device)
                        else:
                            keep = None

                        def call(*tensors: torch.Tensor | None, inputs: LTX2DiTInputs = inputs) -> Any:
                            return run_dit(transformer, inputs.with_tensors(tensors))

                        if self.runner.capture(inputs.shape_key(), call, inputs.tensors(), label=f"{base}/{name}",
                                               keep_alive=keep):
                            labels.append(f"{base}/{name}")
        return labels

    @torch.no_grad()
    def example_step_calls(self, bucket: GraphBucket, branch: str, batch: int) -> dict[str, LTX2DiTInputs]:
        """The DiT calls (``main``, and ``stg`` / ``modality`` when the guidance has them) of one step of
        ``batch`` warm-up requests of ``bucket`` / ``branch``: what :meth:`denoise` passes for such a batch."""
        sampling: dict[str, Any] = {"width": bucket.width, "height": bucket.height, "num_frames": bucket.num_frames,
                                    "seed": 0}
        if not bucket.cfg:
            sampling["guidance_scale"] = 1.0
        request: dict[str, Any] = {"prompt": "warmup", "sampling": sampling,
                                   "output": {"save_video": False, "return_frames": False}}
        continuation = None
        if branch == "continuation":  # the state this executor returns: temporal_ratio + 1 frames, no audio prefix
            frames = self.pipeline.components.vae.temporal_compression_ratio + 1
            continuation = LTX2ContinuationState(
                video_frames=[np.zeros((bucket.height, bucket.width, 3), np.uint8)] * frames)
            request["state"] = continuation.to_continuation_state().to_dict()
        req, resolved = self.generator.resolve(request)
        ltx2_request = replace(self.pipeline.to_request(req, resolved), continuation=continuation)
        state = self.pipeline.components.prepare(ltx2_request)
        passes = step_passes(state, 0)
        calls = {"main": passes.main, "stg": passes.stg, "modality": passes.modality}
        return {name: LTX2DiTInputs.cat([call] * batch) for name, call in calls.items() if call is not None}
