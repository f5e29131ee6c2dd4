"""A streaming session's prompt pipeline, built from ``ServeConfig.streaming``: safety check, enhancement,
auto-extension and rewrites, in one entry point the WebSocket handler calls.

Contract:
- :func:`check_prompt_config` refuses at server start, naming the dotted key, what cannot work:
  ``streaming.prompt`` enabled with an ``openai_compatible`` provider and no ``base_url``, a preconfigured
  provider whose API key variable is unset, a ``system_prompt_dir`` that is not a folder (the same for each
  ``fallbacks[i]``); ``streaming.safety`` enabled without ``classifier_path``. (A classifier file that is
  missing or unloadable is not refused: the filter is then UNAVAILABLE, allows and logs it once.)
- :meth:`SessionPrompting.from_config` builds the enhancer (``streaming.prompt.enabled``: the provider,
  then ``fallbacks`` in order) and the safety filter (``streaming.safety.enabled``); either may be None.
- :meth:`SessionPrompting.prepare` (before a segment): the user's prompt is checked by the safety filter
  (BLOCK raises :class:`PromptBlocked`: the caller sends an error frame and spends no GPU time); then,
  when ``enhance`` and an enhancer exist, enhanced, and the enhanced prompt checked too. An enhancer that
  fails (no provider answered, or a non-retryable error) does not fail the segment: the original prompt
  is used and :attr:`PreparedPrompt.enhance_error` says why (the caller may tell the client).
- :meth:`SessionPrompting.extend` writes the next segment's prompt from the last ones (auto-extension) and
  checks it; it raises :class:`LLMProviderError` when no provider answered, :class:`PromptBlocked` when the
  new prompt is blocked. :meth:`SessionPrompting.rewrite` returns alternatives with blocked ones dropped.
- The safety check runs in a worker thread (the first one loads the classifier).
- :class:`StreamPromptSource` adapts it to a ``/v1/stream`` session's prompt-source hook (``enhance``,
  ``rewrite``, ``extend`` with ``session=``, and ``check``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from fastvideo.api import ConfigError, FastVideoError
from fastvideo.api.serve import LLMProviderConfig, PromptEnhancerConfig, PromptSafetyConfig, StreamingConfig
from fastvideo.serving.prompting.enhancer import PromptEnhancer
from fastvideo.serving.prompting.providers import PRECONFIGURED, LLMProviderError, OpenAICompatibleProvider
from fastvideo.serving.prompting.rewrite import RewriteOptions, RewriteResult, build_rewrite
from fastvideo.serving.prompting.safety import PromptSafetyFilter, SafetyDecision, SafetyResult
from fastvideo.serving.prompting.stats import PromptMetrics

logger = logging.getLogger(__name__)


class PromptBlocked(FastVideoError, ValueError):
    """The safety filter blocked a prompt. ``stage``: ``prompt`` (the client's), ``enhanced`` or ``extended``
    (written by the enhancer). ``code`` is the error frame's code."""

    code = "prompt_blocked"

    def __init__(self, message: str, *, stage: str, score: float, label: str | None) -> None:
        super().__init__(message)
        self.stage = stage
        self.score = score
        self.label = label


@dataclass
class PreparedPrompt:
    """The prompt a segment runs with, and how it was made."""

    original: str
    prompt: str
    enhanced: bool = False
    provider: str | None = None
    latency_ms: float | None = None
    fallback_used: bool = False
    #: The safety decision on ``prompt`` (None: no filter).
    safety: SafetyDecision | None = None
    #: Why the enhancer did not enhance (None: it did, or was not asked).
    enhance_error: str | None = None


def _provider(entry: LLMProviderConfig | PromptEnhancerConfig, path: str, *, model: str | None,
              timeout_ms: int | None) -> OpenAICompatibleProvider:
    if entry.provider == "openai_compatible":
        if not entry.base_url:
            raise ConfigError(f"{path}.base_url", "an openai_compatible provider needs the base URL of its "
                                                  "chat-completions API, such as http://127.0.0.1:8000/v1")
        cls, default_model = OpenAICompatibleProvider, None
    else:
        cls, default_model = PRECONFIGURED[entry.provider]
    kwargs: dict[str, object] = {"model": model or default_model, "timeout_ms": timeout_ms}
    if entry.base_url:
        kwargs["base_url"] = entry.base_url
    if entry.api_key_env:
        kwargs["api_key_env"] = entry.api_key_env
    try:
        provider = cls(**kwargs)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ConfigError(f"{path}.{exc.path}", exc.reason) from exc
    if provider.requires_api_key and not provider.api_key:
        raise ConfigError(f"{path}.api_key_env", f"the {entry.provider} provider needs an API key: the variable "
                                                 f"{provider.api_key_env} is not set (export it, or name another "
                                                 "variable with api_key_env)")
    return provider


def build_providers(config: PromptEnhancerConfig, path: str = "streaming.prompt") -> list[OpenAICompatibleProvider]:
    """The provider chain of ``config``: its provider (with ``config.model``), then each fallback."""
    chain = [_provider(config, path, model=config.model, timeout_ms=None)]
    for i, entry in enumerate(config.fallbacks):
        chain.append(_provider(entry, f"{path}.fallbacks[{i}]", model=entry.model, timeout_ms=entry.timeout_ms))
    return chain


def build_enhancer(config: PromptEnhancerConfig, *, metrics: PromptMetrics | None = None,
                   path: str = "streaming.prompt") -> PromptEnhancer:
    providers = build_providers(config, path)
    try:
        return PromptEnhancer(providers=providers, model=config.model, timeout_ms=config.timeout_ms,
                              temperature=config.temperature, max_tokens=config.max_tokens,
                              system_prompt_dir=config.system_prompt_dir, metrics=metrics)
    except ConfigError as exc:
        raise ConfigError(f"{path}.{exc.path}", exc.reason) from exc


def build_safety_filter(config: PromptSafetyConfig, path: str = "streaming.safety") -> PromptSafetyFilter:
    if not config.classifier_path:
        raise ConfigError(f"{path}.classifier_path", "is required when the safety filter is enabled: the path of a "
                                                     "fastText classifier (.bin/.ftz) with an 'unsafe' label")
    return PromptSafetyFilter(classifier_path=str(Path(config.classifier_path).expanduser()),
                              block_threshold=config.block_threshold)


def check_prompt_config(streaming: StreamingConfig) -> None:
    """Refuse, naming the dotted key, a prompt/safety config that cannot work (see module contract)."""
    if streaming.prompt.enabled:
        build_providers(streaming.prompt)
        if streaming.prompt.system_prompt_dir and not Path(streaming.prompt.system_prompt_dir).expanduser().is_dir():
            raise ConfigError("streaming.prompt.system_prompt_dir", f"{streaming.prompt.system_prompt_dir!r} is not a "
                                                                    "folder (it holds enhance.txt, auto_extend.txt, "
                                                                    "rewrite.txt)")
    if streaming.safety.enabled:
        build_safety_filter(streaming.safety)


class SessionPrompting:
    """The prompt pipeline of the sessions of one server (see module contract)."""

    def __init__(self, *, enhancer: PromptEnhancer | None = None, safety: PromptSafetyFilter | None = None,
                 metrics: PromptMetrics | None = None) -> None:
        self.enhancer = enhancer
        self.safety = safety
        self._metrics = metrics

    @classmethod
    def from_config(cls, streaming: StreamingConfig, *, registry: CollectorRegistry | None = None) -> SessionPrompting:
        metrics = PromptMetrics(registry) if registry is not None else None
        enhancer = build_enhancer(streaming.prompt, metrics=metrics) if streaming.prompt.enabled else None
        safety = build_safety_filter(streaming.safety) if streaming.safety.enabled else None
        return cls(enhancer=enhancer, safety=safety, metrics=metrics)

    async def check(self, prompt: str, *, stage: str = "prompt", request_id: str | None = None) -> SafetyResult | None:
        """The safety decision on ``prompt`` (None without a filter); BLOCK raises :class:`PromptBlocked`."""
        if self.safety is None:
            return None
        result = await asyncio.to_thread(self.safety.classify, prompt)
        if self._metrics is not None:
            self._metrics.safety.labels(decision=result.decision.value).inc()
        if result.decision is SafetyDecision.BLOCK:
            logger.warning("prompt safety [request %s]: blocked a %s prompt (%s %.2f)", request_id or "-", stage,
                           result.label, result.score)
            what = "the prompt" if stage == "prompt" else f"the {stage} prompt"
            raise PromptBlocked(f"{what} was blocked by the safety filter (score {result.score:.2f}); "
                                "change the prompt and send it again", stage=stage, score=result.score,
                                label=result.label)
        return result

    async def prepare(self, prompt: str, *, enhance: bool = True, request_id: str | None = None) -> PreparedPrompt:
        checked = await self.check(prompt, request_id=request_id)
        prepared = PreparedPrompt(original=prompt, prompt=prompt, safety=checked.decision if checked else None)
        if not enhance or self.enhancer is None:
            return prepared
        try:
            response = await self.enhancer.enhance(prompt, request_id=request_id)
        except LLMProviderError as exc:
            logger.warning("prompt enhance [request %s]: using the prompt as written: %s", request_id or "-", exc)
            prepared.enhance_error = str(exc)
            return prepared
        checked = await self.check(response.content, stage="enhanced", request_id=request_id)
        prepared.prompt = response.content
        prepared.enhanced = True
        prepared.provider, prepared.latency_ms = response.provider, response.latency_ms
        prepared.fallback_used = response.fallback_used
        prepared.safety = checked.decision if checked else None
        return prepared

    async def extend(self, prior_prompts: Sequence[str], *, request_id: str | None = None) -> PreparedPrompt:
        if self.enhancer is None:
            raise ConfigError("streaming.prompt.enabled", "auto-extension needs the prompt enhancer: enable it")
        response = await self.enhancer.auto_extend(prior_prompts, request_id=request_id)
        checked = await self.check(response.content, stage="extended", request_id=request_id)
        return PreparedPrompt(original=prior_prompts[-1], prompt=response.content, enhanced=True,
                              provider=response.provider, latency_ms=response.latency_ms,
                              fallback_used=response.fallback_used, safety=checked.decision if checked else None)

    async def rewrite(self, seed_prompt: str, *, count: int = 3, request_id: str | None = None) -> RewriteResult:
        if self.enhancer is None:
            raise ConfigError("streaming.prompt.enabled", "rewrites need the prompt enhancer: enable it")
        result = await build_rewrite(self.enhancer, seed_prompt, options=RewriteOptions(count=count),
                                     request_id=request_id)
        if self.safety is not None:
            kept = []
            for alternative in result.alternatives:
                decision = (await asyncio.to_thread(self.safety.classify, alternative)).decision
                if decision is not SafetyDecision.BLOCK:
                    kept.append(alternative)
            result.alternatives = kept
        return result

    def reload_system_prompts(self) -> None:
        if self.enhancer is not None:
            self.enhancer.reload_system_prompts()


class StreamPromptSource:
    """:class:`SessionPrompting` as a ``/v1/stream`` session's prompt source: ``enhance(prompt, *, session)``,
    ``rewrite(prompt, count, *, session)``, ``extend(last_prompt, *, session)`` and ``check(prompt, *,
    session)``, with the session's ``id`` as the request id. Unlike :meth:`SessionPrompting.prepare`,
    ``enhance`` raises when no provider answered (the session reports it and runs the prompt as given), and
    an enhanced or extended prompt the filter blocks raises :class:`PromptBlocked`. ``check`` is the safety
    check a session runs on every prompt before its segment is queued (no filter: nothing to do)."""

    def __init__(self, prompting: SessionPrompting) -> None:
        if prompting.enhancer is None:
            raise ConfigError("streaming.prompt.enabled", "a prompt source needs the prompt enhancer: enable it")
        self.prompting = prompting
        self.enhancer = prompting.enhancer

    async def check(self, prompt: str, *, session: object) -> None:
        await self.prompting.check(prompt, request_id=_session_id(session))

    async def enhance(self, prompt: str, *, session: object) -> str:
        rid = _session_id(session)
        response = await self.enhancer.enhance(prompt, request_id=rid)
        await self.prompting.check(response.content, stage="enhanced", request_id=rid)
        return response.content

    async def rewrite(self, prompt: str, count: int, *, session: object) -> list[str]:
        return (await self.prompting.rewrite(prompt, count=count, request_id=_session_id(session))).alternatives

    async def extend(self, last_prompt: str, *, session: object) -> str:
        return (await self.prompting.extend([last_prompt], request_id=_session_id(session))).prompt


def _session_id(session: object) -> str | None:
    value = getattr(session, "id", None)
    return str(value) if value is not None else None


__all__ = ["PreparedPrompt", "PromptBlocked", "SessionPrompting", "StreamPromptSource", "build_enhancer",
           "build_providers",
           "build_safety_filter", "check_prompt_config"]
