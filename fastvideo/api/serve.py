"""The serve configuration: FastVideo's ``ServeConfig`` with this server's own sections, in one place.

Contract:
- :class:`ServeConfig` is everything ``fastvideo serve`` needs. FastVideo's fields, with its names, nesting
  and types: ``generator`` (:class:`GeneratorConfig`), ``server`` (:class:`ServerConfig`),
  ``default_request`` (:class:`GenerationRequest`), ``streaming`` (:class:`StreamingConfig`, with
  :class:`WarmupConfig`, :class:`GpuPoolConfig`, :class:`PromptEnhancerConfig` (with this server's
  :class:`LLMProviderConfig` fallbacks), :class:`PromptSafetyConfig`). This server's own sections, which
  FastVideo's parser does not have: ``queue`` (:class:`SchedulerConfig`: admission and batching, handed to
  every engine as is), ``pool`` (:class:`PoolConfig`: one worker per device) and ``state``
  (:class:`StateConfig`: where continuation state lives); ``server`` and ``streaming`` also carry this
  server's own fields beside FastVideo's. Defaults differ from FastVideo's where safety asks:
  ``server.host`` is ``127.0.0.1`` (FastVideo: ``0.0.0.0``) and ``server.output_dir`` ``outputs/serving``
  (FastVideo: ``outputs/``).
- The runtime's sections are these very dataclasses (``fastvideo.runtime.scheduler.SchedulerConfig``
  and ``fastvideo.runtime.pool.PoolConfig`` re-export them), passed down as they are, never copied.
- Values are checked when built: a bound below its minimum, a device list that names no device, an
  origin that is not ``scheme://host[:port]``, ``pool.devices`` disagreeing with
  ``generator.engine.device``, or ``server.warmup=false`` with a pool is a ConfigError naming the
  dotted key. FastVideo's fields this server cannot honour parse, and are refused when the server
  starts (:func:`fastvideo.serving.config.check_serve_config`).
- Files and dotted overrides: :func:`fastvideo.api.load_serve_config`. Standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlparse

from fastvideo.api.config import GeneratorConfig
from fastvideo.api.limits import MAX_PROMPT_CHARS
from fastvideo.api.parse import NULL_IS_DEFAULT, ConfigError
from fastvideo.api.request import GenerationRequest

#: FastVideo's default streaming warmup prompt.
WARMUP_PROMPT = ("A cinematic drone shot over coastal cliffs at sunrise, golden light, gentle ocean waves, "
                 "ultra detailed")


@dataclass
class SchedulerConfig:
    """Admission and batching policy (``fastvideo serve``'s ``queue`` section, passed down as is:
    ServiceConfig.worker -> WorkerConfig.scheduler -> Scheduler). A bound below its minimum is refused."""

    #: Items that may wait (running ones do not count); the next admit raises QueueFull.
    max_queue: int = 16
    #: Largest number of requests in one DiT forward.
    max_batch: int = 1
    #: A waiting item is jumped by at most this many batches before its bucket goes next.
    max_bypass: int = 4
    #: Seconds a caller is told to wait after QueueFull.
    retry_after_s: int = 5

    def __post_init__(self) -> None:
        for name, low in (("max_queue", 1), ("max_batch", 1), ("max_bypass", 0), ("retry_after_s", 0)):
            value = getattr(self, name)
            if value < low:  # parse_config roots the path at the section (``queue.max_batch``)
                raise ConfigError(name, f"must be >= {low}, got {value}")


def normalize_device(entry: str | int) -> str | None:
    """``"0"`` / ``"cuda"`` / ``"cuda:0"`` -> ``"cuda:0"``, ``"cpu"`` -> ``"cpu"``; None when it names no device."""
    text = str(entry).strip().lower()
    if text == "cpu":
        return "cpu"
    if text == "cuda":
        return "cuda:0"
    index = text[len("cuda:"):] if text.startswith("cuda:") else text
    return f"cuda:{int(index)}" if index.isascii() and index.isdigit() else None  # "²".isdigit() is True


def normalize_devices(entries: Sequence[str | int]) -> list[str]:
    """A device list in canonical form (``cuda:N`` / ``cpu``); ConfigError naming ``devices[i]`` for an entry that
    is no device, a GPU listed twice, or CPU mixed with CUDA. Existence is checked where torch is loaded
    (:func:`fastvideo.runtime.device_pool.check_devices`)."""
    out: list[str] = []
    for i, entry in enumerate(entries):
        device = normalize_device(entry)
        if device is None:
            raise ConfigError(f"devices[{i}]", f"{entry!r} is not a device: use a CUDA index (0), cuda:N, or cpu")
        if device != "cpu" and device in out:
            raise ConfigError(f"devices[{i}]", f"{device} is listed twice: the pool runs one worker per GPU")
        if out and (device == "cpu") != (out[0] == "cpu"):
            raise ConfigError(f"devices[{i}]", f"{device} mixes CPU and CUDA workers ({out[0]} first): list one kind")
        out.append(device)
    return out


@dataclass
class PoolConfig:
    """A pool's limits; ``devices`` names the devices of a pool built from them (``fastvideo serve``'s ``pool``
    section, ``--devices``): one worker each, see :mod:`fastvideo.runtime.device_pool`."""

    #: One worker per entry: ``"cuda:N"`` (or just ``N``) or ``"cpu"`` (may repeat: several CPU workers); stored
    #: normalized (``cuda:N`` / ``cpu``). Empty: no pool, the server runs one in-process engine on
    #: ``generator.engine.device``.
    devices: list[str | int] = field(default_factory=list)
    #: Seconds every worker may take to load its model and warm up before it is excluded.
    boot_timeout_s: float = 900.0
    #: Persist every finished session segment's state to the SessionStore.
    write_through: bool = True
    #: Seconds a snapshot / hydrate call to a worker may take.
    rpc_timeout_s: float = 60.0
    #: Seconds each worker gets to finish on stop before it is stopped harder (SIGTERM, then SIGKILL).
    stop_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self.devices = [*normalize_devices(self.devices)]
        for name in ("boot_timeout_s", "rpc_timeout_s", "stop_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")


def normalize_origin(text: str) -> str | None:
    """``scheme://host[:port]`` of a browser origin, lower case, default port dropped; None when ``text`` is no
    http(s) origin (a path other than ``/``, credentials, ``null``...)."""
    parsed = urlparse(text.strip().lower())
    try:
        port = parsed.port
    except ValueError:
        return None
    if (parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/") or parsed.params
            or parsed.query or parsed.fragment or parsed.username or parsed.password):
        return None
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    default = 80 if parsed.scheme == "http" else 443
    return f"{parsed.scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


def check_origin(entry: str, path: str = "allowed_origins") -> str:
    """``entry`` normalized (:func:`normalize_origin`), or ``"*"``; a ConfigError naming ``path`` when it is
    neither."""
    if entry.strip() == "*":
        return "*"
    origin = normalize_origin(entry)
    if origin is None:
        raise ConfigError(path, f"{entry!r} is not an origin: use scheme://host[:port] (e.g. "
                                "https://app.example.com or http://localhost:3000), or \"*\" for any")
    return origin


@dataclass
class ServerConfig:
    """The HTTP server: address, auth, outputs, logging, readiness."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: When set, every ``/v1/*`` request needs ``Authorization: Bearer <api_key>``.
    api_key: str | None = None
    #: The model id clients send and ``/v1/models`` lists; None: the model preset's name.
    served_model_name: str | None = None
    #: Folder of generated files (MP4, PNG, uploaded references); created if missing.
    output_dir: str = "outputs/serving"
    #: Seconds a finished job's files and record are kept before they expire.
    output_ttl_s: float = 3600.0
    #: Run the generator's health-check request at startup; ``/readyz`` is 200 only after it.
    warmup: bool = True
    #: ``openai-poll-after-ms`` sent on job reads while a job is queued or running.
    poll_after_ms: int = 500
    #: Largest request body accepted (bytes), uploads included, whatever the transfer encoding (a chunked body is
    #: counted as it streams in and refused with 413 at the limit). The default fits a base64 reference image.
    max_body_bytes: int = 32 * 1024 * 1024
    #: Longest ``prompt`` / ``negative_prompt`` accepted over HTTP and ``/v1/stream`` (characters, 1 up to
    #: ``fastvideo.api.MAX_PROMPT_CHARS``); a longer one is a 400 naming the field.
    max_prompt_chars: int = MAX_PROMPT_CHARS
    #: ``text`` or ``json`` (one JSON object per line, with request ids).
    log_format: Literal["text", "json"] = "text"
    #: Seconds graceful shutdown waits for running and queued jobs before failing them.
    drain_timeout_s: float = 60.0
    #: Seconds the runtime keeps a finished job nobody collected (HTTP and stream jobs are collected as they
    #: end: their records and files follow ``output_ttl_s``).
    job_ttl_s: float = 120.0
    #: Browser origins (``scheme://host[:port]``, or ``"*"`` for any) that may open the ``/v1/stream``
    #: WebSocket besides the server's own (same-origin: the ``Origin`` header names the ``Host`` the socket
    #: was opened on). Other browser origins are refused before accept (403); requests without an
    #: ``Origin`` header (non-browser clients) are not affected.
    allowed_origins: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.allowed_origins = [check_origin(entry, f"allowed_origins[{i}]")
                                for i, entry in enumerate(self.allowed_origins)]
        if not 1 <= self.max_prompt_chars <= MAX_PROMPT_CHARS:
            raise ConfigError("max_prompt_chars", f"must be between 1 and {MAX_PROMPT_CHARS} "
                                                  f"(fastvideo.api.MAX_PROMPT_CHARS), got {self.max_prompt_chars}")
        if self.max_body_bytes < 1024:
            raise ConfigError("max_body_bytes", f"must be at least 1024 bytes, got {self.max_body_bytes}")


@dataclass
class WarmupConfig:
    """FastVideo's streaming warmup. This server warms up with the generator's health-check request
    (``server.warmup``): ``enabled: false`` and other prompts / timeouts are refused, naming the fix."""

    enabled: bool = True
    prompt: str = WARMUP_PROMPT
    timeout_seconds: int = 2400


@dataclass
class GpuPoolConfig:
    """FastVideo's streaming GPU pool. This server's pool is ``pool.devices``: ``num_workers`` is refused
    (list the devices instead); the conditioning knobs are refused when changed (segments continue from
    the continuation state); ``enable_audio_reencode`` is accepted either way (the stream has no audio)."""

    num_workers: int | None = None
    enable_audio_reencode: bool = True
    conditioning_num_frames: int = 9
    conditioning_end_offset: int = 0


@dataclass
class LLMProviderConfig:
    """One fallback LLM provider of the prompt enhancer (``streaming.prompt.fallbacks[i]``): fields as in
    :class:`PromptEnhancerConfig`; ``model`` None is the preconfigured provider's default model (for
    ``openai_compatible``: ``streaming.prompt.model``), ``timeout_ms`` None is ``streaming.prompt.timeout_ms``."""

    provider: Literal["cerebras", "groq", "openai_compatible"] = "openai_compatible"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    timeout_ms: int | None = None

    def __post_init__(self) -> None:
        if self.timeout_ms is not None and self.timeout_ms <= 0:
            raise ConfigError("timeout_ms", f"must be > 0 milliseconds, got {self.timeout_ms}")


@dataclass
class PromptEnhancerConfig:
    """The LLM prompt enhancer of ``/v1/stream`` sessions (:mod:`fastvideo.serving.prompting`): FastVideo's
    fields (``enabled`` ... ``system_prompt_dir``) and this server's own (``base_url`` ... ``fallbacks``).
    ``provider`` ``cerebras`` / ``groq`` are preconfigured (base URL, key from ``CEREBRAS_API_KEY`` /
    ``GROQ_API_KEY``); ``openai_compatible`` is any chat-completions server at ``base_url`` (vLLM, SGLang,
    llama.cpp). ``fallbacks`` are tried in order when a provider fails with a retryable error."""

    enabled: bool = False
    provider: Literal["cerebras", "groq", "openai_compatible"] = "cerebras"
    model: str = "gpt-oss-120b"
    timeout_ms: int = 20000
    #: Folder with enhance.txt / auto_extend.txt / rewrite.txt (None: the packaged system prompts).
    system_prompt_dir: str | None = None

    # This server's own fields.
    #: The provider's API base URL (None: the preconfigured one); required for ``openai_compatible``.
    base_url: str | None = None
    #: Environment variable holding the API key (None: the preconfigured provider's; a local server needs none).
    api_key_env: str | None = None
    temperature: float = 0.7
    max_tokens: int | None = 256
    fallbacks: list[LLMProviderConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.timeout_ms <= 0:
            raise ConfigError("timeout_ms", f"must be > 0 milliseconds, got {self.timeout_ms}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError("temperature", f"must be between 0 and 2, got {self.temperature}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError("max_tokens", f"must be >= 1 or null, got {self.max_tokens}")


@dataclass
class PromptSafetyConfig:
    """The prompt safety classifier of ``/v1/stream`` sessions: a fastText model at ``classifier_path``
    (FastVideo's fields) blocking a prompt whose ``unsafe`` probability reaches ``block_threshold`` (ours)."""

    enabled: bool = False
    classifier_path: str | None = None
    block_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.block_threshold <= 1.0:
            raise ConfigError("block_threshold", f"must be between 0 and 1, got {self.block_threshold}")


@dataclass
class StreamingConfig:
    """The ``/v1/stream`` WebSocket sessions: FastVideo's fields (``session_timeout_seconds`` ...
    ``safety``) and this server's own (``enabled`` ... ``max_sessions_per_client``). FastVideo's fields parse;
    a value this server cannot honour is refused when the server starts, naming it and this server's
    equivalent where there is one (:data:`fastvideo.serving.config.SERVE_FIELD_SUPPORT`)."""

    # FastVideo's fields (zeyuanyin/FastVideo@1c4c97ba fastvideo/api/schema.py StreamingConfig).
    #: FastVideo's idle timeout; this server's is ``idle_timeout_s`` (300 s too): other values are refused.
    session_timeout_seconds: int = 300
    #: FastVideo's segment cap; this server's is ``max_segments``: other values are refused.
    generation_segment_cap: int = 6
    #: ``av_fmp4`` is what /v1/stream sends; ``legacy_jpeg`` is refused.
    stream_mode: Literal["av_fmp4", "legacy_jpeg"] = "av_fmp4"
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    pool: GpuPoolConfig = field(default_factory=GpuPoolConfig)
    prompt: PromptEnhancerConfig = field(default_factory=PromptEnhancerConfig)
    safety: PromptSafetyConfig = field(default_factory=PromptSafetyConfig)

    # This server's own fields.
    enabled: bool = True
    #: Concurrent sessions; one more is answered ``session_rejected``.
    max_sessions: int = 4
    #: A session with no client frame and no running segment for this long ends with ``session_timeout``.
    idle_timeout_s: float = 300.0
    #: Segments one session may generate.
    max_segments: int = 64
    #: Segment requests a session may have waiting behind the running one.
    max_pending_segments: int = 4
    #: Video codec of the fMP4 stream: ``h264`` (avc1, libx264) or ``av1`` (av01, libsvtav1).
    codec: Literal["h264", "av1"] = "h264"
    #: Quality (CRF) of the stream encoder; lower is better and bigger.
    crf: int = 23
    #: Defaults of a session's sampling when ``session_init_v2`` leaves them unset (None: the preset's).
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    num_inference_steps: int | None = None
    #: Seconds a new socket has to send a valid ``session_init_v2`` (0 < s <= 3600); past it the socket gets
    #: ``error{code:"handshake_timeout"}`` and is closed, freeing its slot.
    handshake_timeout_s: float = 10.0
    #: Live sessions one client address may hold (1..max_sessions); one more gets ``session_rejected``.
    #: None: no cap of its own (``max_sessions`` bounds all clients together). Behind the router every
    #: session comes from the router's address.
    max_sessions_per_client: int | None = None

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ConfigError("max_sessions", f"must be >= 1, got {self.max_sessions}")
        if not self.idle_timeout_s > 0:
            raise ConfigError("idle_timeout_s", f"must be > 0 seconds, got {self.idle_timeout_s}")
        if not 0 < self.handshake_timeout_s <= 3600:
            raise ConfigError("handshake_timeout_s", f"must be > 0 and <= 3600 seconds, got {self.handshake_timeout_s}")
        cap = self.max_sessions_per_client
        if cap is not None and not 1 <= cap <= self.max_sessions:
            raise ConfigError("max_sessions_per_client", f"must be between 1 and streaming.max_sessions "
                                                         f"({self.max_sessions}), or null for no cap of its own; "
                                                         f"got {cap}")


@dataclass
class StateConfig:
    """Where continuation state lives: ``memory://`` keeps it inline in the state itself; with
    ``redis://host:port/db`` tensors above ``blob_threshold_bytes`` are stored in Redis and the state
    carries their ids, so it survives a restart and can move between servers sharing that Redis."""

    url: str = "memory://"
    blob_threshold_bytes: int = 64 * 1024
    blob_ttl_s: float | None = 24 * 3600.0


@dataclass
class ServeConfig:
    """Everything ``fastvideo serve`` needs: FastVideo's ``generator``/``server``/``default_request``/
    ``streaming`` plus this server's ``queue``/``pool``/``state`` (see module contract)."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    #: FastVideo's operator request defaults: only the fields written count. Not supported yet: any value
    #: other than ``GenerationRequest()``'s is refused when the server starts, naming it.
    default_request: GenerationRequest = field(default_factory=GenerationRequest)
    #: FastVideo writes ``streaming: null`` for "no streaming section": read as the defaults (on; turn the
    #: WebSocket off with ``streaming.enabled: false``).
    streaming: StreamingConfig = field(default_factory=StreamingConfig, metadata={NULL_IS_DEFAULT: True})
    #: Admission and batching of every engine (per worker with a pool; ``max_queue`` bounds the whole server).
    queue: SchedulerConfig = field(default_factory=SchedulerConfig)
    #: ``devices``: one worker per device (the first in this process, the others in their own processes).
    pool: PoolConfig = field(default_factory=PoolConfig)
    state: StateConfig = field(default_factory=StateConfig)

    def __post_init__(self) -> None:
        devices = normalize_devices(self.pool.devices)
        if not devices:
            return
        engine = self.generator.engine
        if engine.device == "auto":
            engine.device = devices[0]
        elif normalize_device(engine.device) != devices[0]:
            raise ConfigError("pool.devices", f"the first device runs the server's own engine, but "
                                              f"generator.engine.device is {engine.device!r}: list it first, or "
                                              "drop engine.device (--device)")
        if not self.server.warmup:
            raise ConfigError("server.warmup", "every pool worker warms up when it boots (pool.devices is set): "
                                               "drop --no-warmup / server.warmup=false, or drop --devices")
