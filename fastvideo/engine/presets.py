"""Model presets: each model's default sampling values and limits.

Contract: a :class:`ModelPreset` holds the defaults a request's unset sampling fields take (size,
frames, steps, guidance, shift, fps, negative prompt) and the limits validation enforces. Presets
are looked up by name (:func:`get_preset`, unknown names raise listing the known ones) or inferred
from a model folder's transformer config (:func:`infer_preset`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastvideo.api.errors import ModelLoadError

# Wan's recommended negative prompt (the reference pipeline's examples use it).
WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
    "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still "
    "picture, messy background, three legs, many people in the background, walking backwards"
)


@dataclass(frozen=True)
class ModelPreset:
    """Defaults and limits of one model."""

    name: str
    width: int
    height: int
    num_frames: int
    fps: int
    num_inference_steps: int
    guidance_scale: float
    shift: float
    negative_prompt: str = ""
    #: Longest video (in frames) the preset allows; Wan was trained up to 81.
    max_frames: int = 161
    #: Largest side in pixels the preset allows.
    max_side: int = 1920
    #: Text tokens the encoder sees (Wan: 512).
    text_length: int = 512
    description: str = ""


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset("wan2.1-t2v-1.3b", width=832, height=480, num_frames=81, fps=16, num_inference_steps=50,
                    guidance_scale=5.0, shift=3.0, negative_prompt=WAN_NEGATIVE_PROMPT,
                    description="Wan2.1 T2V 1.3B, 480p"),
        ModelPreset("wan2.1-t2v-14b", width=1280, height=720, num_frames=81, fps=16, num_inference_steps=50,
                    guidance_scale=5.0, shift=5.0, negative_prompt=WAN_NEGATIVE_PROMPT,
                    description="Wan2.1 T2V 14B, 720p"),
        ModelPreset("fastvideo-tiny", width=256, height=256, num_frames=9, fps=16, num_inference_steps=8,
                    guidance_scale=5.0, shift=3.0, max_frames=129, max_side=1024, text_length=64,
                    description="built-in tiny random-weight Wan-architecture model (tests, demos, CI)"),
    )
}


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name``; raise ValueError listing the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}") from None


def infer_preset(model_index: dict[str, Any], transformer_config: dict[str, Any]) -> ModelPreset:
    """Pick the preset of a model folder from ``model_index.json`` and the transformer config."""
    tagged = model_index.get("_fastvideo_preset")
    if isinstance(tagged, str):
        return get_preset(tagged)
    heads = transformer_config.get("num_attention_heads")
    head_dim = transformer_config.get("attention_head_dim")
    layers = transformer_config.get("num_layers")
    if not (isinstance(heads, int) and isinstance(head_dim, int) and isinstance(layers, int)):
        raise ModelLoadError("transformer/config.json lacks num_attention_heads/attention_head_dim/num_layers")
    dim = heads * head_dim
    if dim >= 5120:
        return PRESETS["wan2.1-t2v-14b"]
    if dim >= 1536:
        return PRESETS["wan2.1-t2v-1.3b"]
    return PRESETS["fastvideo-tiny"]
