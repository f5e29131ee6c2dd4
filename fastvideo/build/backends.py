"""Artifact backend registry: the only place loading and fingerprinting learn what a backend does.

Contract
--------
- A backend is an :class:`ArtifactBackend`: its name; the optional environment fields its programs
  depend on besides torch, device type and GPU arch (a subset of :data:`OPTIONAL_ENV_FIELDS`, read
  by :func:`fastvideo.build.manifest.environment_info`); whether its programs read the eager
  model's weights (then the eager DiT stays alive for fallbacks at no memory cost); and its hooks:
  ``load_program(path, device, case)`` loads one shape case's program file (``None``: the backend
  has no per-case files, every case is served from a shared cache), ``private_copy(folder)`` copies
  what the backend writes to at run time out of the verified folder (``None``: nothing), and
  ``runners(pipeline, loaded)`` returns one callable per shape case key, bound to the pipeline's
  eager DiT/VAE.
- Backends are registered by name with a factory (the pattern of
  :mod:`fastvideo.kernels.registry`); factories import their backend module lazily, so importing
  this module (and :mod:`fastvideo.build.manifest`) imports no torch. The built-ins are
  ``inductor``, ``aoti`` and ``tensorrt``, in that order: :func:`artifact_backend_names` keeps
  registration order, which is the order the CLI and error messages list them in.
- :func:`artifact_backend` on a name nobody registered raises :class:`UnknownBackendError`; callers
  that report a mismatch check :func:`artifact_backend_names` first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fastvideo.api.errors import FastVideoError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from fastvideo.build.loading import LoadedArtifacts
    from fastvideo.build.specs import ShapeCase

__all__ = ["OPTIONAL_ENV_FIELDS", "ArtifactBackend", "UnknownBackendError", "artifact_backend",
           "artifact_backend_names", "register_artifact_backend"]

#: Environment fields a backend may depend on (besides torch, device type and GPU arch).
OPTIONAL_ENV_FIELDS = frozenset({"triton", "cpu_isa", "tensorrt", "onnx", "onnxruntime"})

Runner = Callable[..., "torch.Tensor"]
ProgramLoader = Callable[[Path, "torch.device", "ShapeCase"], Any]
RunnerFactory = Callable[[Any, "LoadedArtifacts"], dict[str, Runner]]


class UnknownBackendError(FastVideoError, ValueError):
    """A backend name no module registered."""


@dataclass(frozen=True)
class ArtifactBackend:
    """What one backend contributes to fingerprinting, loading and serving artifacts (see module contract)."""

    name: str
    environment: frozenset[str]
    shares_eager_weights: bool
    runners: RunnerFactory
    load_program: ProgramLoader | None = None
    private_copy: Callable[[Path], Path] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(self.environment - OPTIONAL_ENV_FIELDS)
        if unknown:
            raise ValueError(f"artifact backend {self.name!r} names unknown environment fields {unknown}; use "
                             f"{sorted(OPTIONAL_ENV_FIELDS)}")

    @property
    def program_files(self) -> bool:
        """Every shape case has its own program file listed in the manifest."""
        return self.load_program is not None


_FACTORIES: dict[str, Callable[[], ArtifactBackend]] = {}


def register_artifact_backend(name: str, factory: Callable[[], ArtifactBackend]) -> None:
    """Register (or replace) backend ``name``; ``factory`` imports the backend's module lazily."""
    _FACTORIES[name] = factory
    _resolve.cache_clear()


def artifact_backend_names() -> tuple[str, ...]:
    """Every registered backend, in registration order."""
    return tuple(_FACTORIES)


@functools.lru_cache(maxsize=None)
def _resolve(name: str) -> ArtifactBackend:
    backend = _FACTORIES[name]()
    if backend.name != name:
        raise ValueError(f"the factory registered as {name!r} returned backend {backend.name!r}")
    return backend


def artifact_backend(name: str) -> ArtifactBackend:
    """The registered backend called ``name`` (raises :class:`UnknownBackendError`)."""
    if name not in _FACTORIES:
        raise UnknownBackendError(f"backend {name!r} is unknown; use one of {', '.join(_FACTORIES)}")
    return _resolve(name)


def _inductor() -> ArtifactBackend:
    from fastvideo.build.inductor import ARTIFACT_BACKEND

    return ARTIFACT_BACKEND


def _aoti() -> ArtifactBackend:
    from fastvideo.build.aoti import ARTIFACT_BACKEND

    return ARTIFACT_BACKEND


def _tensorrt() -> ArtifactBackend:
    from fastvideo.build.tensorrt import ARTIFACT_BACKEND

    return ARTIFACT_BACKEND


register_artifact_backend("inductor", _inductor)
register_artifact_backend("aoti", _aoti)
register_artifact_backend("tensorrt", _tensorrt)
