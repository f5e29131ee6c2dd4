"""Where a streaming session's prompts come from: the enhancer hook and the loop's next prompt.

Contract:
- :class:`PromptSource` is what a session asks to improve or write prompts: ``enhance(prompt)`` (one
  better prompt), ``rewrite(prompt, count)`` (``count`` alternatives) and ``extend(last_prompt)``
  (the next segment's prompt, for auto-extension); optionally ``check(prompt)`` (a safety check run
  on every segment's prompt before it runs). An error it raises that is a FastVideoError with a string
  ``code`` refuses the prompt with that error frame. A prompt enhancer (LLM providers) plugs in by
  implementing it and being set as ``ServerState``'s ``prompt_source`` (see
  :func:`attach_prompt_source`); until one is, :data:`NOT_CONFIGURED` is the answer: the session
  refuses enhancement, rewrites and auto-extension with ``error{code:"enhancer_not_configured"}``.
- :func:`next_loop_prompt` picks the prompt of a segment that loop generation starts without an
  enhancer: the session's curated prompts in turn (by segment index), else the last prompt.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from fastvideo.serving.session import Session

#: The error code and message a session answers with when it needs a prompt enhancer and has none.
NOT_CONFIGURED = ("enhancer_not_configured",
                  "the prompt enhancer is not configured on this server (streaming.prompt); enhancement, rewrites "
                  "and auto-extension are unavailable")


@runtime_checkable
class PromptSource(Protocol):
    """A prompt enhancer as a streaming session uses it (see module contract)."""

    async def enhance(self, prompt: str, *, session: Session) -> str: ...

    async def rewrite(self, prompt: str, count: int, *, session: Session) -> list[str]: ...

    async def extend(self, last_prompt: str, *, session: Session) -> str: ...


def attach_prompt_source(app_state: Any, source: PromptSource | None) -> None:
    """Make ``source`` the prompt source of every session of the server whose state is ``app_state``."""
    app_state.prompt_source = source


def next_loop_prompt(session: Session) -> str | None:
    """The prompt loop generation uses for the session's next segment without an enhancer (None: none known)."""
    if session.curated_prompts:
        return session.curated_prompts[session.segment_idx % len(session.curated_prompts)]
    return session.last_prompt
