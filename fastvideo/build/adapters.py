"""Build adapters: what ``fastvideo-build`` and artifact loading need to know of one model family, by runtime binding.

Contract
--------
- A :class:`BuildAdapter` is everything family-specific in building, loading and serving artifacts: the export
  dimensions and preset of a checked model folder (``model_dims``), the shape cases of a request
  (``derive_specs``), the eager models a build compiles and verifies against (``load_models``), the wrapper module a
  shape case is exported / compiled from (``export_module``), a cheap precision probe, the same models viewed from a
  loaded runtime pipeline (``pipeline_models``), the modules the inductor backend compiles per case
  (``inductor_targets``: case key -> (compile group, module); one ``torch.compile`` per group), how the loaded
  programs are plugged into a pipeline (``apply``), the build options the family cannot honour (``refuse``: a
  message, or None) and extra ``manifest.model`` fields (``manifest_model``).
- Adapters are registered by the family's runtime binding (:attr:`fastvideo.engine.families.ModelFamily.runtime`:
  ``wan``, ``ltx2``) with a factory that imports lazily; :func:`adapter_for_folder` picks one for a model folder
  through the family registry (a folder no family accepts gets the ``wan`` adapter, whose checks then refuse it
  with the family registry's message, as before), :func:`adapter_for_manifest` for a build (its
  ``model.runtime``; absent: ``wan``, every manifest written before LTX-2 builds existed). No family name is
  compared anywhere else in ``fastvideo/build``.
- The ``wan`` adapter is the Wan code path that predates this registry, unchanged: :mod:`fastvideo.build.exportable`,
  the builder's ``_model_dims`` / ``_probe_precision`` and :func:`fastvideo.build.artifact_modules.apply_wan_artifacts`.
  The ``ltx2`` adapter lives in :mod:`fastvideo.build.ltx2_export`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from fastvideo.build.exportable import BuildModels
    from fastvideo.build.loading import LoadedArtifacts
    from fastvideo.build.specs import ComponentSpec, ModelDims, ShapeCase, VideoProfile

__all__ = ["BuildAdapter", "adapter_for_folder", "adapter_for_manifest", "build_adapter", "build_adapter_names",
           "register_build_adapter"]

#: The runtime binding of manifests that do not record one (every Wan build).
DEFAULT_RUNTIME = "wan"


@dataclass(frozen=True)
class BuildAdapter:
    """One family's build/load hooks (see module contract)."""

    runtime: str
    model_dims: Callable[[Any], "tuple[ModelDims, Any]"]
    derive_specs: Callable[["ModelDims", "list[VideoProfile]", "tuple[str, ...]", "tuple[int, ...]",
                            "tuple[str, ...] | None"], "list[ComponentSpec]"]
    load_models: Callable[..., "BuildModels"]
    export_module: Callable[["ShapeCase", "BuildModels"], "nn.Module"]
    probe: Callable[["BuildModels", "tuple[str, ...]"], None]
    pipeline_models: Callable[[Any], "BuildModels"]
    inductor_targets: Callable[["BuildModels", "list[ShapeCase]"], "dict[str, tuple[str, nn.Module]]"]
    apply: Callable[[Any, "LoadedArtifacts", str], None]
    refuse: Callable[[Any], "str | None"]
    manifest_model: Callable[["ModelDims"], "dict[str, Any]"]


_FACTORIES: dict[str, Callable[[], BuildAdapter]] = {}


def register_build_adapter(runtime: str, factory: Callable[[], BuildAdapter]) -> None:
    """Register (or replace) the adapter of runtime binding ``runtime``; ``factory`` imports lazily."""
    _FACTORIES[runtime] = factory
    _resolve.cache_clear()


def build_adapter_names() -> tuple[str, ...]:
    return tuple(_FACTORIES)


@functools.lru_cache(maxsize=None)
def _resolve(runtime: str) -> BuildAdapter:
    adapter = _FACTORIES[runtime]()
    if adapter.runtime != runtime:
        raise ValueError(f"the build adapter registered as {runtime!r} says it is {adapter.runtime!r}")
    return adapter


def build_adapter(runtime: str) -> BuildAdapter:
    """The adapter of a runtime binding (``ValueError`` naming the known ones for another)."""
    if runtime not in _FACTORIES:
        raise ValueError(f"fastvideo-build cannot export models of the {runtime!r} runtime binding (it exports "
                         f"{', '.join(_FACTORIES)})")
    return _resolve(runtime)


def adapter_for_folder(folder: Any) -> BuildAdapter:
    """The adapter of a checked model folder's family (module contract)."""
    from fastvideo.api.errors import ModelLoadError
    from fastvideo.engine.families import family_of_folder

    try:
        runtime = family_of_folder(folder).runtime
    except ModelLoadError:
        runtime = DEFAULT_RUNTIME  # its own checks refuse the folder, with the registry's message
    return build_adapter(runtime)


def adapter_for_manifest(model: dict[str, Any]) -> BuildAdapter:
    """The adapter of a build from its manifest's ``model`` mapping."""
    return build_adapter(str(model.get("runtime") or DEFAULT_RUNTIME))


def _wan() -> BuildAdapter:
    from fastvideo.build.artifact_modules import apply_wan_artifacts
    from fastvideo.build.builder import _model_dims, _probe_precision
    from fastvideo.build.exportable import export_module, load_build_models, wan_inductor_targets, wan_pipeline_models
    from fastvideo.build.specs import derive_specs

    return BuildAdapter(runtime="wan", model_dims=_model_dims, derive_specs=derive_specs,
                        load_models=load_build_models, export_module=export_module, probe=_probe_precision,
                        pipeline_models=wan_pipeline_models, inductor_targets=wan_inductor_targets,
                        apply=apply_wan_artifacts, refuse=lambda request: None, manifest_model=lambda dims: {})


def _ltx2() -> BuildAdapter:
    from fastvideo.build.ltx2_export import LTX2_ADAPTER

    return LTX2_ADAPTER


register_build_adapter("wan", _wan)
register_build_adapter("ltx2", _ltx2)
