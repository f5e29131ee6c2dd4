"""LLM providers of the prompt enhancer: any OpenAI-compatible chat-completions endpoint.

Contract:
- :class:`LLMProvider` is what the enhancer calls: a ``name`` and ``async complete(LLMRequest) ->
  LLMResponse``. :class:`OpenAICompatibleProvider` speaks the chat-completions wire format
  (``POST {base_url}/chat/completions`` with ``model``, ``messages``, ``max_tokens``, ``temperature``;
  the reply's ``choices[0].message.content``) to any server: Cerebras and Groq are preconfigured
  (:class:`CerebrasProvider`, :class:`GroqProvider`: base URL, default model, API key variable), and a
  local vLLM / SGLang / llama.cpp server works with its base URL alone (no key needed).
- The API key is the ``api_key`` given, else the variable ``api_key_env`` names, read through
  :func:`fastvideo.envs.read_named_env` when the provider is built. It is sent as ``Authorization: Bearer``
  and never appears in an error or a log line.
- Failures raise :class:`LLMProviderError` (a :class:`fastvideo.api.FastVideoError`) with ``retryable``,
  ``provider`` and ``status`` set; the enhancer decides on ``retryable`` only. Retryable: a timeout
  (:class:`LLMTimeoutError`; the whole call is bounded by ``timeout_ms``, not each socket phase), a
  connection error, HTTP 408, 429 or 5xx, and a malformed body (not JSON, no ``choices``, no text content).
  Not retryable: any other 4xx (a bad key, an unknown model, a bad request: falling back would hide a
  mistake the operator must fix) and a preconfigured provider without its key.
- One ``httpx.AsyncClient`` per call (providers hold no connection and no event loop), all sharing one TLS
  context built once (certifi's CA bundle, as httpx's default).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import certifi
import httpx

from fastvideo.api import ConfigError, FastVideoError
from fastvideo.envs import CEREBRAS_API_KEY_VAR, GROQ_API_KEY_VAR, read_named_env

CEREBRAS_BASE_URL = "https://api.cerebras.ai/v1"
CEREBRAS_DEFAULT_MODEL = "gpt-oss-120b"
GROQ_BASE_URL = "https://api.groq.com/openai/v1"
#: Groq's id of the same open-weights model (the two differ in base URL, key variable and model ids).
GROQ_DEFAULT_MODEL = "openai/gpt-oss-120b"
#: Characters of an error body kept in an error message.
_BODY_CHARS = 200


@dataclass
class LLMMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass
class LLMRequest:
    messages: list[LLMMessage]
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    timeout_ms: int | None = None
    #: Carried into log lines and error messages (the session's or HTTP request's id).
    request_id: str | None = None


@dataclass
class LLMResponse:
    content: str
    provider: str
    model: str
    latency_ms: float
    fallback_used: bool = False
    #: Providers that failed before this one answered, as ``name: reason`` (empty without fallback).
    failures: list[str] = field(default_factory=list)


class LLMProviderError(FastVideoError, RuntimeError):
    """A provider failed one request. ``retryable``: whether the next provider should be tried."""

    def __init__(self, message: str, *, retryable: bool = True, provider: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.provider = provider
        self.status = status


class LLMTimeoutError(LLMProviderError):
    """A provider did not answer within the timeout: always retryable."""

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message, retryable=True, provider=provider)


@runtime_checkable
class LLMProvider(Protocol):
    """What the enhancer calls. A synchronous backend wraps its call in ``asyncio.to_thread``."""

    name: str

    async def complete(self, request: LLMRequest) -> LLMResponse: ...


@dataclass
class OpenAICompatibleProvider:
    """Any chat-completions server. ``model`` (when set) replaces the enhancer's model for this provider;
    ``timeout_ms`` (when set) replaces the request's."""

    api_key: str | None = None
    base_url: str = ""
    name: str = "openai_compatible"
    model: str | None = None
    api_key_env: str | None = None
    timeout_ms: int | None = None
    #: A hosted provider refuses to call without a key (non-retryable); a local server needs none.
    requires_api_key: bool = False

    def __post_init__(self) -> None:
        if not self.base_url or not self.base_url.startswith(("http://", "https://")):
            raise ConfigError("base_url", f"{self.name}: an http(s) URL of an OpenAI-compatible API is required "
                                          f"(such as http://127.0.0.1:8000/v1), got {self.base_url!r}")
        self.base_url = self.base_url.rstrip("/")
        if self.api_key is None and self.api_key_env:
            self.api_key = read_named_env(self.api_key_env)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if self.requires_api_key and not self.api_key:
            raise LLMProviderError(f"{self.name}: no API key (set {self.api_key_env or 'api_key'})",
                                   retryable=False, provider=self.name)
        model = self.model or request.model
        timeout_s = (self.timeout_ms or request.timeout_ms or 20000) / 1000.0
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body: dict[str, Any] = {"model": model,
                                "messages": [{"role": m.role, "content": m.content} for m in request.messages]}
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        t0 = time.perf_counter()
        try:
            async with httpx.AsyncClient(timeout=timeout_s, verify=_tls_context()) as client:
                response = await asyncio.wait_for(
                    client.post(f"{self.base_url}/chat/completions", headers=headers, json=body), timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
            raise LLMTimeoutError(f"{self.name}: no answer within {timeout_s:g} s", provider=self.name) from exc
        except httpx.HTTPError as exc:
            raise LLMProviderError(f"{self.name}: {type(exc).__name__} calling {self.base_url}: {exc}",
                                   provider=self.name) from exc
        status = response.status_code
        if status >= 400:
            retryable = status >= 500 or status in (408, 429)
            text = response.text[:_BODY_CHARS].replace(self.api_key or "\0", "***")
            raise LLMProviderError(f"{self.name}: HTTP {status} for model {model!r}: {text}",
                                   retryable=retryable, provider=self.name, status=status)
        content = _content(response)
        if content is None:
            raise LLMProviderError(f"{self.name}: malformed chat-completions body (HTTP {status}): "
                                   f"{response.text[:_BODY_CHARS]!r}", provider=self.name, status=status)
        return LLMResponse(content=content, provider=self.name, model=model,
                           latency_ms=(time.perf_counter() - t0) * 1000.0)


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """httpx's default verification (certifi's CA bundle), built once: building it takes ~50 ms per client."""
    return ssl.create_default_context(cafile=certifi.where())


def _content(response: httpx.Response) -> str | None:
    """``choices[0].message.content`` when it is non-blank text, else None."""
    try:
        data = response.json()
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str) or not content.strip():
        return None
    return content.strip()


@dataclass
class CerebrasProvider(OpenAICompatibleProvider):
    """Cerebras inference. ``api_key`` falls back to ``CEREBRAS_API_KEY``."""

    base_url: str = CEREBRAS_BASE_URL
    name: str = "cerebras"
    api_key_env: str | None = CEREBRAS_API_KEY_VAR
    requires_api_key: bool = True


@dataclass
class GroqProvider(OpenAICompatibleProvider):
    """Groq inference: the same wire format as Cerebras. ``api_key`` falls back to ``GROQ_API_KEY``."""

    base_url: str = GROQ_BASE_URL
    name: str = "groq"
    api_key_env: str | None = GROQ_API_KEY_VAR
    requires_api_key: bool = True


#: Preconfigured providers by config name: (class, default model).
PRECONFIGURED: dict[str, tuple[type[OpenAICompatibleProvider], str]] = {
    "cerebras": (CerebrasProvider, CEREBRAS_DEFAULT_MODEL),
    "groq": (GroqProvider, GROQ_DEFAULT_MODEL),
}

__all__ = ["CEREBRAS_BASE_URL", "CEREBRAS_DEFAULT_MODEL", "GROQ_BASE_URL", "GROQ_DEFAULT_MODEL", "PRECONFIGURED",
           "CerebrasProvider", "GroqProvider", "LLMMessage", "LLMProvider", "LLMProviderError", "LLMRequest",
           "LLMResponse", "LLMTimeoutError", "OpenAICompatibleProvider"]
