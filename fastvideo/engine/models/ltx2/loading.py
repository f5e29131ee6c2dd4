"""Build the LTX-2 DiT from a diffusers ``transformer/`` folder through the engine's meta-device loader.

Contract: :func:`load_ltx2_transformer` reads ``<folder>/config.json`` into an :class:`LTX2DiTConfig` (an unknown key
or an unsupported value becomes :class:`~fastvideo.api.errors.ModelLoadError` naming the file and the field),
builds :class:`LTX2Transformer` on the meta device, and fills it with
:func:`fastvideo.engine.loader.load_module_weights` (single file or sharded safetensors, weight ``variant`` as
diffusers names them; missing, unexpected or mis-shaped tensors raise ``ModelLoadError``). Every parameter takes
``dtype`` (diffusers keeps no LTX-2 module in float32). The attention backend is chosen here, once, with
:func:`~fastvideo.kernels.registry.select_attention_backend` (``None``: ``sdpa``); a backend that cannot run the
config (either head size: video ``attention_head_dim`` or audio ``audio_attention_head_dim``) raises
:class:`~fastvideo.kernels.registry.AttentionBackendError`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from fastvideo.api.errors import ModelLoadError
from fastvideo.engine.loader import load_module_weights, read_json
from fastvideo.engine.models.ltx2.config import LTX2DiTConfig
from fastvideo.engine.models.ltx2.transformer import LTX2Transformer
from fastvideo.kernels.registry import AttentionBackendError, select_attention_backend

logger = logging.getLogger(__name__)

__all__ = ["load_ltx2_transformer", "read_ltx2_config"]


def read_ltx2_config(folder: str | Path) -> LTX2DiTConfig:
    """The :class:`LTX2DiTConfig` of a ``transformer/`` folder; any problem is a ``ModelLoadError`` naming it."""
    path = Path(folder).expanduser() / "config.json"
    data = read_json(path)
    class_name = data.get("_class_name")
    if class_name is not None and class_name != "LTX2VideoTransformer3DModel":
        raise ModelLoadError(f"{path} describes a {class_name}, not an LTX2VideoTransformer3DModel; point at the "
                             "transformer/ folder of an LTX-2 diffusers checkpoint")
    try:
        return LTX2DiTConfig.from_dict(data)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise ModelLoadError(f"unsupported LTX-2 transformer config {path}: {exc}") from exc


def load_ltx2_transformer(folder: str | Path, *, dtype: torch.dtype = torch.float32,
                          device: torch.device | str = "cpu", attention_backend: str | None = None,
                          variant: str | None = None) -> LTX2Transformer:
    """Build and load the DiT of a diffusers LTX-2 ``transformer/`` folder (module contract); returns it in eval
    mode, gradients off, on ``device``."""
    folder = Path(folder).expanduser()
    config = read_ltx2_config(folder)
    device = torch.device(device)
    backend = select_attention_backend(attention_backend, dtype=dtype, head_dim=config.attention_head_dim,
                                       device=device)
    # the audio stream and the a2v/v2a attention run at the audio head size: the backend must take it too
    reason = backend.check(dtype, config.audio_attention_head_dim, device)
    if reason is not None:
        raise AttentionBackendError(f"attention backend {backend.name!r} rejected the audio head size "
                                    f"{config.audio_attention_head_dim}: {reason}")
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = LTX2Transformer(config, attention_backend=backend)
    load_module_weights(model, folder, dtype=dtype, device=device, variant=variant)
    logger.info("loaded LTX-2 DiT from %s in %.2fs on %s/%s (%d layers)", folder, time.perf_counter() - t0, device,
                dtype, config.num_layers)
    return model
