"""Prompts of streaming sessions: LLM providers, the prompt enhancer, rewrites and the safety filter.

Contract: :mod:`.providers` (``LLMProvider`` over any OpenAI-compatible chat-completions endpoint,
Cerebras and Groq preconfigured), :mod:`.enhancer` (``PromptEnhancer``: enhance, auto-extend, rewrite over
a provider chain with fallback; system prompts in files, reloadable), :mod:`.rewrite` (``build_rewrite``,
``RewriteOptions``), :mod:`.safety` (``PromptSafetyFilter``: a lazily loaded fastText classifier),
:mod:`.stats` (what is recorded) and :mod:`.session` (``SessionPrompting``: the one entry point of a
session, built from ``ServeConfig.streaming``). Nothing here touches the GPU or the runtime.
"""

from fastvideo.serving.prompting.enhancer import PromptEnhancer, PromptOperation, load_system_prompts
from fastvideo.serving.prompting.providers import (
    CerebrasProvider,
    GroqProvider,
    LLMMessage,
    LLMProvider,
    LLMProviderError,
    LLMRequest,
    LLMResponse,
    LLMTimeoutError,
    OpenAICompatibleProvider,
)
from fastvideo.serving.prompting.rewrite import RewriteOptions, RewriteResult, build_rewrite, parse_alternatives
from fastvideo.serving.prompting.safety import PromptSafetyFilter, SafetyDecision, SafetyResult, first_blocked
from fastvideo.serving.prompting.session import (
    PreparedPrompt,
    PromptBlocked,
    SessionPrompting,
    StreamPromptSource,
    build_enhancer,
    build_safety_filter,
    check_prompt_config,
)
from fastvideo.serving.prompting.stats import EnhancerStats, PromptMetrics

__all__ = ["CerebrasProvider", "EnhancerStats", "GroqProvider", "LLMMessage", "LLMProvider", "LLMProviderError",
           "LLMRequest", "LLMResponse", "LLMTimeoutError", "OpenAICompatibleProvider", "PreparedPrompt",
           "PromptBlocked", "PromptEnhancer", "PromptMetrics", "PromptOperation", "PromptSafetyFilter",
           "RewriteOptions", "RewriteResult", "SafetyDecision", "SafetyResult", "SessionPrompting",
           "StreamPromptSource", "build_enhancer", "build_rewrite", "build_safety_filter", "check_prompt_config",
           "first_blocked", "load_system_prompts", "parse_alternatives"]
