"""LoRA adapters for the DiTs (Wan, LTX-2): load a LoRA safetensors file, merge it into the weights, unmerge it exactly.

Contract
--------
- :func:`load_lora(path, model)` reads one ``.safetensors`` file (or a folder holding one; diffusers'
  ``pytorch_lora_weights.safetensors`` is preferred) and returns a :class:`LoraAdapter` whose targets are
  parameter names of ``model``. How a file names the model's modules is the model's :class:`LoraKeyMap`, which
  its family declares in its own package: ``fastvideo/engine/models/<family>/lora_keys.py`` holds
  ``LORA_KEY_MAPS`` (DiT class -> map), found by :func:`lora_key_map` from the model's class or a base in its MRO
  (a class no family maps takes only the diffusers/PEFT layout); this module holds only the mechanism. Our DiTs
  have diffusers' module names
  (:class:`~fastvideo.engine.models.wan.transformer.WanTransformer3DModel` = diffusers' ``WanTransformer3DModel``,
  :class:`~fastvideo.engine.models.ltx2.transformer.LTX2Transformer` = ``LTX2VideoTransformer3DModel``), so the
  maps differ only in the original (non-diffusers) layout and in the other components' keys they refuse.
  Accepted key layouts:

  * diffusers / PEFT: ``[transformer.|base_model.model.]<module>.lora_A.weight`` / ``.lora_B.weight``
    (``.lora_B.bias``: PEFT's ``lora_bias``), with the PEFT scaling ``lora_alpha / r`` read from the file's
    ``lora_adapter_metadata`` (``lora_alpha``, ``alpha_pattern``; what diffusers' ``save_lora_weights``
    writes) and 1.0 without it, as diffusers' ``load_lora_weights`` does;
  * Wan (``models/wan/lora_keys.py``): the original Wan / ComfyUI names under ``diffusion_model.``
    (``blocks.N.self_attn.q``, ``cross_attn.k_img``, ``ffn.0``, ``time_projection.1``, ``head.head``,
    ``img_emb.proj.1`` ...), with ``.lora_down.weight`` / ``.lora_up.weight`` (or ``lora_A`` / ``lora_B``),
    kohya ``.alpha`` keys (scale ``alpha / rank``), ``.diff`` (a full weight difference) and ``.diff_b`` (a bias
    difference), mapped as diffusers' ``_convert_non_diffusers_wan_lora_to_diffusers`` maps them. Unlike
    diffusers, ``.diff`` keys (and norm ``.diff`` / ``.diff_b`` keys, which diffusers drops) are applied, not ignored.
  * LTX-2 (``models/ltx2/lora_keys.py``): the original Lightricks layout under ``diffusion_model.``
    (``patchify_proj``, ``adaln_single``, ``q_norm`` ...), renamed as diffusers'
    ``_convert_non_diffusers_ltx2_lora_to_diffusers`` renames it. Only the DiT is adapted: keys of the
    text connectors (``text_embedding_projection.`` / ``connectors.``) are refused (ConfigError naming them).

  Errors are :class:`~fastvideo.api.ConfigError` on the caller's ``field``: a missing file, a file that is
  not safetensors, musubi ``lora_unet_`` keys (not supported yet), keys that map to no parameter (the first
  few are listed), an ``lora_A`` without its ``lora_B``, and a shape that does not fit its parameter (named).
- :func:`merge_lora(model, adapter, strength)` adds ``strength * scale * B @ A`` (and the diffs) to each
  target, computed in float32 and cast back to the parameter's dtype (as PEFT's ``merge`` with
  ``fuse_lora(lora_scale=strength)``), **in place** (``param.data.copy_``): parameter storage never moves,
  so CUDA graphs captured over the old weights and ``torch.compile``d code see the new weights. It returns
  a :class:`MergedLora` holding a CPU copy of every original target tensor; :func:`unmerge_lora` copies
  them back in place, so unmerging restores the weights bit-exactly (memory: one copy of the targeted
  weights on the CPU while merged). A merge that fails half-way (e.g. out of memory) restores what it changed.
- :func:`lora_manifest_value(path, strength)` is what a ``fastvideo-build`` manifest records about a fused
  adapter: ``{"sha256": <of the file>, "strength": float, "path": <the file>}`` (the identity keeps the first two).
- Nothing here synchronises with running generations: the caller (``VideoGenerator``) merges only while
  no request is running.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fastvideo.api import ConfigError

logger = logging.getLogger(__name__)

_PREFIXES = ("base_model.model.", "transformer.", "model.diffusion_model.", "diffusion_model.")
#: key suffix -> part
_SUFFIXES = {
    ".lora_A.weight": "A", ".lora_down.weight": "A", ".lora_B.weight": "B", ".lora_up.weight": "B",
    ".lora_B.bias": "lora_bias", ".lora_up.bias": "lora_bias", ".alpha": "alpha", ".diff_b": "diff_b",
    ".diff": "diff",
}
#: where a model family keeps its key maps: ``<the DiT class's package>.lora_keys.LORA_KEY_MAPS``
_FAMILY_PACKAGES = "fastvideo.engine.models."
_KEY_MAPS_MODULE = "lora_keys"


@dataclass(frozen=True)
class LoraKeyMap:
    """How LoRA files name one DiT's modules: the diffusers/PEFT layout is the model's own names (every map); this
    adds the model's original (non-diffusers) layout and the other components' keys it refuses."""

    #: the model, as errors name it
    model: str
    #: the diffusers pipeline class whose ``lora_state_dict`` + ``save_lora_weights`` converts a file (hints)
    pipeline: str
    #: whether a file (its keys) is in the original layout; None: the model has no original layout
    is_original: Callable[[Collection[str]], bool] | None = None
    #: an original module name (prefix and ``.lora_*`` suffix stripped) -> ours; None: no such module
    rename: Callable[[str], str | None] | None = None
    #: key prefixes of other components' adapters (refused: only the DiT is adapted) -> what they adapt
    foreign: Mapping[str, str] = field(default_factory=dict)


def _family_key_maps(cls: type) -> Mapping[type, LoraKeyMap]:
    """The ``LORA_KEY_MAPS`` of the model family whose package defines ``cls`` ({} for any other class)."""
    package, _, _ = cls.__module__.rpartition(".")
    if not package.startswith(_FAMILY_PACKAGES):
        return {}
    name = f"{package}.{_KEY_MAPS_MODULE}"
    if importlib.util.find_spec(name) is None:
        return {}
    maps: Mapping[type, LoraKeyMap] = getattr(importlib.import_module(name), "LORA_KEY_MAPS", {})
    return maps


def lora_key_map(model: nn.Module) -> LoraKeyMap:
    """The :class:`LoraKeyMap` of ``model``'s class (or a base's); a class not registered: the diffusers layout."""
    for cls in type(model).__mro__:
        found = _family_key_maps(cls).get(cls)
        if found is not None:
            return found
    return LoraKeyMap(model=type(model).__name__, pipeline="its diffusers pipeline")


@dataclass
class LoraTarget:
    """What one adapter module adds to its parameters (all tensors float32 on the CPU)."""

    A: torch.Tensor | None = None
    B: torch.Tensor | None = None
    #: ``lora_alpha / r`` (kohya ``alpha / rank``), before the strength
    scale: float = 1.0
    lora_bias: torch.Tensor | None = None
    diff: torch.Tensor | None = None
    diff_b: torch.Tensor | None = None
    alpha: float | None = None


@dataclass
class LoraAdapter:
    """A loaded adapter: module/parameter name of the model -> :class:`LoraTarget`."""

    path: str
    targets: dict[str, LoraTarget] = field(default_factory=dict)

    def deltas(self, model: nn.Module, strength: float) -> dict[str, torch.Tensor]:
        """Parameter name -> float32 delta on the parameter's device, for ``strength``."""
        params = dict(model.named_parameters())
        out: dict[str, torch.Tensor] = {}

        def add(name: str, delta: torch.Tensor) -> None:
            dev = params[name].device
            delta = delta.to(dev, torch.float32)
            out[name] = out[name] + delta if name in out else delta

        for module, t in self.targets.items():
            weight = module if module in params else f"{module}.weight"
            bias = f"{module}.bias"
            if t.A is not None and t.B is not None:
                dev = params[weight].device
                add(weight, (strength * t.scale) * (t.B.to(dev) @ t.A.to(dev)))
            if t.diff is not None:
                add(weight, strength * t.diff)
            if t.lora_bias is not None:
                add(bias, (strength * t.scale) * t.lora_bias)
            if t.diff_b is not None:
                add(bias, strength * t.diff_b)
        return out


@dataclass
class MergedLora:
    """A merged adapter: the original values of every parameter it changed (CPU copies), to unmerge exactly."""

    adapter: LoraAdapter
    strength: float
    originals: dict[str, torch.Tensor]


def _resolve_file(path: str | Path, field_name: str) -> Path:
    file = Path(path).expanduser()
    if file.is_dir():
        preferred = file / "pytorch_lora_weights.safetensors"
        found = [preferred] if preferred.is_file() else sorted(file.glob("*.safetensors"))
        if len(found) != 1:
            raise ConfigError(field_name, f"{path} is a folder with {len(found)} .safetensors files; point it at "
                                          "the LoRA .safetensors file itself")
        return found[0]
    if not file.is_file():
        raise ConfigError(field_name, f"{path} does not exist; point it at a LoRA .safetensors file")
    return file


def _read(file: Path, field_name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(field_name, f"{file} is not a readable safetensors file ({exc}); LoRA adapters are "
                                      "loaded from .safetensors files (convert a .pt/.bin one with "
                                      "safetensors.torch.save_file)") from None
    return tensors, metadata


def _peft_alphas(metadata: dict[str, str]) -> tuple[float | None, dict[str, float]]:
    """``lora_alpha`` and ``alpha_pattern`` from diffusers' ``lora_adapter_metadata`` (None: not given)."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return None, {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return None, {}
    data = {k.removeprefix("transformer."): v for k, v in data.items()}
    alpha = data.get("lora_alpha")
    pattern = data.get("alpha_pattern") or {}
    return (float(alpha) if alpha is not None else None), {str(k): float(v) for k, v in pattern.items()}


def load_lora(path: str | Path, model: nn.Module, *, field_name: str = "lora_path") -> LoraAdapter:
    """Read a LoRA file and map it onto ``model``'s parameter names (see module contract)."""
    file = _resolve_file(path, field_name)
    tensors, metadata = _read(file, field_name)
    if not tensors:
        raise ConfigError(field_name, f"{file} holds no tensors")
    keys = lora_key_map(model)
    if any(key.startswith("lora_unet_") for key in tensors):
        raise ConfigError(field_name, f"{file} uses musubi-tuner 'lora_unet_' keys, which are not supported yet; "
                                      f"convert it to the diffusers format (diffusers' {keys.pipeline}."
                                      "lora_state_dict + save_lora_weights)")
    for prefix, what in keys.foreign.items():
        foreign = [key for key in tensors if key.startswith(prefix)]
        if foreign:
            raise ConfigError(field_name, f"{file}: {len(foreign)} key(s) adapt {what}, e.g. {foreign[:3]}; only the "
                                          f"{keys.model} is adapted (LoRA of other components is not supported "
                                          "yet): save the file without those keys")
    rename = keys.rename if keys.is_original is not None and keys.is_original(tensors.keys()) else None
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    peft_alpha, alpha_pattern = _peft_alphas(metadata)
    targets: dict[str, LoraTarget] = {}
    unmapped: list[str] = []
    for key, tensor in tensors.items():
        name = key
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            unmapped.append(key)
            continue
        part, module = _SUFFIXES[suffix], name[: -len(suffix)]
        target = rename(module) if rename is not None else module
        if target is None or (target not in modules and target not in params):
            unmapped.append(key)
            continue
        entry = targets.setdefault(target, LoraTarget())
        if part == "alpha":
            entry.alpha = float(tensor.float().item())
        else:
            setattr(entry, part, tensor.detach().to(torch.float32))
    if unmapped:
        raise ConfigError(field_name, f"{file}: {len(unmapped)} key(s) map to no parameter of the {keys.model}, "
                                      f"e.g. {unmapped[:5]}; is this a LoRA for another model (only transformer "
                                      "LoRAs in the diffusers/PEFT or the model's original layout are supported)?")
    for module, t in targets.items():
        if (t.A is None) != (t.B is None):
            missing = "lora_B (lora_up)" if t.B is None else "lora_A (lora_down)"
            raise ConfigError(field_name, f"{file}: module {module} has no {missing} weight")
        if t.A is not None and t.B is not None:
            rank = t.A.shape[0]
            if t.alpha is not None:
                t.scale = t.alpha / rank
            elif peft_alpha is not None:
                alpha = next((v for p, v in alpha_pattern.items() if re.fullmatch(rf"(.*\.)?{p}", module)),
                             peft_alpha)
                t.scale = alpha / rank
        _check_shapes(file, module, t, params, field_name)
    return LoraAdapter(path=str(file), targets=targets)


def _check_shapes(file: Path, module: str, t: LoraTarget, params: dict[str, nn.Parameter], field_name: str) -> None:
    weight = module if module in params else f"{module}.weight"
    bias = f"{module}.bias"

    def fail(name: str, what: str) -> None:
        raise ConfigError(field_name, f"{file}: {what} does not fit parameter {name}"
                                      f"{'' if name not in params else ' ' + str(tuple(params[name].shape))}; "
                                      "is this LoRA for another model size?")

    if t.A is not None and t.B is not None:
        if weight not in params or params[weight].ndim != 2:
            fail(weight, f"lora_A/lora_B of {module}")
        out_dim, in_dim = params[weight].shape
        if t.A.ndim != 2 or t.B.ndim != 2 or t.A.shape[1] != in_dim or t.B.shape[0] != out_dim or \
                t.B.shape[1] != t.A.shape[0]:
            fail(weight, f"lora_A {tuple(t.A.shape)} / lora_B {tuple(t.B.shape)}")
    if t.diff is not None and (weight not in params or tuple(params[weight].shape) != tuple(t.diff.shape)):
        fail(weight, f"diff {tuple(t.diff.shape)}")
    for name, tensor in (("lora_bias", t.lora_bias), ("diff_b", t.diff_b)):
        if tensor is not None and (bias not in params or tuple(params[bias].shape) != tuple(tensor.shape)):
            fail(bias, f"{name} {tuple(tensor.shape)}")


def lora_manifest_value(path: str | Path, strength: float, *, field_name: str = "lora_path") -> dict[str, object]:
    """What a build manifest records about an adapter fused at ``strength`` (see module contract)."""
    file = _resolve_file(path, field_name)
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return {"sha256": digest.hexdigest(), "strength": float(strength), "path": str(file.resolve())}


@torch.no_grad()
def merge_lora(model: nn.Module, adapter: LoraAdapter, strength: float = 1.0) -> MergedLora:
    """Merge ``adapter`` at ``strength`` into ``model`` in place; returns what :func:`unmerge_lora` needs."""
    params = dict(model.named_parameters())
    deltas = adapter.deltas(model, strength)
    originals: dict[str, torch.Tensor] = {}
    try:
        for name, delta in deltas.items():
            param = params[name]
            originals[name] = param.detach().to("cpu", copy=True)
            param.data.copy_((param.data.float() + delta).to(param.dtype))
    except BaseException:  # e.g. out of memory half-way: put back what was changed, never leave a half merge
        for name, original in originals.items():
            params[name].data.copy_(original)
        raise
    logger.info("merged LoRA %s (strength %s) into %d parameters", adapter.path, strength, len(deltas))
    return MergedLora(adapter=adapter, strength=strength, originals=originals)


@torch.no_grad()
def unmerge_lora(model: nn.Module, merged: MergedLora) -> None:
    """Restore the parameters ``merged`` changed to their exact original values, in place."""
    params = dict(model.named_parameters())
    for name, original in merged.originals.items():
        params[name].data.copy_(original)
    logger.info("unmerged LoRA %s", merged.adapter.path)
