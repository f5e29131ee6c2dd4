"""The one place FastVideo reads environment variables.

Contract: every environment variable the package honours is listed here and read through
``read_env()`` (or, for a variable a config names, such as an LLM provider's API key,
``read_named_env()``); no other module calls ``os.environ`` for configuration. Values are read at
call time (not import time) so tests can set them with ``monkeypatch``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Name of the variable that picks the attention backend (``sdpa``, ``triton``, ``flash_attn``).
ATTENTION_BACKEND_VAR = "FASTVIDEO_ATTENTION_BACKEND"
#: Where the built-in default model (and other caches) are written.
CACHE_DIR_VAR = "FASTVIDEO_CACHE_DIR"
#: Fused DiT ops backend when the config names none (``triton``, ``torch``; unset = eager model code).
OPS_BACKEND_VAR = "FASTVIDEO_OPS_BACKEND"
#: Log level for the ``fastvideo`` logger (``INFO``, ``DEBUG``...).
LOG_LEVEL_VAR = "FASTVIDEO_LOG_LEVEL"
#: API key ``fastvideo serve`` / ``bench`` use when ``--api-key`` is not given (keeps it out of ``ps``).
API_KEY_VAR = "FASTVIDEO_API_KEY"
#: Folder for per-session JSONL logs of ``/v1/stream`` (one ``<session_id>.jsonl`` each); unset: none written.
SESSION_LOG_DIR_VAR = "FASTVIDEO_SESSION_LOG_DIR"


def read_session_log_dir() -> Path | None:
    """``FASTVIDEO_SESSION_LOG_DIR`` as a path (None when unset or blank), read at call time."""
    value = os.environ.get(SESSION_LOG_DIR_VAR, "").strip()
    return Path(value).expanduser() if value else None


@dataclass(frozen=True)
class EnvSettings:
    """Snapshot of the environment variables FastVideo understands."""

    attention_backend: str | None
    cache_dir: Path
    log_level: str
    ops_backend: str | None = None
    api_key: str | None = None


def read_env() -> EnvSettings:
    """Read every FastVideo environment variable once and return them typed."""
    backend = os.environ.get(ATTENTION_BACKEND_VAR) or None
    cache = os.environ.get(CACHE_DIR_VAR)
    if cache:
        cache_dir = Path(cache).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        cache_dir = (Path(xdg) if xdg else Path.home() / ".cache") / "fastvideo"
    return EnvSettings(
        attention_backend=backend.strip().lower() if backend else None,
        cache_dir=cache_dir,
        log_level=(os.environ.get(LOG_LEVEL_VAR) or "INFO").upper(),
        api_key=os.environ.get(API_KEY_VAR) or None,
        ops_backend=(os.environ.get(OPS_BACKEND_VAR) or "").strip().lower() or None,
    )


#: API key variables of the prompt enhancer's preconfigured LLM providers (``streaming.prompt``); another
#: provider names its own with ``api_key_env``.
CEREBRAS_API_KEY_VAR = "CEREBRAS_API_KEY"
GROQ_API_KEY_VAR = "GROQ_API_KEY"


def read_named_env(name: str) -> str | None:
    """The value of the variable a config names (``streaming.prompt.api_key_env``), stripped; None when unset
    or blank. Read at call time, like :func:`read_env`."""
    value = os.environ.get(name, "").strip()
    return value or None
