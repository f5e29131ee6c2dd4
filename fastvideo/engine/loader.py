"""Loading diffusers-format model folders: layout checks and zero-copy safetensors loading.

Contract:
- :func:`inspect_model_folder` checks a folder has ``model_index.json`` and the sub-folders a Wan
  pipeline needs (``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``),
  each with its config and weights (a tokenizer needs ``tokenizer.json`` or ``spiece.model``: a
  ``tokenizer_config.json`` alone cannot tokenize); anything missing raises :class:`ModelLoadError`
  listing every problem and what a complete folder looks like. ``overrides`` maps a component
  (``transformer``, ``vae``, ``text_encoder``, ``tokenizer``) to another folder in the same sub-folder
  layout: that component is checked and loaded from there instead of ``<root>/<component>`` (which
  then need not exist); :meth:`ModelFolder.component` and :meth:`ModelFolder.read_config` resolve
  through it.
- Weight variants (diffusers' ``variant=`` naming: ``diffusion_pytorch_model.fp16.safetensors``,
  ``model.fp16.safetensors``, shards listed by ``<stem>.safetensors.index.fp16.json``):
  :func:`select_weights` picks, per component folder, the requested variant's files, else the plain
  files, else (no variant requested) the only variant present; several variants and no plain files,
  or a requested variant missing with only other variants present, raise ``ModelLoadError`` naming
  the variants found and ``pipeline.variant`` / ``--variant`` to pick one.
- :func:`load_module_weights` fills a module built on the meta device from those files with
  ``load_state_dict(assign=True)``: tensors come straight from the memory-mapped files, copied at most
  once when a dtype or device change is required. Missing, unexpected or mis-shaped keys and corrupt
  files raise :class:`ModelLoadError` naming the file. :func:`read_shapes` reads only the headers
  (checks a file is complete without loading it) and :func:`check_shapes` compares them with a
  module, for components another library loads (the text encoder).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open

from fastvideo.api.errors import ModelLoadError

logger = logging.getLogger(__name__)

REQUIRED_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
#: A tokenizer folder needs one of these (its vocabulary); ``tokenizer_config.json`` alone is not enough.
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


@dataclass(frozen=True)
class ModelFolder:
    """A checked diffusers-format model folder."""

    root: Path
    model_index: dict[str, Any]
    #: Components loaded from another folder than ``root / name`` (see :func:`inspect_model_folder`).
    overrides: dict[str, Path] = field(default_factory=dict)
    #: The weight variant asked for (``pipeline.variant``), None: plain files, else the only variant.
    variant: str | None = None

    def weights(self, name: str) -> tuple[list[Path], str | None]:
        """``(files, variant used)`` of component ``name`` (see :func:`select_weights`)."""
        return select_weights(self.component(name), self.variant)

    def component(self, name: str) -> Path:
        """The folder ``name`` loads from: its override, else ``root / name``."""
        return self.overrides.get(name, self.root / name)

    def read_config(self, name: str, file: str = "config.json") -> dict[str, Any]:
        return read_json(self.component(name) / file)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, raising ModelLoadError with the path on any problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"missing file {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}); re-download or re-export the model") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object")
    return data


WEIGHT_STEMS = ("diffusion_pytorch_model", "model")  # diffusers, transformers
_VARIANT_RE = re.compile(r"^(?:%s)(?:\.safetensors\.index\.(?P<index>[^.]+)\.json|\.(?P<file>[^.-]+)"
                         r"(?:-\d+-of-\d+)?\.safetensors)$" % "|".join(WEIGHT_STEMS))


def _weight_files(folder: Path, stem: str, variant: str | None = None) -> list[Path]:
    """The files of ``stem`` (e.g. ``model``) in ``folder``: one file or the shards its index lists."""
    single = folder / (f"{stem}.safetensors" if variant is None else f"{stem}.{variant}.safetensors")
    index = folder / (f"{stem}.safetensors.index.json" if variant is None
                      else f"{stem}.safetensors.index.{variant}.json")
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{index} has no 'weight_map'")
        return [folder / name for name in sorted(set(weight_map.values()))]
    if single.exists():
        return [single]
    return []


def weight_variants(folder: Path) -> list[str]:
    """The variants (``fp16``, ``bf16``, ...) whose safetensors files ``folder`` holds."""
    if not folder.is_dir():
        return []
    found = set()
    for path in folder.iterdir():
        match = _VARIANT_RE.match(path.name)
        if match:
            found.add(match.group("index") or match.group("file"))
    return sorted(found)


def _files_for(folder: Path, variant: str | None) -> list[Path]:
    for stem in WEIGHT_STEMS:
        files = _weight_files(folder, stem, variant)
        if files:
            return files
    return []


def select_weights(folder: Path, variant: str | None = None) -> tuple[list[Path], str | None]:
    """``(files, variant used)`` of a component folder (see module contract); ``([], None)`` when it
    holds no safetensors at all."""
    if variant is not None:
        files = _files_for(folder, variant)
        if files:
            return files, variant
    files = _files_for(folder, None)
    if files:
        return files, None
    variants = weight_variants(folder)
    if variant is None and len(variants) == 1:
        return _files_for(folder, variants[0]), variants[0]
    if variants:
        wanted = "no plain weights" if variant is None else f"no {variant!r} variant and no plain weights"
        raise ModelLoadError(f"{folder} has {wanted}, only the variants {variants} "
                             f"(files like {WEIGHT_STEMS[0]}.<variant>.safetensors); pick one with "
                             f"pipeline.variant (--variant {variants[0]})")
    return [], None


def find_weight_files(folder: Path, variant: str | None = None) -> list[Path]:
    """The safetensors files of a component folder (diffusers or transformers naming, see
    :func:`select_weights`)."""
    return select_weights(folder, variant)[0]


OVERRIDABLE_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer")


def inspect_model_folder(path: str | Path, overrides: Mapping[str, str | Path] | None = None,
                         variant: str | None = None) -> ModelFolder:
    """Check that ``path`` is a complete diffusers Wan folder, with ``overrides`` (component -> folder)
    standing in for their sub-folders and ``variant`` choosing weight files; raise listing every problem."""
    root = Path(path).expanduser()
    moved = {name: Path(folder).expanduser() for name, folder in (overrides or {}).items()}
    unknown = sorted(set(moved) - set(OVERRIDABLE_COMPONENTS))
    if unknown:
        raise ValueError(f"cannot override components {unknown}; overridable: {list(OVERRIDABLE_COMPONENTS)}")
    if not root.is_dir():
        raise ModelLoadError(f"model folder {root} does not exist; pass --model-path to a local "
                             "diffusers folder (e.g. Wan2.1-T2V-1.3B-Diffusers) or omit it to use the built-in model")
    problems: list[str] = []
    index_path = root / "model_index.json"
    model_index: dict[str, Any] = {}
    if not index_path.exists():
        problems.append("model_index.json is missing")
    else:
        model_index = read_json(index_path)
    for name in REQUIRED_COMPONENTS:
        sub = moved.get(name, root / name)
        label = f"{name}/" if name not in moved else f"{name} override {sub}/"
        if not sub.is_dir():
            problems.append(f"{label} is missing")
            continue
        if name == "tokenizer":
            if not any((sub / f).exists() for f in TOKENIZER_FILES):
                problems.append(f"{label} has no {' or '.join(TOKENIZER_FILES)} (a tokenizer_config.json alone "
                                "cannot tokenize: every word would become the unknown token); copy them from the "
                                "original model")
            continue
        config_name = "scheduler_config.json" if name == "scheduler" else "config.json"
        if not (sub / config_name).exists():
            problems.append(f"{label}{config_name} is missing")
        if name != "scheduler":
            try:
                files = find_weight_files(sub, variant)
            except ModelLoadError as exc:
                problems.append(f"{label}: {exc}")
                continue
            if not files:
                problems.append(f"{label} has no *.safetensors weights")
            for file in files:
                if not file.exists():
                    problems.append(f"{label}{file.name} is listed in the shard index but missing")
    if problems:
        raise ModelLoadError(f"model folder {root} is incomplete: " + "; ".join(problems) +
                             ". A diffusers Wan folder holds model_index.json and the sub-folders "
                             + ", ".join(f"{n}/" for n in REQUIRED_COMPONENTS) + ".")
    return ModelFolder(root=root, model_index=model_index, overrides=moved, variant=variant)


def read_state_dict(files: list[Path]) -> dict[str, torch.Tensor]:
    """Memory-map every tensor of ``files`` (no copies); corrupt files raise ModelLoadError."""
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    if key in state:
                        raise ModelLoadError(f"tensor {key!r} appears in more than one shard ({file})")
                    state[key] = handle.get_tensor(key)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(f"cannot read weights {file}: {exc}. The file is corrupt or truncated; "
                                 "re-download it") from exc
    return state


def read_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the headers of ``files`` only (nothing is loaded); a truncated or corrupt
    file raises ModelLoadError naming it."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"cannot read weights {file}: {exc}. The file is corrupt or truncated; "
                                 "re-download it") from exc
    return shapes


def _list(names: list[str]) -> str:
    return f"{names[:5]}{'...' if len(names) > 5 else ''}"


def check_shapes(module: torch.nn.Module, shapes: Mapping[str, tuple[int, ...]], folder: Path,
                 config_file: str = "config.json") -> None:
    """Raise ModelLoadError unless ``shapes`` (from :func:`read_shapes`) fill every tensor of ``module`` (built
    from ``folder``'s ``config_file``) with the right shape; of parameters tied together one name is enough."""
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    aliases: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(name)
    tied = {name: names for names in aliases.values() if len(names) > 1 for name in names}
    missing = sorted(n for n in expected if n not in shapes and not any(a in shapes for a in tied.get(n, ())))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise ModelLoadError(f"weights in {folder} do not match the model built from its {config_file}: "
                             f"missing {_list(missing)}, unexpected {_list(unexpected)}. The config and weights "
                             "come from different models: use the config.json shipped with these weights")
    for key, shape in shapes.items():
        if shape != expected[key]:
            raise ModelLoadError(f"{folder}: tensor {key!r} has shape {shape}, its {config_file} expects "
                                 f"{expected[key]}. The config and weights come from different models: use the "
                                 "config.json shipped with these weights")


def load_module_weights(module: torch.nn.Module, folder: Path, *, dtype: torch.dtype, device: torch.device,
                        dtype_for: Callable[[str, torch.dtype], torch.dtype] | None = None,
                        variant: str | None = None) -> torch.nn.Module:
    """Fill a meta-device ``module`` from the safetensors in ``folder`` (``variant``: see
    :func:`select_weights`); returns it on ``device``.

    ``dtype_for(name, dtype)`` may keep some parameters in another dtype (e.g. float32 norms).
    """
    files = find_weight_files(folder, variant)
    if not files:
        raise ModelLoadError(f"{folder} has no *.safetensors weights")
    state = read_state_dict(files)
    check_shapes(module, {key: tuple(value.shape) for key, value in state.items()}, folder)
    expected = module.state_dict()
    for key in expected:
        if state[key].is_floating_point():
            target = dtype_for(key, dtype) if dtype_for is not None else dtype
            state[key] = state[key].to(device=device, dtype=target)
        else:
            state[key] = state[key].to(device=device)
    module.load_state_dict(state, strict=True, assign=True)
    _materialize_buffers(module, device)
    return module.eval().requires_grad_(False)


def _materialize_buffers(module: torch.nn.Module, device: torch.device) -> None:
    """Non-persistent buffers built on meta (e.g. RoPE tables) are recomputed by their owners."""
    for sub in module.modules():
        reset = getattr(sub, "reset_non_persistent_buffers", None)
        if callable(reset):
            reset(device)
    for name, buf in module.named_buffers():
        if buf.is_meta:
            raise ModelLoadError(f"buffer {name!r} is still on the meta device after loading; "
                                 "its module must implement reset_non_persistent_buffers(device)")
