"""``VideoGenerator``: the public Python entry point (what Dynamo and our servers import).

Contract:
- ``from_pretrained(path | GeneratorConfig | mapping, **typed_kwargs)`` / ``from_config(config)``
  load the model once (the built-in tiny model when no path is given). Every config field is
  honoured or refused before any weight is read, with a :class:`~fastvideo.api.ConfigError` naming
  the dotted field and what to do instead (the table: :mod:`fastvideo.runtime.config_support`);
  ``pipeline.components.*_path`` load that component from the given diffusers sub-folder.
  ``from_pretrained`` takes FastVideo's documented keyword arguments (``num_gpus``, ``revision``,
  ``dit_cpu_offload``, ``text_encoder_cpu_offload``, ``vae_cpu_offload``, ``pin_cpu_memory``,
  ``torch_compile_kwargs``, ``use_fsdp_inference``, ``pipeline_config``, ... :
  :mod:`fastvideo.runtime.pretrained_kwargs`) mapped onto their GeneratorConfig fields, which are then
  honoured or refused by name like any field; an unknown keyword is an
  :class:`~fastvideo.runtime.pretrained_kwargs.UnknownKeywordError` (a ConfigError and a TypeError) naming it. A model
  path that is not a local folder is a ModelLoadError; one that looks like a Hugging Face repo id says how
  to download it (``huggingface-cli download ORG/NAME --local-dir DIR``): this engine never downloads.
  ``from_file(path, overrides)`` reads a generator, run or serve YAML/JSON file with dotted overrides.
  ``engine.offload.text_encoder`` / ``vae`` keep those components on the CPU between uses on a CUDA
  engine (:mod:`fastvideo.engine.offload`).
- Families: the model folder's family (:func:`fastvideo.engine.families.family_of_folder`) decides, by registry
  lookup, how the pipeline loads (:func:`fastvideo.engine.models.registry.load_pipeline`) and which batch executor
  runs it (``fastvideo.runtime.worker.EXECUTORS``); config fields the family cannot honour (its
  ``unsupported_config``) are a ConfigError naming them, before any weight is read. LTX-2 (``LTX2Pipeline``
  folders, the built-in ``fastvideo-tiny-ltx2``) makes sound: its results carry ``audio`` (float32
  ``(channels, samples)``) and ``audio_sample_rate``, and its MP4s (saved, ``video_bytes``, the servers' content) an
  AAC track of the video's duration; its continuation state is an ``ltx2.v1`` one (the trailing frames condition the
  next segment, :mod:`fastvideo.runtime.ltx2_executor`); it serves no LoRA adapters.
- ``generate(request | mapping, on_step=None) -> VideoResult`` (a list of them, ``prompt_index`` 0, 1, ...,
  for a list ``prompt`` or an ``inputs.prompt_path`` file, run one after another): validates (``RequestError`` naming
  the field), then runs the request through the generator's engine core (:meth:`engine_core`: the
  scheduler + batch executor + dispatcher that ``VideoService`` and the GPU pool run too; here with
  batches of one, requests served in arrival order, callers waiting in line instead of being refused),
  and returns frames / MP4 path / continuation state / metadata (timings per stage,
  ``inference_time_s``, resolved sampling, ``batch_size``, ``queue_s``; ``shift`` is the effective
  shift and ``shift_source`` where it came from: ``request``, else ``model_folder`` (its scheduler
  config), else ``preset``; ``sampler`` the sampler that ran, with ``dmd_denoising_steps`` for ``"dmd"``). The
  MP4 is written atomically: nothing half-written is ever left at
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
- Results carry FastVideo's fields too (``samples``: a uint8 tensor view of the frames, ``size``,
  ``peak_memory_mb``: :meth:`VideoGenerator.peak_memory_mb`), and ``metadata`` has ``generation_time``,
  ``peak_memory_mb`` and ``video_path`` besides the keys the Dynamo worker reads (``inference_time_s``, ``fps``).
- ``generate_video(prompt, **sampling_kwargs)``: FastVideo's legacy call (DeprecationWarning; legacy dict).
  ``generate_async`` also fans a list prompt out (each prompt's events end with its own final event).
  FastVideo's ``log_queue`` arguments accept None only.
- LoRA (FastVideo's names): ``set_lora_adapter(lora_nickname, lora_path=None, strength=1.0)`` registers an
  adapter by nickname and merges it into the DiT (unmerging the previous one), ``merge_lora_weights()`` /
  ``unmerge_lora_weights()`` merge it again / restore the original weights bit-exactly;
  ``pipeline.components.lora_path`` (+ ``lora_nickname``, ``lora_strength``; ``from_pretrained(lora_path=...)``)
  sets one at load. Changes wait until the generator's engine core is idle and hold new direct requests back
  meanwhile; weights change in place, so captured CUDA graphs stay valid. A request's ``extensions.lora``
  must name the merged adapter (RequestError otherwise). See :mod:`fastvideo.runtime.lora_adapters`.
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
- ``default_health_check_request()``: 256x256, 8 frames, 1 step, nothing saved; ``warmup_request()`` adds
  ``probe_inputs()``, the grey image an image-to-video model needs.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import threading
import time
import uuid
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from fastvideo.api.presets import check_local_model_path
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
    apply_overrides,
    load_raw_config,
    parse_cli_overrides,
    parse_config,
)
from fastvideo.engine.families import ModelFamily, declares_two_experts, family_of_folder
from fastvideo.engine.loader import inspect_model_folder
from fastvideo.engine.models.registry import load_pipeline
from fastvideo.engine.models.wan.pipeline import (
    is_builtin_name,
    model_dtype,
    model_path_or_default,
    overlap_video_frames,
)
from fastvideo.engine.validation import ResolvedSampling, resolve_sampling, with_overlap
from fastvideo.envs import read_env
from fastvideo.runtime.config_support import COMPONENT_PATHS, check_generator_config, check_model_config
from fastvideo.runtime.counters import RuntimeCounters
from fastvideo.runtime.cuda_graphs import GraphBucket, GraphConfig
from fastvideo.runtime.dispatcher import AsyncListener, SyncListener
from fastvideo.runtime.lora_adapters import LoraAdapters, fuse_at_load, requested_adapter
from fastvideo.runtime.media import encode_mp4, write_mp4_atomic
from fastvideo.runtime.pretrained_kwargs import apply_kwargs, refuse_log_queue
from fastvideo.runtime.state_blobs import externalize_state, has_blob_refs, internalize_state
from fastvideo.engine.state_codec import decode_latent_state, encode_latent_state

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = "outputs"

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


def _transformer_quant(config: GeneratorConfig) -> str | None:
    """``engine.quantization.transformer_quant`` (None when quantization is unset)."""
    quant = config.engine.quantization
    return None if quant is None else quant.transformer_quant


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


def _config_value(config: GeneratorConfig, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _check_family_config(config: GeneratorConfig, family: ModelFamily) -> None:
    """Refuse, naming the field, a config value the loaded folder's family cannot honour (its
    ``unsupported_config``: any value but the default), before any weight is read."""
    default = GeneratorConfig()
    for path, why in family.unsupported_config.items():
        if _config_value(config, path) != _config_value(default, path):
            raise ConfigError(path, f"{why} (model family {family.name!r})")


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


def _legacy_output_file(output_path: str, prompt: str) -> Path:
    """FastVideo's output rule: a ``.mp4`` path is the file; otherwise a folder holding ``<prompt>.mp4`` (the
    first 100 characters, without ``\\/:*?"<>|``; ``_1``, ``_2`` ... appended when the file exists)."""
    target = Path(output_path).expanduser()
    if target.suffix.lower() == ".mp4":
        return target
    stem = re.sub(r'[\\/:*?"<>|]', "", prompt[:100]).strip().strip(".").strip() or "output"
    candidate = target / f"{stem}.mp4"
    counter = 1
    while candidate.exists():
        candidate = target / f"{stem}_{counter}.mp4"
        counter += 1
    return candidate


def _samples_view(frames: Any) -> torch.Tensor | None:
    """FastVideo's ``samples``: the frames ``(T, H, W, 3)`` uint8 as a ``(1, 3, T, H, W)`` tensor view (no copy)."""
    if frames is None:
        return None
    return torch.from_numpy(frames).permute(3, 0, 1, 2).unsqueeze(0)


class GeneratorClosed(FastVideoError, RuntimeError):
    """The VideoGenerator was shut down."""


class VideoGenerator:
    """Load a model once; generate videos from typed requests (see module contract)."""

    def __init__(self, config: GeneratorConfig, pipeline: Any, model_path: Path,
                 counters: RuntimeCounters | None = None, family: ModelFamily | None = None) -> None:
        self.config = config
        #: The family's served pipeline (Wan: WanT2VPipeline; LTX-2: LTX2ServedPipeline).
        self.pipeline = pipeline
        #: The model folder's family (None: Wan, for generators built around a pipeline by hand).
        self.family = family
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
        #: LoRA adapters registered by nickname, the merged one (:mod:`fastvideo.runtime.lora_adapters`).
        self.lora = LoraAdapters(self)

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
        data = apply_kwargs({"model_path": str(model_path) if model_path is not None else None}, kwargs)
        return cls.from_config(parse_config(GeneratorConfig, data))

    @classmethod
    def from_config(cls, config: GeneratorConfig | Mapping[str, Any], *, log_queue: Any = None) -> "VideoGenerator":
        """Build the generator a typed config describes (``log_queue``: FastVideo's; only None is accepted)."""
        refuse_log_queue(log_queue)
        config = parse_config(GeneratorConfig, config)
        env = read_env()
        device = _resolve_device(config.engine.device)
        check_generator_config(config, device_type=device.type)  # every field honoured or refused, by name
        if config.engine.num_gpus > 1:  # one generator over N devices: N sequence-parallel rank processes
            from fastvideo.runtime.sp_group import SequenceParallelGenerator

            return SequenceParallelGenerator.launch(config)  # type: ignore[return-value]  # same public surface
        if config.engine.cuda_graphs.enabled and device.type != "cuda":
            raise ConfigError("engine.cuda_graphs.enabled", f"CUDA graphs need a CUDA device and this engine runs on "
                                                             f"{device}: set engine.device to cuda, or turn them off")
        dtype = model_dtype(config.engine.dtype, device)
        if config.model_path and not is_builtin_name(config.model_path):  # a Hugging Face repo id is refused
            check_local_model_path(config.model_path)  # with how to download it; we never download
        path = model_path_or_default(config.model_path, env.cache_dir)
        folder = inspect_model_folder(path, overrides=_component_overrides(config), variant=config.pipeline.variant)
        family = family_of_folder(folder)  # the registry entry that decides how it loads and runs
        _check_family_config(config, family)
        two_experts = declares_two_experts(folder.model_index)
        check_model_config(config, device_type=device.type, two_experts=two_experts)
        backend = config.engine.attention_backend or env.attention_backend
        vae_dtype = model_dtype(str(config.pipeline.experimental.get("vae_dtype", "fp32")), device)
        pipeline = load_pipeline(family, folder, device=device, dtype=dtype, vae_dtype=vae_dtype,
                                 attention_backend=backend, preset_name=config.pipeline.preset,
                                 ops_backend=config.engine.ops_backend or env.ops_backend,
                                 offload_text_encoder=config.engine.offload.text_encoder,
                                 offload_vae=config.engine.offload.vae,
                                 pin_cpu_memory=config.engine.offload.pin_cpu_memory,
                                 transformer_quant=_transformer_quant(config),
                                 offload_experts=two_experts and config.engine.offload.dit,
                                 offload_dit_layerwise=config.engine.offload.dit_layerwise)
        counters = RuntimeCounters()
        counters.add("model_loads")
        components = config.pipeline.components
        fused = fuse_at_load(pipeline, components)  # before any artifact takes the DiT over
        loaded = None
        if config.engine.artifacts_path:  # refuses artifacts built for other weights/shapes/environments
            from fastvideo.build.artifact_modules import apply_artifacts
            from fastvideo.build.loading import load_artifacts

            from fastvideo.engine.lora import lora_manifest_value

            quantization = pipeline.quantization.manifest_value() if pipeline.quantization else None
            lora = None if fused is None else lora_manifest_value(fused.adapter.path, fused.strength)
            loaded = load_artifacts(config.engine.artifacts_path, model_folder=folder.root, device=device, dtype=dtype,
                                    vae_dtype=vae_dtype, quantization=quantization, lora=lora)
            apply_artifacts(pipeline, loaded)
        compile_cfg = config.engine.compile
        if compile_cfg.enabled and loaded is None:
            for dit in (pipeline.dit, pipeline.dit_2) if pipeline.dit_2 is not None else (pipeline.dit,):
                dit.compile(backend=compile_cfg.backend, mode=compile_cfg.mode, fullgraph=compile_cfg.fullgraph,
                            dynamic=compile_cfg.dynamic)
            counters.add("compiles")
        generator = cls(config, pipeline, path, counters, family=family)
        generator.artifacts = loaded
        try:
            generator._graphs = _graph_config(config.engine.cuda_graphs, generator)
            if fused is not None:
                generator.lora.adopt(components.lora_nickname, fused)
        except ConfigError:
            generator.shutdown()
            raise
        return generator

    @classmethod
    def from_file(cls, path: str | Path,
                  overrides: Sequence[str] | Mapping[str, Any] | None = None) -> "VideoGenerator":
        """Build from a YAML/JSON file: a GeneratorConfig document, or a run/serve document with a top-level
        ``generator`` mapping. ``overrides`` are dotted (``["--engine.device", "cpu"]`` or
        ``{"engine.device": "cpu"}``); for a run/serve file they are rooted at the file
        (``generator.engine.device``), for a generator file a leading ``generator.`` is accepted."""
        raw = load_raw_config(path)
        if isinstance(overrides, Mapping):
            dotted = dict(overrides)
        else:
            dotted = parse_cli_overrides(list(overrides or []))
        if isinstance(raw.get("generator"), Mapping):
            raw = apply_overrides(raw, dotted)
            try:
                config = parse_config(GeneratorConfig, raw["generator"])
            except ConfigError as exc:  # the path as the file has it
                raise ConfigError(f"generator.{exc.path}" if exc.path else "generator", exc.message) from None
            return cls.from_config(config)
        if dotted and all(key.startswith("generator.") for key in dotted):
            dotted = {key[len("generator."):]: value for key, value in dotted.items()}
        return cls.from_config(parse_config(GeneratorConfig, apply_overrides(raw, dotted)))

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
        """Segment branches this generator can run: both, or what its compiled artifacts were built for; an
        image-to-video model, or a family without continuation (LTX-2), runs the initial branch only."""
        if self.preset.workload != "t2v" or (self.family is not None and not self.family.continuation):
            return ("initial",)
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

    def probe_inputs(self) -> InputConfig:
        """The inputs a probe request (warmup, a server's default-request check) needs for this model: none for
        text-to-video, a mid-grey image (``inputs.pil_image``; and ``inputs.last_image`` for first-last-frame)
        for image-to-video."""
        if self.preset.workload == "t2v":
            return InputConfig()
        from PIL import Image

        grey = Image.new("RGB", (256, 256), (128, 128, 128))
        return InputConfig(pil_image=grey, last_image=grey if self.preset.workload == "flf2v" else None)

    def warmup_request(self) -> GenerationRequest:
        """What warmup runs by default: the health-check request, or, when compiled artifacts serve the DiT,
        the same probe at the smallest size they are built for (the health-check size may not be), with the fewest
        steps it accepts (1, 2, else the preset's); a model that
        refuses the health-check probe (LTX-2: 32-multiples, k*8+1 frames, 2+ steps) runs it at its preset's size
        with the fewest steps it accepts (1, 2, else the preset's)."""
        probe = replace(self.default_health_check_request(), inputs=self.probe_inputs())
        served = None if self.artifacts is None else self.artifacts.smallest_served()
        if served is None:
            preset = self.preset
            candidates = [probe] + [replace(probe, sampling=replace(
                probe.sampling, width=preset.width, height=preset.height, num_frames=preset.num_frames,
                fps=preset.fps, num_inference_steps=steps)) for steps in (1, 2, preset.num_inference_steps)]
            for candidate in candidates:
                try:
                    self.resolve(candidate)
                except RequestError:
                    continue
                return candidate
            return probe  # refused at every size: warmup reports the health-check probe's refusal
        profile, cfg = served
        at_profile = replace(probe, sampling=replace(probe.sampling, width=profile.width, height=profile.height,
                                                     num_frames=profile.frames, guidance_scale=5.0 if cfg else 1.0))
        for steps in (1, 2, self.preset.num_inference_steps):  # LTX-2's schedule needs 2+ steps (as above)
            candidate = replace(at_profile, sampling=replace(at_profile.sampling, num_inference_steps=steps))
            try:
                self.resolve(candidate)
            except RequestError:
                continue
            return candidate
        return at_profile

    def resolve(self, request: GenerationRequest | Mapping[str, Any]) -> tuple[GenerationRequest, ResolvedSampling]:
        """Parse and validate a request against the loaded model (raises RequestError / ConfigError)."""
        req = parse_config(GenerationRequest, request)
        if req.request_id is None:
            req = replace(req, request_id=f"video_{uuid.uuid4().hex[:24]}")
        if req.inputs.video_path:  # images: checked against the model's workload by resolve_sampling
            raise RequestError("inputs.video_path", f"model {self.preset.name!r}: video conditioning is not "
                                                    "supported, drop the input")
        interval = req.output.preview_interval_steps
        if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int) or interval < 1):
            raise RequestError("output.preview_interval_steps", f"{interval!r} must be an integer >= 1 (a preview "
                                                                "every that many steps), or null for none")
        if "lora" in req.extensions:  # checked against the merged adapter, then dropped (nothing else reads it)
            req = replace(req, extensions=self.lora.check_request(req.extensions))
        if req.state is not None and has_blob_refs(req.state):
            try:
                req = replace(req, state=internalize_state(req.state, self.blob_store))
            except ValueError as exc:
                raise RequestError("state", str(exc)) from exc
        executor = self.executor_class()
        resolver = getattr(executor, "resolve_sampling", None)  # a family's own rules (and state)
        if resolver is not None:
            resolved = resolver(self, req)
        else:
            resolved = resolve_sampling(req, self.preset)
            if req.state is not None:
                tail, _ = self._continuation(req, resolved)
                resolved = with_overlap(resolved, overlap_video_frames(tail.shape[2]))
        if self.artifacts is not None:  # a shape no compiled program covers is a RequestError, before any compute
            branch_field = getattr(executor, "artifact_branch_field", None)  # the family's rule; default: a state
            field = branch_field(req, resolved) if branch_field is not None else (
                "state" if req.state is not None else None)
            self.artifacts.check_request(resolved, continuation=field is not None, branch_field=field or "state")
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

    def executor_class(self) -> Any:
        """The batch executor class that runs this generator's family (``fastvideo.runtime.worker.EXECUTORS``); it
        may define ``resolve_sampling(generator, request)``, the family's request rules (LTX-2's does), and
        ``artifact_branch_field(request, resolved)``: the request field that makes it run the built artifacts'
        continuation branch, or None for the initial branch (default: ``state`` when the request has one)."""
        from fastvideo.runtime.worker import executor_class

        return executor_class(self)

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
                 on_step: Callable[[int, int], None] | None = None, log_queue: Any = None) -> Any:
        """Generate one video synchronously through the engine core (see module contract); ``on_step(step,
        total)`` is called after every denoising step. A list ``prompt`` or an ``inputs.prompt_path`` file
        gives a list of results, one per prompt in order (``prompt_index`` 0, 1, ...)."""
        self._check_open()
        refuse_log_queue(log_queue)
        fanned = self._fan_out(parse_config(GenerationRequest, request))
        if fanned is not None:
            results = []
            for index, sub in enumerate(fanned):
                result = self._generate_one(sub, on_step)
                result.prompt_index = index
                results.append(result)
            return results
        return self._generate_one(request, on_step)

    @staticmethod
    def _fan_out(req: GenerationRequest) -> list[GenerationRequest] | None:
        """One request per prompt of a list ``prompt`` / ``inputs.prompt_path`` file; None for a single prompt."""
        prompt_path = getattr(req.inputs, "prompt_path", None)
        if isinstance(req.prompt, list):
            if prompt_path is not None:
                raise RequestError("inputs.prompt_path", "cannot be combined with a list prompt; use one of them")
            prompts = list(req.prompt)
        elif prompt_path is not None:
            if req.prompt:
                raise RequestError("inputs.prompt_path", "cannot be combined with prompt; use one of them")
            path = Path(prompt_path).expanduser()
            if path.suffix != ".txt" or not path.is_file():
                raise RequestError("inputs.prompt_path", f"{prompt_path} must be an existing .txt file with one "
                                                         "prompt per line")
            prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if not prompts:
                raise RequestError("inputs.prompt_path", f"{prompt_path} holds no prompt")
        else:
            return None
        if not prompts:
            raise RequestError("prompt", "an empty list of prompts; give at least one")
        subs = []
        target = req.output.output_path
        for index, prompt in enumerate(prompts):
            rid = None if req.request_id is None else f"{req.request_id}_{index}"
            output = req.output
            if target and Path(target).suffix.lower() == ".mp4" and len(prompts) > 1:  # one file per prompt
                output = replace(output, output_path=str(Path(target).with_name(f"{Path(target).stem}_{index}.mp4")))
            subs.append(replace(req, prompt=prompt, request_id=rid, output=output,
                                inputs=replace(req.inputs, prompt_path=None)))
        return subs

    def _generate_one(self, request: GenerationRequest | Mapping[str, Any],
                      on_step: Callable[[int, int], None] | None) -> VideoResult:
        wanted = requested_adapter(request)
        req, resolved = self.resolve(request)
        core = self.engine_core()
        listener = SyncListener()
        if on_step is not None:
            listener.on_step_cb = lambda item, step, total: on_step(step, total)
        self.lora.submit(lambda: core.submit_resolved(req, resolved, listener=listener, need_bytes=False,
                                                      force=True), wanted)
        return listener.wait()

    def build_result(self, req: GenerationRequest, s: ResolvedSampling, frames: Any, latents: torch.Tensor,
                     timings: dict[str, float], *, start: float, previous: int, video_bytes: bytes | None,
                     video_path: str | None, extra_metadata: Mapping[str, Any] | None = None,
                     audio: Any = None, audio_sample_rate: int | None = None,
                     state: Any = None) -> VideoResult:
        """The VideoResult of a finished generation (runtime-internal; the scheduler's executor uses it too);
        ``audio`` (float32 ``(channels, samples)``) and its ``audio_sample_rate`` for families that make sound;
        ``state``: the family's own continuation state (LTX-2's ``ltx2.v1``) returned instead of Wan's latent tail
        when ``output.return_state``."""
        assert req.request_id is not None
        elapsed = time.perf_counter() - start
        peak = self.peak_memory_mb()
        metadata = {
            "request_id": req.request_id, "model": self.preset.name, "timings": timings,
            "inference_time_s": elapsed, "width": s.width, "height": s.height, "num_frames": s.num_frames,
            "generated_frames": s.generated_frames, "fps": s.fps, "num_inference_steps": s.num_inference_steps,
            "guidance_scale": s.guidance_scale, "seed": s.seed, "shift": s.shift,
            "shift_source": "request" if req.sampling.shift is not None else self.pipeline.shift_source,
            "sampler": s.sampler or self.pipeline.sampler_config.kind,
            **({"dmd_denoising_steps": list(s.dmd_timesteps)} if s.dmd_timesteps is not None else {}),
            **({"boundary_ratio": s.boundary_ratio, "guidance_scale_2": s.guidance_scale_2}
               if s.boundary_ratio is not None else {}),
            "device": str(self.pipeline.device), "dtype": str(self.pipeline.dtype).replace("torch.", ""),
            "branch": "initial" if req.state is None else "continuation", "segment_index": previous + 1,
            "generation_time": elapsed, "peak_memory_mb": peak, "video_path": video_path,
            **(extra_metadata or {}),
        }
        if not req.output.return_state:
            state = None
        elif state is None:
            state = encode_latent_state(latents, segment_index=previous + 1, seed=s.seed, width=s.width,
                                        height=s.height, model=self.preset.name)
            if self.blob_store is not None:
                state = externalize_state(state, self.blob_store, self.blob_threshold_bytes, ttl_s=self.blob_ttl_s)
        returned = frames if req.output.return_frames else None
        prompt = req.prompt if isinstance(req.prompt, str) else None  # resolve() runs one prompt per request
        result = VideoResult(request_id=req.request_id, prompt=prompt, frames=returned,
                             samples=_samples_view(returned), size=(s.height, s.width, s.num_frames),
                             video_path=video_path, peak_memory_mb=peak, state=state, metadata=metadata,
                             generation_time=elapsed, video_bytes=video_bytes, audio=audio,
                             audio_sample_rate=audio_sample_rate if audio is not None else None)
        logger.info("request %s done in %.2fs (%dx%d, %d frames, %d steps)", req.request_id, elapsed, s.width,
                    s.height, s.num_frames, s.num_inference_steps)
        return result

    def peak_memory_mb(self) -> float | None:
        """Peak CUDA memory allocated on the engine's device by this process so far (MiB,
        ``torch.cuda.max_memory_allocated``; never reset, so it covers this request and earlier ones); None on a
        CPU engine (no device allocator to ask; the process RSS would mostly be the weights and Python)."""
        device = self.pipeline.device
        if device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(device) / 2**20

    def encode_outputs(self, req: GenerationRequest, s: ResolvedSampling, frames: Any, timings: dict[str, float],
                       need_bytes: bool, *, audio: Any = None,
                       audio_sample_rate: int | None = None) -> tuple[bytes | None, str | None]:
        """MP4 bytes (when saved or ``need_bytes``) and the saved path (when ``save_video``); with ``audio`` (a
        waveform at ``audio_sample_rate``) the MP4 carries it as an AAC track of the video's duration."""
        video_bytes = None
        video_path = None
        if req.output.save_video or need_bytes:
            t0 = time.perf_counter()
            video_bytes = encode_mp4(frames, s.fps, audio=audio, audio_sample_rate=audio_sample_rate)
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

    async def generate_async(self, request: GenerationRequest | Mapping[str, Any], *,
                             log_queue: Any = None) -> AsyncIterator[Any]:
        """Yield one progress event per denoising step, then exactly one final event (see module contract);
        a list ``prompt`` / ``inputs.prompt_path`` runs its prompts in order, each ending with its own final
        event (``result.prompt_index`` 0, 1, ...)."""
        self._check_open()
        refuse_log_queue(log_queue)
        req = parse_config(GenerationRequest, request)
        fanned = self._fan_out(req)
        for index, sub in enumerate(fanned if fanned is not None else [req]):
            events = self._generate_one_async(sub)
            try:
                async for event in events:
                    if fanned is not None and isinstance(event, VideoFinalEvent) and event.result is not None:
                        event.result.prompt_index = index
                    yield event
            finally:
                await events.aclose()  # closed early: the running prompt is cancelled at its next step

    async def _generate_one_async(self, request: GenerationRequest) -> AsyncGenerator[Any, None]:
        wanted = requested_adapter(request)
        req, resolved = self.resolve(request)
        assert req.request_id is not None
        request_id = req.request_id
        core = self.engine_core()
        listener = AsyncListener(asyncio.get_running_loop(), request_id)
        item = None
        while item is None:  # never block the event loop on an adapter change: poll the gate
            with self.lora.gate(wait=False) as open_:
                if open_:
                    self.lora.check_name(wanted)
                    item = core.submit_resolved(req, resolved, listener=listener, need_bytes=True, force=True)
            if item is None:
                await asyncio.sleep(0.01)
        finished = False
        try:
            async for event in listener.events():
                finished = isinstance(event, VideoFinalEvent)
                yield event
        finally:
            if not finished:  # closed early or failed: stop it at its next step
                item.request_cancel()
                core.cancel(request_id)

    def generate_video(self, prompt: str | None = None, sampling_param: Any = None, mouse_cond: Any = None,
                       keyboard_cond: Any = None, grid_sizes: Any = None, **kwargs: Any) -> Any:
        """FastVideo's legacy entry point (deprecated; emits a DeprecationWarning): ``kwargs`` are
        :class:`fastvideo.SamplingParam` fields (``neg_prompt`` too; others are a ConfigValidationError naming
        them). Returns FastVideo's legacy dict (``prompts``, ``samples``, ``frames``, ``size``,
        ``generation_time``, ``e2e_latency``, ``video_path``, ``peak_memory_mb``, ...), or a list of them with
        ``prompt_index``/``prompt`` for a ``prompt_path`` file or a list prompt. As in FastVideo, without a
        ``sampling_param`` the video is saved (``save_video`` true) under ``output_path`` (default
        ``outputs/``): a ``.mp4`` path is the file, anything else a folder where the file is named after the
        prompt (``_1``, ``_2`` ... when taken)."""
        warnings.warn("VideoGenerator.generate_video(...) is deprecated; use VideoGenerator.generate(request=...) "
                      "instead.", DeprecationWarning, stacklevel=2)
        from fastvideo.api.sampling_param import SamplingParam

        param = copy.deepcopy(sampling_param) if sampling_param is not None else SamplingParam()
        updates: dict[str, Any] = {}
        if sampling_param is None:
            updates.update(save_video=True, output_path="outputs/")
        conditioning = {"mouse_cond": mouse_cond, "keyboard_cond": keyboard_cond, "grid_sizes": grid_sizes}
        updates.update({k: v for k, v in conditioning.items() if v is not None})
        if prompt is not None:
            updates["prompt"] = prompt
        updates.update(kwargs)
        param.update(updates)
        req = param.to_request()
        if req.output.output_path is None:
            req = replace(req, output=replace(req.output, output_path="outputs/"))
        fanned = self._fan_out(req)
        subs = fanned if fanned is not None else [req]
        dicts = []
        for index, sub in enumerate(subs):
            if sub.output.save_video:
                target = _legacy_output_file(str(sub.output.output_path), str(sub.prompt))
                sub = replace(sub, output=replace(sub.output, output_path=str(target)))
            result = self._generate_one(sub, None)
            if fanned is not None:
                result.prompt_index = index
            legacy = result.to_legacy_dict()
            legacy.update(e2e_latency=result.generation_time, ltx2_audio_latents=None)
            dicts.append(legacy)
        return dicts if fanned is not None else dicts[0]

    # FastVideo's LoRA methods (fastvideo.runtime.lora_adapters).
    def set_lora_adapter(self, lora_nickname: str, lora_path: str | None = None, strength: float = 1.0,
                         accumulate: bool = False) -> None:
        """Register ``lora_path`` as ``lora_nickname`` (a registered nickname needs no path) and merge it into the
        DiT at ``strength``, unmerging the previous adapter; waits until running requests are done. A bad file is
        a ConfigError on ``lora_path``; ``accumulate=True`` (stacking adapters) is refused, and so is any adapter on
        a family without LoRA support (LTX-2)."""
        self._check_open()
        if self.family is not None and not self.family.lora:
            raise ConfigError("lora_path", f"LoRA adapters are not supported for model family {self.family.name!r} "
                                           "yet")
        self.lora.set_adapter(lora_nickname, lora_path, strength, accumulate=accumulate)

    def merge_lora_weights(self) -> None:
        """Merge the current adapter again after :meth:`unmerge_lora_weights` (nothing if it is merged)."""
        self._check_open()
        self.lora.merge()

    def unmerge_lora_weights(self) -> None:
        """Restore the DiT's original weights bit-exactly (nothing if no adapter is merged)."""
        self._check_open()
        self.lora.unmerge()

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
