"""``VideoGenerator.from_pretrained``'s keyword arguments: FastVideo's documented names (and this engine's own)
folded into the GeneratorConfig mapping.

Contract: :func:`apply_kwargs` returns the mapping with each keyword set at its typed home
(:data:`CONVENIENCE_KWARGS`, set through :func:`fastvideo.api.apply_overrides`, the one dotted-path setter);
``torch_compile_kwargs`` is split into CompileConfig's typed fields and ``engine.compile.extras``; a
``pipeline_config`` (path or :class:`fastvideo.PipelineConfig`) writes its fields; ``output_type`` other than
pil/np, a truthy ``nvfp4_fa4`` and a ``log_queue`` are refused by name; an unknown keyword is an
:class:`UnknownKeywordError` (a ConfigError and a TypeError) naming it. Whether each value can be honoured is
decided later by the field's own check (:mod:`fastvideo.runtime.config_support`). Standard library and
:mod:`fastvideo.api` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastvideo.api import ConfigError, apply_overrides

#: Keyword arguments ``from_pretrained`` accepts besides the model path -> their typed home in GeneratorConfig.
#: FastVideo's documented names first (``VideoGenerator.from_pretrained(path, num_gpus=1, vae_cpu_offload=...)``),
#: then this engine's own. A value the runtime cannot honour is refused by the field's check in
#: :func:`~fastvideo.runtime.config_support.check_generator_config`, naming the field.
CONVENIENCE_KWARGS: dict[str, tuple[str, ...]] = {
    "num_gpus": ("engine", "num_gpus"),
    "revision": ("revision",),
    "trust_remote_code": ("trust_remote_code",),
    "distributed_executor_backend": ("engine", "execution_backend"),
    "tp_size": ("engine", "parallelism", "tp_size"),
    "sp_size": ("engine", "parallelism", "sp_size"),
    "hsdp_replicate_dim": ("engine", "parallelism", "hsdp_replicate_dim"),
    "hsdp_shard_dim": ("engine", "parallelism", "hsdp_shard_dim"),
    "dist_timeout": ("engine", "parallelism", "dist_timeout"),
    "use_fsdp_inference": ("engine", "use_fsdp_inference"),
    "disable_autocast": ("engine", "disable_autocast"),
    "enable_stage_verification": ("engine", "enable_stage_verification"),
    "dit_cpu_offload": ("engine", "offload", "dit"),
    "dit_layerwise_offload": ("engine", "offload", "dit_layerwise"),
    "text_encoder_cpu_offload": ("engine", "offload", "text_encoder"),
    "image_encoder_cpu_offload": ("engine", "offload", "image_encoder"),
    "vae_cpu_offload": ("engine", "offload", "vae"),
    "pin_cpu_memory": ("engine", "offload", "pin_cpu_memory"),
    "lazy_module_load": ("engine", "offload", "lazy_module_load"),
    "enable_torch_compile": ("engine", "compile", "enabled"),
    "enable_torch_compile_text_encoder": ("engine", "compile", "text_encoder_enabled"),
    "enable_torch_compile_vae": ("engine", "compile", "vae_enabled"),
    "enable_torch_compile_audio_vae": ("engine", "compile", "audio_vae_enabled"),
    "torch_compile_kwargs_dit": ("engine", "compile", "dit_kwargs"),
    "torch_compile_kwargs_text_encoder": ("engine", "compile", "text_encoder_kwargs"),
    "torch_compile_kwargs_vae": ("engine", "compile", "vae_kwargs"),
    "torch_compile_kwargs_audio_vae": ("engine", "compile", "audio_vae_kwargs"),
    "override_text_encoder_quant": ("engine", "quantization", "text_encoder_quant"),
    "override_transformer_quant": ("engine", "quantization", "transformer_quant"),
    "workload_type": ("pipeline", "workload_type"),
    "lora_path": ("pipeline", "components", "lora_path"),
    "lora_nickname": ("pipeline", "components", "lora_nickname"),
    "lora_strength": ("pipeline", "components", "lora_strength"),
    "override_pipeline_cls_name": ("pipeline", "components", "override_pipeline_cls_name"),
    "override_transformer_cls_name": ("pipeline", "components", "override_transformer_cls_name"),
    "override_text_encoder_safetensors": ("pipeline", "components", "text_encoder_weights"),
    "init_weights_from_safetensors": ("pipeline", "components", "transformer_weights"),
    "init_weights_from_safetensors_2": ("pipeline", "components", "transformer_2_weights"),
    "config_model_path": ("pipeline", "components", "config_root"),
    # this engine's own
    "device": ("engine", "device"),
    "dtype": ("engine", "dtype"),
    "attention_backend": ("engine", "attention_backend"),
    "ops_backend": ("engine", "ops_backend"),
    "artifacts_path": ("engine", "artifacts_path"),
    "dit_offload": ("engine", "offload", "dit"),
    "text_encoder_offload": ("engine", "offload", "text_encoder"),
    "vae_offload": ("engine", "offload", "vae"),
    "preset": ("pipeline", "preset"),
    "preset_version": ("pipeline", "preset_version"),
    "variant": ("pipeline", "variant"),
}

#: FastVideo kwargs with no single typed home, handled by :func:`apply_kwargs` itself.
SPECIAL_KWARGS = ("torch_compile_kwargs", "pipeline_config", "output_type", "nvfp4_fa4", "log_queue")

#: ``torch_compile_kwargs`` keys with a typed CompileConfig field (the rest go to ``engine.compile.extras``).
_COMPILE_TYPED = ("backend", "fullgraph", "mode", "dynamic")


class UnknownKeywordError(ConfigError, TypeError):
    """A ``from_pretrained`` keyword argument this engine does not know (``path`` names it)."""


def apply_kwargs(data: dict[str, Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Fold ``from_pretrained``'s keyword arguments into the GeneratorConfig mapping ``data``."""
    unknown = sorted(set(kwargs) - set(CONVENIENCE_KWARGS) - set(SPECIAL_KWARGS))
    if unknown:
        raise UnknownKeywordError(unknown[0], f"unexpected keyword arguments {unknown}; from_pretrained accepts "
                                              f"{sorted([*CONVENIENCE_KWARGS, *SPECIAL_KWARGS])} (or pass a "
                                              "GeneratorConfig to from_config for everything else)")
    dotted: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in CONVENIENCE_KWARGS:
            dotted[".".join(CONVENIENCE_KWARGS[key])] = value
        elif key == "torch_compile_kwargs":
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError("torch_compile_kwargs", f"expected a dict of torch.compile arguments, got "
                                                          f"{type(value).__name__}")
            for name, item in value.items():
                dotted[f"engine.compile.{name}" if name in _COMPILE_TYPED else f"engine.compile.extras.{name}"] = item
        elif key == "pipeline_config":
            if value is None:
                continue
            if isinstance(value, str):
                dotted["pipeline.components.pipeline_config_path"] = value
                continue
            from fastvideo.api.pipeline_config import PipelineConfig

            if not isinstance(value, PipelineConfig):
                raise ConfigError("pipeline_config", f"expected a fastvideo.PipelineConfig or a path, got "
                                                     f"{type(value).__name__}")
            data = apply_overrides(data, dotted)  # the keywords before it first, in the order given
            dotted.clear()
            value.apply_to(data)
        elif key == "output_type":
            if value not in (None, "pil", "np"):
                raise ConfigError("output_type", f"{value!r} is not supported: results carry decoded frames (uint8 "
                                                 "numpy on result.frames, a tensor view on result.samples); drop "
                                                 "output_type")
        elif key == "nvfp4_fa4":
            if value:
                raise ConfigError("nvfp4_fa4", "NVFP4 FlashAttention-4 kernels are not supported yet; drop it "
                                               "(pick the attention kernel with attention_backend)")
        elif key == "log_queue":
            refuse_log_queue(value)
    return apply_overrides(data, dotted)


def refuse_log_queue(log_queue: Any) -> None:
    """FastVideo's ``log_queue`` argument: None accepted; a queue refused (we log through ``logging``)."""
    if log_queue is not None:
        raise ConfigError("log_queue", "log queues are not supported: this engine logs through the standard "
                                       "logging module (configure the 'fastvideo' logger); drop it")
