"""Shared by the FastVideo schema tests: a dataclass's field defaults, with :data:`REQUIRED` for a field that
has none (so a table of FastVideo's defaults can say "required")."""

from __future__ import annotations

import dataclasses

#: Stands for "no default: the field is required".
REQUIRED = object()


def field_defaults(cls: type) -> dict[str, object]:
    """``{field: default}`` of dataclass ``cls`` (a factory is called; REQUIRED where there is no default)."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = REQUIRED
    return out
