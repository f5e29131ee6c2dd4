"""The prompt enhancer: enhance, auto-extend and rewrite prompts through a chain of LLM providers.

Contract:
- :class:`PromptEnhancer` (the reference's signature: ``providers``, ``model``, ``timeout_ms``,
  ``temperature``, ``max_tokens``, ``system_prompt_dir``) tries its providers in order. A retryable
  :class:`LLMProviderError` (timeout, connection error, 408/429/5xx, malformed body, or a reply with no
  usable prompt in it) moves on to the next provider; any other error stops the chain at once. When no
  provider answered, one :class:`LLMProviderError` is raised listing every attempt (``retryable`` and
  ``status`` of the last one). The answer's ``fallback_used`` and ``failures`` say whether and why earlier
  providers failed.
- Operations: ``enhance(prompt)`` -> one richer prompt; ``auto_extend(prior_prompts)`` -> the next
  segment's prompt from the last ones (at most :data:`AUTO_EXTEND_CONTEXT` of them are sent);
  ``rewrite(seed, count=)`` -> a reply holding ``count`` alternatives (:func:`build_rewrite` in
  :mod:`.rewrite` parses them). Single-prompt replies are cleaned (code fences, surrounding quotes and a
  leading ``Prompt:`` label removed) and a blank result counts as a malformed reply.
- System prompts are files: ``enhance.txt``, ``auto_extend.txt``, ``rewrite.txt`` in ``system_prompt_dir``
  when given (a missing or blank file there falls back to the packaged one), else the packaged
  ``system_prompts/`` folder. :meth:`PromptEnhancer.reload_system_prompts` re-reads them (a dir that
  vanished is a ConfigError and the prompts in use are kept).
- Every call updates :attr:`PromptEnhancer.stats` (:class:`EnhancerStats`) and, when given,
  :class:`PromptMetrics`; each attempt logs one line carrying the request id.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fastvideo.api import ConfigError
from fastvideo.serving.prompting.providers import (
    LLMMessage,
    LLMProvider,
    LLMProviderError,
    LLMRequest,
    LLMResponse,
)
from fastvideo.serving.prompting.stats import EnhancerStats, PromptMetrics

logger = logging.getLogger(__name__)

#: The packaged system prompts (package data).
PACKAGED_SYSTEM_PROMPTS = Path(__file__).parent / "system_prompts"
#: How many of the last prompts ``auto_extend`` sends.
AUTO_EXTEND_CONTEXT = 8
#: Most alternatives one rewrite may ask for.
MAX_REWRITE_COUNT = 16

_FENCE = re.compile(r"^```[\w-]*\s*\n?(.*?)\n?```$", re.S)
_LABEL = re.compile(r"^(?:\*\*)?(?:enhanced |next |new |improved )?prompt(?:\*\*)?\s*:\s*", re.I)
_QUOTES = (('"', '"'), ("'", "'"), ("\u201c", "\u201d"))


class PromptOperation(enum.Enum):
    ENHANCE = "enhance"
    AUTO_EXTEND = "auto_extend"
    REWRITE = "rewrite"


@dataclass(frozen=True)
class SystemPrompts:
    enhance: str
    auto_extend: str
    rewrite: str

    def for_operation(self, operation: PromptOperation) -> str:
        return str(getattr(self, operation.value))


def load_system_prompts(system_prompt_dir: str | Path | None) -> SystemPrompts:
    """The three system prompts: ``system_prompt_dir``'s files where present and non-blank, else the packaged."""
    folder = Path(system_prompt_dir).expanduser() if system_prompt_dir else None
    if folder is not None and not folder.is_dir():
        raise ConfigError("system_prompt_dir", f"{str(folder)!r} is not a folder; it should hold enhance.txt, "
                                               "auto_extend.txt and/or rewrite.txt")
    texts: dict[str, str] = {}
    for op in PromptOperation:
        name = f"{op.value}.txt"
        text = ""
        if folder is not None and (folder / name).is_file():
            text = (folder / name).read_text(encoding="utf-8").strip()
        texts[op.value] = text or (PACKAGED_SYSTEM_PROMPTS / name).read_text(encoding="utf-8").strip()
    return SystemPrompts(**texts)


def clean_single_prompt(content: str) -> str:
    """One prompt out of a reply: code fence, a ``Prompt:`` label and surrounding quotes removed."""
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    text = _LABEL.sub("", text).strip()
    for left, right in _QUOTES:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right):
            text = text[len(left):-len(right)].strip()
    return text


class PromptEnhancer:
    """Prompt operations over a priority-ordered provider chain (see module contract)."""

    def __init__(self, *, providers: Sequence[LLMProvider], model: str, timeout_ms: int = 20000,
                 temperature: float = 0.7, max_tokens: int | None = 256, system_prompt_dir: str | None = None,
                 metrics: PromptMetrics | None = None) -> None:
        if not providers:
            raise ConfigError("providers", "PromptEnhancer needs at least one LLMProvider")
        if timeout_ms <= 0:
            raise ConfigError("timeout_ms", f"must be > 0, got {timeout_ms}")
        self._providers = list(providers)
        self._model = model
        self._timeout_ms = timeout_ms
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._system_prompt_dir = system_prompt_dir
        self._system_prompts = load_system_prompts(system_prompt_dir)
        self._metrics = metrics
        self.stats = EnhancerStats()

    @property
    def providers(self) -> list[LLMProvider]:
        return list(self._providers)

    @property
    def system_prompts(self) -> SystemPrompts:
        return self._system_prompts

    def register_provider(self, provider: LLMProvider, *, priority: int = -1) -> None:
        """Add a provider: ``priority=0`` makes it the first tried; ``-1`` (default) appends it as a fallback."""
        if priority < 0:
            self._providers.append(provider)
        else:
            self._providers.insert(priority, provider)

    def reload_system_prompts(self) -> None:
        """Re-read the system prompt files (see module contract)."""
        self._system_prompts = load_system_prompts(self._system_prompt_dir)
        logger.info("prompt enhancer: reloaded system prompts from %s", self._system_prompt_dir or "the package")

    async def enhance(self, prompt: str, *, request_id: str | None = None) -> LLMResponse:
        return await self._run(PromptOperation.ENHANCE, prompt.strip(), _single, request_id=request_id)

    async def auto_extend(self, prior_prompts: Sequence[str], *, request_id: str | None = None) -> LLMResponse:
        prompts = [p.strip() for p in prior_prompts if p and p.strip()][-AUTO_EXTEND_CONTEXT:]
        if not prompts:
            raise ConfigError("prior_prompts", "auto_extend needs the prompt of at least one segment")
        user = "\n".join(f"Segment {i}: {p}" for i, p in enumerate(prompts, 1))
        user += f"\n\nWrite the prompt of segment {len(prompts) + 1}."
        return await self._run(PromptOperation.AUTO_EXTEND, user, _single, request_id=request_id)

    async def rewrite(self, seed_prompt: str, *, count: int = 3, temperature: float | None = None,
                      request_id: str | None = None) -> LLMResponse:
        """A reply holding ``count`` alternatives to ``seed_prompt``, one per line (parse with
        :func:`fastvideo.serving.prompting.rewrite.parse_alternatives`)."""
        from fastvideo.serving.prompting.rewrite import parse_alternatives

        if not 1 <= count <= MAX_REWRITE_COUNT:
            raise ConfigError("count", f"must be between 1 and {MAX_REWRITE_COUNT}, got {count}")
        user = f"Seed prompt: {seed_prompt.strip()}\n\nWrite {count} alternative prompts, one per line."

        def accept(content: str) -> str | None:
            return content if parse_alternatives(content, limit=count) else None

        return await self._run(PromptOperation.REWRITE, user, accept, temperature=temperature,
                               request_id=request_id)

    async def _run(self, operation: PromptOperation, user: str, accept: Callable[[str], str | None], *,
                   temperature: float | None = None, request_id: str | None = None) -> LLMResponse:
        request = LLMRequest(messages=[LLMMessage("system", self._system_prompts.for_operation(operation)),
                                       LLMMessage("user", user)],
                             model=self._model, max_tokens=self._max_tokens,
                             temperature=self._temperature if temperature is None else temperature,
                             timeout_ms=self._timeout_ms, request_id=request_id)
        op, rid = operation.value, request_id or "-"
        self.stats.calls += 1
        failures: list[str] = []
        last: LLMProviderError | None = None
        for provider in list(self._providers):
            stats = self.stats.provider(provider.name)
            stats.attempts += 1
            t0 = time.perf_counter()
            try:
                response = await provider.complete(request)
                kept = accept(response.content)
                if kept is None:
                    raise LLMProviderError(f"{provider.name}: the reply holds no usable prompt: "
                                           f"{response.content[:200]!r}", provider=provider.name)
            except LLMProviderError as exc:
                elapsed = (time.perf_counter() - t0) * 1000.0
                last = exc
                failures.append(f"{provider.name}: {exc}")
                if exc.retryable:
                    stats.retryable_failures += 1
                else:
                    stats.failures += 1
                self._count(op, provider.name, "retryable_error" if exc.retryable else "error")
                logger.warning("prompt %s [request %s]: provider %s failed after %.0f ms (%s): %s", op, rid,
                               provider.name, elapsed, "trying the next" if exc.retryable else "not retried", exc)
                if not exc.retryable:
                    break
                continue
            stats.answers += 1
            stats.total_latency_ms += response.latency_ms
            stats.last_latency_ms = response.latency_ms
            self.stats.succeeded += 1
            self._count(op, provider.name, "ok", latency_ms=response.latency_ms)
            if failures:
                self.stats.fallbacks += 1
                if self._metrics is not None:
                    self._metrics.fallbacks.labels(operation=op).inc()
            logger.info("prompt %s [request %s]: %s answered in %.0f ms%s", op, rid, provider.name,
                        response.latency_ms, f" (fallback after {len(failures)} failure(s))" if failures else "")
            return replace(response, content=kept, fallback_used=bool(failures), failures=failures)
        self.stats.failed += 1
        assert last is not None
        raise LLMProviderError(f"prompt {op} [request {rid}]: no provider answered: " + "; ".join(failures),
                               retryable=last.retryable, provider=last.provider, status=last.status) from last

    def _count(self, op: str, provider: str, outcome: str, latency_ms: float | None = None) -> None:
        if self._metrics is None:
            return
        self._metrics.requests.labels(operation=op, provider=provider, outcome=outcome).inc()
        if latency_ms is not None:
            self._metrics.latency.labels(operation=op, provider=provider).observe(latency_ms / 1000.0)


def _single(content: str) -> str | None:
    return clean_single_prompt(content) or None


__all__ = ["AUTO_EXTEND_CONTEXT", "MAX_REWRITE_COUNT", "PACKAGED_SYSTEM_PROMPTS", "PromptEnhancer",
           "PromptOperation", "SystemPrompts", "clean_single_prompt", "load_system_prompts"]
