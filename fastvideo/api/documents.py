"""Config documents: ``RunConfig``, config files (YAML/JSON) and dotted overrides, as FastVideo's ``fastvideo.api``.

Contract:
- :class:`RunConfig` is one run: ``generator`` (:class:`GeneratorConfig`) and ``request``
  (:class:`GenerationRequest`), both required in a document.
- :func:`load_raw_config(path)` reads a ``.yaml``/``.yml``/``.json`` file (suffix, any case) into a
  mapping: a missing file is ``FileNotFoundError("Config file not found: PATH")``, another suffix
  ``ValueError("Unsupported config file format: PATH")``, an empty file ``{}``, a top level that is
  not a mapping or text that does not parse a :class:`ConfigValidationError` at the root.
- :func:`parse_cli_overrides(tokens)` reads ``--a.b.c VALUE`` / ``--a.b.c=VALUE`` tokens into a flat
  ``{"a.b.c": value}`` (later duplicates win; ``-`` in keys becomes ``_``) and casts each value in
  this order: ``true``/``false`` -> bool, ``none``/``null`` -> None, int, float, YAML for text that
  starts with ``[`` or ``{``, else the text. Malformed tokens are a ``ValueError`` naming the token.
- :func:`apply_overrides(mapping, overrides)` returns a deep copy of ``mapping`` with each dotted key
  set (missing or null intermediates become mappings; a non-mapping intermediate is a
  :class:`ConfigValidationError` at that prefix). Unknown keys are left for :func:`parse_config` to
  refuse with their full path.
- :func:`load_config(Type, path, overrides)` = read, apply overrides (a token list or a mapping of
  dotted keys), parse strictly; :func:`load_run_config` is it for :class:`RunConfig`.
- :func:`load_serve_config(path, overrides)` is it for :class:`~fastvideo.api.ServeConfig` (FastVideo's
  sections plus this server's ``queue``/``pool``/``state``), with one addition FastVideo lacks: a
  top-level ``model_path``/``engine``/``pipeline`` key (in the file or an override) is read as
  ``generator.<key>`` (:func:`normalize_serve_mapping`). ``fastvideo serve`` layers its flags on the
  same loader (:func:`fastvideo.serving.config.load_serve_config`).
- Standard library only (PyYAML is imported when a YAML file or value is read; a clear error says how
  to install it when missing).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fastvideo.api.config import GeneratorConfig
from fastvideo.api.parse import ConfigValidationError, parse_config
from fastvideo.api.request import GenerationRequest
from fastvideo.api.serve import ServeConfig

T = TypeVar("T")


@dataclass
class RunConfig:
    """One run: what to load and what to generate (``fastvideo generate --config run.yaml``)."""

    generator: GeneratorConfig
    request: GenerationRequest


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML ships with every install mode but the bare engine
        raise ValueError("reading YAML needs PyYAML: pip install pyyaml (or use a .json config file)") from None
    return yaml


def load_raw_config(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON config file (see module contract)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"Config file not found: {path}")
    suffix = p.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ValueError(f"Unsupported config file format: {path}")
    text = p.read_text(encoding="utf-8")
    kind, parse = ("JSON", json.loads) if suffix == ".json" else ("YAML", _yaml().safe_load)
    try:
        data = parse(text)
    except Exception as exc:  # noqa: BLE001 - JSONDecodeError / YAMLError (no common base besides Exception)
        raise ConfigValidationError("", f"{path} is not valid {kind}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigValidationError("", f"{path} must contain a top-level mapping")
    return data


def _cast(raw: str) -> Any:
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    if raw.lstrip().startswith(("[", "{")):
        try:
            return _yaml().safe_load(raw)
        except Exception:  # noqa: BLE001 - not YAML after all: keep the text
            return raw
    return raw


def parse_cli_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """``["--request.sampling.seed", "3", "--generator.engine.dtype=bf16"]`` -> flat dotted dict (see contract)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise ValueError(f"Expected --dotted.key, got {token!r}")
        key, sep, value = token[2:].partition("=")
        key = key.strip().replace("-", "_")
        if not key:
            raise ValueError("Override key cannot be empty")
        if not sep:
            if i + 1 >= len(tokens):
                raise ValueError(f"Missing value for override '--{key}'")
            value = tokens[i + 1]
            i += 1
        out[key] = _cast(value)
        i += 1
    return out


def apply_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``config`` with every dotted key of ``overrides`` set (see module contract)."""
    out = copy.deepcopy(dict(config))
    for dotted, value in overrides.items():
        parts = str(dotted).split(".")
        if any(not part for part in parts):
            raise ValueError(f"Invalid override path {dotted!r}")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigValidationError(".".join(parts[:depth + 1]),
                                            "cannot apply nested override through a non-mapping value")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return out


def _normalize(overrides: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    if not overrides:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    return parse_cli_overrides(list(overrides))


def load_config(config_type: type[T], path: str | Path,
                overrides: Sequence[str] | Mapping[str, Any] | None = None) -> T:
    """``config_type`` from a config file plus dotted overrides (see module contract)."""
    raw = apply_overrides(load_raw_config(path), _normalize(overrides))
    return parse_config(config_type, raw)  # type: ignore[type-var]


def load_run_config(path: str | Path, overrides: Sequence[str] | Mapping[str, Any] | None = None) -> RunConfig:
    """A :class:`RunConfig` from a file plus dotted overrides."""
    return load_config(RunConfig, path, overrides)


#: Keys of :class:`GeneratorConfig` a serve document may give at its top level (read as ``generator.<key>``).
GENERATOR_KEYS = ("model_path", "engine", "pipeline")


def normalize_serve_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    """A serve mapping with top-level GeneratorConfig keys moved under ``generator``; dotted keys too
    (``engine.dtype`` -> ``generator.engine.dtype``), so it also normalizes a dict of overrides."""
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in data.items()
                           if str(k).split(".", 1)[0] not in GENERATOR_KEYS}
    for key, value in data.items():
        if str(key).split(".", 1)[0] not in GENERATOR_KEYS:
            continue
        if "." in str(key):
            out[f"generator.{key}"] = copy.deepcopy(value)
            continue
        generator = out.setdefault("generator", {})
        if not isinstance(generator, dict):
            raise ConfigValidationError("generator", f"expected mapping for GeneratorConfig, got "
                                                     f"{type(generator).__name__}")
        generator[key] = copy.deepcopy(value)
    return out


def load_serve_config(path: str | Path, overrides: Sequence[str] | Mapping[str, Any] | None = None) -> ServeConfig:
    """A :class:`ServeConfig` from a file plus dotted overrides (``["--server.port", "8001"]``)."""
    raw = normalize_serve_mapping(load_raw_config(path))
    return parse_config(ServeConfig, apply_overrides(raw, normalize_serve_mapping(_normalize(overrides))))
