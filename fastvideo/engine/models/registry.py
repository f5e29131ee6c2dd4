"""The loader registry: how each family's pipeline is loaded, keyed by its runtime binding.

Contract: :data:`PIPELINE_LOADERS` maps a :attr:`fastvideo.engine.families.ModelFamily.runtime` binding to a
``"module:function"`` loader, imported only when a folder of that family is loaded (so loading Wan never imports
LTX-2's code, and the reverse). :func:`load_pipeline` ``(family, folder, **options)`` calls it with the checked
:class:`~fastvideo.engine.loader.ModelFolder`, the family, and the generator's load options (``device``,
``dtype``, ``vae_dtype``, ``attention_backend``, ``preset_name``, ``ops_backend``, ``offload_text_encoder``,
``offload_vae``, ``pin_cpu_memory``, ``transformer_quant``, ``offload_experts``, ``offload_dit_layerwise``); every
loader takes them all and honours or refuses each (the generator refuses a family's ``unsupported_config`` before,
by field); a named preset of another family's presets (``ModelFamily.preset_family``) is a ConfigError at
``pipeline.preset``. A binding without a loader is a :class:`~fastvideo.api.errors.ModelLoadError` naming it.
Engine code: it never imports the runtime; the runtime's executor registry (``fastvideo.runtime.worker.EXECUTORS``)
is keyed by the same bindings.
"""

from __future__ import annotations

import importlib
from typing import Any

from fastvideo.api.errors import ModelLoadError
from fastvideo.engine.families import ModelFamily

__all__ = ["PIPELINE_LOADERS", "load_pipeline", "resolve_dotted"]

#: Runtime binding -> ``"module:function"`` that loads the family's served pipeline.
PIPELINE_LOADERS: dict[str, str] = {
    "wan": "fastvideo.engine.models.registry:load_wan_pipeline",
    "ltx2": "fastvideo.engine.models.ltx2.served:load_served_ltx2",
}


def resolve_dotted(target: str) -> Any:
    """The object a ``"package.module:attr"`` string names (imported now)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def load_pipeline(family: ModelFamily, folder: Any, **options: Any) -> Any:
    """Load ``folder`` (a checked ModelFolder of ``family``) with the family's loader (module contract)."""
    target = PIPELINE_LOADERS.get(family.runtime)
    if target is None:
        raise ModelLoadError(f"model family {family.name!r} has runtime binding {family.runtime!r}, which no loader "
                             f"serves (known: {sorted(PIPELINE_LOADERS)})")
    _check_preset_family(family, options.get("preset_name"))
    return resolve_dotted(target)(folder, family=family, **options)


def _check_preset_family(family: ModelFamily, preset_name: str | None) -> None:
    """A named preset must be one of the family's (``ModelFamily.preset_family``); ConfigError otherwise."""
    if not preset_name:
        return
    from fastvideo.api import ConfigError
    from fastvideo.api import presets as api_presets

    registered = api_presets.get_preset(preset_name)  # unknown: ConfigError listing the registered ones
    if registered.model_family != family.preset_family:
        raise ConfigError("pipeline.preset", f"preset {registered.name!r} is a {registered.model_family} preset and "
                                             f"this is a {family.description} folder: use one of its "
                                             f"{family.preset_family} presets, or drop pipeline.preset to infer it")


def load_wan_pipeline(folder: Any, *, family: ModelFamily, preset_name: str | None, **options: Any) -> Any:
    """The Wan families' loader: :meth:`WanT2VPipeline.from_folder` with the named preset (None: the folder's)."""
    from fastvideo.engine.models.wan.pipeline import WanT2VPipeline
    from fastvideo.engine.presets import get_preset

    preset = get_preset(preset_name) if preset_name else None  # unknown: ConfigError at pipeline.preset
    return WanT2VPipeline.from_folder(folder, preset=preset, **options)
