"""Loading a ``fastvideo-build`` artifact folder: ordered checks, then the backend's programs.

Contract
--------
- :func:`load_artifacts(path, model_folder=..., device=..., dtype=...)` reads ``manifest.json`` of a
  build folder (or of the one build inside ``path`` that matches) and runs :data:`LOAD_CHECKS` in
  order, cheapest first. They refuse, with :class:`ArtifactMismatchError` (a
  :class:`~fastvideo.api.ModelLoadError`) naming the field, the built value, the current value and
  the exact ``fastvideo-build ...`` command that rebuilds for the current model and environment:
  an unknown or unwanted backend (``backend=``), an unknown branch, a missing component
  (``components=``, default the DiT), an unfinished (ONNX-only) stage, another DiT/VAE precision, another
  DiT weight quantization (``quantization=``: a build with FP8 weights for an unquantized engine and vice versa),
  another fused LoRA (``lora=``: :func:`fastvideo.engine.lora.lora_manifest_value` of the runtime's adapter, compared
  by sha256 and strength; a build with a LoRA for an engine without one and vice versa),
  another device type, GPU arch, CPU ISA, torch / triton / TensorRT version, another kind of model
  (an image-conditioned build for a text-to-video model or the reverse, read from the model folder's
  ``transformer/config.json`` ``image_dim``; a build of one expert for a two-expert folder, one that
  declares ``transformer_2`` in ``model_index.json``, or the reverse; another family's runtime binding:
  ``runtime``, e.g. an LTX-2 build for a Wan folder), other weights or
  configs (the file that differs is named). Missing, truncated or altered files (sha256 against the
  manifest; skipped with ``check_files=False``) and a hand-edited manifest (its identity no longer
  hashes to the recorded hash, or disagrees with its descriptive fields) raise
  :class:`ArtifactCorruptError`. The weights digest is memoized per file (see
  :func:`fastvideo.build.manifest.compute_weights_digest`).
- Programs are then loaded through the backend registry (:mod:`fastvideo.build.backends`): one
  program per shape case for backends with program files (a case whose file the manifest does not
  list is an :class:`ArtifactCorruptError`), and the backend's private working copy (the inductor
  cache) made in a temporary directory removed by :meth:`LoadedArtifacts.close` or at garbage
  collection. Plugging the programs into a pipeline is :mod:`fastvideo.build.artifact_modules`.
- :meth:`LoadedArtifacts.check_request` refuses, before any compute, a resolved request whose shape
  the build does not cover, as a :class:`~fastvideo.api.RequestError` (HTTP 400) naming the served
  profiles and the rebuild command, and a continuation request when the build does not serve the
  continuation branch (the caller says which branch a request needs). Programs specialized per profile (cases
  with ``params``: LTX-2) are matched by the profiles and branch they cover and their fps, at any batch.
  :class:`ArtifactShapeError` is the same refusal for a call at run time.
"""

from __future__ import annotations

import logging
import shutil
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from fastvideo.api.errors import FastVideoError, ModelLoadError, RequestError
from fastvideo.build import manifest as mf
from fastvideo.build.backends import artifact_backend, artifact_backend_names
from fastvideo.build.specs import BRANCHES, ShapeCase, default_components, is_dit

logger = logging.getLogger(__name__)

__all__ = ["LOAD_CHECKS", "ArtifactCorruptError", "ArtifactError", "ArtifactMismatchError", "ArtifactShapeError",
           "CaseEntry", "LoadedArtifacts", "load_artifacts"]

PRECISION_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


class ArtifactError(ModelLoadError):
    """An artifact folder that cannot serve this model/environment (message says why and how to fix)."""


class ArtifactMismatchError(ArtifactError):
    """The artifact was built for something else: ``field`` differs (``built`` vs ``current``)."""

    def __init__(self, field: str, built: Any, current: Any, detail: str, rebuild: str) -> None:
        self.field, self.built, self.current, self.rebuild_command = field, built, current, rebuild
        super().__init__(f"artifacts do not match: {detail} (built for {built!r}, this run has {current!r}). "
                         f"Rebuild with: {rebuild}")


class ArtifactCorruptError(ArtifactError):
    """Files of the artifact folder are missing or differ from the manifest's hashes."""


class ArtifactShapeError(FastVideoError, ValueError):
    """A call or request at a shape no compiled program covers."""


@dataclass
class CaseEntry:
    """A loaded shape case and its program (``None`` for backends without per-case program files)."""

    case: ShapeCase
    program: Any = None


@dataclass
class LoadedArtifacts:
    """A verified artifact folder, its manifest and its loaded programs."""

    path: Path
    manifest: mf.Manifest
    device: torch.device
    dtype: torch.dtype
    model_folder: Path
    cases: dict[str, CaseEntry]
    #: The backend's private working copy (see :attr:`ArtifactBackend.private_copy`), removed by :meth:`close`.
    private_dir: Path | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return self.manifest.backend

    def rebuild_command(self, extra_profiles: Sequence[str] = (), **override: Any) -> str:
        """The ``fastvideo-build`` line that rebuilds these artifacts for the current model/environment."""
        return _rebuild(self.manifest, self.model_folder, self.device, self.path.parent, extra_profiles, **override)

    def served(self, component: str = "dit") -> str:
        """Human-readable list of the shapes ``component`` is built for."""
        labels = []
        for entry in self.cases.values():
            if entry.case.component == component:
                covers = ", ".join(f"{p.label} ({b})" for p, b in entry.case.covers)
                labels.append(f"{covers} -> latent {entry.case.latent.frames}x{entry.case.latent.height}x"
                              f"{entry.case.latent.width}, batch {'/'.join(map(str, entry.case.batches))}")
        return "; ".join(labels) or "nothing"

    def find(self, component: str, latent: tuple[int, int, int], batch: int = 1) -> CaseEntry | None:
        for entry in self.cases.values():
            case = entry.case
            if case.component == component and (case.latent.frames, case.latent.height, case.latent.width) == \
                    tuple(latent) and batch in case.batches:
                return entry
        return None

    def smallest_served(self) -> tuple[Any, bool] | None:
        """The smallest video profile the DiT is built for (initial branch) and whether it serves it with CFG
        (DiT batch 2): what a warmup request should run; ``None`` when no DiT program was built."""
        options = [(c.case.latent.frames * c.case.latent.height * c.case.latent.width, profile, 2 in c.case.batches)
                   for c in self.cases.values() if c.case.component == "dit"
                   for profile, branch in c.case.covers if branch == "initial"]
        if not options:
            return None
        _, profile, cfg = min(options, key=lambda o: (o[0], o[1].label))
        return profile, cfg

    def check_target(self, pipeline: Any) -> None:
        """Refuse (ArtifactError) serving a pipeline on another device or in another dtype than these artifacts
        were loaded for (every family's apply checks this first)."""
        device = torch.device(pipeline.device)
        if device.type != self.device.type or (device.index or 0) != (self.device.index or 0):
            raise ArtifactError(f"the pipeline runs on {device} but the artifacts were loaded for {self.device}")
        if pipeline.dtype != self.dtype:
            raise ArtifactError(f"the pipeline computes in {pipeline.dtype} but the artifacts were loaded for "
                                f"{self.dtype}")

    def check_request(self, sampling: Any, *, continuation: bool = False, branch_field: str = "state") -> None:
        """Raise :class:`RequestError` if a resolved request needs a shape the build does not cover;
        ``branch_field`` is the request field that makes it a continuation (named when that branch is not built)."""
        factor = int(self.manifest.model.get("spatial_factor", 8))
        latent = (sampling.latent_frames, sampling.height // factor, sampling.width // factor)
        batch = 2 if sampling.do_cfg else 1
        branch = "continuation" if continuation else "initial"
        if branch not in self.manifest.branches:
            raise RequestError(branch_field, (
                f"the loaded {self.backend} artifacts serve the {', '.join(self.manifest.branches)} branch only, not "
                f"the {branch} branch this request needs; drop {branch_field} or rebuild with: "
                f"{self.rebuild_command(branches=('initial', 'continuation'))}"))
        if any(e.case.params for e in self.cases.values() if e.case.component == "dit"):
            self._check_specialized(sampling, branch)
            return
        built = {e.case.component for e in self.cases.values()}
        needed = ["dit"] + [c for c in ("dit_2", "vae_decoder") if c in built]
        for component in needed:
            if self.find(component, latent, batch if is_dit(component) else 1) is None:
                label = f"{sampling.height}x{sampling.width}x{sampling.num_frames}"
                if component == "dit" and self.find("dit", latent, 3 - batch) is not None:
                    raise RequestError("sampling.guidance_scale", (
                        f"the loaded {self.backend} artifacts serve this size only "
                        f"{'with' if batch == 1 else 'without'} CFG (DiT batch {3 - batch}); use guidance_scale "
                        f"{'> 1' if batch == 1 else '<= 1'} or rebuild with: {self.rebuild_command(cfg='both')}"))
                raise RequestError("sampling", (
                    f"{label} ({branch} branch, latent {latent[0]}x{latent[1]}x{latent[2]}, DiT batch {batch}) is not "
                    f"covered by the loaded {self.backend} artifacts, which serve: {self.served(component)}. Use a "
                    f"served size or rebuild with: {self.rebuild_command([label])}"))

    def _check_specialized(self, sampling: Any, branch: str) -> None:
        """:meth:`check_request` for DiT programs specialized per profile (cases with ``params``, e.g. LTX-2's
        token grid, audio frames and fps): the request's ``height x width x frames`` must be a profile a case covers
        on ``branch``, at the fps the case was built for. Any DiT batch is served (such programs split / pad rows,
        see :mod:`fastvideo.build.ltx2_export`), so CFG is not checked."""
        label = f"{sampling.height}x{sampling.width}x{sampling.num_frames}"
        fps_built: list[Any] = []
        for entry in self.cases.values():
            case = entry.case
            if case.component != "dit" or not any(
                    (p.height, p.width, p.frames, b) == (sampling.height, sampling.width, sampling.num_frames, branch)
                    for p, b in case.covers):
                continue
            fps = case.param("fps")
            if fps is None or float(fps) == float(sampling.fps):
                return
            fps_built.append(fps)
        if fps_built:
            raise RequestError("sampling.fps", (
                f"the loaded {self.backend} artifacts serve {label} at fps {', '.join(map(str, fps_built))} only (the "
                f"DiT programs are specialized for it), not {sampling.fps}; use that fps or run without "
                "engine.artifacts_path"))
        raise RequestError("sampling", (
            f"{label} ({branch} branch) is not covered by the loaded {self.backend} artifacts, which serve: "
            f"{self.served('dit')}. Use a served size or rebuild with: {self.rebuild_command([label])}"))

    def close(self) -> None:
        """Drop programs and the backend's private working copy."""
        self.cases.clear()
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)
            self.private_dir = None


def _rebuild(manifest: mf.Manifest, model_folder: Path, device: torch.device, out: Path,
             extra_profiles: Sequence[str] = (), **override: Any) -> str:
    batches = {"both": [1, 2], "on": [2], "off": [1]}.get(override.get("cfg", ""), manifest.batches)
    components = [c["name"] for c in manifest.components]
    experts = 2 if "dit_2" in components else 1
    default = list(default_components(manifest.branches, experts))  # None below: the defaults of the (new) branches
    if "components" in override:
        components = list(dict.fromkeys([*override["components"], *components]))
    return mf.rebuild_command(
        model_path=model_folder, backend=override.get("backend", manifest.backend),
        profiles=sorted(set(manifest.profiles) | set(extra_profiles)),
        branches=override.get("branches", manifest.branches),
        precision=override.get("precision", manifest.precision),
        vae_precision=override.get("vae_precision", manifest.vae_precision), batches=batches,
        components=None if components == default else components, out=out,
        extra=["--device", "cuda" if device.type == "cuda" else "cpu"],
        transformer_quant=override.get("transformer_quant", _quant_flag(manifest.quantization)),
        lora=override.get("lora", manifest.lora))


def _resolve_folder(path: Path, model_folder: Path) -> Path:
    """``path`` itself when it holds a manifest, else the one build inside it matching the model."""
    if (path / mf.MANIFEST_NAME).is_file():
        return path
    if not path.is_dir():
        raise ArtifactError(f"artifacts folder {path} does not exist; build one with fastvideo-build --out {path} "
                            "(see fastvideo-build --help)")
    builds = sorted(p for p in path.iterdir() if (p / mf.MANIFEST_NAME).is_file() and not p.name.startswith("."))
    if len(builds) == 1:
        return builds[0]
    if not builds:
        raise ArtifactError(f"{path} holds no finished fastvideo-build output (no */{mf.MANIFEST_NAME}); build one "
                            f"with fastvideo-build --model-path {model_folder} ... --out {path}")
    raise ArtifactError(f"{path} holds {len(builds)} builds ({', '.join(p.name for p in builds)}); set "
                        "artifacts_path to the one to load")


# --------------------------------------------------------------------------------------------
# The ordered checks
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadRequest:
    """What a check compares: the folder and its manifest against the caller's model and environment."""

    folder: Path
    manifest: mf.Manifest
    model_folder: Path
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype | None
    backend: str | None
    components: tuple[str, ...]
    check_files: bool
    #: The runtime DiT's quantization (:meth:`FP8Spec.manifest_value`); None: unquantized.
    quantization: dict[str, Any] | None = None
    #: The LoRA the runtime fuses (:func:`fastvideo.engine.lora.lora_manifest_value`); None: none.
    lora: dict[str, Any] | None = None

    def rebuild(self, **override: Any) -> str:
        return _rebuild(self.manifest, self.model_folder, self.device, self.folder.parent, **override)

    def mismatch(self, name: str, built: Any, current: Any, detail: str, **override: Any) -> ArtifactMismatchError:
        return ArtifactMismatchError(name, built, current, detail, self.rebuild(**override))


def _check_consistent(req: LoadRequest) -> None:
    """The manifest's identity hashes to its recorded hash and agrees with its descriptive fields."""
    folder, manifest = req.folder, req.manifest
    identity = manifest.identity
    if mf.identity_hash(identity) != manifest.identity_hash:
        raise ArtifactCorruptError(f"{folder / mf.MANIFEST_NAME} was altered: its identity does not hash to the "
                                   f"recorded {manifest.identity_hash}. Rebuild the artifacts with "
                                   f"{manifest.build.get('command', 'fastvideo-build (see --help)')} --force")
    described = {"backend": manifest.backend, "stage": manifest.stage, "precision": manifest.precision,
                 "vae_precision": manifest.vae_precision, "profiles": sorted(manifest.profiles),
                 "branches": list(manifest.branches), "batches": sorted(manifest.batches),
                 "components": [c.get("name") for c in manifest.components],
                 "weights_digest": manifest.model.get("weights_digest"), "quantization": manifest.quantization,
                 "lora": mf.lora_identity(manifest.lora),
                 "image_conditioned": True if manifest.model.get("image_conditioned") else None,
                 "experts": len(manifest.model["experts"]) if len(manifest.model.get("experts") or {}) > 1 else None,
                 "runtime": manifest.model.get("runtime") if manifest.model.get("runtime", "wan") != "wan" else None}
    for name, value in described.items():
        if identity.get(name) != value:
            raise ArtifactCorruptError(f"{folder / mf.MANIFEST_NAME} was altered: {name} is {value!r} but the build's "
                                       f"identity says {identity.get(name)!r}. Rebuild the artifacts with "
                                       f"{manifest.build.get('command', 'fastvideo-build (see --help)')} --force")


def _check_backend(req: LoadRequest) -> None:
    built, names = req.manifest.backend, artifact_backend_names()
    if built not in names:
        raise req.mismatch("backend", built, "/".join(names),
                           f"backend {built!r} is unknown to this fastvideo (it serves {', '.join(names)})",
                           backend=req.backend or "aoti")
    if req.backend is not None and built != req.backend:
        raise req.mismatch("backend", built, req.backend,
                           f"{req.folder.name} holds {built} programs but the {req.backend} backend was asked for",
                           backend=req.backend)


def _check_branches(req: LoadRequest) -> None:
    unknown = [b for b in req.manifest.branches if b not in BRANCHES]
    if unknown:
        raise req.mismatch("branch", req.manifest.branches, list(BRANCHES),
                           f"branch {unknown[0]!r} is unknown to this fastvideo", branches=("initial",))


def _check_components(req: LoadRequest) -> None:
    built = [c.get("name") for c in req.manifest.components]
    missing = [c for c in req.components if c not in built]
    if missing:
        raise req.mismatch("component", built, list(req.components),
                           f"{req.folder.name} holds no compiled {', '.join(missing)} (built components: "
                           f"{', '.join(map(str, built)) or 'none'})", components=list(req.components))


def _check_stage(req: LoadRequest) -> None:
    if req.manifest.stage != "complete":
        raise req.mismatch("stage", req.manifest.stage, "complete",
                           f"{req.folder.name} holds only the verified ONNX stage; the TensorRT engines still need to "
                           "be built on a GPU machine with TensorRT")


def _check_precision(req: LoadRequest) -> None:
    manifest = req.manifest
    want = PRECISION_NAMES.get(req.dtype, str(req.dtype))
    if manifest.precision != want:
        raise req.mismatch("precision", manifest.precision, want,
                           f"the DiT was compiled for {manifest.precision} but the engine runs {want}", precision=want)
    if req.vae_dtype is not None and manifest.vae_precision != PRECISION_NAMES.get(req.vae_dtype, str(req.vae_dtype)):
        vae_want = PRECISION_NAMES.get(req.vae_dtype, str(req.vae_dtype))
        raise req.mismatch("vae_precision", manifest.vae_precision, vae_want,
                           f"the VAE was compiled for {manifest.vae_precision} but the engine runs it in {vae_want}",
                           vae_precision=vae_want)


def _quant_flag(quantization: dict[str, Any] | None) -> str | None:
    from fastvideo.engine.fp8 import transformer_quant_name

    return None if not quantization else transformer_quant_name(quantization.get("granularity", "row"))


def _check_quantization(req: LoadRequest) -> None:
    built, want = req.manifest.quantization or None, req.quantization or None
    if built == want:
        return
    show: dict[str | None, str | None] = {None: "none (weights in the compute dtype)"}
    built_flag, want_flag = _quant_flag(built), _quant_flag(want)
    raise req.mismatch("quantization", built, want,
                       f"the DiT was compiled with {show.get(built_flag, built_flag)} weight quantization but "
                       f"engine.quantization.transformer_quant is {want_flag!r}; set it to {built_flag!r} or rebuild",
                       transformer_quant=want_flag)


def _check_lora(req: LoadRequest) -> None:
    built, want = mf.lora_identity(req.manifest.lora), mf.lora_identity(req.lora)
    if built == want:
        return

    def show(lora: dict[str, Any] | None) -> str:
        return "no LoRA" if not lora else f"LoRA {lora.get('path')} (sha256 {str(lora.get('sha256'))[:12]}..., " \
                                          f"strength {lora.get('strength')})"

    raise req.mismatch("lora", built, want, f"the DiT was compiled with {show(req.manifest.lora)} fused but the engine "
                                            f"fuses {show(req.lora)} (pipeline.components.lora_path / lora_strength); "
                                            "set the same adapter or rebuild", lora=req.lora)


def _model_kind(model_folder: Path) -> tuple[bool | None, int | None, str | None]:
    """(image-conditioned?, experts, runtime binding) of a model folder, from its transformer config and
    model_index.json (None where the file is absent or unreadable: the weights check still refuses a wrong folder)."""
    from fastvideo.engine.families import declares_two_experts, match_family
    from fastvideo.engine.loader import read_json

    image: bool | None = None
    experts: int | None = None
    runtime: str | None = None
    try:
        image = read_json(model_folder / "transformer" / "config.json").get("image_dim") is not None
    except (OSError, ValueError, ModelLoadError, AttributeError):
        pass
    try:
        index = read_json(model_folder / "model_index.json")
        experts = 2 if declares_two_experts(index) else 1
        runtime = match_family(index, {}).runtime
    except (OSError, ValueError, ModelLoadError, AttributeError):
        pass
    return image, experts, runtime


def _check_model_kind(req: LoadRequest) -> None:
    """An image-to-video build for a text-to-video model (or the reverse), a one-expert build for a two-expert
    model (or the reverse): refused before the weights are digested, naming what each side is."""
    image, experts, runtime = _model_kind(req.model_folder)
    built_runtime = str(req.manifest.model.get("runtime") or "wan")
    if runtime is not None and runtime != built_runtime:
        raise req.mismatch("runtime", built_runtime, runtime,
                           f"the artifacts hold a {built_runtime} model's programs but {req.model_folder} is a "
                           f"{runtime} model")
    built_image = bool(req.manifest.model.get("image_conditioned", False))
    kind = {True: "an image-to-video DiT (image-conditioned: it takes CLIP image tokens)",
            False: "a text-to-video DiT (no image conditioning)"}
    if image is not None and image != built_image:
        raise req.mismatch("image_conditioned", built_image, image,
                           f"the artifacts hold {kind[built_image]} but {req.model_folder} is {kind[image]}")
    built_experts = len(req.manifest.model.get("experts") or {"dit": "transformer"})
    if experts is not None and experts != built_experts:
        raise req.mismatch("experts", built_experts, experts,
                           f"the artifacts hold {built_experts} DiT expert(s) but {req.model_folder} has {experts} "
                           "(Wan2.2 A14B: transformer and transformer_2)")


def _env_value(value: Any) -> Any:
    return "not installed / not used" if value is None else value


def _check_environment(req: LoadRequest) -> None:
    env = mf.environment_info(req.device, req.manifest.backend, with_tensorrt=True).identity()
    built_env = req.manifest.identity.get("environment", {})
    for name in mf.ENV_IDENTITY:
        built, current = built_env.get(name), env.get(name)
        if built is not None and built != current:
            raise req.mismatch(name, built, _env_value(current), f"the {mf.ENV_LABELS[name]} differs")


def _check_weights(req: LoadRequest) -> None:
    from fastvideo.envs import read_env

    manifest, model_folder = req.manifest, req.model_folder
    weights = mf.compute_weights_digest(model_folder, read_env().cache_dir)
    if weights.digest != manifest.model.get("weights_digest"):
        recorded = manifest.model.get("weight_files", {})
        differ = sorted(set(recorded) ^ set(weights.files) | {k for k in recorded if weights.files.get(k) !=
                                                                 recorded[k]})
        raise req.mismatch("weights_digest", manifest.model.get("weights_digest"), weights.digest,
                           f"the model weights in {model_folder} differ from the ones the artifacts were compiled "
                           f"with ({', '.join(differ) or 'digest'} differ)")
    if weights.config_digest != manifest.identity.get("config_digest"):
        raise req.mismatch("config_digest", manifest.identity.get("config_digest"), weights.config_digest,
                           f"transformer/config.json or vae/config.json in {model_folder} changed since the build")


def _check_files(req: LoadRequest) -> None:
    if not req.check_files:
        return
    problems = mf.verify_files(req.folder, req.manifest.files)
    if problems:
        raise ArtifactCorruptError(f"artifact folder {req.folder} is damaged: {'; '.join(problems)}. Rebuild with: "
                                   f"{req.rebuild()} --force")


#: Every check :func:`load_artifacts` runs, in order (cheapest first): ``(name, check)``.
LOAD_CHECKS: tuple[tuple[str, Callable[[LoadRequest], None]], ...] = (
    ("manifest", _check_consistent),
    ("backend", _check_backend),
    ("branches", _check_branches),
    ("components", _check_components),
    ("model_kind", _check_model_kind),
    ("stage", _check_stage),
    ("precision", _check_precision),
    ("quantization", _check_quantization),
    ("lora", _check_lora),
    ("environment", _check_environment),
    ("weights", _check_weights),
    ("files", _check_files),
)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def load_artifacts(artifacts_path: str | Path, *, model_folder: Path, device: torch.device | str,
                   dtype: torch.dtype, vae_dtype: torch.dtype | None = None, backend: str | None = None,
                   components: tuple[str, ...] = ("dit",), check_files: bool = True,
                   quantization: dict[str, Any] | None = None,
                   lora: dict[str, Any] | None = None) -> LoadedArtifacts:
    """Validate an artifact folder against the model and environment and load its programs.

    ``backend``: the backend the caller expects (``None``: any); ``components``: the components the
    caller needs compiled (default: the DiT); ``quantization``: the runtime DiT's weight quantization
    (:meth:`fastvideo.engine.fp8.FP8Spec.manifest_value`, None: unquantized), which must be the build's; ``lora``:
    the adapter the runtime fuses (:func:`fastvideo.engine.lora.lora_manifest_value`), which must be the build's.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    model_folder = Path(model_folder)
    folder = _resolve_folder(Path(artifacts_path).expanduser(), model_folder)
    try:
        manifest = mf.read_manifest(folder)
    except mf.ManifestError as exc:
        raise ArtifactCorruptError(f"{exc}. Rebuild the artifacts with fastvideo-build (see --help)") from None

    req = LoadRequest(folder=folder, manifest=manifest, model_folder=model_folder, device=device, dtype=dtype,
                      vae_dtype=vae_dtype, backend=backend, components=tuple(components), check_files=check_files,
                      quantization=quantization, lora=lora)
    for _, check in LOAD_CHECKS:
        check(req)

    spec = artifact_backend(manifest.backend)
    cases: dict[str, CaseEntry] = {}
    for component in manifest.components:
        for data in component["cases"]:
            case = ShapeCase.from_dict(data)
            entry = CaseEntry(case)
            if spec.load_program is not None:
                file = data.get("file")
                if not file or file not in manifest.files:
                    raise ArtifactCorruptError(f"{folder}: manifest names no program file for {case.key}")
                entry.program = spec.load_program(folder / file, device, case)
            cases[case.key] = entry
    loaded = LoadedArtifacts(path=folder, manifest=manifest, device=device, dtype=dtype, model_folder=model_folder,
                             cases=cases)
    if spec.private_copy is not None:
        private = spec.private_copy(folder)
        loaded.private_dir = private
        weakref.finalize(loaded, shutil.rmtree, str(private), True)
    loaded.stats["load_s"] = time.perf_counter() - t0
    logger.info("loaded %s artifacts %s (%d programs) in %.2fs", manifest.backend, folder.name, len(cases),
                loaded.stats["load_s"])
    return loaded
