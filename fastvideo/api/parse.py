"""Strict parsing and serialization of the public config dataclasses.

Contract:
- :func:`parse_config(Type, mapping)` builds a dataclass (nested dataclasses, ``Optional``,
  ``list``/``tuple``/``dict`` and ``Literal`` fields included) from plain data. An unknown key fails
  with :class:`ConfigError` naming its dotted path (``engine.compile.mdoe``); a value of the wrong
  type fails naming the path, the expected type and what was given; ``null`` is accepted only where
  the type is optional (elsewhere: ``expected X, got null (the field is not optional)``, where X is
  FastVideo's wording: ``mapping for OutputConfig``, ``one of [...]``, ``int``...); a ``ConfigError`` a dataclass's
  ``__post_init__`` raises naming one of its fields is reported under that field's full dotted path
  (``queue.max_batch``); a field marked with :data:`NULL_IS_DEFAULT` reads ``null`` as its default.
  ``bool`` is never accepted
  where a number is expected; an ``int`` is accepted where a ``float`` is.
- :func:`config_to_dict(obj)` is the inverse: JSON-safe plain data (tuples become lists) such that
  ``parse_config(type(obj), config_to_dict(obj)) == obj``.
- :func:`literal_values(tp)` gives the values a ``Literal`` type allows, walking unions (``Literal[...] | None``);
  the parser's error wording and the CLI's ``choices=`` both read it.
- Stdlib only: importing this module must not import torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, Union, get_args, get_origin, get_type_hints

from fastvideo.api.errors import FastVideoError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class ConfigValidationError(FastVideoError, ValueError):
    """A config or request mapping that does not fit its typed schema: ``path`` is the dotted path from the
    document's root (``""`` for the root itself), ``message`` what is wrong; ``str()`` is ``"path: message"``
    (just the message at the root), as in FastVideo's ``fastvideo.api``."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        #: Same as ``message``: the text without the path (what a caller re-rooting the path keeps).
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)


#: The name the rest of this package uses; one class.
ConfigError = ConfigValidationError

#: ``dataclasses.field`` metadata key: a ``null`` value for this (non-optional) field means "the default"
#: (e.g. FastVideo writes ``streaming: null`` for a serve document without a streaming section).
NULL_IS_DEFAULT = "fastvideo.null_is_default"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


_HINTS_CACHE: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS_CACHE:
        _HINTS_CACHE[cls] = get_type_hints(cls)
    return _HINTS_CACHE[cls]


def literal_values(tp: Any) -> tuple[Any, ...]:
    """The values a ``Literal`` type allows, in declaration order. For a union (``Literal[...] | None``, a union
    of Literals) the values of its ``Literal`` members, in order; other members (``None``, ``str``...) add
    nothing. ``()`` for a type that is neither."""
    origin = get_origin(tp)
    if origin is typing.Literal:
        return get_args(tp)
    if origin is Union or origin is types.UnionType:
        return tuple(value for option in get_args(tp) for value in literal_values(option))
    return ()


def _expected(tp: Any) -> str:
    """What a non-optional type expects, in FastVideo's words."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return f"mapping for {tp.__name__}"
    if get_origin(tp) is typing.Literal:
        return f"one of {sorted(literal_values(tp), key=repr)!r}"
    origin = get_origin(tp) or tp
    return {list: "list", tuple: "tuple", dict: "mapping"}.get(origin, _type_name(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise ConfigError naming ``path``."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if value is None and origin is not Union and origin is not types.UnionType:
        raise ConfigError(path, f"expected {_expected(tp)}, got null (the field is not optional)")
    if origin is Union or origin is types.UnionType:
        options = get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(path, f"expected {_type_name(tp)}, got null (the field is not optional)")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(path, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is typing.Literal:
        allowed = literal_values(tp)
        if value not in allowed:
            raise ConfigError(path, f"expected one of {sorted(allowed, key=repr)!r}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected mapping for {tp.__name__}, got {type(value).__name__}")
        return _build(tp, value, path)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(path, f"expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__}")
        args = get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(path, f"keys must be strings, got {k!r}")
            out[k] = _convert(val_tp, v, _join(path, k))
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(path, f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type[T], data: Mapping[str, Any], path: str) -> T:
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(path, f"expected mapping keys to be strings, got {key!r}")
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        raise ConfigError(_join(path, str(key)), f"unknown field (known fields of {cls.__name__}: {sorted(fields)})")
    missing = [name for name, f in fields.items() if name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(_join(path, missing[0]), "missing required field")
    kwargs = {name: _convert(hints[name], value, _join(path, name)) for name, value in data.items()
              if not (value is None and fields[name].metadata.get(NULL_IS_DEFAULT))}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):  # raised by __post_init__ naming its field: root it at this path
            if not path:
                raise
            raise ConfigError(_join(path, exc.path) if exc.path else path, exc.reason) from exc
        raise ConfigError(path or cls.__name__, str(exc)) from exc
    return obj


def parse_config(cls: type[T], data: Mapping[str, Any] | T) -> T:
    """Build ``cls`` strictly from ``data`` (a mapping, or already an instance of ``cls``)."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError("", f"expected mapping for {cls.__name__}, got {type(data).__name__}")
    return _build(cls, data, "")


def config_to_dict(obj: Any) -> Any:
    """JSON-safe plain data for a config dataclass (inverse of :func:`parse_config`)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, Mapping):
        return {str(k): config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"config_to_dict: value of type {type(obj).__name__} is not JSON-safe: {obj!r}")
