"""How LoRA files name the LTX-2 DiT's modules: the LTX-2 family's :class:`~fastvideo.engine.lora.LoraKeyMap`.

Contract
--------
- :data:`LTX2_LORA_KEYS` is the map of :class:`~fastvideo.engine.models.ltx2.transformer.LTX2Transformer`
  (diffusers' ``LTX2VideoTransformer3DModel`` module names, so the diffusers/PEFT layout needs no renaming); it
  adds the original Lightricks layout under ``diffusion_model.`` (``patchify_proj``, ``adaln_single``,
  ``q_norm`` ...), renamed as diffusers' ``_convert_non_diffusers_ltx2_lora_to_diffusers`` renames it
  (:func:`ltx2_lora_name`), and refuses the text connectors' keys (``text_embedding_projection.`` /
  ``connectors.``): only the DiT is adapted.
- :data:`LORA_KEY_MAPS` (DiT class -> map) is what :func:`fastvideo.engine.lora.lora_key_map` reads from this
  module; subclasses of the DiT match through their MRO there.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from fastvideo.engine.lora import LoraKeyMap
from fastvideo.engine.models.ltx2.transformer import LTX2Transformer

__all__ = ["LORA_KEY_MAPS", "LTX2_LORA_KEYS", "ltx2_lora_name"]

#: original (Lightricks) LTX-2 name fragments -> ours (diffusers'), replaced in this order as diffusers does
_RENAMES: tuple[tuple[str, str], ...] = (
    ("patchify_proj", "proj_in"),
    ("audio_patchify_proj", "audio_proj_in"),
    ("av_ca_video_scale_shift_adaln_single", "av_cross_attn_video_scale_shift"),
    ("av_ca_a2v_gate_adaln_single", "av_cross_attn_video_a2v_gate"),
    ("av_ca_audio_scale_shift_adaln_single", "av_cross_attn_audio_scale_shift"),
    ("av_ca_v2a_gate_adaln_single", "av_cross_attn_audio_v2a_gate"),
    ("scale_shift_table_a2v_ca_video", "video_a2v_cross_attn_scale_shift_table"),
    ("scale_shift_table_a2v_ca_audio", "audio_a2v_cross_attn_scale_shift_table"),
    ("q_norm", "norm_q"),
    ("k_norm", "norm_k"),
    ("audio_prompt_adaln_single", "audio_prompt_adaln"),
    ("prompt_adaln_single", "prompt_adaln"),
)
#: leading original LTX-2 module names -> ours (after the renames)
_HEADS: tuple[tuple[str, str], ...] = (("adaln_single.", "time_embed."), ("audio_adaln_single.", "audio_time_embed."))


def _is_original(keys: Collection[str]) -> bool:
    return any(key.startswith(("diffusion_model.", "model.diffusion_model.")) for key in keys)


def ltx2_lora_name(module: str) -> str:
    """An original LTX-2 module name (prefix and ``.lora_*`` suffix stripped) -> ours."""
    for old, new in _RENAMES:
        module = module.replace(old, new)
    for old, new in _HEADS:
        if module.startswith(old):
            return new + module[len(old):]
    return module


LTX2_LORA_KEYS = LoraKeyMap(
    model="LTX-2 DiT", pipeline="LTX2Pipeline", is_original=_is_original, rename=ltx2_lora_name,
    foreign={"text_embedding_projection.": "the text connectors (LTX-2 original layout)",
             "connectors.": "the text connectors"})

LORA_KEY_MAPS: Mapping[type, LoraKeyMap] = {LTX2Transformer: LTX2_LORA_KEYS}
