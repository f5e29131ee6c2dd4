"""Shared plumbing for the LTX-2 side components (audio VAE, vocoder, text connectors): config parsing and loading.

Contract
--------
- :func:`config_from_dict` builds a component config dataclass from a diffusers ``config.json`` dict:
  ``_``-prefixed keys (``_class_name``, ``_diffusers_version``, ...) are ignored; an unknown key raises
  :class:`ValueError` naming it and listing the known ones; JSON lists become tuples where the field's default is
  a tuple (the dataclass ``__post_init__`` then checks values).
- :func:`load_component` reads ``<folder>/config.json`` (its ``_class_name``, when present, must be the diffusers
  class the component mirrors), parses it with the component's ``from_dict`` (any ``ValueError`` / ``TypeError`` /
  ``NotImplementedError`` becomes :class:`~fastvideo.api.errors.ModelLoadError` naming the file), builds the module
  on the meta device and fills it with :func:`fastvideo.engine.loader.load_module_weights` (single file or sharded
  safetensors, weight ``variant`` as diffusers names them; missing, unexpected or mis-shaped tensors raise
  ``ModelLoadError``). The module comes back in eval mode, gradients off, on ``device`` in ``dtype``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import torch

from fastvideo.api.errors import ModelLoadError
from fastvideo.engine.loader import load_module_weights, read_json

logger = logging.getLogger(__name__)

__all__ = ["config_from_dict", "load_component"]

C = TypeVar("C")
M = TypeVar("M", bound=torch.nn.Module)


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """``cls(**data)`` for a config dataclass, refusing unknown keys by name (module contract)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    given = {k: v for k, v in data.items() if not k.startswith("_")}
    unknown = sorted(k for k in given if k not in fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; known keys are {sorted(fields)}")
    for name, value in list(given.items()):
        default = fields[name].default
        if isinstance(default, tuple) and isinstance(value, list):
            given[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return cls(**given)


def load_component(folder: str | Path, *, class_name: str, parse: Callable[[Mapping[str, Any]], C],
                   build: Callable[[C], M], dtype: torch.dtype, device: torch.device | str,
                   variant: str | None = None) -> tuple[M, C]:
    """Build and load one component folder (module contract); returns ``(module, config)``."""
    folder = Path(folder).expanduser()
    path = folder / "config.json"
    data = read_json(path)
    found = data.get("_class_name")
    if found is not None and found != class_name:
        raise ModelLoadError(f"{path} describes a {found}, not a {class_name}; point at the matching sub-folder of "
                             "an LTX-2 diffusers checkpoint")
    try:
        config = parse(data)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise ModelLoadError(f"unsupported {class_name} config {path}: {exc}") from exc
    device = torch.device(device)
    t0 = time.perf_counter()
    with torch.device("meta"):
        module = build(config)
    load_module_weights(module, folder, dtype=dtype, device=device, variant=variant)
    logger.info("loaded %s from %s in %.2fs on %s/%s", class_name, folder, time.perf_counter() - t0, device, dtype)
    return module, config
