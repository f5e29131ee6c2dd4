"""``PipelineConfig``: FastVideo's pipeline settings, as a typed view over :class:`GeneratorConfig` fields.

Contract:
- A mutable dataclass with FastVideo's user-facing names. Every field defaults to ``None`` ("leave the
  generator config as it is"); each set field maps onto one GeneratorConfig field when applied
  (``VideoGenerator.from_pretrained(path, pipeline_config=cfg)`` or :meth:`PipelineConfig.apply_to`):
  ``dit_precision`` -> ``engine.dtype``, ``vae_precision`` -> ``pipeline.experimental.vae_dtype``,
  ``disable_autocast`` -> ``engine.disable_autocast``, ``vae_tiling`` -> ``pipeline.vae_tiling`` (where the
  runtime's field check accepts or refuses it by name), ``pipeline_config_path`` ->
  ``pipeline.components.pipeline_config_path``.
- Settings with no home in a generator config are refused when set, naming the field and the
  replacement: ``flow_shift`` (the request's ``sampling.shift`` / ``SamplingParam.shift``; the model
  folder's scheduler config sets the default), ``text_encoder_precisions`` (the text encoder runs in
  ``engine.dtype``), ``vae_sp`` (no multi-GPU VAE), ``embedded_cfg_scale`` (Wan uses classic CFG:
  ``guidance_scale``).
- :meth:`PipelineConfig.from_pretrained(model_path)` reports the model's preset values (``flow_shift``);
  applying such a config back is accepted as long as ``flow_shift`` still holds the value it read.
  :meth:`update_pipeline_config` sets fields from a mapping and refuses unknown keys. Stdlib only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastvideo.api.parse import ConfigValidationError
from fastvideo.api.presets import infer_preset_for_path

#: field -> dotted GeneratorConfig path it sets.
MAPPED: dict[str, tuple[str, ...]] = {
    "model_path": ("model_path",),
    "dit_precision": ("engine", "dtype"),
    "vae_precision": ("pipeline", "experimental", "vae_dtype"),
    "disable_autocast": ("engine", "disable_autocast"),
    "vae_tiling": ("pipeline", "vae_tiling"),
    "pipeline_config_path": ("pipeline", "components", "pipeline_config_path"),
}

#: field -> why it is refused and what to use instead.
REFUSED: dict[str, str] = {
    "flow_shift": "the shift is a per-request value here: set sampling.shift (SamplingParam.shift); the model "
                  "folder's scheduler config sets the default",
    "text_encoder_precisions": "the text encoder runs in engine.dtype (PipelineConfig.dit_precision)",
    "vae_sp": "this engine has no sequence-parallel VAE (one device per generator)",
    "embedded_cfg_scale": "Wan uses classic classifier-free guidance: set guidance_scale per request",
}


@dataclass
class PipelineConfig:
    """FastVideo's pipeline settings over GeneratorConfig (see module contract)."""

    model_path: str | None = None
    pipeline_config_path: str | None = None
    dit_precision: str | None = None
    vae_precision: str | None = None
    disable_autocast: bool | None = None
    vae_tiling: bool | None = None
    flow_shift: float | None = None
    text_encoder_precisions: tuple[str, ...] | None = None
    vae_sp: bool | None = None
    embedded_cfg_scale: float | None = None
    #: The flow_shift from_pretrained read (applying it unchanged is not a change).
    _model_flow_shift: float | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def from_pretrained(cls, model_path: str | Path) -> "PipelineConfig":
        """The model's values (its preset's ``flow_shift``) for the local folder ``model_path``."""
        preset = infer_preset_for_path(model_path)
        shift = preset.model_defaults.get("flow_shift")
        return cls(model_path=str(model_path), flow_shift=shift, _model_flow_shift=shift)

    def update_pipeline_config(self, source: Mapping[str, Any]) -> None:
        """Set fields from ``source``; unknown keys change nothing and are a ConfigValidationError."""
        names = {f.name for f in dataclasses.fields(self) if not f.name.startswith("_")}
        unknown = sorted(k for k in source if k not in names)
        if unknown:
            raise ConfigValidationError("", f"PipelineConfig has no field(s) {unknown}; fields: {sorted(names)}")
        for key, value in source.items():
            setattr(self, key, value)

    def apply_to(self, data: dict[str, Any]) -> dict[str, Any]:
        """Write the set fields into the GeneratorConfig mapping ``data`` (refused fields raise, by name)."""
        for name, why in REFUSED.items():
            value = getattr(self, name)
            if value is not None and not (name == "flow_shift" and value == self._model_flow_shift):
                raise ConfigValidationError(f"pipeline_config.{name}", f"not supported: {why}; leave it None")
        for name, path in MAPPED.items():
            value = getattr(self, name)
            if value is None or (name == "model_path" and data.get("model_path")):
                continue
            node = data
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        return data
