"""Which ``GeneratorConfig`` fields the runtime honours, and the refusal of every value it cannot.

Contract:
- :func:`check_generator_config(config, device_type=...)` runs in ``VideoGenerator.from_config``
  before any weight is read. For a value the runtime cannot honour it raises
  :class:`fastvideo.api.ConfigError` whose ``path`` is the dotted field (e.g.
  ``pipeline.components.upsampler_weights``) and whose message says what to do instead. No value is ignored
  silently or merely logged. Defaults always pass, and so does every value that works.
- :data:`FIELD_SUPPORT` lists every leaf field of :class:`~fastvideo.api.GeneratorConfig` by its
  dotted path with how it is honoured or when it is refused. A test keeps it complete, so a new
  config field cannot land without being classified.
- Checks that need the loaded model (``engine.cuda_graphs`` sizes, artifact compatibility) run
  later in ``from_config``; the ones here need only the config and the resolved device type.
  Stdlib only (the FP8 scheme names come from engine/fp8.py, imported only when one is set).
"""

from __future__ import annotations

import re

from fastvideo.api.config import GeneratorConfig
from fastvideo.api.parse import ConfigError

#: Dotted path -> how the field is honoured, or when it is refused (see module contract).
FIELD_SUPPORT: dict[str, str] = {
    "model_path": "honoured: the local diffusers folder to load (None: the built-in tiny model)",
    "engine.num_gpus": "1 honoured (one device); N > 1 honoured as one sequence-parallel group: N rank processes "
                       "(runtime/sp_group.py), one per GPU from engine.device (NCCL; on the CPU N gloo ranks, for "
                       "tests), each running every request on its shard of the DiT tokens, rank 0 returning the "
                       "result; more GPUs than visible, or N > 1 with engine.cuda_graphs / engine.compile / "
                       "engine.artifacts_path, refused. For throughput instead, serve one worker per GPU with "
                       "fastvideo serve --devices / pool.devices, or the Dynamo worker's --devices",
    "engine.parallelism.tp_size": "1 and -1 (auto: 1) honoured; others refused (tensor parallelism is not supported "
                                  "yet)",
    "engine.parallelism.sp_size": "-1 (auto: engine.num_gpus) and engine.num_gpus honoured (Ulysses sequence "
                                  "parallelism over all the generator's GPUs; 1 with num_gpus 1); others refused "
                                  "(sp_size < num_gpus would need data parallelism x SP inside one generator: use "
                                  "num_gpus = sp_size, and several generators or pool workers for the rest)",
    "engine.offload.dit": "two-expert models (Wan2.2 A14B): true honoured on a CUDA device (one expert resident at a "
                          "time, the other on the CPU, swapped at the boundary); one-expert models: true refused on a "
                          "CUDA device (not supported yet); on the CPU the DiT already lives there",
    "engine.offload.dit_layerwise": "honoured: on a CUDA device the DiT's blocks (both experts' for Wan2.2 A14B) live "
                                    "on the CPU and stream through a two-block device window, the next block's copy "
                                    "overlapping the current block (engine/layer_offload.py); the embeddings and head "
                                    "stay resident; refused with engine.offload.dit, engine.compile.enabled, "
                                    "engine.cuda_graphs.enabled or engine.artifacts_path; on the CPU a no-op",
    "engine.offload.text_encoder": "honoured: on a CUDA device UMT5 lives on the CPU and visits the device for each "
                                   "prompt encode; on the CPU a no-op",
    "engine.offload.vae": "honoured: on a CUDA device the VAE lives on the CPU and visits the device for each decode; "
                          "on the CPU a no-op; refused together with engine.artifacts_path",
    "engine.offload.image_encoder": "honoured either way: a text-to-video model has no image encoder to place",
    "engine.offload.pin_cpu_memory": "honoured: the CPU copies of offloaded components (text_encoder, vae, DiT "
                                     "experts or layerwise DiT blocks) are "
                                     "pinned, so their copies to the device are asynchronous",
    "engine.compile.enabled": "honoured (torch.compile of the DiT); refused together with engine.artifacts_path",
    "engine.compile.backend": "honoured when compile is enabled",
    "engine.compile.fullgraph": "honoured when compile is enabled",
    "engine.compile.mode": "honoured when compile is enabled",
    "engine.compile.dynamic": "honoured when compile is enabled",
    "engine.use_fsdp_inference": "false honoured; true refused (not supported yet: weights load whole)",
    "engine.disable_autocast": "honoured either way: the engine never uses torch.autocast (every component runs "
                               "in its configured dtype), so autocast is always off",
    "engine.quantization.transformer_quant": "None and 'FP8' honoured (e4m3 weights with per-row scales for the DiT "
                                             "block linears, engine/fp8.py; 'FP8_PER_TENSOR' for one scale per "
                                             "tensor); other schemes refused",
    "engine.device": "honoured ('auto' or a torch device string); CUDA refused where it is not available",
    "engine.dtype": "honoured",
    "engine.attention_backend": "honoured (unknown or unusable backends refused when the model loads)",
    "engine.ops_backend": "honoured",
    "engine.artifacts_path": "honoured (artifacts that do not match the model or environment are refused)",
    "engine.cuda_graphs.enabled": "honoured on a CUDA device; refused elsewhere",
    "engine.cuda_graphs.sizes": "honoured; sizes the model does not serve are refused",
    "engine.cuda_graphs.batch_sizes": "honoured; values below 1 are refused",
    "engine.cuda_graphs.cfg": "honoured",
    "pipeline.workload_type": "None (inferred) and 't2v' honoured; other workloads refused (this engine runs "
                              "text-to-video)",
    "pipeline.preset": "honoured (unknown names refused)",
    "pipeline.variant": "honoured: each component loads its <stem>.<variant>.safetensors files (plain files where "
                        "it has none); names other than letters, digits, '_' refused",
    "pipeline.components.transformer_path": "honoured: the DiT is loaded from this diffusers transformer folder; "
                                            "refused together with engine.artifacts_path",
    "pipeline.components.vae_path": "honoured: the VAE is loaded from this diffusers vae folder; refused together "
                                    "with engine.artifacts_path",
    "pipeline.components.text_encoder_path": "honoured: UMT5 is loaded from this folder",
    "pipeline.components.tokenizer_path": "honoured: the tokenizer is loaded from this folder",
    "pipeline.components.upsampler_weights": "None honoured; a path refused (this engine has no upsampler stage)",
    "pipeline.components.lora_path": "honoured: that LoRA .safetensors (diffusers/PEFT layout, or the model's "
                                     "original layout: Wan/ComfyUI or LTX-2's Lightricks) is merged into the DiT at "
                                     "load (fastvideo.engine.lora); with engine.artifacts_path "
                                     "the build must have fused the same file at the same strength (fastvideo-build "
                                     "--lora); refused with an FP8 transformer_quant",
    "pipeline.experimental": "known keys honoured (vae_dtype: auto/bf16/fp16/fp32, default fp32); unknown keys "
                             "refused",
}

# FastVideo's fields beyond the ones above (issue 14): accepted by the parser, honoured or refused by name.
FIELD_SUPPORT.update({
    "revision": "None honoured; a revision refused (model_path is a local folder: download that revision into a "
                "folder and point model_path at it)",
    "trust_remote_code": "accepted either way: this engine never runs code shipped in a model folder",
    "engine.execution_backend": "'mp' honoured (in-process, or one process per device behind a pool); 'ray' refused "
                                "(not supported yet)",
    "engine.enable_stage_verification": "accepted either way: every request is validated before it runs and the "
                                        "stages are fixed, so there is nothing more to verify or skip",
    "engine.parallelism.hsdp_replicate_dim": "1 honoured; others refused (HSDP is not supported yet)",
    "engine.parallelism.hsdp_shard_dim": "1 and -1 (auto) honoured; others refused (HSDP is not supported yet)",
    "engine.parallelism.dist_timeout": "honoured with engine.num_gpus > 1: the seconds a sequence-parallel "
                                       "collective waits before the rank fails (None: 300); with one device no "
                                       "process group exists, so any value is accepted",
    "engine.offload.lazy_module_load": "None and false honoured (components load when the generator is built); true "
                                       "refused (not supported yet)",
    "engine.compile.extras": "empty honoured; keys refused (not supported yet: use backend/mode/fullgraph/dynamic)",
    "engine.compile.dit_kwargs": "empty honoured; keys refused (not supported yet: use backend/mode/fullgraph/"
                                 "dynamic)",
    "engine.compile.text_encoder_enabled": "None and false honoured; true refused (only the DiT is compiled)",
    "engine.compile.vae_enabled": "None and false honoured; true refused (only the DiT is compiled)",
    "engine.compile.audio_vae_enabled": "None and false honoured; true refused (no audio VAE)",
    "engine.compile.text_encoder_kwargs": "empty honoured; keys refused (only the DiT is compiled)",
    "engine.compile.vae_kwargs": "empty honoured; keys refused (only the DiT is compiled)",
    "engine.compile.audio_vae_kwargs": "empty honoured; keys refused (no audio VAE)",
    "engine.quantization.text_encoder_quant": "None honoured; any scheme refused (not supported yet)",
    "pipeline.preset_version": "None honoured; a version refused (each preset here has one version)",
    "pipeline.vae_tiling": "None and false honoured (the VAE decodes whole frames); true refused (not supported yet)",
    "pipeline.preset_overrides": "empty honoured; keys refused (not supported yet)",
    "pipeline.components.config_root": "None honoured; a path refused (not supported yet: the configs are read from "
                                       "model_path and the *_path component folders)",
    "pipeline.components.pipeline_config_path": "None honoured; a path refused (not supported yet)",
    "pipeline.components.text_encoder_weights": "None honoured; a path refused (use "
                                                "pipeline.components.text_encoder_path, a folder)",
    "pipeline.components.transformer_weights": "None honoured; a path refused (use "
                                               "pipeline.components.transformer_path, a folder)",
    "pipeline.components.transformer_2_weights": "None honoured; a path refused (no second expert: Wan 2.1 models)",
    "pipeline.components.vae_weights": "None honoured; a path refused (use pipeline.components.vae_path, a folder)",
    "pipeline.components.lora_nickname": "honoured with lora_path: the nickname the adapter is registered under "
                                         "(set_lora_adapter); a non-default name without lora_path refused",
    "pipeline.components.lora_strength": "honoured with lora_path: the LoRA scale it is merged at; a value other "
                                         "than 1.0 without lora_path refused",
    "pipeline.components.override_pipeline_cls_name": "None honoured; a name refused (not supported yet)",
    "pipeline.components.override_transformer_cls_name": "None honoured; a name refused (not supported yet)",
})

#: ``pipeline.experimental`` keys the runtime reads, with their allowed values.
EXPERIMENTAL_KEYS: dict[str, tuple[str, ...]] = {"vae_dtype": ("auto", "bf16", "fp16", "fp32")}

#: ``pipeline.components`` path fields -> the diffusers sub-folder they replace.
COMPONENT_PATHS: dict[str, str] = {"transformer_path": "transformer", "vae_path": "vae",
                                   "text_encoder_path": "text_encoder", "tokenizer_path": "tokenizer"}

_SCALE_OUT = ("serve one worker per GPU with `fastvideo serve --devices 0,1` (pool.devices) or the Dynamo worker's "
              "--devices (a GpuPool), or run several `fastvideo serve` replicas behind `fastvideo router-serve`")


#: FastVideo fields refused when not at their default: dotted path -> (default, why / what to use instead).
_NOT_YET = "not supported yet"
REFUSED_UNLESS_DEFAULT: dict[str, tuple[object, str]] = {
    "revision": (None, "model_path is a local folder: download that revision into a folder and point model_path "
                       "at it, then drop revision"),
    "engine.execution_backend": ("mp", f"the 'ray' launcher is {_NOT_YET}; use 'mp'"),
    "engine.parallelism.hsdp_replicate_dim": (1, f"HSDP is {_NOT_YET}; set it to 1 (one device per generator)"),
    "engine.compile.extras": ({}, f"extra torch.compile options are {_NOT_YET}; use engine.compile.backend/mode/"
                                  "fullgraph/dynamic, or drop them"),
    "engine.compile.dit_kwargs": ({}, f"extra torch.compile options are {_NOT_YET}; use engine.compile.backend/"
                                      "mode/fullgraph/dynamic, or drop them"),
    "engine.compile.text_encoder_kwargs": ({}, "only the DiT is compiled; drop them"),
    "engine.compile.vae_kwargs": ({}, "only the DiT is compiled; drop them"),
    "engine.compile.audio_vae_kwargs": ({}, "these models have no audio VAE; drop them"),
    "pipeline.preset_version": (None, "each preset here has one version; drop preset_version"),
    "pipeline.preset_overrides": ({}, f"preset overrides are {_NOT_YET}; set the request's sampling fields instead"),
    "pipeline.components.config_root": (None, f"{_NOT_YET}: configs are read from model_path and the component "
                                              "*_path folders; drop it"),
    "pipeline.components.pipeline_config_path": (None, f"a pipeline config file is {_NOT_YET}; drop it (the model "
                                                      "folder and the preset configure the pipeline)"),
    "pipeline.components.text_encoder_weights": (None, "use pipeline.components.text_encoder_path (a folder in the "
                                                      "layout of the model's text_encoder/) instead"),
    "pipeline.components.transformer_weights": (None, "use pipeline.components.transformer_path (a folder in the "
                                                     "layout of the model's transformer/) instead"),
    "pipeline.components.transformer_2_weights": (None, "these models have one transformer (no second expert); "
                                                       "drop it"),
    "pipeline.components.vae_weights": (None, "use pipeline.components.vae_path (a folder in the layout of the "
                                             "model's vae/) instead"),
    "pipeline.components.override_pipeline_cls_name": (None, f"overriding the pipeline class is {_NOT_YET}; drop it"),
    "pipeline.components.override_transformer_cls_name": (None, f"overriding the transformer class is {_NOT_YET}; "
                                                               "drop it"),
}

#: Fields honoured when unset or false and refused when true: dotted path -> why.
REFUSED_WHEN_TRUE: dict[str, str] = {
    "engine.offload.lazy_module_load": "components load when the generator is built; set it to null or false",
    "engine.compile.text_encoder_enabled": "only the DiT is compiled here; set it to null or false",
    "engine.compile.vae_enabled": "only the DiT is compiled here; set it to null or false",
    "engine.compile.audio_vae_enabled": "these models have no audio VAE; set it to null or false",
    "pipeline.vae_tiling": "the VAE decodes whole frames; set it to null or false",
}


def _get(config: object, dotted: str) -> object:
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def check_model_config(config: GeneratorConfig, *, device_type: str, two_experts: bool) -> None:
    """The refusals that depend on the model folder (``two_experts``: it declares ``transformer_2``), checked
    before any weight is read."""
    if device_type == "cuda" and config.engine.offload.dit and not two_experts:
        raise ConfigError("engine.offload.dit", "offloading the DiT to the CPU between uses is not supported yet for "
                                                "one-expert models (two-expert Wan2.2 A14B keeps one expert resident); "
                                                "set it to false, or use a smaller dtype or model")
    if two_experts and config.pipeline.components.lora_path:
        raise ConfigError("pipeline.components.lora_path", "LoRA is not supported on two-expert models (Wan2.2 "
                                                           "A14B) yet; drop it")
    if two_experts and config.engine.artifacts_path and config.engine.offload.dit and device_type == "cuda":
        raise ConfigError("engine.artifacts_path", "built artifacts of a two-expert model (Wan2.2 A14B) hold both "
                                                   "experts' weights on the device, so they cannot be combined with "
                                                   "engine.offload.dit; drop one of them")


def _check_parallelism(config: GeneratorConfig) -> None:
    """``engine.num_gpus`` / ``engine.parallelism.*``: one device, or one sequence-parallel group over N."""
    engine = config.engine
    n = engine.num_gpus
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError("engine.num_gpus", f"{n!r}: set it to 1 (one device), or to N > 1 for one "
                                             "sequence-parallel generator over N GPUs")
    sp = engine.parallelism.sp_size
    if sp not in (-1, n):
        if n == 1:
            why = (f"{sp}: sequence parallelism spans the generator's GPUs, and engine.num_gpus is 1; set "
                   f"engine.num_gpus to {sp} (and sp_size to -1 or {sp}) for one generator over {sp} GPUs")
        else:
            why = (f"{sp} with engine.num_gpus={n}: only sp_size -1 (auto) or {n} (one sequence-parallel group over "
                   f"all {n} GPUs) works; sp_size < num_gpus (data parallelism x SP in one generator) is not "
                   f"supported: set engine.num_gpus={sp} and run several generators or pool workers")
        raise ConfigError("engine.parallelism.sp_size", why)
    tp = engine.parallelism.tp_size
    if tp not in (1, -1):
        raise ConfigError("engine.parallelism.tp_size", f"{tp}: tensor parallelism is not supported yet; set it to 1 "
                                                        f"or -1 (sequence parallelism over engine.num_gpus GPUs "
                                                        f"works); to scale out, {_SCALE_OUT}")
    if n > 1:
        for path, on, what in (("engine.cuda_graphs.enabled", engine.cuda_graphs.enabled, "CUDA graphs"),
                               ("engine.compile.enabled", engine.compile.enabled, "torch.compile of the DiT"),
                               ("engine.artifacts_path", engine.artifacts_path, "built artifacts")):
            if on:
                raise ConfigError(path, f"{what} cannot be combined with engine.num_gpus={n} (sequence parallelism) "
                                        "yet; drop one of the two")


def check_generator_config(config: GeneratorConfig, *, device_type: str) -> None:
    """Refuse, with a ConfigError naming the field, the first value this runtime cannot honour."""
    for path, (default, why) in REFUSED_UNLESS_DEFAULT.items():
        value = _get(config, path)
        if value != default:
            raise ConfigError(path, f"{value!r} is not supported: {why}")
    for path, why in REFUSED_WHEN_TRUE.items():
        if _get(config, path):
            raise ConfigError(path, f"true is not supported yet: {why}")
    engine = config.engine
    _check_parallelism(config)
    if engine.parallelism.hsdp_shard_dim not in (1, -1):
        raise ConfigError("engine.parallelism.hsdp_shard_dim", f"{engine.parallelism.hsdp_shard_dim}: HSDP is not "
                                                               "supported yet; set it to -1 or 1 (one device per "
                                                               f"generator); to scale out, {_SCALE_OUT}")
    if engine.use_fsdp_inference:
        raise ConfigError("engine.use_fsdp_inference", "FSDP inference is not supported yet (the weights load whole "
                                                       "on engine.device); set it to false")
    if device_type == "cuda" and engine.offload.dit_layerwise:  # the DiT's block weights move every step
        for path, on, why in (
                ("engine.offload.dit", engine.offload.dit, "both offload the DiT; keep one"),
                ("engine.compile.enabled", engine.compile.enabled, "torch.compile would trace weights that move"),
                ("engine.cuda_graphs.enabled", engine.cuda_graphs.enabled, "a captured graph needs resident weights"),
                ("engine.artifacts_path", engine.artifacts_path, "the compiled programs hold their own weights")):
            if on:
                raise ConfigError(path, f"cannot be combined with engine.offload.dit_layerwise ({why}); drop one of "
                                        "the two")
    if engine.offload.vae and engine.artifacts_path:
        raise ConfigError("engine.offload.vae", "cannot be combined with engine.artifacts_path: the compiled VAE "
                                                "programs keep their weights on the device; drop one of the two")
    quant = engine.quantization
    if quant is not None and quant.transformer_quant is not None:
        from fastvideo.engine.fp8 import parse_transformer_quant  # torch: loaded by the generator anyway

        try:
            parse_transformer_quant(quant.transformer_quant)
        except ValueError as exc:
            raise ConfigError("engine.quantization.transformer_quant", str(exc)) from None
    if engine.compile.enabled and engine.artifacts_path:
        raise ConfigError("engine.compile.enabled", "the DiT is served by the compiled programs in "
                                                    "engine.artifacts_path, so torch.compile has nothing to compile; "
                                                    "turn compile off, or drop engine.artifacts_path")
    pipeline = config.pipeline
    if pipeline.workload_type not in (None, "t2v"):
        raise ConfigError("pipeline.workload_type", f"{pipeline.workload_type!r} is not supported: this engine "
                                                    "runs text-to-video; use 't2v'")
    variant = pipeline.variant
    if variant is not None and (not isinstance(variant, str) or not re.fullmatch(r"[A-Za-z0-9_]+", variant)):
        raise ConfigError("pipeline.variant", f"{variant!r} is not a weight variant name; use the part between the "
                                              "file stem and .safetensors, e.g. 'fp16' for model.fp16.safetensors")
    components = pipeline.components
    if engine.artifacts_path:
        for name in ("transformer_path", "vae_path"):
            if getattr(components, name):
                raise ConfigError(f"pipeline.components.{name}", (
                    "cannot be combined with engine.artifacts_path: artifacts are checked against the weights in "
                    f"the model folder's {COMPONENT_PATHS[name]}/; build the artifacts from a model folder that "
                    "holds this component, or drop one of the two"))
    if components.lora_path is None:
        if components.lora_nickname != "default":
            raise ConfigError("pipeline.components.lora_nickname", "names the adapter of lora_path, which is not "
                                                                   "set; set pipeline.components.lora_path too, or "
                                                                   "drop it")
        if components.lora_strength != 1.0:
            raise ConfigError("pipeline.components.lora_strength", "scales the adapter of lora_path, which is not "
                                                                   "set; set pipeline.components.lora_path too, or "
                                                                   "drop it")
    elif quant is not None and quant.transformer_quant is not None:
        raise ConfigError("pipeline.components.lora_path", "LoRA adapters cannot be merged into FP8-quantized DiT "
                                                           "weights; drop one of lora_path and "
                                                           "engine.quantization.transformer_quant")
    if components.upsampler_weights is not None:
        raise ConfigError("pipeline.components.upsampler_weights", "this engine has no upsampler (super-resolution) "
                                                                   "stage; drop it")
    for key, value in pipeline.experimental.items():
        allowed = EXPERIMENTAL_KEYS.get(key)
        if allowed is None:
            raise ConfigError(f"pipeline.experimental.{key}", f"unknown experimental option; known: "
                                                              f"{sorted(EXPERIMENTAL_KEYS)}")
        if value not in allowed:
            raise ConfigError(f"pipeline.experimental.{key}", f"{value!r} is not one of {list(allowed)}")
    if quant is not None and quant.text_encoder_quant is not None:
        raise ConfigError("engine.quantization.text_encoder_quant",
                          f"{quant.text_encoder_quant!r}: weight quantization is not supported yet; set it to null "
                          "(weights stay in engine.dtype)")
