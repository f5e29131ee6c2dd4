"""Rewrites: N alternative prompts to a seed prompt, parsed from the LLM's reply.

Contract:
- :func:`build_rewrite` (the reference's signature) asks the enhancer for ``options.count`` alternatives
  and returns a :class:`RewriteResult` with at most that many, in the reply's order. A reply with none in
  it counts as malformed (the enhancer then tries its next provider).
- :func:`parse_alternatives` reads the reply forgivingly: a JSON list of strings (or an object holding
  one), inside a code fence or not; else one alternative per line, with bullets, numbering (``1.``,
  ``2)``, ``(3)``, ``#4``, ``Option 5:``, bold markers) and surrounding quotes removed, heading lines
  (``Here are 3 alternatives:``) dropped, and duplicates dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastvideo.api import ConfigError

if TYPE_CHECKING:
    from fastvideo.serving.prompting.enhancer import PromptEnhancer

_FENCE = re.compile(r"```[\w-]*\s*\n?(.*?)\n?```", re.S)
_MARKER = re.compile(r"^(?:\*\*|__)?(?:[-*\u2022\u2013\u2014>]\s*|\(?\d{1,2}\s*[.):\]-]\s*|#\d{1,2}\s*[.:)-]?\s*|"
                     r"(?:option|alternative|prompt|variation|version)\s*\d{1,2}\s*[.:)-]\s*)+", re.I)
_PREAMBLE = re.compile(r"^(?:sure|certainly|of course|here (?:are|is)|alternatives?\b|rewrites?\b)", re.I)
_QUOTES = (('"', '"'), ("'", "'"), ("\u201c", "\u201d"))


@dataclass
class RewriteOptions:
    #: Number of alternative prompts to ask for (1..16).
    count: int = 3
    #: Sampling temperature of this rewrite (None: the enhancer's).
    temperature: float | None = None

    def __post_init__(self) -> None:
        from fastvideo.serving.prompting.enhancer import MAX_REWRITE_COUNT

        if not 1 <= self.count <= MAX_REWRITE_COUNT:
            raise ConfigError("count", f"must be between 1 and {MAX_REWRITE_COUNT}, got {self.count}")


@dataclass
class RewriteResult:
    seed_prompt: str
    alternatives: list[str]
    provider: str
    model: str
    latency_ms: float
    fallback_used: bool = False


async def build_rewrite(enhancer: PromptEnhancer, seed_prompt: str, *, options: RewriteOptions | None = None,
                        request_id: str | None = None) -> RewriteResult:
    """Run a rewrite through ``enhancer`` and return the parsed alternatives."""
    if not seed_prompt.strip():
        raise ConfigError("seed_prompt", "a rewrite needs a non-empty seed prompt")
    options = options or RewriteOptions()
    response = await enhancer.rewrite(seed_prompt, count=options.count, temperature=options.temperature,
                                      request_id=request_id)
    return RewriteResult(seed_prompt=seed_prompt, alternatives=parse_alternatives(response.content,
                                                                                  limit=options.count),
                         provider=response.provider, model=response.model, latency_ms=response.latency_ms,
                         fallback_used=response.fallback_used)


def parse_alternatives(content: str, *, limit: int) -> list[str]:
    """The alternatives in a reply, at most ``limit`` (see module contract)."""
    text = content.strip()
    fenced = _FENCE.search(text)
    candidates = _json_list(fenced.group(1) if fenced else text)
    if candidates is None:
        candidates = (fenced.group(1) if fenced else text).splitlines()
    out: list[str] = []
    seen: set[str] = set()
    for raw in candidates:
        item = _clean(raw)
        if not item or item.lower() in seen:
            continue
        seen.add(item.lower())
        out.append(item)
        if len(out) >= max(1, limit):
            break
    return out


def _json_list(text: str) -> list[str] | None:
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else None
    if isinstance(data, list) and data and all(isinstance(v, str) for v in data):
        return list(data)
    return None


def _clean(line: str) -> str:
    text = line.strip()
    if not text:
        return ""
    text = _MARKER.sub("", text).strip()
    text = text.removesuffix("**").removesuffix("__").strip()
    if text.endswith(":") or _PREAMBLE.match(text) and (text.endswith(":") or len(text.split()) <= 8):
        return ""
    for left, right in _QUOTES:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right):
            text = text[len(left):-len(right)].strip()
    return text.rstrip(",").strip()


__all__ = ["RewriteOptions", "RewriteResult", "build_rewrite", "parse_alternatives"]
