"""Typed configuration of the servers (``fastvideo serve`` and ``fastvideo router-serve``).

Contract:
- ``fastvideo serve``'s config is the public :class:`fastvideo.api.ServeConfig` (one class, in
  :mod:`fastvideo.api.serve`: FastVideo's ``generator``/``server``/``default_request``/``streaming``
  plus this server's ``queue``/``pool``/``state``); this module re-exports it and its sections
  (``QueueConfig`` is ``SchedulerConfig``). :class:`RouterConfig` is everything
  ``fastvideo router-serve`` needs.
- :func:`load_serve_config` layers, lowest first: defaults, a YAML/JSON file, FastVideo-style dotted
  flags (``--server.port 8001``), this CLI's flags (``flags``: a nested mapping of the flags given),
  then dotted ``KEY=VALUE`` overrides. Files are read by :func:`fastvideo.api.load_raw_config` and every
  override by :func:`fastvideo.api.parse_cli_overrides` (one loader, one override parser: ``2`` is an
  int, ``true`` a bool, ``[a, b]`` a list, ``bf16`` a string). A top-level ``model_path``/``engine``/
  ``pipeline`` key is read as ``generator.<key>``, so ``engine.dtype=bf16`` works as well as
  ``generator.engine.dtype=bf16``. A missing or unreadable file is a ConfigError on ``config``.
- :func:`check_serve_config` refuses, naming the dotted key, every value of FastVideo's serve fields this
  server cannot honour (``streaming.stream_mode: legacy_jpeg``, ``default_request`` fields other than the
  ones honoured...) and a ``streaming.prompt`` / ``streaming.safety`` config that cannot work
  (:func:`fastvideo.serving.prompting.check_prompt_config`); :data:`SERVE_FIELD_SUPPORT` classifies every
  serve field outside ``generator`` (a test keeps it complete). :func:`load_serve_config` and
  ``run_server`` run it.
- ``default_request`` (FastVideo's operator defaults): its ``negative_prompt`` and ``sampling`` size, frames,
  fps, steps, guidance, seed, shift and sampler fill what each request leaves unset, on HTTP and
  ``/v1/stream`` alike (:func:`request_defaults`, :func:`apply_request_defaults`; the served app applies
  them at admission and reports them as the model's defaults).
- Both configs are plain dataclasses, built strictly with :func:`fastvideo.api.parse_config` (an
  unknown key fails naming its dotted path) and passed explicitly; nothing here is a global.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

from fastvideo.api import (
    ConfigError,
    GenerationRequest,
    apply_overrides,
    config_to_dict,
    load_raw_config,
    parse_cli_overrides,
    parse_config,
)
from fastvideo.api.documents import GENERATOR_KEYS, normalize_serve_mapping
from fastvideo.api.serve import (
    WARMUP_PROMPT,
    GpuPoolConfig,
    LLMProviderConfig,
    PoolConfig,
    PromptEnhancerConfig,
    PromptSafetyConfig,
    SchedulerConfig,
    ServeConfig,
    ServerConfig,
    StateConfig,
    StreamingConfig,
    WarmupConfig,
    check_origin,
    normalize_origin,
)

__all__ = ["GENERATOR_KEYS", "SERVE_FIELD_SUPPORT", "SERVE_SECTIONS", "GpuPoolConfig", "HealthCheckConfig",
           "PoolConfig", "PromptEnhancerConfig", "PromptSafetyConfig", "QueueConfig", "ReplicaEndpoint",
           "RouterConfig", "SchedulerConfig", "ServeConfig", "ServerConfig", "StateConfig", "StreamingConfig",
           "WarmupConfig", "apply_request_defaults", "check_origin", "check_serve_config", "load_router_config",
           "load_serve_config", "normalize_origin", "parse_key_value_overrides", "request_defaults"]

SERVE_SECTIONS = ("generator", "server", "default_request", "streaming", "queue", "pool", "state")

#: ``fastvideo serve``'s ``queue`` section (max_queue, retry_after_s, max_batch, max_bypass) is the runtime's
#: scheduler config, passed down to every engine as is.
QueueConfig = SchedulerConfig

_ANY = "honoured"
#: Every serve field outside ``generator`` (that one is :data:`fastvideo.runtime.config_support.FIELD_SUPPORT`)
#: by dotted path -> how it is honoured or when it is refused. ``default_request`` is one row: its fields are
#: those of :class:`GenerationRequest`.
SERVE_FIELD_SUPPORT: dict[str, str] = {
    **{f"server.{name}": _ANY for name in ServerConfig.__dataclass_fields__},
    **{f"queue.{name}": _ANY for name in SchedulerConfig.__dataclass_fields__},
    **{f"pool.{name}": _ANY for name in PoolConfig.__dataclass_fields__},
    **{f"state.{name}": _ANY for name in StateConfig.__dataclass_fields__},
    **{f"streaming.{name}": _ANY for name in StreamingConfig.__dataclass_fields__
       if name not in ("warmup", "pool", "prompt", "safety")},
    "default_request": "server-wide request defaults: negative_prompt and sampling.{width, height, num_frames, fps, "
                       "num_inference_steps, guidance_scale, seed, shift, sampler} honoured (they fill what a request "
                       "leaves unset, HTTP and /v1/stream alike); output.save_video/return_frames accepted either "
                       "way (the server decides what it writes and returns); any other value refused",
    "streaming.session_timeout_seconds": "300 honoured; others refused (use streaming.idle_timeout_s)",
    "streaming.generation_segment_cap": "honoured (>= 1): segments a loop-generation session makes before its "
                                        "stream completes (every session is also capped by streaming.max_segments)",
    "streaming.stream_mode": "'av_fmp4' honoured (what /v1/stream sends); 'legacy_jpeg' refused",
    "streaming.warmup.enabled": "true honoured; false refused (use server.warmup: false)",
    "streaming.warmup.prompt": "FastVideo's default honoured; others refused (the warmup runs the generator's "
                               "health-check request)",
    "streaming.warmup.timeout_seconds": "2400 honoured; others refused (not supported yet)",
    "streaming.pool.num_workers": "None honoured; a number refused (list the devices in pool.devices)",
    "streaming.pool.enable_audio_reencode": "accepted either way: the stream has no audio track",
    "streaming.pool.conditioning_num_frames": "9 honoured; others refused (segments continue from the continuation "
                                              "state)",
    "streaming.pool.conditioning_end_offset": "0 honoured; others refused (segments continue from the continuation "
                                              "state)",
    **{f"streaming.prompt.{name}": "honoured when streaming.prompt.enabled (fastvideo.serving.prompting: the LLM "
                                   "prompt enhancer of /v1/stream sessions); a chain that cannot work is refused"
       for name in PromptEnhancerConfig.__dataclass_fields__ if name != "fallbacks"},
    **{f"streaming.prompt.fallbacks.{name}": "honoured: providers tried in order after a retryable failure"
       for name in LLMProviderConfig.__dataclass_fields__},
    **{f"streaming.safety.{name}": "honoured when streaming.safety.enabled (fastText prompt classifier; no "
                                   "classifier_path is refused; a missing file or package: allowed and logged)"
       for name in PromptSafetyConfig.__dataclass_fields__},
}

#: FastVideo serve fields refused unless at their default: dotted path -> (default, what to do instead).
_REFUSED_UNLESS_DEFAULT: dict[str, tuple[object, str]] = {
    "streaming.session_timeout_seconds": (300, "this server's session idle timeout is streaming.idle_timeout_s; "
                                               "set that instead"),
    "streaming.stream_mode": ("av_fmp4", "/v1/stream sends fragmented MP4 (av_fmp4) only"),
    "streaming.warmup.enabled": (True, "to skip the warmup use server.warmup: false (--no-warmup)"),
    "streaming.warmup.prompt": (WARMUP_PROMPT, "the warmup runs the generator's health-check request; drop it"),
    "streaming.warmup.timeout_seconds": (2400, "a warmup timeout is not supported yet; drop it"),
    "streaming.pool.num_workers": (None, "list the devices in pool.devices (--devices 0,1): one worker each"),
    "streaming.pool.conditioning_num_frames": (9, "segments continue from the continuation state; drop it"),
    "streaming.pool.conditioning_end_offset": (0, "segments continue from the continuation state; drop it"),
}


#: ``default_request`` fields honoured as server-wide defaults (a request's unset value, None, takes them).
HONOURED_REQUEST_DEFAULTS = ("negative_prompt", *(f"sampling.{name}" for name in (
    "width", "height", "num_frames", "fps", "num_inference_steps", "guidance_scale", "seed", "shift", "sampler")))
#: ``default_request`` fields accepted either way: the server decides what it writes and returns.
_ACCEPTED_REQUEST_DEFAULTS = ("output.save_video", "output.return_frames")


def _differences(ours: Any, default: Any, path: str) -> dict[str, Any]:
    if isinstance(ours, dict) and isinstance(default, dict):
        out: dict[str, Any] = {}
        for key in ours:
            out.update(_differences(ours[key], default.get(key), f"{path}.{key}" if path else key))
        return out
    return {} if ours == default else {path: ours}


def request_defaults(config: ServeConfig) -> dict[str, Any]:
    """The operator's ``default_request`` values this server honours, by dotted request path (``sampling.seed``):
    those that differ from ``GenerationRequest()``'s (FastVideo counts only the fields written; a field written
    with its default value changes nothing either way)."""
    changed = _differences(config_to_dict(config.default_request), config_to_dict(GenerationRequest()), "")
    return {path: value for path, value in changed.items() if path in HONOURED_REQUEST_DEFAULTS}


def apply_request_defaults(request: GenerationRequest, defaults: Mapping[str, Any]) -> GenerationRequest:
    """``request`` with each of ``defaults`` (see :func:`request_defaults`) set where the request left it unset."""
    for path, value in defaults.items():
        if path == "negative_prompt":
            if request.negative_prompt is None:
                request = replace(request, negative_prompt=value)
        elif getattr(request.sampling, path.split(".", 1)[1]) is None:
            request = replace(request, sampling=replace(request.sampling, **{path.split(".", 1)[1]: value}))
    return request


def check_serve_config(config: ServeConfig) -> ServeConfig:
    """Refuse, with a ConfigError naming the dotted key, a FastVideo serve value this server cannot honour."""
    if config.generator.engine.num_gpus > 1:  # one sequence-parallel generator: Python API, generate, Dynamo
        raise ConfigError("generator.engine.num_gpus", f"{config.generator.engine.num_gpus}: fastvideo serve does not "
                                                       "serve a sequence-parallel generator yet; set it to 1 and "
                                                       "list pool.devices (--devices) for one worker per GPU")
    cap = config.streaming.generation_segment_cap
    if cap < 1:
        raise ConfigError("streaming.generation_segment_cap", f"must be >= 1 (segments of a loop session), got {cap}")
    for path, (default, why) in _REFUSED_UNLESS_DEFAULT.items():
        value: Any = config
        for part in path.split("."):
            value = getattr(value, part)
        if value != default:
            raise ConfigError(path, f"{value!r} is not supported: {why}")
    changed = _differences(config_to_dict(config.default_request), config_to_dict(GenerationRequest()), "")
    for path in changed:
        if path not in HONOURED_REQUEST_DEFAULTS and path not in _ACCEPTED_REQUEST_DEFAULTS:
            raise ConfigError(f"default_request.{path}", "is not supported yet as a server-wide request default "
                                                         "(honoured: negative_prompt and sampling.width, height, "
                                                         "num_frames, fps, num_inference_steps, guidance_scale, "
                                                         "seed, shift, sampler); send it in each request, or drop "
                                                         "it from default_request")
    from fastvideo.serving.prompting.session import check_prompt_config  # httpx/prometheus: the serving extra

    check_prompt_config(config.streaming)
    return config


@dataclass
class ReplicaEndpoint:
    """One backend server the router forwards to."""

    url: str
    name: str | None = None
    #: Preferred while healthy; others take traffic when it is not.
    primary: bool = False


@dataclass
class HealthCheckConfig:
    """How the router probes its replicas."""

    path: str = "/readyz"
    interval_s: float = 2.0
    timeout_s: float = 2.0
    #: Consecutive failed probes (or failed forwards) that mark a replica unhealthy.
    failure_threshold: int = 2
    #: Consecutive good probes that bring it back.
    recovery_threshold: int = 1


@dataclass
class RouterConfig:
    """Everything ``fastvideo router-serve`` needs."""

    host: str = "127.0.0.1"
    port: int = 9000
    replicas: list[ReplicaEndpoint] = field(default_factory=list)
    health_check: HealthCheckConfig = field(default_factory=HealthCheckConfig)
    #: Seconds a job id or session id stays bound to the replica that owns it.
    sticky_ttl_s: float = 3600.0
    #: Timeout of one forwarded HTTP request (synchronous generations can be long).
    request_timeout_s: float = 600.0
    api_key: str | None = None
    #: Largest request body forwarded (bytes); a larger one, chunked or not, is answered 413 unread.
    max_body_bytes: int = 32 * 1024 * 1024
    #: Browser origins (``scheme://host[:port]``, or ``"*"``) that may open the router's ``/v1/stream`` besides
    #: its own, as ``server.allowed_origins`` for a server (:mod:`fastvideo.serving.ws_origin`).
    allowed_origins: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.allowed_origins = [check_origin(entry, f"allowed_origins[{i}]")
                                for i, entry in enumerate(self.allowed_origins)]

    def validate(self) -> "RouterConfig":
        if not self.replicas:
            raise ConfigError("replicas", "the router needs at least one replica")
        for i, replica in enumerate(self.replicas):
            parsed = urlparse(replica.url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConfigError(f"replicas[{i}].url", f"{replica.url!r} is not an http(s) URL")
        if sum(r.primary for r in self.replicas) > 1:
            raise ConfigError("replicas", "at most one replica may be primary")
        hc = self.health_check
        if hc.interval_s <= 0 or hc.timeout_s <= 0:
            raise ConfigError("health_check", "interval_s and timeout_s must be positive")
        if hc.failure_threshold < 1 or hc.recovery_threshold < 1:
            raise ConfigError("health_check", "thresholds must be >= 1")
        if isinstance(self.max_body_bytes, bool) or not isinstance(self.max_body_bytes, int) \
                or self.max_body_bytes < 1:
            raise ConfigError("max_body_bytes", f"must be a positive number of bytes, got {self.max_body_bytes!r}")
        return self


def parse_key_value_overrides(texts: Sequence[str]) -> dict[str, Any]:
    """``["engine.dtype=bf16", "server.port=8001"]`` -> flat dotted dict, cast by
    :func:`fastvideo.api.parse_cli_overrides` (each text is one ``--KEY=VALUE`` token)."""
    tokens = []
    for text in texts:
        key, sep, _ = text.partition("=")
        if not sep or not key.strip().lstrip("-") or any(not part for part in key.strip().lstrip("-").split(".")):
            raise ConfigError("overrides", f"{text!r} is not KEY=VALUE with a dotted KEY (e.g. engine.dtype=bf16)")
        tokens.append("--" + text.strip().lstrip("-"))
    return parse_cli_overrides(tokens)


def _read(path: str | Path) -> dict[str, Any]:
    try:
        return load_raw_config(path)
    except (FileNotFoundError, ValueError) as exc:  # missing file, unsupported suffix, not YAML/JSON
        if isinstance(exc, ConfigError) and exc.path:
            raise
        raise ConfigError("config", str(exc)) from exc


def _flatten(flags: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flags.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_serve_config(path: str | Path | None = None, *, flags: Mapping[str, Any] | None = None,
                      overrides: Sequence[str] = (), dotted: Sequence[str] = ()) -> ServeConfig:
    """Defaults < file < ``dotted`` (``["--server.port", "8001"]``) < ``flags`` (a nested mapping of explicitly
    given CLI flags) < ``overrides`` (``KEY=VALUE``); checked with :func:`check_serve_config`."""
    data = normalize_serve_mapping(_read(path)) if path is not None else {}
    layers = [parse_cli_overrides(list(dotted)) if dotted else {}, _flatten(flags or {}),
              parse_key_value_overrides(overrides)]
    for layer in layers:
        data = apply_overrides(data, normalize_serve_mapping(layer))
    return check_serve_config(parse_config(ServeConfig, data))


def load_router_config(path: str | Path, overrides: Sequence[str] = ()) -> RouterConfig:
    """A validated RouterConfig from a file whose mapping sits at the top or under ``router:``."""
    data = _read(path)
    if set(data) == {"router"} and isinstance(data["router"], dict):
        data = data["router"]
    data = apply_overrides(copy.deepcopy(data), parse_key_value_overrides(overrides))
    return parse_config(RouterConfig, data).validate()
