"""Typed configuration of the servers (``fastvideo serve`` and ``fastvideo router-serve``).

Contract:
- :class:`ServeConfig` is everything ``fastvideo serve`` needs: the :class:`GeneratorConfig` to load,
  the HTTP server (:class:`ServerConfig`), admission and batching (``queue``: the runtime's
  :class:`SchedulerConfig` itself, also importable here as ``QueueConfig``), the device pool (``pool``:
  the runtime's :class:`PoolConfig`; ``pool.devices`` runs one worker per device) and WebSocket
  streaming (:class:`StreamingConfig`). The runtime sections are the runtime's own dataclasses, handed
  down as they are (``fastvideo.serving.app.service_config``), never copied field by field.
  :class:`RouterConfig` is everything ``fastvideo router-serve`` needs.
- A ServeConfig is checked when it is built: with ``pool.devices`` the first device runs the server's
  own engine, so ``generator.engine.device`` is set to it (``auto``) or must name it; every pool worker
  warms up when it boots, so ``server.warmup=false`` is refused with a pool. Devices that do not exist
  are refused when the server starts (``pool.devices[i]``). Streaming limits are bounded
  (``streaming.max_sessions`` >= 1, ``max_sessions_per_client`` 1..max_sessions or null,
  ``handshake_timeout_s`` in (0, 3600], ``idle_timeout_s`` > 0) and ``server.allowed_origins`` lists
  browser origins (:func:`check_origin`); anything else is a ConfigError naming the key.
- Both are plain dataclasses, built strictly with :func:`fastvideo.api.parse_config` (an unknown
  key fails naming its dotted path) and passed explicitly; nothing here is a global.
- :func:`load_serve_config` layers, lowest first: defaults, a YAML/JSON file, CLI flags, dotted
  ``KEY=VALUE`` overrides. A top-level key that belongs to :class:`GeneratorConfig`
  (``model_path``, ``engine``, ``pipeline``) is read as ``generator.<key>``, so
  ``engine.dtype=bf16`` works as well as ``generator.engine.dtype=bf16``. Values of overrides are
  parsed as YAML scalars (``2`` is an int, ``true`` a bool, ``bf16`` a string).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence
from urllib.parse import urlparse

from fastvideo.api import MAX_PROMPT_CHARS, ConfigError, GeneratorConfig, parse_config
from fastvideo.runtime.pool import PoolConfig, normalize_device, normalize_devices
from fastvideo.runtime.scheduler import SchedulerConfig

GENERATOR_KEYS = ("model_path", "engine", "pipeline")
SERVE_SECTIONS = ("generator", "server", "queue", "pool", "streaming", "state")

#: ``fastvideo serve``'s ``queue`` section (max_queue, retry_after_s, max_batch, max_bypass) is the runtime's
#: scheduler config, passed down to every engine as is.
QueueConfig = SchedulerConfig


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
class StreamingConfig:
    """The ``/v1/stream`` WebSocket sessions."""

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
    """Everything ``fastvideo serve`` needs."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    #: Admission and batching of every engine (per worker with a pool; ``max_queue`` bounds the whole server).
    queue: SchedulerConfig = field(default_factory=SchedulerConfig)
    #: ``devices``: one worker per device (the first in this process, the others in their own processes).
    pool: PoolConfig = field(default_factory=PoolConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
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
        return self


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


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A mapping from a ``.yaml``/``.yml``/``.json`` file (ConfigError when unreadable or not a mapping)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError("config", f"config file {str(p)!r} does not exist")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a config error
        raise ConfigError("config", f"cannot parse {str(p)!r}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"{str(p)!r} must hold a mapping at the top level")
    return data


def _normalize_serve_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    """Move GeneratorConfig keys given at the top level under ``generator``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in GENERATOR_KEYS:
            out.setdefault("generator", {})
            if not isinstance(out["generator"], dict):
                raise ConfigError("generator", "must be a mapping")
            out["generator"][key] = value
        else:
            out[key] = copy.deepcopy(value)
    return out


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively with ``extra`` (mappings merge, everything else replaces)."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value
    return base


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"engine.dtype=bf16"`` -> (["engine", "dtype"], "bf16"); the value is a YAML scalar."""
    key, sep, raw = text.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError("overrides", f"{text!r} is not KEY=VALUE with a dotted KEY (e.g. engine.dtype=bf16)")
    import yaml

    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except Exception:  # noqa: BLE001 - keep unparseable text as a string
        value = raw
    return key.split("."), value


def _set_path(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(path[: i + 1]), "is not a mapping; cannot set a key under it")
        node = child
    node[path[-1]] = value


def load_serve_config(path: str | Path | None = None, *, flags: Mapping[str, Any] | None = None,
                      overrides: Sequence[str] = ()) -> ServeConfig:
    """Defaults < file < ``flags`` (a nested mapping of explicitly given CLI flags) < dotted overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _normalize_serve_mapping(read_config_file(path))
    if flags:
        deep_merge(data, _normalize_serve_mapping(flags))
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] in GENERATOR_KEYS:
            keys = ["generator", *keys]
        _set_path(data, keys, value)
    return parse_config(ServeConfig, data)


def load_router_config(path: str | Path, overrides: Sequence[str] = ()) -> RouterConfig:
    """A validated RouterConfig from a file whose mapping sits at the top or under ``router:``."""
    data = read_config_file(path)
    if set(data) == {"router"} and isinstance(data["router"], dict):
        data = data["router"]
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        _set_path(data, keys, value)
    return parse_config(RouterConfig, data).validate()
