"""Artifact manifests: identity, weights digest, environment fingerprint and file hashes.

Contract
--------
- Every build folder holds ``manifest.json`` (:class:`Manifest`), written last, describing: the
  model (``weights_digest`` = sha256 over the ``transformer/`` and ``vae/`` safetensors files, and
  ``transformer_2/``'s when the folder has that second expert, streamed, plus each file's own sha256
  and a digest of their ``config.json``; ``image_conditioned`` / ``image_dim`` / ``image_tokens`` for
  an image-to-video DiT, ``experts`` mapping each DiT component to its sub-folder), the backend,
  precision(s), declared profiles, branches, DiT batch sizes, the compiled components and their
  shape cases, the environment (torch / triton / TensorRT / onnx versions, device type, GPU arch
  as ``sm_XY`` or ``"cpu"``, CPU vector ISA), the sha256 and size of every other file in the
  folder, and how it was built (command, timings, verification errors). ``quantization`` records
  the DiT's weight quantization (``{"transformer": "fp8_e4m3", "granularity": "row"}``; None or
  absent in older manifests: unquantized weights); when set it is part of the identity too. ``lora`` records
  the LoRA adapter fused into the DiT before compiling (``{"sha256", "strength", "path"}``, see
  :func:`fastvideo.engine.lora.lora_manifest_value`; None or absent: none); when set its sha256 and strength
  are part of the identity.
- The *identity* (:func:`identity_fields`) is the subset that decides whether an artifact can
  serve a model in an environment: weights and config digests, backend, stage, precisions,
  profiles, branches, batches, components, the quantization (only when there is one, so unquantized
  builds keep their identity), ``image_conditioned`` (only when true), ``experts`` (only when 2), the family's
  runtime binding ``runtime`` (only when not ``wan``: LTX-2 builds record ``ltx2``, also as ``model.runtime``, which
  picks the family's build adapter at load, :mod:`fastvideo.build.adapters`), and the environment fields in
  :data:`ENV_IDENTITY`.
  The folder is named ``<backend>-<precision>-<hash12>`` where ``hash12`` is the first 12 hex
  digits of the sha256 of the canonical JSON of the identity: same inputs, same folder.
- :func:`compute_weights_digest` streams files in 8 MiB blocks (the 14B model is ~57 GB) and
  memoizes per-file digests in ``<cache_dir>/weights-sha256.json`` keyed by resolved path, size
  and mtime, so a second load of the same weights costs a ``stat`` per file.
- Nothing here imports torch at module import time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shlex
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from fastvideo.api.errors import FastVideoError

logger = logging.getLogger(__name__)

__all__ = [
    "ENV_IDENTITY",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "EnvironmentInfo",
    "Manifest",
    "ManifestError",
    "WeightsDigest",
    "compute_weights_digest",
    "environment_info",
    "folder_name",
    "hash_files",
    "identity_fields",
    "identity_hash",
    "read_manifest",
    "rebuild_command",
    "sha256_file",
    "verify_files",
    "write_manifest",
]

FORMAT = "fastvideo-artifacts"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
WEIGHT_COMPONENTS = ("transformer", "vae")
#: Digested too when the model folder has them (Wan2.2 A14B's second expert); absent, digests are unchanged.
OPTIONAL_WEIGHT_COMPONENTS = ("transformer_2",)
_BLOCK = 8 << 20
_DIGEST_CACHE = "weights-sha256.json"
#: Environment fields that are part of an artifact's identity (compared at load time).
ENV_IDENTITY = ("torch", "device_type", "gpu_arch", "cpu_isa", "triton", "tensorrt")
#: What each environment field means, for mismatch messages.
ENV_LABELS = {"torch": "torch version", "device_type": "device type", "gpu_arch": "GPU architecture",
              "cpu_isa": "CPU vector ISA", "triton": "triton version", "tensorrt": "TensorRT version"}


class ManifestError(FastVideoError, ValueError):
    """A manifest that is missing, unreadable or of an unknown format."""


# --------------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    """sha256 hex digest of a file, streamed in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(_BLOCK)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def _load_digest_cache(cache_dir: Path | None) -> dict[str, Any]:
    if cache_dir is None:
        return {}
    try:
        data = json.loads((cache_dir / _DIGEST_CACHE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_digest_cache(cache_dir: Path | None, data: dict[str, Any]) -> None:
    if cache_dir is None:
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".digests-", dir=cache_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, cache_dir / _DIGEST_CACHE)
    except OSError as exc:  # a read-only cache only costs re-hashing next time
        logger.debug("cannot write the weights digest cache in %s: %s", cache_dir, exc)


@dataclass(frozen=True)
class WeightsDigest:
    """sha256 over a model's transformer/ and vae/ weights (and, separately, their configs)."""

    digest: str
    files: dict[str, str]
    config_digest: str


def compute_weights_digest(model_root: Path, cache_dir: Path | None = None) -> WeightsDigest:
    """Digest the ``*.safetensors`` of ``transformer/`` and ``vae/`` (and ``transformer_2/`` when present; see
    module contract).

    The combined digest is the sha256 of the lines ``"<component>/<file> <sha256>\\n"`` in sorted
    order, so it names the weights, not where they are stored.
    """
    from fastvideo.engine.loader import find_weight_files

    root = Path(model_root)
    cache = _load_digest_cache(cache_dir)
    dirty = False
    files: dict[str, str] = {}
    configs = hashlib.sha256()
    optional = tuple(name for name in OPTIONAL_WEIGHT_COMPONENTS if (root / name).is_dir())
    for component in (*WEIGHT_COMPONENTS, *optional):
        found = find_weight_files(root / component)
        if not found:
            raise ManifestError(f"{root / component} has no *.safetensors weights to digest")
        for path in sorted(found):
            stat = path.stat()
            key = str(path.resolve())
            entry = cache.get(key)
            if isinstance(entry, dict) and entry.get("size") == stat.st_size and \
                    entry.get("mtime_ns") == stat.st_mtime_ns and isinstance(entry.get("sha256"), str):
                value = entry["sha256"]
            else:
                logger.info("hashing %s (%.1f MB)", path, stat.st_size / 1e6)
                value = sha256_file(path)
                cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value}
                dirty = True
            files[f"{component}/{path.name}"] = value
        config = root / component / "config.json"
        configs.update(f"{component}/config.json ".encode())
        configs.update(config.read_bytes() if config.exists() else b"")
    if dirty:
        _save_digest_cache(cache_dir, cache)
    combined = hashlib.sha256("".join(f"{name} {value}\n" for name, value in sorted(files.items())).encode())
    return WeightsDigest(combined.hexdigest(), files, configs.hexdigest())


def hash_files(folder: Path, exclude: Iterable[str] = (MANIFEST_NAME,)) -> dict[str, dict[str, Any]]:
    """``{relative posix path: {"sha256", "bytes"}}`` for every regular file under ``folder``."""
    skip = set(exclude)
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in skip:
            continue
        out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


def verify_files(folder: Path, files: dict[str, dict[str, Any]]) -> list[str]:
    """Problems (missing / resized / altered files) between ``folder`` and the recorded hashes."""
    problems = []
    for rel, entry in sorted(files.items()):
        path = Path(folder) / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
            continue
        size = path.stat().st_size
        if size != entry.get("bytes"):
            problems.append(f"{rel} has {size} bytes, the manifest recorded {entry.get('bytes')} (truncated or "
                            "replaced)")
            continue
        if sha256_file(path) != entry.get("sha256"):
            problems.append(f"{rel} does not match its recorded sha256 (corrupt or altered)")
    return problems


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------
def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tensorrt_version() -> str | None:
    """The importable TensorRT's version, or ``None``."""
    try:
        import tensorrt  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return None
    return str(getattr(tensorrt, "__version__", None) or _dist_version("tensorrt"))


@dataclass(frozen=True)
class EnvironmentInfo:
    """Software and hardware an artifact was built for (see :data:`ENV_IDENTITY`)."""

    torch: str
    device_type: str
    gpu_arch: str
    gpu_name: str | None = None
    cpu_isa: str | None = None
    triton: str | None = None
    tensorrt: str | None = None
    cuda: str | None = None
    onnx: str | None = None
    onnxruntime: str | None = None
    python: str = field(default_factory=platform.python_version)

    def identity(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ENV_IDENTITY}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_isa() -> str | None:
    try:
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        return str(pick_vec_isa()) or "none"
    except Exception as exc:  # noqa: BLE001 - private API; absence only weakens the check
        logger.debug("cannot read the CPU vector ISA: %s", exc)
        return None


def environment_info(device: Any, backend: str, *, with_tensorrt: bool | None = None) -> EnvironmentInfo:
    """Fingerprint the current environment for ``backend`` on ``device``.

    Fields that do not affect an artifact are left ``None``: the optional fields are the ones the
    backend's registry entry names (:attr:`fastvideo.build.backends.ArtifactBackend.environment`),
    triton only for GPU builds, the CPU ISA only for CPU builds, TensorRT not for ONNX-only stages
    (``with_tensorrt=False``).
    """
    import torch

    from fastvideo.build.backends import artifact_backend

    uses = artifact_backend(backend).environment
    device = torch.device(device)
    gpu_arch, gpu_name, triton, cpu_isa = "cpu", None, None, None
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        gpu_arch, gpu_name = f"sm_{major}{minor}", torch.cuda.get_device_name(device)
        if "triton" in uses:
            triton = _dist_version("triton") or _dist_version("pytorch-triton")
    elif "cpu_isa" in uses:
        cpu_isa = _cpu_isa()
    trt = None
    if "tensorrt" in uses and (with_tensorrt if with_tensorrt is not None else True):
        trt = tensorrt_version()
    onnx = _dist_version("onnx") if "onnx" in uses else None
    ort = _dist_version("onnxruntime") if "onnxruntime" in uses else None
    return EnvironmentInfo(torch=torch.__version__, device_type=device.type, gpu_arch=gpu_arch, gpu_name=gpu_name,
                           cpu_isa=cpu_isa, triton=triton, tensorrt=trt, cuda=torch.version.cuda, onnx=onnx,
                           onnxruntime=ort)


# --------------------------------------------------------------------------------------------
# Identity and the manifest
# --------------------------------------------------------------------------------------------
def identity_fields(*, weights: WeightsDigest, backend: str, stage: str, precision: str, vae_precision: str,
                    profiles: Iterable[str], branches: Iterable[str], batches: Iterable[int],
                    components: Iterable[str], environment: EnvironmentInfo,
                    quantization: dict[str, Any] | None = None,
                    lora: dict[str, Any] | None = None, image_conditioned: bool = False,
                    experts: int = 1, runtime: str = "wan") -> dict[str, Any]:
    """The fields that decide whether an artifact serves a model in an environment."""
    fields = {
        "format_version": FORMAT_VERSION, "weights_digest": weights.digest, "config_digest": weights.config_digest,
        "backend": backend, "stage": stage, "precision": precision, "vae_precision": vae_precision,
        "profiles": sorted(profiles), "branches": list(branches), "batches": sorted(batches),
        "components": list(components), "environment": environment.identity(),
    }
    if quantization:
        fields["quantization"] = dict(quantization)
    if lora:
        fields["lora"] = lora_identity(lora)
    if image_conditioned:
        fields["image_conditioned"] = True
    if experts != 1:
        fields["experts"] = experts
    if runtime != "wan":
        fields["runtime"] = runtime
    return fields


def lora_identity(lora: dict[str, Any] | None) -> dict[str, Any] | None:
    """The identity part of a manifest's ``lora`` (the file's sha256 and the strength; not where it lies)."""
    return None if not lora else {"sha256": lora.get("sha256"), "strength": lora.get("strength")}


def identity_hash(fields: dict[str, Any]) -> str:
    """First 12 hex digits of the sha256 of the canonical JSON of ``fields``."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def folder_name(backend: str, precision: str, short_hash: str) -> str:
    return f"{backend}-{precision}-{short_hash}"


@dataclass
class Manifest:
    """The content of ``manifest.json`` (see module contract)."""

    name: str
    identity: dict[str, Any]
    identity_hash: str
    backend: str
    stage: str
    precision: str
    vae_precision: str
    profiles: list[str]
    branches: list[str]
    batches: list[int]
    components: list[dict[str, Any]]
    model: dict[str, Any]
    environment: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    #: The DiT's weight quantization (see module contract); None: weights in ``precision``.
    quantization: dict[str, Any] | None = None
    #: The LoRA fused into the DiT (see module contract); None: none.
    lora: dict[str, Any] | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest.json") -> "Manifest":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ManifestError(f"{source} is not a fastvideo artifact manifest (format != {FORMAT!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise ManifestError(f"{source} has format_version {data.get('format_version')!r}; this fastvideo reads "
                                f"version {FORMAT_VERSION}")
        known = set(cls.__dataclass_fields__)
        missing = sorted(k for k in known if k not in data and k not in ("files", "build", "quantization", "lora"))
        if missing:
            raise ManifestError(f"{source} lacks the field(s) {missing}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def case(self, key: str) -> dict[str, Any] | None:
        """The recorded shape case called ``key`` (e.g. ``dit-f1h4w4``)."""
        for component in self.components:
            for case in component.get("cases", []):
                if case.get("key") == key:
                    return case
        return None


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically inside ``folder``."""
    path = Path(folder) / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(folder: Path) -> Manifest:
    """Read and check ``folder/manifest.json`` (raises :class:`ManifestError`)."""
    path = Path(folder) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path} is missing: {folder} is not a finished fastvideo-build output") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} cannot be read ({exc}); the folder is corrupt") from exc
    return Manifest.from_dict(data, source=str(path))


def rebuild_command(*, model_path: Path | str | None, backend: str, profiles: Iterable[str],
                    branches: Iterable[str], precision: str, vae_precision: str, batches: Iterable[int],
                    components: Iterable[str] | None, out: Path | str, extra: Iterable[str] = (),
                    transformer_quant: str | None = None, lora: dict[str, Any] | None = None) -> str:
    """The exact ``fastvideo-build`` command line that rebuilds such an artifact (``lora``: the manifest value,
    its path and strength become ``--lora`` / ``--lora-strength``)."""
    argv = ["fastvideo-build"]
    if model_path is not None:
        argv += ["--model-path", str(model_path)]
    argv += ["--backend", backend]
    for profile in profiles:
        argv += ["--profile", profile]
    argv += ["--branch", ",".join(branches), "--precision", precision]
    if vae_precision != "fp32":
        argv += ["--vae-precision", vae_precision]
    cfg = {(1, 2): "both", (2,): "on", (1,): "off"}.get(tuple(sorted(batches)), "both")
    if cfg != "both":
        argv += ["--cfg", cfg]
    if components is not None:
        argv += ["--components", ",".join(components)]
    if transformer_quant is not None:
        argv += ["--transformer-quant", transformer_quant]
    if lora:
        argv += ["--lora", str(lora.get("path"))]
        if lora.get("strength") != 1.0:
            argv += ["--lora-strength", str(lora.get("strength"))]
    argv += [*extra, "--out", str(out)]
    return shlex.join(argv)
