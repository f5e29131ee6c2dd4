"""Typed generator configuration: what model to load and how to run it.

Contract: these dataclasses are the only way configuration reaches the runtime; they are plain,
mutable (integrators assign fields after construction), JSON round-trippable through
:func:`fastvideo.api.config_to_dict` / :func:`fastvideo.api.parse_config`, and import nothing
heavy. Field names integrators write (Dynamo, OpenAI server) are stable. Every field is either
honoured by ``VideoGenerator.from_config`` or refused there with a
:class:`~fastvideo.api.ConfigError` naming its dotted path (e.g. ``pipeline.components.lora_path``)
and what to do instead: before any weight is read, except the few checks that need the loaded model
(``engine.cuda_graphs.sizes``, an unusable ``engine.attention_backend``, artifacts that do not match);
nothing is ignored silently or merely logged. Defaults are always accepted.
The per-field table is :data:`fastvideo.runtime.config_support.FIELD_SUPPORT`; the comments below
say the same for each field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DType = Literal["auto", "bf16", "fp16", "fp32"]
#: FastVideo's fixed workload list (``pipeline.workload_type``); only ``t2v`` runs here, the others are refused.
WorkloadType = Literal["t2v", "i2v", "t2i", "i2i", "v2a", "t2a"]
WORKLOAD_TYPES: tuple[str, ...] = ("t2v", "i2v", "t2i", "i2i", "v2a", "t2a")


@dataclass
class ParallelismConfig:
    """Multi-GPU parallelism degrees (FastVideo's fields and defaults; -1 is "auto"). Sequence parallelism spans
    all of ``engine.num_gpus``: ``sp_size`` -1 (auto) or equal to ``num_gpus`` is honoured, other degrees are
    refused (no data parallelism x SP inside one generator). Tensor parallelism and HSDP are not supported yet."""

    #: Tensor parallelism: 1 or -1 (auto: 1) honoured; others refused.
    tp_size: int = -1
    #: Ulysses sequence parallelism over the DiT tokens: -1 (auto: ``engine.num_gpus``) or ``engine.num_gpus``.
    sp_size: int = -1
    #: HSDP replica groups: 1 honoured (one device); others refused.
    hsdp_replicate_dim: int = 1
    #: HSDP shard degree: -1 (auto) or 1 honoured; others refused.
    hsdp_shard_dim: int = -1
    #: Seconds a sequence-parallel collective waits before the rank fails (``num_gpus`` > 1; None: 300). With one
    #: device no process group exists and any value is accepted.
    dist_timeout: int | None = None


@dataclass
class OffloadConfig:
    """Which components live on the CPU between uses.

    On a CUDA engine: ``text_encoder`` and ``vae`` visit the device for each use; ``dit`` keeps one expert of a
    two-expert model resident (refused for one-expert models); ``dit_layerwise`` keeps the DiT's blocks on the CPU
    and streams them through a small device window each step. On a CPU engine every component already lives on
    the CPU, so they are honoured as they are. ``fastvideo.runtime.config_support`` lists the refusals.
    """

    dit: bool = False
    #: The DiT's blocks (both experts' for Wan2.2 A14B) on the CPU, copied to the device block by block, the next
    #: block's copy overlapping the current one's compute; the embeddings and head stay resident. Refused with
    #: ``dit``, ``engine.compile.enabled``, ``engine.cuda_graphs.enabled`` and ``engine.artifacts_path``.
    dit_layerwise: bool = False
    text_encoder: bool = False
    #: Honoured either way: a text-to-video model has no image encoder to place.
    image_encoder: bool = False
    vae: bool = False
    #: Pin the CPU copies of components offloaded from a CUDA device, so their copies to it are asynchronous
    #: (FastVideo's default is true).
    pin_cpu_memory: bool = True
    #: FastVideo: load modules lazily (None: auto on unified-memory devices). None and false honoured (every
    #: component loads when the generator is built); true refused (not supported yet).
    lazy_module_load: bool | None = None


@dataclass
class CompileConfig:
    """torch.compile settings for the DiT (mutable: callers assign fields after construction).

    FastVideo writes ``backend``/``fullgraph`` as null for "torch's default": null is read as ``"inductor"`` /
    ``false``, which is what torch.compile uses. ``extras`` and ``dit_kwargs`` (more torch.compile keyword
    arguments) and compiling the text encoder / VAE / audio VAE are accepted by the parser and refused when
    set (not supported yet).
    """

    enabled: bool = False
    backend: str | None = "inductor"
    fullgraph: bool | None = False
    mode: str | None = None
    dynamic: bool | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    text_encoder_enabled: bool | None = None
    vae_enabled: bool | None = None
    audio_vae_enabled: bool | None = None
    dit_kwargs: dict[str, Any] = field(default_factory=dict)
    text_encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    vae_kwargs: dict[str, Any] = field(default_factory=dict)
    audio_vae_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend is None:
            self.backend = "inductor"
        if self.fullgraph is None:
            self.fullgraph = False


@dataclass
class QuantizationConfig:
    """Weight quantization of the text encoder and transformer (``None`` or e.g. ``"FP8"``). ``transformer_quant``
    ``"FP8"`` (e4m3 DiT weights, per-row scales; ``"FP8_PER_TENSOR"``) is honoured; any other scheme, and any
    ``text_encoder_quant``, is refused (weights stay in ``engine.dtype``)."""

    text_encoder_quant: str | None = None
    transformer_quant: str | None = None


@dataclass
class CudaGraphsConfig:
    """DiT-step CUDA graphs, captured when the engine core starts for the declared sizes (every served
    branch, each batch size, with and/or without CFG); any other shape runs eagerly. CUDA devices only."""

    enabled: bool = False
    #: Sizes to capture, ``"WIDTHxHEIGHTxFRAMES"`` (e.g. ``"832x480x81"``); empty: the model preset's default.
    sizes: list[str] = field(default_factory=list)
    #: Requests per batched DiT forward to capture (with ``queue.max_batch`` > 1, list the sizes you batch).
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    #: Capture the CFG forward (two rows per request), the guidance-free one, or both.
    cfg: Literal["on", "off", "both"] = "on"


@dataclass
class EngineConfig:
    """How the engine runs: devices, precision, attention backend, compile, offload, artifacts."""

    #: Devices of one generator. 1: one device (pick it with ``device``). N > 1: one sequence-parallel generator
    #: over N GPUs from ``device`` (``cuda`` is cuda:0..N-1; on the CPU N gloo ranks, for tests): N processes, each
    #: running every request on its shard of the DiT tokens, rank 0 returning the result. For throughput rather
    #: than latency: one generator per GPU behind a GpuPool, or ``fastvideo serve`` replicas behind a router.
    num_gpus: int = 1
    #: FastVideo's worker launcher: "mp" (the default) is honoured (this engine runs in-process, or one process
    #: per device behind a pool); "ray" is refused (not supported yet).
    execution_backend: Literal["mp", "ray"] = "mp"
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    #: torch.compile of the DiT; refused together with ``artifacts_path`` (its programs serve the DiT).
    compile: CompileConfig = field(default_factory=CompileConfig)
    #: FastVideo's per-stage input/output checks. Accepted either way: this engine validates every request
    #: before it runs (RequestError) and its stages are fixed, so there is nothing more to verify or skip.
    enable_stage_verification: bool = True
    #: Only false is honoured (FSDP is not supported yet: weights load whole on ``device``).
    use_fsdp_inference: bool = False
    #: Honoured either way: the engine never uses torch.autocast (each component runs in its dtype).
    disable_autocast: bool = False
    quantization: QuantizationConfig | None = None
    #: "auto" picks cuda when available, else cpu; or an explicit torch device string.
    device: str = "auto"
    #: "auto" is bf16 on GPU and fp32 on CPU.
    dtype: DType = "auto"
    #: Attention backend name (sdpa, triton, flash_attn); None reads FASTVIDEO_ATTENTION_BACKEND, then sdpa.
    attention_backend: str | None = None
    #: Fused DiT ops (norms, AdaLN modulation, RoPE, gated residual): "triton" or "torch" (their
    #: references); None reads FASTVIDEO_OPS_BACKEND, else the model's own eager code.
    ops_backend: str | None = None
    #: Folder of built artifacts (``fastvideo-build --out``) to load instead of eager models.
    artifacts_path: str | None = None
    #: DiT-step CUDA graphs (see :class:`CudaGraphsConfig`).
    cuda_graphs: CudaGraphsConfig = field(default_factory=CudaGraphsConfig)


@dataclass
class ComponentConfig:
    """Per-component weight overrides: a ``*_path`` is a folder in the layout of the model folder's
    sub-folder of that name (``config.json`` + safetensors, or tokenizer files); that component loads
    from there instead of ``<model_path>/<sub>``, which then need not exist."""

    #: Refused together with ``engine.artifacts_path`` (artifacts are checked against the model folder).
    transformer_path: str | None = None
    #: Refused together with ``engine.artifacts_path``, like ``transformer_path``.
    vae_path: str | None = None
    text_encoder_path: str | None = None
    tokenizer_path: str | None = None
    #: Refused when set: this engine has no upsampler (super-resolution) stage.
    upsampler_weights: str | None = None
    #: A LoRA ``.safetensors`` file (or a folder holding one) merged into the DiT at load, registered as
    #: ``lora_nickname`` at ``lora_strength`` (``VideoGenerator.set_lora_adapter`` changes it later).
    lora_path: str | None = None
    #: FastVideo's fields below are accepted by the parser; a value other than the default is refused (not
    #: supported yet), and the refusal names the field of this engine that does the job where there is one
    #: (``*_weights`` -> ``*_path`` folders).
    config_root: str | None = None
    pipeline_config_path: str | None = None
    text_encoder_weights: str | None = None
    transformer_weights: str | None = None
    transformer_2_weights: str | None = None
    vae_weights: str | None = None
    lora_nickname: str = "default"
    lora_strength: float = 1.0
    override_pipeline_cls_name: str | None = None
    override_transformer_cls_name: str | None = None


@dataclass
class PipelineSelection:
    """Which pipeline runs: workload type (t2v) and a model preset name."""

    #: One of FastVideo's workloads (``t2v i2v t2i i2i v2a t2a``; others fail to parse). None (infer) and "t2v"
    #: are honoured; the other workloads are refused (this engine runs text-to-video).
    workload_type: WorkloadType | None = None
    #: Preset name (e.g. "wan2.1-t2v-1.3b"); None infers it from the model folder.
    preset: str | None = None
    #: FastVideo's preset version; None honoured (each preset here has one version), a number refused.
    preset_version: int | None = None
    components: ComponentConfig = field(default_factory=ComponentConfig)
    #: Weight variant to load (diffusers' ``variant``: ``fp16`` reads ``*.fp16.safetensors``), falling back to
    #: the plain files where a component has no such variant. None: the plain files, else a component's only
    #: variant; several variants and no plain files are refused, naming them.
    variant: str | None = None
    #: FastVideo's VAE tiling switch: None and false honoured (the VAE decodes whole frames); true refused.
    vae_tiling: bool | None = None
    #: FastVideo's per-preset stage options; empty honoured, any key refused (not supported yet).
    preset_overrides: dict[str, Any] = field(default_factory=dict)
    #: Known keys only: ``vae_dtype`` ("auto", "bf16", "fp16", "fp32"; default fp32). Others are refused.
    experimental: dict[str, Any] = field(default_factory=dict)


@dataclass
class GeneratorConfig:
    """Everything needed to build a :class:`fastvideo.VideoGenerator`."""

    #: Local diffusers-format folder; None uses the built-in tiny default model (FastVideo requires it).
    model_path: str | None = None
    #: A Hub revision: None honoured; a value refused (``model_path`` is a local folder: download that
    #: revision into a folder and point ``model_path`` at it).
    revision: str | None = None
    #: Accepted either way: this engine never runs code shipped in a model folder.
    trust_remote_code: bool = False
    engine: EngineConfig = field(default_factory=EngineConfig)
    pipeline: PipelineSelection = field(default_factory=PipelineSelection)
