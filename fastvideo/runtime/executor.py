"""Device work for the dispatcher: text encoding, batched denoising, VAE decode, on CUDA streams.

Contract (implements :class:`fastvideo.runtime.dispatcher.BatchExecutor` over a VideoGenerator):
- ``prepare(item)``: on the *encode* stream, the request's text embeddings (cond + uncond under
  CFG), its seeded noise (drawn on the CPU exactly as :meth:`WanT2VPipeline.initial_noise`) and,
  for the continuation branch, the previous segment's tail latents; for image-to-video models the
  condition channels and CLIP image tokens (:meth:`WanT2VPipeline.image_condition`; Wan2.2 I2V A14B has no
  image tokens: its steps take the condition channels only); records an event.
  Image-to-video steps concatenate each member's condition after its latents (channels) and pack its
  image tokens (repeated for the uncond half under CFG) after the text embeddings, zero-padded to one
  width, so the step keeps three tensors and its graphs are captured and replayed like text-to-video's.
- ``denoise(batch, on_step)``: on the *denoise* stream (after waiting for each member's encode
  event), one DiT forward per step for the whole batch: latents ``[r1..rB]`` and, under CFG,
  ``[r1..rB, r1..rB]`` with text embeddings ``[cond1..condB, uncond1..uncondB]`` and per-row
  timesteps; then per request, eagerly: CFG with its own guidance scale, its own sampler state
  (shift may differ), its own continuation conditioning, ``on_step(item, step, total)``. A member
  whose ``is_cancelled()`` turns true is dropped before the next step (``GenerationCancelled``);
  the others go on. Non-finite latents (NaN/Inf: corrupt weights, an fp16 overflow) are checked once
  after the first step and once after the last (one ``isfinite().all()`` per member, one host sync
  per check): a member that has them is dropped with :class:`~fastvideo.api.GenerationFailed`
  (``generations_failed``), so no black or garbage video is ever returned. The step goes through a
  :class:`DiTGraphRunner` when one is configured (graph replay for captured shapes, eager otherwise).
  Numerics per request equal the unbatched :meth:`WanT2VPipeline.run` up to the batched matmuls'
  summation order (parity test: frames within 1 uint8 level, latents within 1e-4 on the built-in
  model in fp32). This is the one denoising loop:
  ``VideoGenerator.generate`` / ``generate_async`` run it with batches of one.
- TeaCache (``runtime.enable_teacache``, :mod:`fastvideo.engine.step_cache`): each such member keeps its own
  :class:`~fastvideo.engine.step_cache.TeaCacheState`. A step with one or more of them runs the DiT eagerly in
  three parts (``embed`` / ``run_blocks`` / ``head``): every cached member decides alone (one host sync for all),
  the blocks run over the rows of the members that compute (all rows: exactly the plain forward), and a skipping
  member's rows (cond and uncond) take their embedded tokens plus the residual cached at its last computed step.
  So a batch whose members disagree is split at the blocks, and each member equals its solo run (tested: one
  member with TeaCache, one without). Skipped steps are counted in ``teacache_steps_skipped`` and per request in
  ``metadata["teacache"]`` (``skipped_steps``, ``computed_steps``, ``thresh``, ``use_ret_steps``).
  CUDA graphs: with a graph runner the step function runs the DiT as ``embed`` / ``run_blocks`` / ``head`` (the
  same ops as ``forward``) and keeps the blocks' input and output; a captured graph keeps the capture's pair alive
  (with the RoPE tables), so every replay rewrites it. A TeaCache step where every row computes replays the graph
  (after an eager ``embed`` for the decisions: one extra patch/text/time embedding per step) and reads the
  residual from that pair; a step where a member skips runs eagerly (the computing rows' blocks, the skipping rows'
  residual) and replays nothing. Each graph holds that pair (2 x rows x tokens x width) in its pool. With
  ``engine.compile`` also on, the step function is the compiled ``forward``, which keeps no pair: a TeaCache
  request is then refused in ``prepare`` (RequestError on ``runtime.enable_teacache``). With ``engine.compile``
  alone, a step with TeaCache members runs the DiT's parts uncompiled (``Module.compile`` wraps ``forward``
  only), so threshold 0 then equals the uncompiled forward, not the compiled one.
- Two experts (Wan2.2 A14B, ``pipeline.dit_2`` set): at each step every member's expert follows from its own
  timestep and ``boundary_ratio`` (``wan.experts.expert_index``, diffusers' rule), and its CFG
  uses ``guidance_scale`` on ``transformer`` and ``guidance_scale_2`` on ``transformer_2``. Members on the same
  expert share one forward; a step whose members sit on different experts runs one forward per expert (never a
  mixed one). The expert is made resident by ``pipeline.experts.activate`` (offloading the other when the
  pipeline was loaded with ``offload_experts``). Counted in ``expert_0_forwards`` / ``expert_1_forwards``.
  CUDA graphs are refused for these models (ConfigError on ``engine.cuda_graphs``) and so is TeaCache
  (RequestError on ``runtime.enable_teacache``).
- Previews: a member whose request sets ``output.preview_interval_steps = k`` gets, after every k-th
  step except the last and only when ``on_step`` is a :class:`~fastvideo.runtime.dispatcher.PreviewSink`
  whose ``wants_partial(item)`` is true, a :class:`~fastvideo.api.VideoPartialEvent`: the sampler's
  clean estimate ``x0 = x_t - sigma_t * v`` (the continuation tail imposed), decoded by the VAE exactly
  as ``finish`` decodes (same size and frames). The decode runs on the denoise stream between steps,
  so it delays the whole batch's next step by one VAE decode; its time is added to the request's
  ``timings["preview_s"]`` and counted in ``previews_decoded``. A preview that fails drops only its
  request (``generations_failed``); the rest of the batch goes on.
- Text-image-to-video (Wan2.2 TI2V-5B, ``pipeline.per_token_timesteps``): ``prepare`` encodes a request's image as
  its clean first latent frame (:meth:`WanT2VPipeline.first_frame`; none: the request runs text-to-video). Such a
  member's DiT input has that frame in place of its first latent frame, and a step holding one runs per-token
  timesteps for all its rows (:meth:`WanT2VPipeline.step_timesteps`: 0 on the conditioned rows' first frame, the
  same numbers as the plain timestep elsewhere); the decoded latents and previews carry the clean frame too. A
  step without conditioned rows runs the plain ``(rows,)`` timestep. With CUDA graphs each declared bucket is
  captured for both timestep forms (labels ending ``/per-token`` for the per-token one). TeaCache is refused for
  these models (RequestError on ``runtime.enable_teacache``); continuation is refused by request validation
  (``state``); a size the model cannot tile is a RequestError from :meth:`WanT2VPipeline.check_sampling`.
- ``finish(item)``: on the *decode* stream (after the denoise event), VAE decode with the overlap
  frames of a continuation dropped, MP4 encoding / saving, state encoding; returns a VideoResult
  built by ``VideoGenerator.build_result`` (with ``batch_size``/``queue_s``).
- Streams: :class:`StageStreams` holds three CUDA streams and orders them with events; tensors that
  cross streams are ``record_stream``-ed. Off CUDA (or with ``streams=False``) every call is a no-op
  and the same code runs on the current thread in order. A stand-in stream backend (same methods)
  lets CPU tests assert the ordering.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from fastvideo.api import (
    ConfigError,
    GenerationCancelled,
    GenerationFailed,
    GenerationRequest,
    RequestError,
    SamplingConfig,
    VideoPartialEvent,
)
from fastvideo.engine.models.wan.experts import expert_index
from fastvideo.engine.models.wan.pipeline import Conditioning, guided, overlap_video_frames
from fastvideo.engine.models.wan.ti2v import with_first_frame
from fastvideo.engine.step_cache import TeaCacheState, params_of
from fastvideo.engine.state_codec import DEFAULT_TAIL_FRAMES
from fastvideo.engine.validation import ResolvedSampling, resolve_sampling, with_overlap
from fastvideo.runtime.cuda_graphs import (
    CudaGraphBackend,
    DiTGraphRunner,
    GraphBackend,
    GraphBucket,
    GraphConfig,
    GraphKey,
)
from fastvideo.runtime.dispatcher import PreviewSink
from fastvideo.runtime.scheduler import BucketKey, RequestWork, WorkItem

logger = logging.getLogger(__name__)

STAGES = ("encode", "denoise", "decode")


class StreamBackend(Protocol):
    def new_stream(self) -> Any: ...

    def use(self, stream: Any) -> contextlib.AbstractContextManager: ...

    def new_event(self) -> Any: ...

    def handoff(self, tensor: torch.Tensor, stream: Any) -> None: ...


class CudaStreamBackend:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def new_stream(self) -> Any:
        return torch.cuda.Stream(self.device)

    def use(self, stream: Any) -> contextlib.AbstractContextManager:
        return torch.cuda.stream(stream)

    def new_event(self) -> Any:
        return torch.cuda.Event()

    def handoff(self, tensor: torch.Tensor, stream: Any) -> None:
        if tensor.is_cuda:
            tensor.record_stream(stream)


class StageStreams:
    """One stream per stage (encode, denoise, decode) or, when disabled, nothing at all."""

    def __init__(self, backend: StreamBackend | None) -> None:
        self.backend = backend
        self.streams = {name: backend.new_stream() for name in STAGES} if backend is not None else {}

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @contextlib.contextmanager
    def use(self, stage: str) -> Iterator[None]:
        if self.backend is None:
            yield
            return
        with self.backend.use(self.streams[stage]):
            yield

    def record(self, stage: str) -> Any:
        if self.backend is None:
            return None
        event = self.backend.new_event()
        event.record(self.streams[stage])
        return event

    def wait(self, stage: str, event: Any) -> None:
        if self.backend is not None and event is not None:
            self.streams[stage].wait_event(event)

    def handoff(self, tensor: torch.Tensor | None, stage: str) -> None:
        if self.backend is not None and tensor is not None:
            self.backend.handoff(tensor, self.streams[stage])

    def synchronize(self, stage: str) -> None:
        if self.backend is not None:
            self.streams[stage].synchronize()


@dataclass
class ExecutorConfig:
    """Device options of the executor."""

    #: CUDA streams per stage; None: on when the device is CUDA.
    streams: bool | None = None
    #: DiT-step graphs to capture; None: the generator's own (``engine.cuda_graphs``), so every core over a
    #: generator (its direct one, a service's, a pool worker's) honours that config.
    graphs: GraphConfig | None = None


@dataclass
class _Ctx:
    start: float
    embeds: torch.Tensor
    noise: torch.Tensor
    conditioning: Conditioning | None
    previous: int
    overlap: int
    encoded: Any = None
    denoised: Any = None
    latents: torch.Tensor | None = None
    batch_size: int = 1
    #: Image-to-video: the condition channels and CLIP image tokens (None for text-to-video; tokens None for a
    #: model without an image encoder, Wan2.2 I2V A14B, whose image enters through the condition channels only).
    image: tuple[torch.Tensor, torch.Tensor | None] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: TeaCache (``runtime.enable_teacache``): the request's step cache, None when off.
    teacache: TeaCacheState | None = None
    #: Text-image-to-video: the clean first latent frame ``(1, C, 1, h, w)`` (None: no image).
    first_frame: torch.Tensor | None = None


@dataclass
class _Member:
    item: WorkItem
    sampler: Any
    latents: torch.Tensor
    sigmas: tuple[float, ...]
    cache: TeaCacheState | None = None


def branch_of(request: GenerationRequest) -> str:
    return "initial" if request.state is None else "continuation"


class WanBatchExecutor:
    """BatchExecutor over a VideoGenerator's pipeline (see module contract)."""

    def __init__(self, generator: Any, config: ExecutorConfig | None = None, *,
                 graph_backend: GraphBackend | None = None, stream_backend: StreamBackend | None = None) -> None:
        self.generator = generator
        self.config = config or ExecutorConfig()
        pipe = generator.pipeline
        self.pipeline = pipe
        self.device: torch.device = pipe.device
        use_streams = self.config.streams if self.config.streams is not None else self.device.type == "cuda"
        if stream_backend is None and use_streams and self.device.type == "cuda":
            stream_backend = CudaStreamBackend(self.device)
        self.streams = StageStreams(stream_backend if use_streams else None)
        self.runner: DiTGraphRunner | None = None
        #: Image-to-video: how many image tokens end the packed embeddings (see _pack_images).
        self._image_tokens = 0
        self.graphs: GraphConfig = self.config.graphs if self.config.graphs is not None else generator.graph_config()
        graphs = self.graphs
        #: Two-expert models: the expert the current step runs (None: ``pipe.dit``; see :attr:`_dit`).
        self._expert: Any = None
        if graphs.enabled and getattr(pipe, "dit_2", None) is not None:
            raise ConfigError("engine.cuda_graphs", "CUDA graphs are not supported for two-expert models (Wan2.2 "
                                                    "A14B) yet; turn engine.cuda_graphs off")
        if graphs.enabled:
            if graph_backend is None and self.device.type == "cuda":
                graph_backend = CudaGraphBackend(self.device)
            if graph_backend is None:
                logger.warning("CUDA graphs requested on %s without a graph backend; the DiT runs eagerly",
                               self.device)
            else:
                self.runner = DiTGraphRunner(self._eager_step, graph_backend, counters=generator.counters,
                                             warmup_iters=graphs.warmup_iters, keep_alive=self._step_constants)
        #: The blocks' input and output of the last step run through :meth:`_eager_step` (graph runner only, the
        #: DiT not compiled): a captured graph keeps the capture's pair alive and rewrites it at every replay, so
        #: TeaCache reads a replayed step's residual there (see module contract).
        self._blocks_io: tuple[torch.Tensor, torch.Tensor] | None = None
        #: Whether the DiT exposes embed / run_blocks / head (our eager Wan DiT does; compiled artifacts do not).
        self._splittable = all(callable(getattr(pipe.dit, name, None)) for name in ("embed", "run_blocks", "head"))
        self._split_steps = (self.runner is not None and self._splittable
                             and getattr(pipe.dit, "_compiled_call_impl", None) is None)

    # ------------------------------------------------------------------ items
    def make_item(self, request: GenerationRequest, resolved: ResolvedSampling, *, listener: Any = None,
                  need_bytes: bool = True, should_cancel: Any = None) -> WorkItem:
        assert request.request_id is not None
        item = WorkItem(request_id=request.request_id, key=BucketKey.of(resolved, branch_of(request)),
                        payload=RequestWork(request, resolved, need_bytes), listener=listener)
        item._external_cancel = should_cancel
        return item

    # ------------------------------------------------------------------ DiT step
    @property
    def _dit(self) -> Any:
        """The DiT the step functions run: the current expert of a two-expert model, else ``pipeline.dit``."""
        return self._expert if self._expert is not None else self.pipeline.dit

    def _expert_step(self, members: list[_Member], index: int, cfg: bool) -> tuple[torch.Tensor, list[int]]:
        """Two-expert models: step ``index`` of every member, each through the expert its own timestep and
        ``boundary_ratio`` choose (``wan.experts.expert_index``); one forward per expert in use
        (a forward never mixes experts). Returns the prediction in the one-forward layout (cond rows, then uncond
        rows) and each member's expert."""
        pipe = self.pipeline
        train = pipe.sampler_config.num_train_timesteps
        chosen = [expert_index(m.sampler.state.schedule.timesteps_host[index], m.item.payload.resolved.boundary_ratio,
                               train) for m in members]
        cond: list[Any] = [None] * len(members)
        uncond: list[Any] = [None] * len(members)
        for k in sorted(set(chosen)):
            group = [i for i, c in enumerate(chosen) if c == k]
            ms = [members[i] for i in group]
            self._expert = pipe.experts.activate(k)
            self.generator.counters.add(f"expert_{k}_forwards")
            embeds = self._pack_images(self._batch_embeds([m.item.ctx.embeds for m in ms], cfg),
                                       self._batch_images(ms), cfg)
            model_in = torch.cat([self._model_input(m, pipe.dtype) for m in ms])
            if cfg:
                model_in = torch.cat([model_in, model_in])
            pred = self._step(model_in, self._timesteps(ms, index, cfg, model_in), embeds)
            n = len(ms)
            for j, i in enumerate(group):
                cond[i] = pred[j: j + 1]
                if cfg:
                    uncond[i] = pred[n + j: n + j + 1]
        return torch.cat(cond + (uncond if cfg else [])), chosen

    def _eager_step(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        if self._split_steps:  # the same ops as forward, keeping the blocks' input/output (captured with the graph)
            dit = self._dit
            step = self._embed(latents, timestep, embeds)
            out = dit.run_blocks(step)
            self._blocks_io = (step.x, out)
            return dit.head(out, step)
        config = self._dit.config
        if config.is_image_conditioned:  # embeds packs the text states and the image tokens (see _pack_images)
            tokens = self._image_tokens
            return self._dit(latents, timestep, embeds[:, :-tokens, :config.text_dim],
                             embeds[:, -tokens:, :config.image_dim])
        return self._dit(latents, timestep, embeds)

    def _embed(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> Any:
        dit = self._dit
        config = dit.config
        if config.is_image_conditioned:
            tokens = self._image_tokens
            return dit.embed(latents, timestep, embeds[:, :-tokens, :config.text_dim],
                             embeds[:, -tokens:, :config.image_dim])
        return dit.embed(latents, timestep, embeds)

    def _cached_step(self, members: list[_Member], latents: torch.Tensor, timestep: torch.Tensor,
                     embeds: torch.Tensor, index: int) -> torch.Tensor:
        """One eager DiT step with TeaCache members (see :mod:`fastvideo.engine.step_cache`). Each member decides
        alone (members without a cache always compute); the blocks run over the rows of the computing members
        only (all rows: the plain forward, so threshold 0 equals it bit for bit), skipping members take their
        cached residual; so every member gets what its solo run computes. One host sync for the decisions."""
        dit = self._dit
        step = self._embed(latents, timestep, embeds)
        count, rows_total = len(members), latents.shape[0]
        per_member = [[row] if rows_total == count else [row, count + row] for row in range(count)]
        cached = [(m, rows) for m, rows in zip(members, per_member) if m.cache is not None]
        inputs, changes = [], []
        for m, rows in cached:
            assert m.cache is not None
            inp = m.cache.modulated_input(step.temb[rows[0]], step.modulation[rows[0]])
            inputs.append(inp)
            changes.append(m.cache.change(inp))
        known = [c for c in changes if c is not None]
        values = iter(torch.stack(known).tolist() if known else [])
        skipping: list[tuple[_Member, list[int]]] = []
        for (m, rows), inp, change in zip(cached, inputs, changes):
            assert m.cache is not None
            if not m.cache.decide(index, inp, None if change is None else next(values)):
                skipping.append((m, rows))
                self.generator.counters.add("teacache_steps_skipped")
        skip_rows = {r for _, rows in skipping for r in rows}
        compute_rows = [r for r in range(rows_total) if r not in skip_rows]
        if not skip_rows and self.runner is not None:  # every row computes: the graph (or the runner's eager step)
            pred = self.runner(latents, timestep, embeds)
            entry = self.runner.graphs.get(GraphKey.of(latents, timestep, embeds))
            io = entry.keep_alive[1] if entry is not None else self._blocks_io
            assert io is not None  # _split_steps (checked in prepare): every step function call keeps the pair
            blocks_in, blocks_out = io
            self._blocks_io = None
            for m, rows in cached:
                assert m.cache is not None
                m.cache.store(blocks_out[rows], blocks_in[rows])
            return pred
        if not skip_rows:
            out = dit.run_blocks(step)
        else:
            out = torch.empty_like(step.x)
            if compute_rows:
                index_t = torch.tensor(compute_rows, device=step.x.device)
                out[index_t] = dit.run_blocks(step, index_t)
            for m, rows in skipping:
                assert m.cache is not None
                out[rows] = m.cache.reuse(step.x[rows])
        skipped = {id(m) for m, _ in skipping}
        for m, rows in cached:
            if id(m) not in skipped:
                assert m.cache is not None
                m.cache.store(out[rows], step.x[rows])
        return dit.head(out, step)

    def _step_constants(self, latents: torch.Tensor) -> Any:
        """Kept alive with a captured graph: the RoPE tables, and the capture's blocks input/output pair."""
        return self.pipeline.dit.step_constants(latents), self._blocks_io

    def _step(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        if self.runner is not None:
            pred = self.runner(latents, timestep, embeds)
            self._blocks_io = None  # an eager call's pair: not needed, do not hold its memory
            return pred
        return self._eager_step(latents, timestep, embeds)

    # ------------------------------------------------------------------ stages
    @torch.no_grad()
    def prepare(self, item: WorkItem) -> None:
        work: RequestWork = item.payload
        req, s = work.request, work.resolved
        pipe = self.pipeline
        self.generator.counters.add("generations_started")
        try:
            if req.runtime.enable_teacache and getattr(pipe, "dit_2", None) is not None:
                raise RequestError("runtime.enable_teacache", "TeaCache is not supported for two-expert models "
                                                              "(Wan2.2 A14B) yet; set it to false")
            if req.runtime.enable_teacache and pipe.per_token_timesteps:
                raise RequestError("runtime.enable_teacache", "TeaCache is not supported for text-image-to-video "
                                                              "models (Wan2.2 TI2V-5B) yet; set it to false")
            if req.runtime.enable_teacache and not self._splittable:
                raise RequestError("runtime.enable_teacache", "TeaCache does not run on built artifacts "
                                                              "(engine.artifacts_path) yet: their programs run the "
                                                              "whole DiT step; set it to false")
            if req.runtime.enable_teacache and self.runner is not None and not self._split_steps:
                raise RequestError("runtime.enable_teacache", "TeaCache does not run with CUDA graphs and "
                                                              "torch.compile together yet; set it to false, or turn "
                                                              "engine.compile or engine.cuda_graphs off")
            pipe.check_sampling(s)
            start = time.perf_counter()
            tail, previous = self.generator.continuation_tail(req, s)
            negative = pipe.preset.negative_prompt if req.negative_prompt is None else req.negative_prompt
            with self.streams.use("encode"):
                embeds = pipe.encode_prompts(req.prompt, negative, s.do_cfg)
                noise = pipe.initial_noise(s)
                image = pipe.image_condition(req.inputs, s)
                first_frame = pipe.first_frame(req.inputs, s)
                conditioning = None
                if tail is not None:
                    tail = tail.to(self.device)
                    conditioning = Conditioning(clean=tail, noise=noise[:, :, : tail.shape[2]],
                                                strength=s.continuation_strength)
                encoded = self.streams.record("encode")
            for tensor in (embeds, noise, tail, first_frame):
                self.streams.handoff(tensor, "denoise")
            overlap = 0 if tail is None else overlap_video_frames(tail.shape[2])
            item.ctx = _Ctx(start=start, embeds=embeds, noise=noise, conditioning=conditioning, previous=previous,
                            overlap=overlap, encoded=encoded, image=image, first_frame=first_frame)
            item.ctx.timings["text_encode_s"] = time.perf_counter() - start
        except BaseException:
            self.generator.counters.add("generations_failed")
            raise

    @torch.no_grad()
    def denoise(self, batch: list[WorkItem], on_step: Any) -> list[tuple[WorkItem, BaseException]]:
        pipe = self.pipeline
        s0: ResolvedSampling = batch[0].payload.resolved
        keys = {item.key for item in batch}
        if len(keys) != 1:
            raise ValueError(f"a batch must share one bucket, got {sorted(k.describe() for k in keys)}")
        total = s0.num_inference_steps
        cfg = s0.do_cfg
        dropped: list[tuple[WorkItem, BaseException]] = []
        previews = on_step if isinstance(on_step, PreviewSink) else None
        t0 = time.perf_counter()
        with self.streams.use("denoise"):
            members = []
            for item in batch:
                ctx: _Ctx = item.ctx
                self.streams.wait("denoise", ctx.encoded)
                sampler = pipe.make_sampler(item.payload.resolved)
                sigmas = sampler.state.schedule.sigmas_host
                latents = ctx.noise
                if ctx.conditioning is not None:
                    ctx.conditioning = ctx.conditioning.to(latents)
                    latents = ctx.conditioning.impose(latents, sigmas[0])
                params = params_of(item.payload.request.runtime)
                cache = TeaCacheState(params, total) if params is not None else None
                item.ctx.teacache = cache
                members.append(_Member(item, sampler, latents, sigmas, cache))
            embeds_for: list[_Member] = []
            embeds: torch.Tensor | None = None
            two_experts = getattr(pipe, "dit_2", None) is not None
            for index in range(total):
                alive = []
                for m in members:
                    if m.item.is_cancelled():
                        self.generator.counters.add("generations_cancelled")
                        dropped.append((m.item, GenerationCancelled(f"cancelled before step {index + 1}/{total}")))
                    else:
                        alive.append(m)
                members = alive
                if not members:
                    break
                experts = [0] * len(members)
                if two_experts:
                    pred, experts = self._expert_step(members, index, cfg)
                else:
                    if len(members) != len(embeds_for) or any(a is not b for a, b in zip(members, embeds_for)):
                        embeds_for = list(members)  # membership changed (by identity, never by request id)
                        embeds = self._pack_images(self._batch_embeds([m.item.ctx.embeds for m in members], cfg),
                                                   self._batch_images(members), cfg)
                    assert embeds is not None
                    model_in = torch.cat([self._model_input(m, pipe.dtype) for m in members])
                    if cfg:
                        model_in = torch.cat([model_in, model_in])
                    timestep = self._timesteps(members, index, cfg, model_in)
                    if any(m.cache is not None for m in members):
                        pred = self._cached_step(members, model_in, timestep, embeds, index)
                    else:
                        pred = self._step(model_in, timestep, embeds)
                count = len(members)
                failed: set[int] = set()
                for row, m in enumerate(members):
                    s = m.item.payload.resolved
                    if cfg:
                        scale = s.guidance_scale if experts[row] == 0 or s.guidance_scale_2 is None \
                            else s.guidance_scale_2
                        p = guided(pred[row: row + 1], pred[count + row: count + row + 1], scale)
                    else:
                        p = pred[row: row + 1]
                    before = m.latents
                    m.latents = m.sampler.step(p, index, before)
                    if m.item.ctx.conditioning is not None:
                        m.latents = m.item.ctx.conditioning.impose(m.latents, m.sigmas[index + 1])
                    on_step(m.item, index + 1, total)
                    if previews is not None and self._preview_due(m.item, index + 1, total, previews):
                        try:
                            self._preview(m, p, before, index, total, previews)
                        except Exception as exc:  # noqa: BLE001 - reported on that request only
                            logger.exception("preview of %s failed", m.item.request_id)
                            self.generator.counters.add("generations_failed")
                            dropped.append((m.item, exc))
                            failed.add(id(m))
                if index == 0 or index == total - 1:
                    failed |= self._non_finite([m for m in members if id(m) not in failed], index + 1, total,
                                               dropped)
                if failed:
                    members = [m for m in members if id(m) not in failed]
            event = self.streams.record("denoise")
        self.streams.synchronize("denoise")
        elapsed = time.perf_counter() - t0
        for m in members:
            ctx = m.item.ctx
            if ctx.first_frame is not None:  # TI2V: the clean first frame is what the VAE decodes
                m.latents = with_first_frame(m.latents, ctx.first_frame)
            ctx.latents, ctx.denoised, ctx.batch_size = m.latents, event, len(batch)
            ctx.timings["denoise_s"] = elapsed
            self.streams.handoff(m.latents, "decode")
        return dropped

    def _non_finite(self, members: list[_Member], step: int, total: int,
                    dropped: list[tuple[WorkItem, BaseException]]) -> set[int]:
        """Drop (into ``dropped``) the members whose latents hold NaN/Inf after ``step``; one host sync."""
        if not members:
            return set()
        finite = torch.stack([torch.isfinite(m.latents).all() for m in members]).tolist()
        bad = set()
        for m, ok in zip(members, finite):
            if ok:
                continue
            logger.error("request %s: non-finite latents after step %d/%d", m.item.request_id, step, total)
            self.generator.counters.add("generations_failed")
            overflow = ", or float16 overflowed (try --dtype bf16 or fp32)" if self.pipeline.dtype == torch.float16 \
                else ""
            dropped.append((m.item, GenerationFailed(
                f"the model produced non-finite values (NaN/Inf) at denoising step {step}/{total}, so no video was "
                f"made: its weights are probably corrupt (re-download the model files){overflow}", step=step)))
            bad.add(id(m))
        return bad

    @staticmethod
    def _preview_due(item: WorkItem, step: int, total: int, sink: PreviewSink) -> bool:
        interval = item.payload.request.output.preview_interval_steps
        return bool(interval) and step < total and step % interval == 0 and sink.wants_partial(item)

    def _preview(self, m: _Member, pred: torch.Tensor, before: torch.Tensor, index: int, total: int,
                 sink: PreviewSink) -> None:
        """Decode ``m``'s clean estimate at step ``index`` and hand it to ``sink`` (see module contract)."""
        t0 = time.perf_counter()
        item, work = m.item, m.item.payload
        ctx: _Ctx = item.ctx
        x0 = before.float() - pred.float() * m.sigmas[index]  # the sampler's own velocity -> data rule
        if ctx.conditioning is not None:
            x0 = ctx.conditioning.impose(x0, 0.0)
        if ctx.first_frame is not None:
            x0 = with_first_frame(x0, ctx.first_frame)
        frames = self.pipeline.decode(x0, work.resolved, skip_frames=ctx.overlap)
        self.generator.counters.add("previews_decoded")
        ctx.timings["preview_s"] = ctx.timings.get("preview_s", 0.0) + time.perf_counter() - t0
        step = index + 1
        sink.partial(item, VideoPartialEvent(request_id=item.request_id, frames=frames,
                                             index=step // work.request.output.preview_interval_steps - 1,
                                             step=step, total_steps=total))

    def _timesteps(self, members: list[_Member], index: int, cfg: bool, model_in: torch.Tensor) -> torch.Tensor:
        """The DiT timesteps of step ``index`` for ``members``' rows (cond rows, then uncond rows under CFG):
        ``(rows,)``, or per token when a member is image-conditioned TI2V (see module contract)."""
        timestep = torch.cat([m.sampler.model_timestep(index, 1) for m in members])
        conditioned = [m.item.ctx.first_frame is not None for m in members]
        if cfg:
            timestep, conditioned = torch.cat([timestep, timestep]), conditioned * 2
        if not any(conditioned):
            return timestep
        return self.pipeline.step_timesteps(timestep, model_in, conditioned)

    @staticmethod
    def _model_input(m: _Member, dtype: torch.dtype) -> torch.Tensor:
        """The DiT input of one member: its latents (TI2V: the clean first frame in place of the first latent
        frame), then (image-to-video) its condition channels."""
        image = m.item.ctx.image
        if m.item.ctx.first_frame is not None:
            return with_first_frame(m.latents, m.item.ctx.first_frame).to(dtype)
        if image is None:
            return m.latents.to(dtype)
        return torch.cat([m.latents, image[0].to(m.latents)], dim=1).to(dtype)

    @staticmethod
    def _batch_images(members: list[_Member]) -> torch.Tensor | None:
        """The members' CLIP image tokens, concatenated; None for text-to-video and for models without them."""
        tokens = [m.item.ctx.image[1] for m in members if m.item.ctx.image is not None]
        if len(tokens) != len(members) or any(t is None for t in tokens):
            return None
        return torch.cat([t for t in tokens if t is not None])

    def _pack_images(self, embeds: torch.Tensor, images: torch.Tensor | None, cfg: bool) -> torch.Tensor:
        """Image-to-video: one tensor ``(rows, L_text + L_img, max(text_dim, image_dim))`` holding the text states
        then the image tokens (repeated for the uncond rows under CFG), each zero-padded to the common width, so
        a step keeps its three inputs (and a captured graph its static buffers); :meth:`_eager_step` slices them
        apart. Text-to-video: ``embeds`` as is."""
        if images is None:
            return embeds
        if cfg:
            images = torch.cat([images, images])
        width = max(embeds.shape[-1], images.shape[-1])
        self._image_tokens = images.shape[1]
        images = images.to(embeds.dtype)
        return torch.cat([F.pad(embeds, (0, width - embeds.shape[-1])), F.pad(images, (0, width - images.shape[-1]))],
                         dim=1)

    @staticmethod
    def _batch_embeds(per_item: list[torch.Tensor], cfg: bool) -> torch.Tensor:
        if not cfg:
            return torch.cat([e[:1] for e in per_item])
        return torch.cat([e[:1] for e in per_item] + [e[1:2] for e in per_item])

    @torch.no_grad()
    def finish(self, item: WorkItem) -> Any:
        work: RequestWork = item.payload
        req, s = work.request, work.resolved
        ctx: _Ctx = item.ctx
        assert ctx.latents is not None
        try:
            t0 = time.perf_counter()
            with self.streams.use("decode"):
                self.streams.wait("decode", ctx.denoised)
                frames = self.pipeline.decode(ctx.latents, s, skip_frames=ctx.overlap)
            ctx.timings["decode_s"] = time.perf_counter() - t0
            timings = dict(ctx.timings)
            video_bytes, video_path = self.generator.encode_outputs(req, s, frames, timings, work.need_bytes)
            queue_s = (item.started_at - item.admitted_at) if item.started_at is not None else 0.0
            result = self.generator.build_result(
                req, s, frames, ctx.latents, timings, start=ctx.start, previous=ctx.previous,
                video_bytes=video_bytes, video_path=video_path,
                extra_metadata={"batch_size": ctx.batch_size, "queue_s": queue_s, **self._teacache_metadata(ctx)})
        except BaseException:
            self.generator.counters.add("generations_failed")
            raise
        self.generator.counters.add("generations_completed")
        return result

    @staticmethod
    def _teacache_metadata(ctx: _Ctx) -> dict[str, Any]:
        cache = ctx.teacache
        if cache is None:
            return {}
        return {"teacache": {"thresh": cache.params.thresh, "use_ret_steps": cache.params.use_ret_steps,
                             "skipped_steps": cache.skipped, "computed_steps": cache.computed}}

    def release(self, item: WorkItem) -> None:
        item.ctx = None

    # ------------------------------------------------------------------ graphs
    def capture_declared(self, graphs: GraphConfig | None = None) -> list[str]:
        """Capture the DiT step for every declared bucket x served branch x batch size; returns the labels."""
        graphs = graphs or self.graphs
        if self.runner is None or not graphs.buckets:
            return []
        labels = []
        for bucket in graphs.buckets:
            for branch in self.generator.served_branches:
                for batch in bucket.batch_sizes:
                    label = f"{bucket.width}x{bucket.height}x{bucket.num_frames}/{branch}/b{batch}/" + \
                            ("cfg" if bucket.cfg else "nocfg")
                    latents, timestep, embeds = self.example_step_inputs(bucket, branch, batch)
                    if self.runner.capture(latents, timestep, embeds, label=label):
                        labels.append(label)
                    if self.pipeline.per_token_timesteps:  # TI2V: the steps of batches holding an image
                        per_token = self.pipeline.step_timesteps(timestep, latents, [True] * timestep.shape[0])
                        if self.runner.capture(latents, per_token, embeds, label=label + "/per-token"):
                            labels.append(label + "/per-token")
        return labels

    @torch.no_grad()
    def example_step_inputs(self, bucket: GraphBucket, branch: str, batch: int) -> tuple[torch.Tensor, ...]:
        """Inputs shaped like one DiT step of ``batch`` requests in ``bucket``/``branch``."""
        s = self.bucket_sampling(bucket, branch)
        pipe = self.pipeline
        rows = batch * (2 if s.do_cfg else 1)
        factor = pipe.vae.spatial_factor
        latents = torch.randn((rows, pipe.dit.config.in_channels, s.latent_frames, s.height // factor,
                               s.width // factor), generator=torch.Generator().manual_seed(0))
        latents = latents.to(self.device, pipe.dtype)
        timestep = pipe.make_sampler(s).model_timestep(0, rows).contiguous()
        embeds = pipe.encode_prompts("warmup", "", s.do_cfg)
        embeds = self._batch_embeds([embeds] * batch, s.do_cfg)
        image = pipe.image_condition(self.generator.probe_inputs(), s)
        if image is not None and image[1] is not None:
            embeds = self._pack_images(embeds, torch.cat([image[1]] * batch), s.do_cfg)
        return latents, timestep, embeds

    def bucket_sampling(self, bucket: GraphBucket, branch: str) -> ResolvedSampling:
        req = GenerationRequest(prompt="warmup", sampling=SamplingConfig(
            width=bucket.width, height=bucket.height, num_frames=bucket.num_frames, num_inference_steps=1,
            guidance_scale=5.0 if bucket.cfg else 1.0, sampler=bucket.sampler, seed=0),
            inputs=self.generator.probe_inputs())
        s = resolve_sampling(req, self.pipeline.preset)
        if branch == "continuation":
            s = with_overlap(s, overlap_video_frames(DEFAULT_TAIL_FRAMES))
        return s
