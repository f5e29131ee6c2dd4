"""Errors the public API raises for bad input.

Contract: :class:`RequestError` (a ``ValueError``) names the offending field by its dotted path and
says how to fix it; :class:`ModelLoadError` names the model folder/file and what is missing or
corrupt. Servers map RequestError to HTTP 400.
"""

from __future__ import annotations


class RequestError(ValueError):
    """A request value the engine cannot run, with the field and the fix."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ModelLoadError(RuntimeError):
    """A model folder or weight file that cannot be loaded."""
