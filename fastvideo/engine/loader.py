"""Loading diffusers-format model folders: layout checks and zero-copy safetensors loading.

Contract:
- :func:`inspect_model_folder` checks a folder has ``model_index.json`` and the sub-folders a Wan
  pipeline needs (``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``),
  each with its config and weights; anything missing raises :class:`ModelLoadError` listing every
  problem and what a complete folder looks like. ``overrides`` maps a component (``transformer``,
  ``vae``, ``text_encoder``, ``tokenizer``) to another folder in the same sub-folder layout: that
  component is checked and loaded from there instead of ``<root>/<component>`` (which then need not
  exist); :meth:`ModelFolder.component` and :meth:`ModelFolder.read_config` resolve through it.
- :func:`load_module_weights` fills a module built on the meta device from ``*.safetensors`` (one
  file or shards listed by ``*.safetensors.index.json``) with ``load_state_dict(assign=True)``:
  tensors come straight from the memory-mapped files, copied at most once when a dtype or device
  change is required. Missing, unexpected or mis-shaped keys and corrupt files raise
  :class:`ModelLoadError` naming the file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open

from fastvideo.api.errors import ModelLoadError

logger = logging.getLogger(__name__)

REQUIRED_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


@dataclass(frozen=True)
class ModelFolder:
    """A checked diffusers-format model folder."""

    root: Path
    model_index: dict[str, Any]
    #: Components loaded from another folder than ``root / name`` (see :func:`inspect_model_folder`).
    overrides: dict[str, Path] = field(default_factory=dict)

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


def _weight_files(folder: Path, stem: str) -> list[Path]:
    single = folder / stem
    index = folder / f"{stem}.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{index} has no 'weight_map'")
        return [folder / name for name in sorted(set(weight_map.values()))]
    if single.exists():
        return [single]
    return []


def find_weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a component folder (diffusers or transformers naming)."""
    for stem in (DIFFUSERS_WEIGHTS, "model.safetensors"):
        files = _weight_files(folder, stem)
        if files:
            return files
    return []


OVERRIDABLE_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer")


def inspect_model_folder(path: str | Path, overrides: Mapping[str, str | Path] | None = None) -> ModelFolder:
    """Check that ``path`` is a complete diffusers Wan folder, with ``overrides`` (component -> folder)
    standing in for their sub-folders; raise listing every problem."""
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
            if not any((sub / f).exists() for f in ("tokenizer.json", "spiece.model", "tokenizer_config.json")):
                problems.append(f"{label} has no tokenizer.json, spiece.model or tokenizer_config.json")
            continue
        config_name = "scheduler_config.json" if name == "scheduler" else "config.json"
        if not (sub / config_name).exists():
            problems.append(f"{label}{config_name} is missing")
        if name != "scheduler":
            files = find_weight_files(sub)
            if not files:
                problems.append(f"{label} has no *.safetensors weights")
            for file in files:
                if not file.exists():
                    problems.append(f"{label}{file.name} is listed in the shard index but missing")
    if problems:
        raise ModelLoadError(f"model folder {root} is incomplete: " + "; ".join(problems) +
                             ". A diffusers Wan folder holds model_index.json and the sub-folders "
                             + ", ".join(f"{n}/" for n in REQUIRED_COMPONENTS) + ".")
    return ModelFolder(root=root, model_index=model_index, overrides=moved)


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


def load_module_weights(module: torch.nn.Module, folder: Path, *, dtype: torch.dtype, device: torch.device,
                        dtype_for: Callable[[str, torch.dtype], torch.dtype] | None = None) -> torch.nn.Module:
    """Fill a meta-device ``module`` from the safetensors in ``folder``; returns it on ``device``.

    ``dtype_for(name, dtype)`` may keep some parameters in another dtype (e.g. float32 norms).
    """
    files = find_weight_files(folder)
    if not files:
        raise ModelLoadError(f"{folder} has no *.safetensors weights")
    state = read_state_dict(files)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelLoadError(f"weights in {folder} do not match the model built from its config.json: "
                             f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                             f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise ModelLoadError(f"{folder}: tensor {key!r} has shape {tuple(state[key].shape)}, "
                                 f"config expects {tuple(ref.shape)}")
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
