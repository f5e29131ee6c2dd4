"""AOTInductor backend: ``torch.export`` + ``aoti_compile_and_package`` per shape case.

Contract
--------
- :func:`build_aoti_case` exports the case's wrapper module (non-strict ``torch.export``; the DiT
  batch axis dynamic in ``[min, max]`` when the case serves both CFG batch sizes, everything else
  static) and compiles it into ``<out>/aoti/<case.key>.pt2``. Packages are built **without their
  weights** (``aot_inductor.package_constants_in_so=False``): they hold code only, and the runtime
  binds the already-loaded eager model's tensors with ``load_constants(..., user_managed=True)``.
  One set of weights in memory serves every profile; the manifest's weights digest guarantees
  they are the weights the package was compiled against.
- :class:`AOTIProgram` loads a package on a device (``aoti_load_package``), binds constants from a
  wrapper module (:meth:`AOTIProgram.bind`, which keeps that module alive) and is called with the
  case's inputs in order, returning one tensor. The runner is single-threaded (safe inside CUDA-graph
  capture: it records no completion event of its own); calls are serialized by a lock and run under
  the device guard of the package's device.
- Works on CPU (a C++ compiler is needed, see :func:`aoti_unavailable_reason`) and CUDA.
- :data:`ARTIFACT_BACKEND` is the ``aoti`` entry of :mod:`fastvideo.build.backends`: one package per
  shape case (an :class:`AOTIProgram`), bound at apply time to the pipeline's eager DiT / VAE
  wrappers (a package that does not bind is an ``ArtifactMismatchError`` on ``component``); the
  programs share the eager weights; the environment adds triton (CUDA) or the CPU vector ISA (CPU).
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fastvideo.build.backends import ArtifactBackend, Runner
from fastvideo.build.exportable import constants_map
from fastvideo.build.specs import ShapeCase
from fastvideo.kernels.device import device_guard

if TYPE_CHECKING:  # pragma: no cover
    from fastvideo.build.loading import LoadedArtifacts

logger = logging.getLogger(__name__)

__all__ = ["AOTIProgram", "AOTI_INDUCTOR_CONFIGS", "ARTIFACT_BACKEND", "aoti_unavailable_reason", "build_aoti_case",
           "export_case"]

#: Inductor settings every package is compiled with (weights stay out of the package).
AOTI_INDUCTOR_CONFIGS: dict[str, Any] = {"aot_inductor.package_constants_in_so": False}
SUBDIR = "aoti"


def aoti_unavailable_reason(device: torch.device) -> str | None:
    """Why AOTInductor / Inductor cannot compile for ``device`` here (``None`` when it can)."""
    if device.type == "cpu":
        if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
            return "compiling for the CPU needs a C++ compiler (g++ or clang++) on PATH"
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        try:
            import triton  # noqa: F401
        except ImportError:
            return "compiling for CUDA needs triton (pip install triton)"
        return None
    return f"device type {device.type!r} is not supported by this builder (use cpu or cuda)"


def export_case(module: nn.Module, case: ShapeCase, inputs: tuple[torch.Tensor, ...]) -> Any:
    """``torch.export`` the wrapper module of ``case`` on sample ``inputs``."""
    dynamic = case.export_dynamic_shapes()
    if dynamic is not None:
        dynamic = {name: dynamic.get(name, {}) for name in case.input_names()}
    # Input names of the wrapper's forward match the spec's input names, so dynamic_shapes is keyed by them.
    with torch.no_grad(), module.tracing():  # type: ignore[operator]
        return torch.export.export(module, inputs, dynamic_shapes=dynamic, strict=False)


def build_aoti_case(module: nn.Module, case: ShapeCase, inputs: tuple[torch.Tensor, ...], out_dir: Path) -> Path:
    """Export and compile one case into ``out_dir/aoti/<key>.pt2``; returns the package path."""
    target = Path(out_dir) / SUBDIR / f"{case.key}.pt2"
    target.parent.mkdir(parents=True, exist_ok=True)
    program = export_case(module, case, inputs)
    logger.info("AOTInductor: compiling %s", case.key)
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(target),
                                                    inductor_configs=dict(AOTI_INDUCTOR_CONFIGS))
    return Path(path)


class AOTIProgram:
    """A loaded ``.pt2`` package whose constants are bound to an eager module's tensors."""

    def __init__(self, path: Path, device: torch.device) -> None:
        self.path = Path(path)
        self.device = torch.device(device)
        index = -1
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        # Single-threaded runner: no per-run completion event. The default runner records one on the current
        # stream each run; recorded inside a CUDA-graph capture, the next eager run's query of it fails (907),
        # poisoning the only model instance. Calls are serialized by our lock instead.
        self._runner = torch._inductor.aoti_load_package(str(self.path), run_single_threaded=True,
                                                         device_index=index)
        self._owner: nn.Module | None = None
        self._lock = threading.Lock()

    def constant_names(self) -> list[str]:
        return list(self._runner.get_constant_fqns())

    def bind(self, module: nn.Module) -> None:
        """Point the package's constants at ``module``'s parameters/buffers (shared, not copied)."""
        available = constants_map(module)
        needed = self.constant_names()
        missing = [name for name in needed if name not in available]
        if missing:
            raise ValueError(f"{self.path.name} needs constants the model does not have: {missing[:5]}"
                             f"{'...' if len(missing) > 5 else ''}")
        constants = {}
        for name in needed:
            tensor = available[name]
            if tensor.device != self.device:
                raise ValueError(f"{self.path.name}: constant {name} is on {tensor.device}, the package runs on "
                                 f"{self.device}; load the model on {self.device}")
            constants[name] = tensor if tensor.is_contiguous() else tensor.contiguous()
        self._runner.load_constants(constants, check_full_update=True, user_managed=True)
        self._owner = module  # the runner holds raw pointers: keep the tensors alive
        self._bound = constants

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self._owner is None:
            raise RuntimeError(f"{self.path.name}: bind() the model's weights before calling the program")
        with self._lock, device_guard(self.device):
            out = self._runner(*inputs)
        if isinstance(out, (list, tuple)):
            return out[0]
        return out


def _load_program(path: Path, device: torch.device, case: ShapeCase) -> AOTIProgram:
    return AOTIProgram(path, device)


def _bound_runners(pipeline: Any, loaded: LoadedArtifacts) -> dict[str, Runner]:
    """Bind every loaded package to the export wrapper of its case around the pipeline's eager modules (the family's
    :attr:`BuildAdapter.export_module`; weights shared, not copied)."""
    from fastvideo.build.adapters import adapter_for_manifest
    from fastvideo.build.loading import ArtifactMismatchError

    adapter = adapter_for_manifest(loaded.manifest.model)
    models = adapter.pipeline_models(pipeline)
    runners: dict[str, Runner] = {}
    for key, entry in loaded.cases.items():
        case, program = entry.case, entry.program
        try:
            program.bind(adapter.export_module(case, models))
        except ValueError as exc:
            raise ArtifactMismatchError("component", case.component, case.component, (
                f"the program {case.key} does not fit this model's {case.component}: {exc}"),
                loaded.rebuild_command() + " --force") from None
        runners[key] = program
    return runners


#: The ``aoti`` entry of the artifact backend registry (see module contract).
ARTIFACT_BACKEND = ArtifactBackend(name="aoti", environment=frozenset({"triton", "cpu_isa"}), shares_eager_weights=True,
                                   runners=_bound_runners, load_program=_load_program)
