"""Loading ``fastvideo-build`` artifacts and plugging them into a pipeline.

Contract
--------
- :func:`load_artifacts(path, model_folder=..., device=..., dtype=...)` reads ``manifest.json`` of a
  build folder (or of the one build inside ``path`` that matches), and refuses, with
  :class:`ArtifactMismatchError` (a :class:`~fastvideo.api.ModelLoadError`) naming the field, the
  built value, the current value and the exact ``fastvideo-build ...`` command that rebuilds for
  the current model and environment: an unknown or unwanted backend (``backend=``), an unknown
  branch, a missing component (``components=``, default the DiT), an unfinished (ONNX-only) stage,
  another DiT/VAE precision, another device type, GPU arch, CPU ISA, torch / triton / TensorRT
  version, other weights or configs (the file that differs is named). Missing, truncated or altered
  files (sha256 against the manifest) and a hand-edited manifest (its identity no longer hashes to
  the recorded hash, or disagrees with its descriptive fields) raise :class:`ArtifactCorruptError`.
  Checks run cheapest first; the weights digest is memoized per file (see
  :func:`fastvideo.build.manifest.compute_weights_digest`). A program that does not bind to the
  model's component (other parameter names) is an :class:`ArtifactMismatchError` on ``component``.
- :func:`apply_artifacts(pipeline, loaded)` swaps ``pipeline.dit`` for an :class:`ArtifactDiT` (an
  ``nn.Module`` keeping ``.config`` and the ``(hidden_states, timestep, encoder_hidden_states)``
  call) and ``pipeline.vae`` for an :class:`ArtifactVAE` (same ``decode``/``encode``/
  ``denormalize_latents``/``spatial_factor`` surface). AOTInductor programs share the eager
  model's weights (bound with ``user_managed`` constants, no copy); the inductor backend compiles
  and warms every (shape, batch) from a private copy of the verified cache; TensorRT engines run
  on the current CUDA stream.
- Shapes: a call whose latent shape / batch / text length / dtype is not one the build covers
  raises :class:`ArtifactShapeError` listing the served profiles and the rebuild command
  (``on_miss="error"``, the default: a silent eager fallback would hide a 2-5x slower request, and
  memory planned for compiled programs). ``on_miss="eager"`` runs the eager module instead and logs
  one warning per shape. :meth:`LoadedArtifacts.check_request` applies the same rule to a resolved
  request before any compute, as a :class:`~fastvideo.api.RequestError` (HTTP 400), and refuses a
  continuation request when the build does not serve the continuation branch.
- ``timestep`` is cast to float32 and broadcast to the batch before the compiled call (the DiT
  turns it into float32 itself, so results are identical for the int64 UniPC timesteps).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from fastvideo.api.errors import FastVideoError, ModelLoadError, RequestError
from fastvideo.build import manifest as mf
from fastvideo.build.specs import ShapeCase

if TYPE_CHECKING:
    from fastvideo.engine.dit import WanTransformer3DModel

logger = logging.getLogger(__name__)

__all__ = ["ArtifactCorruptError", "ArtifactDiT", "ArtifactError", "ArtifactMismatchError", "ArtifactShapeError",
           "ArtifactVAE", "LoadedArtifacts", "apply_artifacts", "load_artifacts"]

_PRECISION_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


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
    """A loaded shape case and its runnable program (``None`` until applied, for inductor)."""

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
    inductor_cache: Path | None = None
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

    def check_request(self, sampling: Any, *, continuation: bool = False) -> None:
        """Raise :class:`RequestError` if a resolved request needs a shape the build does not cover."""
        factor = int(self.manifest.model.get("spatial_factor", 8))
        latent = (sampling.latent_frames, sampling.height // factor, sampling.width // factor)
        batch = 2 if sampling.do_cfg else 1
        branch = "continuation" if continuation else "initial"
        if branch not in self.manifest.branches:
            raise RequestError("state", (
                f"the loaded {self.backend} artifacts serve the {', '.join(self.manifest.branches)} branch only, not "
                f"the {branch} branch this request needs; drop the state or rebuild with: "
                f"{self.rebuild_command(branches=('initial', 'continuation'))}"))
        needed = ["dit"] + (["vae_decoder"] if any(e.case.component == "vae_decoder" for e in self.cases.values())
                            else [])
        for component in needed:
            if self.find(component, latent, batch if component == "dit" else 1) is None:
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

    def close(self) -> None:
        """Drop programs and the private inductor cache copy."""
        self.cases.clear()
        if self.inductor_cache is not None:
            shutil.rmtree(self.inductor_cache, ignore_errors=True)
            self.inductor_cache = None


def _rebuild(manifest: mf.Manifest, model_folder: Path, device: torch.device, out: Path,
             extra_profiles: Sequence[str] = (), **override: Any) -> str:
    batches = {"both": [1, 2], "on": [2], "off": [1]}.get(override.get("cfg", ""), manifest.batches)
    from fastvideo.build.specs import default_components

    components = [c["name"] for c in manifest.components]
    default = list(default_components(manifest.branches))  # None below: the defaults of the (new) branches
    if "components" in override:
        components = list(dict.fromkeys([*override["components"], *components]))
    return mf.rebuild_command(
        model_path=model_folder, backend=override.get("backend", manifest.backend),
        profiles=sorted(set(manifest.profiles) | set(extra_profiles)),
        branches=override.get("branches", manifest.branches),
        precision=override.get("precision", manifest.precision),
        vae_precision=override.get("vae_precision", manifest.vae_precision), batches=batches,
        components=None if components == default else components, out=out,
        extra=["--device", "cuda" if device.type == "cuda" else "cpu"])


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


def _check_consistent(folder: Path, manifest: mf.Manifest) -> None:
    """The manifest's identity hashes to its folder name and agrees with its descriptive fields."""
    identity = manifest.identity
    if mf.identity_hash(identity) != manifest.identity_hash:
        raise ArtifactCorruptError(f"{folder / mf.MANIFEST_NAME} was altered: its identity does not hash to the "
                                   f"recorded {manifest.identity_hash}. Rebuild the artifacts with "
                                   f"{manifest.build.get('command', 'fastvideo-build (see --help)')} --force")
    described = {"backend": manifest.backend, "stage": manifest.stage, "precision": manifest.precision,
                 "vae_precision": manifest.vae_precision, "profiles": sorted(manifest.profiles),
                 "branches": list(manifest.branches), "batches": sorted(manifest.batches),
                 "components": [c.get("name") for c in manifest.components],
                 "weights_digest": manifest.model.get("weights_digest")}
    for name, value in described.items():
        if identity.get(name) != value:
            raise ArtifactCorruptError(f"{folder / mf.MANIFEST_NAME} was altered: {name} is {value!r} but the build's "
                                       f"identity says {identity.get(name)!r}. Rebuild the artifacts with "
                                       f"{manifest.build.get('command', 'fastvideo-build (see --help)')} --force")


def _env_value(value: Any) -> Any:
    return "not installed / not used" if value is None else value


def load_artifacts(artifacts_path: str | Path, *, model_folder: Path, device: torch.device | str,
                   dtype: torch.dtype, vae_dtype: torch.dtype | None = None, backend: str | None = None,
                   components: tuple[str, ...] = ("dit",), check_files: bool = True) -> LoadedArtifacts:
    """Validate an artifact folder against the model and environment and load its programs.

    ``backend``: the backend the caller expects (``None``: any); ``components``: the components the
    caller needs compiled (default: the DiT).
    """
    from fastvideo.build.builder import BACKENDS
    from fastvideo.envs import read_env

    t0 = time.perf_counter()
    device = torch.device(device)
    model_folder = Path(model_folder)
    folder = _resolve_folder(Path(artifacts_path).expanduser(), model_folder)
    try:
        manifest = mf.read_manifest(folder)
    except mf.ManifestError as exc:
        raise ArtifactCorruptError(f"{exc}. Rebuild the artifacts with fastvideo-build (see --help)") from None

    _check_consistent(folder, manifest)

    def mismatch(name: str, built: Any, current: Any, detail: str, **override: Any) -> ArtifactMismatchError:
        return ArtifactMismatchError(name, built, current, detail,
                                     _rebuild(manifest, model_folder, device, folder.parent, **override))

    if manifest.backend not in BACKENDS:
        raise mismatch("backend", manifest.backend, "/".join(BACKENDS),
                       f"backend {manifest.backend!r} is unknown to this fastvideo (it serves {', '.join(BACKENDS)})",
                       backend=backend or "aoti")
    if backend is not None and manifest.backend != backend:
        raise mismatch("backend", manifest.backend, backend,
                       f"{folder.name} holds {manifest.backend} programs but the {backend} backend was asked for",
                       backend=backend)
    unknown = [b for b in manifest.branches if b not in ("initial", "continuation")]
    if unknown:
        raise mismatch("branch", manifest.branches, ["initial", "continuation"],
                       f"branch {unknown[0]!r} is unknown to this fastvideo", branches=("initial",))
    built_components = [c.get("name") for c in manifest.components]
    missing = [c for c in components if c not in built_components]
    if missing:
        raise mismatch("component", built_components, list(components),
                       f"{folder.name} holds no compiled {', '.join(missing)} (built components: "
                       f"{', '.join(map(str, built_components)) or 'none'})", components=list(components))
    if manifest.stage != "complete":
        raise mismatch("stage", manifest.stage, "complete",
                       f"{folder.name} holds only the verified ONNX stage; the TensorRT engines still need to be "
                       "built on a GPU machine with TensorRT")
    want = _PRECISION_NAMES.get(dtype, str(dtype))
    if manifest.precision != want:
        raise mismatch("precision", manifest.precision, want,
                       f"the DiT was compiled for {manifest.precision} but the engine runs {want}", precision=want)
    if vae_dtype is not None and manifest.vae_precision != _PRECISION_NAMES.get(vae_dtype, str(vae_dtype)):
        vae_want = _PRECISION_NAMES.get(vae_dtype, str(vae_dtype))
        raise mismatch("vae_precision", manifest.vae_precision, vae_want,
                       f"the VAE was compiled for {manifest.vae_precision} but the engine runs it in {vae_want}",
                       vae_precision=vae_want)
    env = mf.environment_info(device, manifest.backend, with_tensorrt=True).identity()
    built_env = manifest.identity.get("environment", {})
    for name in mf.ENV_IDENTITY:
        built, current = built_env.get(name), env.get(name)
        if built is not None and built != current:
            raise mismatch(name, built, _env_value(current), f"the {mf.ENV_LABELS[name]} differs")

    weights = mf.compute_weights_digest(model_folder, read_env().cache_dir)
    if weights.digest != manifest.model.get("weights_digest"):
        recorded = manifest.model.get("weight_files", {})
        differ = sorted(set(recorded) ^ set(weights.files) | {k for k in recorded if weights.files.get(k) !=
                                                                 recorded[k]})
        raise mismatch("weights_digest", manifest.model.get("weights_digest"), weights.digest,
                       f"the model weights in {model_folder} differ from the ones the artifacts were compiled with "
                       f"({', '.join(differ) or 'digest'} differ)")
    if weights.config_digest != manifest.identity.get("config_digest"):
        raise mismatch("config_digest", manifest.identity.get("config_digest"), weights.config_digest,
                       f"transformer/config.json or vae/config.json in {model_folder} changed since the build")

    if check_files:
        problems = mf.verify_files(folder, manifest.files)
        if problems:
            raise ArtifactCorruptError(f"artifact folder {folder} is damaged: {'; '.join(problems)}. Rebuild with: "
                                       f"{_rebuild(manifest, model_folder, device, folder.parent)} --force")

    cases: dict[str, CaseEntry] = {}
    for component in manifest.components:
        for data in component["cases"]:
            case = ShapeCase.from_dict(data)
            entry = CaseEntry(case)
            file = data.get("file")
            if manifest.backend != "inductor" and (not file or file not in manifest.files):
                raise ArtifactCorruptError(f"{folder}: manifest names no program file for {case.key}")
            if manifest.backend == "aoti":
                from fastvideo.build.aoti import AOTIProgram

                entry.program = AOTIProgram(folder / file, device)
            elif manifest.backend == "tensorrt":
                from fastvideo.build.tensorrt import TensorRTProgram

                entry.program = TensorRTProgram(folder / file, device, case.input_names())
            cases[case.key] = entry
    loaded = LoadedArtifacts(path=folder, manifest=manifest, device=device, dtype=dtype, model_folder=model_folder,
                             cases=cases)
    if manifest.backend == "inductor":
        from fastvideo.build.inductor import CACHE_SUBDIR

        private = Path(tempfile.mkdtemp(prefix="fastvideo-inductor-"))
        shutil.copytree(folder / CACHE_SUBDIR, private / CACHE_SUBDIR)
        loaded.inductor_cache = private
        weakref.finalize(loaded, shutil.rmtree, str(private), True)
    loaded.stats["load_s"] = time.perf_counter() - t0
    logger.info("loaded %s artifacts %s (%d programs) in %.2fs", manifest.backend, folder.name, len(cases),
                loaded.stats["load_s"])
    return loaded


# --------------------------------------------------------------------------------------------
# Pipeline integration
# --------------------------------------------------------------------------------------------
class _Dispatch:
    """Shared miss handling: raise (default) or run eager with one warning per shape."""

    def __init__(self, loaded: LoadedArtifacts, component: str, on_miss: str) -> None:
        if on_miss not in ("error", "eager"):
            raise ValueError(f"on_miss must be 'error' or 'eager', got {on_miss!r}")
        self.loaded, self.component, self.on_miss = loaded, component, on_miss
        self.warned: set[Any] = set()
        self.calls = 0
        self.misses = 0

    def miss(self, what: str, key: Any, eager: Callable[[], torch.Tensor] | None) -> torch.Tensor:
        self.misses += 1
        message = (f"{self.component}: {what} is not covered by the loaded {self.loaded.backend} artifacts "
                   f"({self.loaded.path.name}), which serve: {self.loaded.served(self.component)}. Rebuild with: "
                   f"{self.loaded.rebuild_command()} plus a --profile for this size")
        if self.on_miss == "error" or eager is None:
            raise ArtifactShapeError(message)
        if key not in self.warned:
            self.warned.add(key)
            logger.warning("%s; running eager", message)
        return eager()


class ArtifactDiT(nn.Module):
    """The DiT served by compiled programs (see module contract)."""

    def __init__(self, dit: WanTransformer3DModel, loaded: LoadedArtifacts, runners: dict[tuple[int, int, int],
                 tuple[tuple[int, ...], Callable[..., torch.Tensor]]], on_miss: str = "error",
                 keep_eager: bool = True) -> None:
        super().__init__()
        self.config = dit.config
        self.attention_backend = getattr(dit, "attention_backend", None)
        self.eager: WanTransformer3DModel | None = dit if keep_eager else None
        self._runners = runners
        self._dispatch = _Dispatch(loaded, "dit", on_miss)
        self._text_shape = (int(loaded.manifest.model.get("text_length", 0)), dit.config.text_dim)
        self._dtype = loaded.dtype

    def step_constants(self, latents: torch.Tensor) -> Any:
        """What a captured step at this shape reads besides its inputs (see
        :meth:`WanTransformer3DModel.step_constants`): the eager DiT's RoPE tables when it is kept
        (inductor programs read them from its cache); ``None`` when compiled programs own every constant."""
        return None if self.eager is None else self.eager.step_constants(latents)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        self._dispatch.calls += 1
        batch = hidden_states.shape[0]
        latent = tuple(hidden_states.shape[2:]) if hidden_states.ndim == 5 else ()
        runner = self._runners.get(latent) if len(latent) == 3 else None
        eager_dit = self.eager
        eager = None if eager_dit is None else (lambda: eager_dit(hidden_states, timestep, encoder_hidden_states))
        if runner is None or batch not in runner[0]:
            return self._dispatch.miss(f"latent shape {tuple(hidden_states.shape)} (batch {batch})",
                                       (latent, batch), eager)
        if tuple(encoder_hidden_states.shape) != (batch, *self._text_shape) or \
                hidden_states.dtype != self._dtype or encoder_hidden_states.dtype != self._dtype:
            return self._dispatch.miss(
                f"inputs {tuple(hidden_states.shape)}/{hidden_states.dtype} with text states "
                f"{tuple(encoder_hidden_states.shape)}/{encoder_hidden_states.dtype} (expected text "
                f"{(batch, *self._text_shape)} in {self._dtype})", ("inputs", latent, batch), eager)
        if timestep.ndim != 1 or timestep.shape[0] not in (1, batch):
            raise ValueError(f"timestep must have shape ({batch},) or (1,), got {tuple(timestep.shape)}")
        timestep = timestep.to(torch.float32).expand(batch).contiguous()
        return runner[1](hidden_states.contiguous(), timestep, encoder_hidden_states.contiguous())


class ArtifactVAE:
    """The VAE with compiled ``decode`` (and ``encode`` when built); everything else is the eager VAE's."""

    def __init__(self, vae: Any, loaded: LoadedArtifacts, decoders: dict[tuple[int, ...], Callable[..., torch.Tensor]],
                 encoders: dict[tuple[int, ...], Callable[..., torch.Tensor]], on_miss: str = "error") -> None:
        self.eager = vae
        self.config = vae.config
        self._decoders, self._encoders = decoders, encoders
        self._decode_dispatch = _Dispatch(loaded, "vae_decoder", on_miss)
        self._encode_dispatch = _Dispatch(loaded, "vae_encoder", on_miss)
        self._dtype = next(vae.parameters()).dtype

    @property
    def spatial_factor(self) -> int:
        return self.eager.spatial_factor

    @property
    def temporal_factor(self) -> int:
        return self.eager.temporal_factor

    def __getattr__(self, name: str) -> Any:  # everything not overridden: the eager VAE
        if name == "eager":
            raise AttributeError(name)
        return getattr(self.eager, name)

    def decode(self, z: torch.Tensor, *, chunk_size: int = 1) -> torch.Tensor:
        self._decode_dispatch.calls += 1
        runner = self._decoders.get(tuple(z.shape)) if chunk_size == 1 and z.dtype == self._dtype else None
        if runner is None:
            return self._decode_dispatch.miss(f"latents {tuple(z.shape)} {z.dtype} (chunk_size {chunk_size})",
                                              (tuple(z.shape), chunk_size),
                                              lambda: self.eager.decode(z, chunk_size=chunk_size))
        return runner(z.contiguous())

    def encode(self, video: torch.Tensor, *, chunk_size: int = 1) -> Any:
        from fastvideo.engine.vae import DiagonalGaussian

        self._encode_dispatch.calls += 1
        runner = self._encoders.get(tuple(video.shape)) if chunk_size == 1 and video.dtype == self._dtype else None
        if runner is None:
            if not self._encoders:  # no encoder was built: encoding is simply eager
                return self.eager.encode(video, chunk_size=chunk_size)
            return self._encode_dispatch.miss(f"video {tuple(video.shape)} {video.dtype}", tuple(video.shape),
                                              lambda: self.eager.encode(video, chunk_size=chunk_size))
        return DiagonalGaussian(runner(video.contiguous()))


def _inductor_runners(pipeline: Any, loaded: LoadedArtifacts) -> dict[str, Callable[..., torch.Tensor]]:
    """Compile every component from the private cache copy and warm each (case, batch) once."""
    from fastvideo.build.exportable import VAEDecodeExport, VAEEncodeExport, dit_grid
    from fastvideo.build.inductor import CACHE_SUBDIR, compile_component, inductor_cache_env, read_cache_counters
    from fastvideo.build.inductor import warm_rope

    assert loaded.inductor_cache is not None
    entries = list(loaded.cases.values())
    dit, vae = pipeline.dit, pipeline.vae
    modules = {"dit": dit, "vae_decoder": VAEDecodeExport(vae).eval(), "vae_encoder": VAEEncodeExport(vae).eval()}
    compiled: dict[str, Callable[..., torch.Tensor]] = {}
    vae_dtype = next(vae.parameters()).dtype
    with inductor_cache_env(loaded.inductor_cache / CACHE_SUBDIR, shapes=sum(len(e.case.batches) for e in entries)):
        before = read_cache_counters()
        warm_rope(dit, [dit_grid(dit, e.case.latent) for e in entries if e.case.component == "dit"], loaded.device)
        with torch.no_grad():
            for entry in entries:
                component = entry.case.component
                if component not in compiled:
                    compiled[component] = compile_component(component, modules[component])
                for batch in entry.case.batches:
                    compiled[component](*entry.case.sample_inputs(batch, device=loaded.device,
                                                                  compute_dtype=loaded.dtype, vae_dtype=vae_dtype))
        after = read_cache_counters()
    loaded.stats["inductor_cache_hits"] = after.hits - before.hits
    loaded.stats["inductor_cache_misses"] = after.misses - before.misses
    if after.misses > before.misses:
        logger.warning("inductor compiled %d graph(s) that were not in the artifact cache (a different torch or "
                       "inductor configuration?); startup was slower than it should be", after.misses - before.misses)
    return compiled


def apply_artifacts(pipeline: Any, loaded: LoadedArtifacts, *, on_miss: str = "error") -> None:
    """Serve ``pipeline``'s DiT and VAE from ``loaded`` (see module contract)."""
    from fastvideo.build.exportable import DiTExport, VAEDecodeExport, VAEEncodeExport

    t0 = time.perf_counter()
    if isinstance(pipeline.dit, ArtifactDiT):
        raise ArtifactError("artifacts are already applied to this pipeline")
    device = torch.device(pipeline.device)
    if device.type != loaded.device.type or (device.index or 0) != (loaded.device.index or 0):
        raise ArtifactError(f"the pipeline runs on {device} but the artifacts were loaded for {loaded.device}")
    if pipeline.dtype != loaded.dtype:
        raise ArtifactError(f"the pipeline computes in {pipeline.dtype} but the artifacts were loaded for "
                            f"{loaded.dtype}")
    vae_precision = _PRECISION_NAMES.get(pipeline.vae_dtype)
    if any(e.case.component != "dit" for e in loaded.cases.values()) and vae_precision != \
            loaded.manifest.vae_precision:
        raise ArtifactMismatchError("vae_precision", loaded.manifest.vae_precision, vae_precision,
                                    "the pipeline's VAE precision differs from the build's",
                                    loaded.rebuild_command(vae_precision=vae_precision))
    built_attention = loaded.manifest.model.get("attention_backend")
    current_attention = getattr(getattr(pipeline.dit, "attention_backend", None), "name", None)
    if built_attention and current_attention and built_attention != current_attention:
        logger.warning("artifacts were compiled with the %s attention backend; the compiled programs keep it (the "
                       "pipeline's %s backend is used only by eager fallbacks)", built_attention, current_attention)
    dit, vae = pipeline.dit, pipeline.vae
    inductor = _inductor_runners(pipeline, loaded) if loaded.backend == "inductor" else {}
    dit_runners: dict[tuple[int, int, int], tuple[tuple[int, ...], Callable[..., torch.Tensor]]] = {}
    decoders: dict[tuple[int, ...], Callable[..., torch.Tensor]] = {}
    encoders: dict[tuple[int, ...], Callable[..., torch.Tensor]] = {}
    for entry in loaded.cases.values():
        case = entry.case
        if loaded.backend == "inductor":
            runner = inductor[case.component]
        else:
            runner = entry.program
            if loaded.backend == "aoti":
                owner = {"dit": lambda: DiTExport(dit, case.latent, device),
                         "vae_decoder": lambda: VAEDecodeExport(vae),
                         "vae_encoder": lambda: VAEEncodeExport(vae)}[case.component]()
                try:
                    runner.bind(owner)
                except ValueError as exc:
                    raise ArtifactMismatchError("component", case.component, case.component, (
                        f"the program {case.key} does not fit this model's {case.component}: {exc}"),
                        loaded.rebuild_command() + " --force") from None
        if case.component == "dit":
            dit_runners[(case.latent.frames, case.latent.height, case.latent.width)] = (case.batches, runner)
        else:
            shape = case.inputs[0].opt_shape
            (decoders if case.component == "vae_decoder" else encoders)[tuple(shape)] = runner
    keep_eager = loaded.backend != "tensorrt" or on_miss == "eager"  # aoti/inductor share the eager weights
    pipeline.dit = ArtifactDiT(dit, loaded, dit_runners, on_miss=on_miss, keep_eager=keep_eager)
    if decoders or encoders:
        pipeline.vae = ArtifactVAE(vae, loaded, decoders, encoders, on_miss=on_miss)
    loaded.stats["apply_s"] = time.perf_counter() - t0
    logger.info("serving the DiT%s from %s artifacts (%s)", " and VAE" if decoders else "", loaded.backend,
                loaded.path.name)

