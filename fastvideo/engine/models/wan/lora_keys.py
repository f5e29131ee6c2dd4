"""How LoRA files name the Wan DiT's modules: the Wan family's :class:`~fastvideo.engine.lora.LoraKeyMap`.

Contract
--------
- :data:`WAN_LORA_KEYS` is the map of :class:`~fastvideo.engine.models.wan.transformer.WanTransformer3DModel`
  (diffusers' module names, so the diffusers/PEFT layout needs no renaming); it adds the original Wan / ComfyUI
  layout (``diffusion_model.blocks.N.self_attn.q`` ...), renamed as diffusers'
  ``_convert_non_diffusers_wan_lora_to_diffusers`` renames it (:func:`wan_lora_name`).
- :data:`LORA_KEY_MAPS` (DiT class -> map) is what :func:`fastvideo.engine.lora.lora_key_map` reads from this
  module; subclasses of the DiT match through their MRO there.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from fastvideo.engine.lora import LoraKeyMap
from fastvideo.engine.models.wan.transformer import WanTransformer3DModel

__all__ = ["LORA_KEY_MAPS", "WAN_LORA_KEYS", "wan_lora_name"]

_ATTN = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0", "norm_q": "norm_q", "norm_k": "norm_k",
         "k_img": "add_k_proj", "v_img": "add_v_proj", "norm_k_img": "norm_added_k"}
#: original Wan module names -> ours (diffusers'); ``{}`` groups are filled from the match.
_WAN_NAMES: tuple[tuple[str, str], ...] = (
    (r"blocks\.(\d+)\.self_attn\.(\w+)", "blocks.{0}.attn1.{attn}"),
    (r"blocks\.(\d+)\.cross_attn\.(\w+)", "blocks.{0}.attn2.{attn}"),
    (r"blocks\.(\d+)\.ffn\.0", "blocks.{0}.ffn.net.0.proj"),
    (r"blocks\.(\d+)\.ffn\.2", "blocks.{0}.ffn.net.2"),
    (r"blocks\.(\d+)\.norm3", "blocks.{0}.norm2"),
    (r"blocks\.(\d+)\.modulation", "blocks.{0}.scale_shift_table"),
    (r"time_projection\.1", "condition_embedder.time_proj"),
    (r"time_embedding\.0", "condition_embedder.time_embedder.linear_1"),
    (r"time_embedding\.2", "condition_embedder.time_embedder.linear_2"),
    (r"text_embedding\.0", "condition_embedder.text_embedder.linear_1"),
    (r"text_embedding\.2", "condition_embedder.text_embedder.linear_2"),
    (r"head\.head", "proj_out"),
    (r"head\.modulation", "scale_shift_table"),
    (r"patch_embedding", "patch_embedding"),
    (r"img_emb\.proj\.0", "condition_embedder.image_embedder.norm1"),
    (r"img_emb\.proj\.1", "condition_embedder.image_embedder.ff.net.0.proj"),
    (r"img_emb\.proj\.3", "condition_embedder.image_embedder.ff.net.2"),
    (r"img_emb\.proj\.4", "condition_embedder.image_embedder.norm2"),
    (r"img_emb\.emb_pos", "condition_embedder.image_embedder.pos_embed"),
)


def _is_original(keys: Collection[str]) -> bool:
    return any(key.startswith(("diffusion_model.", "model.diffusion_model.")) for key in keys) or any(
        ".self_attn." in key or ".cross_attn." in key for key in keys)


def wan_lora_name(module: str) -> str | None:
    """An original Wan module name (prefix and ``.lora_*`` suffix stripped) -> ours; None: no such module."""
    for pattern, target in _WAN_NAMES:
        match = re.fullmatch(pattern, module)
        if match is None:
            continue
        groups = match.groups()
        attn = None
        if "{attn}" in target:
            attn = _ATTN.get(groups[1])
            if attn is None:
                return None
        return target.format(*groups, attn=attn)
    return None


WAN_LORA_KEYS = LoraKeyMap(model="Wan DiT", pipeline="WanPipeline", is_original=_is_original, rename=wan_lora_name)

LORA_KEY_MAPS: Mapping[type, LoraKeyMap] = {WanTransformer3DModel: WAN_LORA_KEYS}
