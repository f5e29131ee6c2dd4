"""Errors the public API raises for bad input, and the package's one root exception type.

Contract: every exception class FastVideo defines derives from :class:`FastVideoError` (besides the
builtin it also is, e.g. ``ValueError``), so callers can catch everything the engine raises on
purpose in one place and tell it from a bug. :class:`RequestError` (a ``ValueError``) names the
offending field by its dotted path and says how to fix it; :class:`ModelLoadError` names the model
folder/file and what is missing or corrupt. :class:`GenerationFailed` is a generation the model
could not finish correctly (e.g. non-finite latents from corrupt weights): no video is produced.
Servers map RequestError to HTTP 400. Code decides on the exception's type and attributes, never on
its message text.
"""

from __future__ import annotations


class FastVideoError(Exception):
    """Root of every exception FastVideo raises on purpose."""


class RequestError(FastVideoError, ValueError):
    """A request value the engine cannot run, with the field and the fix."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        #: The message without the field name (what an edge re-labelling the field keeps).
        self.reason = message
        super().__init__(f"{field}: {message}")


class ModelLoadError(FastVideoError, RuntimeError):
    """A model folder or weight file that cannot be loaded."""


class GenerationFailed(FastVideoError, RuntimeError):
    """A generation that ran but whose output would be wrong (e.g. NaN/Inf latents): no video is produced.
    ``step`` is the denoising step where it was detected (0: before the first step)."""

    def __init__(self, message: str, *, step: int | None = None) -> None:
        self.step = step
        super().__init__(message)


class GenerationCancelled(FastVideoError, RuntimeError):
    """A generation stopped before it finished because it was cancelled (by its caller, a client, or a
    shutdown); ``shutting_down`` tells the last case apart."""

    def __init__(self, message: str, *, shutting_down: bool = False) -> None:
        self.shutting_down = shutting_down
        super().__init__(message)
