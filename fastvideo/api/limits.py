"""Bounds on what one request may carry, shared by every edge and the engine.

Contract: :data:`MAX_PROMPT_CHARS` is the longest ``prompt`` / ``negative_prompt`` FastVideo accepts, in
characters; :func:`check_prompt_length` refuses a longer one with :class:`~fastvideo.api.RequestError`
naming the field, the length and the limit. The translation layer (:func:`fastvideo.api.translate_request`,
every edge) and the engine's validation (every Python caller) apply it; a server may set a lower bound of
its own (``server.max_prompt_chars``), never a higher one. Standard library and ``fastvideo.api`` only.
"""

from __future__ import annotations

from fastvideo.api.errors import RequestError

#: The longest ``prompt`` / ``negative_prompt`` accepted, in characters. Wan's text encoder reads only the first
#: 512 tokens (a few thousand characters of prose), so this leaves room for long prompts while bounding the CPU
#: that cleaning and tokenizing one request can cost.
MAX_PROMPT_CHARS = 16384


def check_prompt_length(field: str, text: object, limit: int = MAX_PROMPT_CHARS) -> None:
    """Raise :class:`RequestError` naming ``field`` when ``text`` (a prompt) is longer than ``limit`` characters."""
    if isinstance(text, str) and len(text) > limit:
        raise RequestError(field, f"is {len(text)} characters long; at most {limit} are accepted (the text encoder "
                                  "reads only its first 512 tokens): shorten it")
