"""``SamplingParam``: FastVideo's flat sampling parameters, as a typed view over :class:`GenerationRequest`.

Contract:
- ``SamplingParam`` is a mutable dataclass whose fields are ``prompt``, ``negative_prompt`` and every field
  of the request's ``inputs``, ``sampling``, ``runtime`` and ``output`` sections under its own name (so
  FastVideo code that sets ``num_frames``, ``guidance_scale``, ``output_path``, ``save_video``,
  ``prompt_path``, ``image_path`` ... works), plus ``continuation_state`` (the request's ``state``). The
  fields are derived from the request dataclasses when this module loads: there is no second list, and
  a field added to a request section appears here by itself. Defaults are the request's: sampling values
  left ``None`` take the model preset's (FastVideo's ``SamplingParam()`` has fixed defaults such as
  720x1280, 125 frames; ours defer to the model), ``save_video`` false, ``return_frames`` true.
- :meth:`SamplingParam.to_request` / :meth:`SamplingParam.from_request` convert both ways (values kept as
  they are: the runtime validates the request). :meth:`SamplingParam.update` sets fields from a mapping
  (``neg_prompt`` is FastVideo's alias of ``negative_prompt``); unknown keys are a
  :class:`~fastvideo.api.ConfigValidationError` (a ValueError) listing them, and nothing is changed.
- :meth:`SamplingParam.from_pretrained(model_path)` fills the model preset's defaults (size, frames, fps,
  steps, guidance, negative prompt) for a local model folder, inferred from its JSON configs (a Hugging
  Face repo id is a ModelLoadError saying how to download it). ``data_type`` is "video" when more than one
  frame is asked for (or the preset decides), else "image". :meth:`check_sampling_param` refuses a
  ``prompt_path`` that is not a ``.txt`` file.
- Stdlib only (no torch).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastvideo.api.parse import ConfigValidationError
from fastvideo.api.presets import infer_preset_for_path
from fastvideo.api.request import GenerationRequest
from fastvideo.api.state import ContinuationState

#: Request sections whose fields SamplingParam flattens, in order.
SECTIONS: tuple[str, ...] = ("inputs", "sampling", "runtime", "output")
#: Top-level request fields SamplingParam carries under the same name.
TOP_LEVEL: tuple[str, ...] = ("prompt", "negative_prompt")
#: FastVideo's aliases accepted by :meth:`SamplingParam.update`.
ALIASES: dict[str, str] = {"neg_prompt": "negative_prompt"}


def _flat_fields() -> tuple[list[tuple[str, Any, Any]], dict[str, str | None]]:
    """``(name, type, dataclasses.field)`` for every flattened field, and name -> section (None: top level)."""
    request_hints = typing.get_type_hints(GenerationRequest)
    specs: list[tuple[str, Any, Any]] = []
    home: dict[str, str | None] = {}

    def add(name: str, hint: Any, source: dataclasses.Field, section: str | None) -> None:
        if name in home:
            raise TypeError(f"SamplingParam field {name!r} appears in two request sections")
        home[name] = section
        if source.default_factory is not dataclasses.MISSING:
            specs.append((name, hint, dataclasses.field(default_factory=source.default_factory)))
        else:
            specs.append((name, hint, dataclasses.field(default=source.default)))

    by_name = {f.name: f for f in dataclasses.fields(GenerationRequest)}
    for name in TOP_LEVEL:
        add(name, request_hints[name], by_name[name], None)
    for section in SECTIONS:
        if section not in by_name:  # pragma: no cover - a section the request does not have (yet)
            continue
        section_type = request_hints[section]
        hints = typing.get_type_hints(section_type)
        for f in dataclasses.fields(section_type):
            add(f.name, hints[f.name], f, section)
    specs.append(("continuation_state", ContinuationState | None, dataclasses.field(default=None)))
    home["continuation_state"] = "state"
    return specs, home


_SPECS, FIELD_HOME = _flat_fields()


class _SamplingParamMethods:
    """Methods of :class:`SamplingParam` (its fields are generated, see module contract)."""

    @property
    def data_type(self) -> str:
        frames = getattr(self, "num_frames", None)
        return "image" if frames == 1 else "video"

    def update(self, source: Mapping[str, Any]) -> None:
        """Set fields from ``source`` (FastVideo's ``SamplingParam.update``); unknown keys change nothing."""
        items = {ALIASES.get(key, key): value for key, value in source.items()}
        unknown = sorted(key for key in items if key not in FIELD_HOME)
        if unknown:
            raise ConfigValidationError("", f"SamplingParam.update() received unknown field(s): {unknown}. All keys "
                                            f"must be SamplingParam fields (see dataclasses.fields(SamplingParam))")
        for key, value in items.items():
            setattr(self, key, value)

    def check_sampling_param(self) -> None:
        prompt_path = getattr(self, "prompt_path", None)
        if prompt_path is not None and not str(prompt_path).endswith(".txt"):
            raise ConfigValidationError("prompt_path", "prompt_path must be a txt file (one prompt per line)")

    def to_request(self) -> GenerationRequest:
        """The :class:`GenerationRequest` these parameters describe."""
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        for name, section in FIELD_HOME.items():
            value = getattr(self, name)
            if section is None or section == "state":
                top["state" if section == "state" else name] = value
            else:
                sections[section][name] = value
        hints = typing.get_type_hints(GenerationRequest)
        built = {s: hints[s](**values) for s, values in sections.items() if s in hints}
        return GenerationRequest(**top, **built)

    @classmethod
    def from_request(cls, request: GenerationRequest) -> Any:
        """The flat view of ``request``."""
        values = {}
        for name, section in FIELD_HOME.items():
            owner = request if section in (None, "state") else getattr(request, section)
            values[name] = getattr(owner, "state" if section == "state" else name)
        return cls(**values)

    @classmethod
    def from_pretrained(cls, model_path: str | Path) -> Any:
        """Parameters with the preset defaults of the model in the local folder ``model_path``."""
        preset = infer_preset_for_path(model_path)
        param = cls()
        param.update({k: v for k, v in preset.defaults.items() if k in FIELD_HOME})
        return param


SamplingParam = dataclasses.make_dataclass("SamplingParam", _SPECS, bases=(_SamplingParamMethods,))
SamplingParam.__module__ = __name__
SamplingParam.__doc__ = ("FastVideo's flat sampling parameters over GenerationRequest's fields (see "
                         "fastvideo.api.sampling_param).")
