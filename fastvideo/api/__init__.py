"""FastVideo's public, stable types: configs, requests, results, events, continuation state.

Contract: everything integrators import lives in ``__all__``; importing this package imports the
standard library only (never torch), so it is cheap in a router or Dynamo frontend process.
"""

from fastvideo.api.config import (
    CompileConfig,
    CudaGraphsConfig,
    ComponentConfig,
    EngineConfig,
    GeneratorConfig,
    OffloadConfig,
    ParallelismConfig,
    PipelineSelection,
    QuantizationConfig,
)
from fastvideo.api.request import GenerationPlan, PlannedStage, RequestRuntimeConfig
from fastvideo.api.serve import (
    GpuPoolConfig,
    LLMProviderConfig,
    PromptEnhancerConfig,
    PromptSafetyConfig,
    ServeConfig,
    ServerConfig,
    StreamingConfig,
    WarmupConfig,
)
from fastvideo.api.documents import load_serve_config
from fastvideo.api.errors import FastVideoError, GenerationCancelled, GenerationFailed, ModelLoadError, RequestError
from fastvideo.api.documents import (
    RunConfig,
    apply_overrides,
    load_config,
    load_raw_config,
    load_run_config,
    parse_cli_overrides,
)
from fastvideo.api.parse import ConfigError, ConfigValidationError, config_to_dict, parse_config
from fastvideo.api.limits import MAX_PROMPT_CHARS
from fastvideo.api.request import GenerationRequest, InputConfig, OutputConfig, SamplingConfig
from fastvideo.api.results import (
    GenerationResult,
    VideoEvent,
    VideoFinalEvent,
    VideoPartialEvent,
    VideoProgressEvent,
    VideoResult,
)
from fastvideo.api.state import KNOWN_STATE_KINDS, ContinuationState
from fastvideo.api.wire import TranslatedRequest, parse_size, translate_request
from fastvideo.api.presets import (
    InferencePreset,
    PresetStageSpec,
    get_all_preset_names,
    get_preset,
    get_presets_for_family,
    register_preset,
    validate_preset_selection,
    validate_stage_names,
    validate_stage_overrides,
)
from fastvideo.api.sampling_param import SamplingParam

__all__ = [
    "CompileConfig",
    "CudaGraphsConfig",
    "ComponentConfig",
    "ConfigError",
    "ConfigValidationError",
    "ContinuationState",
    "EngineConfig",
    "FastVideoError",
    "GenerationCancelled",
    "GenerationFailed",
    "GenerationRequest",
    "GenerationResult",
    "GeneratorConfig",
    "InputConfig",
    "KNOWN_STATE_KINDS",
    "MAX_PROMPT_CHARS",
    "ModelLoadError",
    "OffloadConfig",
    "OutputConfig",
    "ParallelismConfig",
    "PipelineSelection",
    "QuantizationConfig",
    "RequestError",
    "RunConfig",
    "SamplingConfig",
    "SamplingParam",
    "TranslatedRequest",
    "VideoEvent",
    "VideoFinalEvent",
    "VideoPartialEvent",
    "VideoProgressEvent",
    "VideoResult",
    "apply_overrides",
    "config_to_dict",
    "InferencePreset",
    "PresetStageSpec",
    "get_all_preset_names",
    "get_preset",
    "get_presets_for_family",
    "register_preset",
    "validate_preset_selection",
    "validate_stage_names",
    "validate_stage_overrides",
    "load_config",
    "load_raw_config",
    "load_run_config",
    "parse_cli_overrides",
    "parse_config",
    "parse_size",
    "translate_request",
]

# FastVideo's schema classes beyond the Dynamo contract (issue 14): request plans, serve documents.
__all__ += ["GenerationPlan", "GpuPoolConfig", "LLMProviderConfig", "PlannedStage", "PromptEnhancerConfig",
            "PromptSafetyConfig", "RequestRuntimeConfig", "ServeConfig", "ServerConfig", "StreamingConfig",
            "WarmupConfig", "load_serve_config"]

# The ltx2.v1 continuation state's wire layer (issue 15); the typed state with frames and tensors is
# fastvideo.engine.models.ltx2.state.LTX2ContinuationState.
from fastvideo.api.ltx2_state import (  # noqa: E402
    DEFAULT_INLINE_THRESHOLD_BYTES,
    LTX2_CONTINUATION_KIND,
    ContinuationStateError,
    LTX2StatePayload,
)

__all__ += ["DEFAULT_INLINE_THRESHOLD_BYTES", "LTX2_CONTINUATION_KIND", "ContinuationStateError", "LTX2StatePayload"]
