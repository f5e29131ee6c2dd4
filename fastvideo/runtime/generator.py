"""``VideoGenerator``: the public Python entry point (what Dynamo and our servers import).

Contract:
- ``from_pretrained(path | GeneratorConfig | mapping, **typed_kwargs)`` / ``from_config(config)``
  load the model once (the built-in tiny model when no path is given). Every config field is
  honoured or refused before any weight is read, with a :class:`~fastvideo.api.ConfigError` naming
  the dotted field and what to do instead (the table: :mod:`fastvideo.runtime.config_support`);
  ``pipeline.components.*_path`` load that component from the given diffusers sub-folder.
- ``generate(request | mapping, on_step=None) -> VideoResult``: validates (``RequestError`` naming
  the field), then runs the request through the generator's engine core (:meth:`engine_core`: the
  scheduler + batch executor + dispatcher that ``VideoService`` and the GPU pool run too; here with
  batches of one, requests served in arrival order, callers waiting in line instead of being refused),
  and returns frames / MP4 path / continuation state / metadata (timings per stage,
  ``inference_time_s``, resolved sampling, ``batch_size``, ``queue_s``; ``shift`` is the effective
  shift and ``shift_source`` where it came from: ``request``, else ``model_folder`` (its scheduler
  config), else ``preset``). The MP4 is written atomically: nothing half-written is ever left at
  ``output.output_path``; a generation whose latents turn non-finite raises
  :class:`~fastvideo.api.GenerationFailed` and writes nothing. ``pipeline.variant`` picks weight files.
- ``generate_async(request)`` yields exactly one :class:`VideoProgressEvent` per denoising step,
  with ``output.preview_interval_steps = k`` a :class:`~fastvideo.api.VideoPartialEvent` right after
  the progress event of every k-th step but the last (``(steps - 1) // k`` previews, ``index`` 0, 1,
  ...; each is one VAE decode of the clean estimate, see :mod:`fastvideo.runtime.executor`), then
  exactly one :class:`VideoFinalEvent` carrying the MP4 bytes. ``generate`` decodes no previews
  (nobody would receive them). Closing the iterator early
  cancels the generation at the next step. Errors propagate as exceptions from the iterator; a
  cancellation is :class:`~fastvideo.api.GenerationCancelled`.
- ``shutdown()`` stops the engine core and releases the models; later calls raise
  :class:`GeneratorClosed`.
- Continuation: with ``output.return_state`` the result carries a ``wan.v1`` ContinuationState
  (the segment's trailing latents); a request whose ``state`` is such a state runs the continuation
  branch: its first latent frames are conditioned on that tail and the overlap frames are dropped,
  so it returns ``num_frames`` new frames that follow the previous segment. A state from another
  size or model kind is a ``RequestError`` on ``state``. With a BlobStore attached
  (:meth:`VideoGenerator.attach_blob_store`), returned states keep tensors above the size threshold
  in the store by id (``{"encoding": "blob", "blob_id": ...}``) and incoming states that reference
  blobs are fetched from it (a missing blob is a ``RequestError`` on ``state``).
- ``default_health_check_request()``: 256x256, 8 frames, 1 step, nothing saved.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from fastvideo.api import (
    ConfigError,
    CudaGraphsConfig,
    FastVideoError,
    GenerationRequest,
    GeneratorConfig,
    InputConfig,
    OutputConfig,
    RequestError,
    SamplingConfig,
    VideoFinalEvent,
    VideoResult,
    parse_config,
)
from fastvideo.engine.loader import inspect_model_folder
from fastvideo.engine.pipeline import WanT2VPipeline, model_dtype, model_path_or_default, overlap_video_frames
from fastvideo.engine.presets import get_preset
from fastvideo.engine.validation import ResolvedSampling, resolve_sampling, with_overlap
from fastvideo.envs import read_env
from fastvideo.runtime.config_support import COMPONENT_PATHS, check_generator_config
from fastvideo.runtime.counters import RuntimeCounters
from fastvideo.runtime.cuda_graphs import GraphBucket, GraphConfig
from fastvideo.runtime.dispatcher import AsyncListener, SyncListener
from fastvideo.runtime.media import encode_mp4, write_mp4_atomic
from fastvideo.runtime.state_blobs import externalize_state, has_blob_refs, internalize_state
from fastvideo.engine.state_codec import decode_latent_state, encode_latent_state

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = "outputs"

#: Keyword arguments ``from_pretrained`` accepts besides the model path (typed homes in GeneratorConfig).
_CONVENIENCE_KWARGS: dict[str, tuple[str, ...]] = {
    "num_gpus": ("engine", "num_gpus"),
    "device": ("engine", "device"),
    "dtype": ("engine", "dtype"),
    "attention_backend": ("engine", "attention_backend"),
    "ops_backend": ("engine", "ops_backend"),
    "artifacts_path": ("engine", "artifacts_path"),
    "tp_size": ("engine", "parallelism", "tp_size"),
    "sp_size": ("engine", "parallelism", "sp_size"),
    "dit_offload": ("engine", "offload", "dit"),
    "text_encoder_offload": ("engine", "offload", "text_encoder"),
    "vae_offload": ("engine", "offload", "vae"),
    "enable_torch_compile": ("engine", "compile", "enabled"),
    "preset": ("pipeline", "preset"),
    "workload_type": ("pipeline", "workload_type"),
}


def _apply_kwargs(data: dict[str, Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(kwargs) - set(_CONVENIENCE_KWARGS))
    if unknown:
        raise TypeError(f"unexpected keyword arguments {unknown}; from_pretrained accepts {sorted(_CONVENIENCE_KWARGS)}"
                        " (or pass a GeneratorConfig for everything else)")
    for key, value in kwargs.items():
        node = data
        *parents, leaf = _CONVENIENCE_KWARGS[key]
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return data


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError("engine.device", f"{name!r} is not a device: {exc}; use 'auto', 'cpu' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("engine.device", f"{name!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return device


def _component_overrides(config: GeneratorConfig) -> dict[str, str]:
    """``pipeline.components.*_path`` as the loader's component -> folder overrides."""
    components = config.pipeline.components
    overrides = {}
    for name, sub in COMPONENT_PATHS.items():
        folder = getattr(components, name)
        if folder is None:
            continue
        if not Path(folder).expanduser().is_dir():
            raise ConfigError(f"pipeline.components.{name}", f"{folder} is not a folder; point it at a diffusers "
                                                             f"{sub}/ sub-folder (the layout of <model_path>/{sub}/)")
        overrides[sub] = folder
    return overrides


def _graph_config(cfg: CudaGraphsConfig, generator: "VideoGenerator") -> GraphConfig:
    """``engine.cuda_graphs`` as the buckets the executor captures; a bad size or batch size is a ConfigError."""
    if not cfg.enabled:
        return GraphConfig()
    if not cfg.batch_sizes or any(b < 1 for b in cfg.batch_sizes):
        raise ConfigError("engine.cuda_graphs.batch_sizes", f"must list batch sizes >= 1, got {cfg.batch_sizes}")
    preset = generator.preset
    sizes = cfg.sizes or [f"{preset.width}x{preset.height}x{preset.num_frames}"]
    buckets = []
    for index, text in enumerate(sizes):
        field = f"engine.cuda_graphs.sizes[{index}]"
        match = re.fullmatch(r"\s*(\d+)x(\d+)x(\d+)\s*", text)
        if match is None:
            raise ConfigError(field, f"{text!r} must look like 832x480x81 (WIDTHxHEIGHTxFRAMES)")
        width, height, frames = (int(v) for v in match.groups())
        try:
            generator.resolve({"prompt": "graph", "sampling": {"width": width, "height": height, "num_frames": frames}})
        except RequestError as exc:
            raise ConfigError(field, f"{text!r} is not a size this model serves: {exc}") from None
        for with_cfg in {"on": (True,), "off": (False,), "both": (True, False)}[cfg.cfg]:
            buckets.append(GraphBucket(width=width, height=height, num_frames=frames, cfg=with_cfg,
                                       batch_sizes=tuple(cfg.batch_sizes)))
    return GraphConfig(enabled=True, buckets=tuple(buckets))


class GeneratorClosed(FastVideoError, RuntimeError):
    """The VideoGenerator was shut down."""


class VideoGenerator:
    """Load a model once; generate videos from typed requests (see module contract)."""

    def __init__(self, config: GeneratorConfig, pipeline: WanT2VPipeline, model_path: Path,
                 counters: RuntimeCounters | None = None) -> None:
        self.config = config
        self.pipeline = pipeline
        self.model_path = model_path
        self.counters = counters or RuntimeCounters()
        self._lock = threading.Lock()
        self._core: Any = None
        self._graphs = GraphConfig()
        self._closed = False
        self.blob_store: Any = None
        self.blob_threshold_bytes = 64 * 1024
        self.blob_ttl_s: float | None = None
        #: Loaded ``fastvideo-build`` artifacts serving the DiT/VAE (``engine.artifacts_path``), or None.
        self.artifacts: Any = None

    def attach_blob_store(self, store: Any, *, threshold_bytes: int = 64 * 1024, ttl_s: float | None = None) -> None:
        """Keep state tensors larger than ``threshold_bytes`` in ``store`` (a runtime BlobStore) by id."""
        self.blob_store = store
        self.blob_threshold_bytes = threshold_bytes
        self.blob_ttl_s = ttl_s

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, model_path: str | GeneratorConfig | Mapping[str, Any] | None = None, *,
                        config: GeneratorConfig | Mapping[str, Any] | None = None, **kwargs: Any) -> "VideoGenerator":
        """Load from a model folder path (None: built-in model), a GeneratorConfig, or a mapping."""
        if config is not None:
            if model_path is not None or kwargs:
                raise TypeError("pass either config=... alone, or a model path with keyword options, not both")
            return cls.from_config(config)
        if isinstance(model_path, (GeneratorConfig, Mapping)):
            if kwargs:
                raise TypeError(f"unexpected keyword arguments {sorted(kwargs)} with a typed config")
            return cls.from_config(model_path)
        if model_path is not None and not isinstance(model_path, (str, Path)):
            raise TypeError(f"model_path must be a path, GeneratorConfig or mapping, got {type(model_path).__name__}")
        data = _apply_kwargs({"model_path": str(model_path) if model_path is not None else None}, kwargs)
        return cls.from_config(parse_config(GeneratorConfig, data))

    @classmethod
    def from_config(cls, config: GeneratorConfig | Mapping[str, Any]) -> "VideoGenerator":
        """Build the generator a typed config describes."""
        config = parse_config(GeneratorConfig, config)
        env = read_env()
        device = _resolve_device(config.engine.device)
        check_generator_config(config, device_type=device.type)  # every field honoured or refused, by name
        if config.engine.cuda_graphs.enabled and device.type != "cuda":
            raise ConfigError("engine.cuda_graphs.enabled", f"CUDA graphs need a CUDA device and this engine runs on "
                                                             f"{device}: set engine.device to cuda, or turn them off")
        dtype = model_dtype(config.engine.dtype, device)
        path = model_path_or_default(config.model_path, env.cache_dir)
        folder = inspect_model_folder(path, overrides=_component_overrides(config), variant=config.pipeline.variant)
        try:
            preset = get_preset(config.pipeline.preset) if config.pipeline.preset else None
        except ValueError as exc:
            raise ConfigError("pipeline.preset", str(exc)) from None
        backend = config.engine.attention_backend or env.attention_backend
        vae_dtype = model_dtype(str(config.pipeline.experimental.get("vae_dtype", "fp32")), device)
        pipeline = WanT2VPipeline.from_folder(folder, device=device, dtype=dtype, vae_dtype=vae_dtype,
                                              attention_backend=backend, preset=preset,
                                              ops_backend=config.engine.ops_backend or env.ops_backend)
        counters = RuntimeCounters()
        counters.add("model_loads")
        loaded = None
        if config.engine.artifacts_path:  # refuses artifacts built for other weights/shapes/environments
            from fastvideo.build.artifact_modules import apply_artifacts
            from fastvideo.build.loading import load_artifacts

            loaded = load_artifacts(config.engine.artifacts_path, model_folder=folder.root, device=device, dtype=dtype,
                                    vae_dtype=vae_dtype)
            apply_artifacts(pipeline, loaded)
        compile_cfg = config.engine.compile
        if compile_cfg.enabled and loaded is None:
            pipeline.dit.compile(backend=compile_cfg.backend, mode=compile_cfg.mode, fullgraph=compile_cfg.fullgraph,
                                 dynamic=compile_cfg.dynamic)
            counters.add("compiles")
        generator = cls(config, pipeline, path, counters)
        generator.artifacts = loaded
        try:
            generator._graphs = _graph_config(config.engine.cuda_graphs, generator)
        except ConfigError:
            generator.shutdown()
            raise
        return generator

    def graph_config(self) -> GraphConfig:
        """The DiT-step CUDA graphs ``engine.cuda_graphs`` declares (checked when the generator loaded); the
        engine core captures them when it starts, and ``VideoService`` at warmup."""
        return self._graphs

    # ------------------------------------------------------------------ info
    @property
    def preset(self):
        return self.pipeline.preset

    @property
    def served_branches(self) -> tuple[str, ...]:
        """Segment branches this generator can run: both, or what its compiled artifacts were built for."""
        if self.artifacts is not None:
            return tuple(b for b in ("initial", "continuation") if b in self.artifacts.manifest.branches)
        return ("initial", "continuation")

    @staticmethod
    def default_health_check_request() -> GenerationRequest:
        """The minimal probe request: 256x256, 8 frames, 1 step, nothing saved."""
        return GenerationRequest(
            prompt="health check", inputs=InputConfig(),
            sampling=SamplingConfig(width=256, height=256, num_frames=8, fps=24, num_inference_steps=1,
                                    guidance_scale=1.0, seed=0),
            output=OutputConfig(save_video=False, return_frames=False))

    def warmup_request(self) -> GenerationRequest:
        """What warmup runs by default: the health-check request, or, when compiled artifacts serve the DiT,
        the same probe at the smallest size they are built for (the health-check size may not be)."""
        probe = self.default_health_check_request()
        served = None if self.artifacts is None else self.artifacts.smallest_served()
        if served is None:
            return probe
        profile, cfg = served
        return replace(probe, sampling=replace(probe.sampling, width=profile.width, height=profile.height,
                                               num_frames=profile.frames, guidance_scale=5.0 if cfg else 1.0))

    def resolve(self, request: GenerationRequest | Mapping[str, Any]) -> tuple[GenerationRequest, ResolvedSampling]:
        """Parse and validate a request against the loaded model (raises RequestError / ConfigError)."""
        req = parse_config(GenerationRequest, request)
        if req.request_id is None:
            req = replace(req, request_id=f"video_{uuid.uuid4().hex[:24]}")
        if req.inputs.image_path or req.inputs.video_path:
            field = "inputs.image_path" if req.inputs.image_path else "inputs.video_path"
            raise RequestError(field, f"model {self.preset.name!r} is text-to-video; image/video conditioning "
                                      "is not supported, drop the input or use an image-to-video model")
        interval = req.output.preview_interval_steps
        if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int) or interval < 1):
            raise RequestError("output.preview_interval_steps", f"{interval!r} must be an integer >= 1 (a preview "
                                                                "every that many steps), or null for none")
        resolved = resolve_sampling(req, self.preset)
        if req.state is not None and has_blob_refs(req.state):
            try:
                req = replace(req, state=internalize_state(req.state, self.blob_store))
            except ValueError as exc:
                raise RequestError("state", str(exc)) from exc
        if req.state is not None:
            tail, _ = self._continuation(req, resolved)
            resolved = with_overlap(resolved, overlap_video_frames(tail.shape[2]))
        if self.artifacts is not None:  # a shape no compiled program covers is a RequestError, before any compute
            self.artifacts.check_request(resolved, continuation=req.state is not None)
        return req, resolved

    def _continuation(self, req: GenerationRequest, s: ResolvedSampling) -> tuple[torch.Tensor, int]:
        """The previous segment's tail latents and index, checked against this request."""
        assert req.state is not None
        try:
            tail, index = decode_latent_state(req.state)
        except ValueError as exc:
            raise RequestError("state", f"{exc}") from exc
        factor = self.pipeline.vae.spatial_factor
        expected = (self.pipeline.dit.config.in_channels, s.height // factor, s.width // factor)
        got = (tail.shape[1], tail.shape[3], tail.shape[4])
        if tail.shape[0] != 1 or got != expected:
            size = f"{tail.shape[4] * factor}x{tail.shape[3] * factor}"
            raise RequestError("state", f"the continuation state was produced at {size} (latent {tuple(tail.shape)}); "
                                        f"this request is {s.width}x{s.height}: continue with the same size")
        return tail, index

    # ------------------------------------------------------------------ generation
    def engine_core(self) -> Any:
        """The engine core that runs this generator's direct requests (created on first use): a
        :class:`~fastvideo.runtime.worker.BatchWorker` (scheduler, batch executor, dispatcher), the same
        execution path ``VideoService`` and the GPU pool run. Batches of one; its stages overlap on
        their own threads and CUDA streams on a GPU, run in order on one thread on a CPU."""
        self._check_open()
        with self._lock:
            if self._core is None:
                from fastvideo.runtime.worker import BatchWorker

                core = BatchWorker(self, name="fastvideo-generator")  # captures engine.cuda_graphs (executor default)
                core.start()
                core.executor.capture_declared()  # nothing unless engine.cuda_graphs is enabled
                self._core = core
            return self._core

    def _check_open(self) -> None:
        if self._closed:
            raise GeneratorClosed("this VideoGenerator has been shut down; create a new one")

    def generate(self, request: GenerationRequest | Mapping[str, Any], *,
                 on_step: Callable[[int, int], None] | None = None) -> VideoResult:
        """Generate one video synchronously through the engine core (see module contract); ``on_step(step,
        total)`` is called after every denoising step."""
        self._check_open()
        req, resolved = self.resolve(request)
        core = self.engine_core()
        listener = SyncListener()
        if on_step is not None:
            listener.on_step_cb = lambda item, step, total: on_step(step, total)
        core.submit_resolved(req, resolved, listener=listener, need_bytes=False, force=True)
        return listener.wait()

    def build_result(self, req: GenerationRequest, s: ResolvedSampling, frames: Any, latents: torch.Tensor,
                     timings: dict[str, float], *, start: float, previous: int, video_bytes: bytes | None,
                     video_path: str | None, extra_metadata: Mapping[str, Any] | None = None) -> VideoResult:
        """The VideoResult of a finished generation (runtime-internal; the scheduler's executor uses it too)."""
        assert req.request_id is not None
        elapsed = time.perf_counter() - start
        metadata = {
            "request_id": req.request_id, "model": self.preset.name, "timings": timings,
            "inference_time_s": elapsed, "width": s.width, "height": s.height, "num_frames": s.num_frames,
            "generated_frames": s.generated_frames, "fps": s.fps, "num_inference_steps": s.num_inference_steps,
            "guidance_scale": s.guidance_scale, "seed": s.seed, "shift": s.shift,
            "shift_source": "request" if req.sampling.shift is not None else self.pipeline.shift_source,
            "device": str(self.pipeline.device), "dtype": str(self.pipeline.dtype).replace("torch.", ""),
            "branch": "initial" if req.state is None else "continuation", "segment_index": previous + 1,
            **(extra_metadata or {}),
        }
        state = None
        if req.output.return_state:
            state = encode_latent_state(latents, segment_index=previous + 1, seed=s.seed, width=s.width,
                                        height=s.height, model=self.preset.name)
            if self.blob_store is not None:
                state = externalize_state(state, self.blob_store, self.blob_threshold_bytes, ttl_s=self.blob_ttl_s)
        result = VideoResult(request_id=req.request_id, prompt=req.prompt,
                             frames=frames if req.output.return_frames else None, video_path=video_path,
                             state=state, metadata=metadata, generation_time=elapsed, video_bytes=video_bytes)
        logger.info("request %s done in %.2fs (%dx%d, %d frames, %d steps)", req.request_id, elapsed, s.width,
                    s.height, s.num_frames, s.num_inference_steps)
        return result

    def encode_outputs(self, req: GenerationRequest, s: ResolvedSampling, frames: Any, timings: dict[str, float],
                       need_bytes: bool) -> tuple[bytes | None, str | None]:
        """MP4 bytes (when saved or ``need_bytes``) and the saved path (when ``save_video``)."""
        video_bytes = None
        video_path = None
        if req.output.save_video or need_bytes:
            t0 = time.perf_counter()
            video_bytes = encode_mp4(frames, s.fps)
            timings["encode_s"] = time.perf_counter() - t0
        if req.output.save_video:
            assert video_bytes is not None
            video_path = str(write_mp4_atomic(self._output_file(req), video_bytes))
        return video_bytes, video_path

    def continuation_tail(self, req: GenerationRequest, s: ResolvedSampling) -> tuple[torch.Tensor | None, int]:
        """``(tail latents, previous segment index)`` of a continuation request, ``(None, -1)`` otherwise."""
        return self._continuation(req, s) if req.state is not None else (None, -1)

    def _output_file(self, req: GenerationRequest) -> Path:
        target = Path(req.output.output_path or DEFAULT_OUTPUT_DIR).expanduser()
        if target.suffix.lower() == ".mp4":
            return target
        return target / f"{req.request_id}.mp4"

    async def generate_async(self, request: GenerationRequest | Mapping[str, Any]) -> AsyncIterator[Any]:
        """Yield one progress event per denoising step, then exactly one final event (see module contract)."""
        self._check_open()
        req, resolved = self.resolve(request)
        assert req.request_id is not None
        request_id = req.request_id
        core = self.engine_core()
        listener = AsyncListener(asyncio.get_running_loop(), request_id)
        item = core.submit_resolved(req, resolved, listener=listener, need_bytes=True, force=True)
        finished = False
        try:
            async for event in listener.events():
                finished = isinstance(event, VideoFinalEvent)
                yield event
        finally:
            if not finished:  # closed early or failed: stop it at its next step
                item.request_cancel()
                core.cancel(request_id)

    def shutdown(self) -> None:
        """Stop the engine core (queued direct requests are cancelled), release the models; later calls
        raise :class:`GeneratorClosed`. Safe to call twice."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
            core, self._core = self._core, None
        if core is not None:
            core.stop()
        self.pipeline.close()
        logger.info("VideoGenerator shut down")

    def __enter__(self) -> "VideoGenerator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
