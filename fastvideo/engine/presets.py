"""Model presets: each model's default sampling values and limits.

Contract: a :class:`ModelPreset` holds the defaults a request's unset sampling fields take (size,
frames, steps, guidance, shift, fps, negative prompt) and the limits validation enforces. It is the
engine's view of a preset registered in :mod:`fastvideo.api.presets` (the one list of presets; its
``name`` is the preset's ``engine_name``, e.g. ``wan2.1-t2v-1.3b``). Presets are looked up by any of
their names (:func:`get_preset`: FastVideo's ``wan_t2v_1_3b`` or ours; unknown names raise
ConfigError listing the registered ones) or inferred from a model folder (:func:`infer_preset`).
A preset may name its sampler (``sampler="dmd"`` with ``dmd_timesteps`` for FastVideo's DMD-distilled
FastWan checkpoints); a preset registered with a ``refusal`` (one this engine cannot run yet) is a
ConfigError at ``pipeline.preset`` from :func:`get_preset` and :func:`infer_preset`, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastvideo.api import presets as api_presets
from fastvideo.api.parse import ConfigError
from fastvideo.api.presets import WAN_NEGATIVE_PROMPT, InferencePreset

__all__ = ["PRESETS", "WAN_NEGATIVE_PROMPT", "ModelPreset", "get_preset", "infer_preset"]


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
    #: The sampler this model needs (None: its scheduler config's); "dmd" for DMD-distilled checkpoints.
    sampler: str | None = None
    #: DMD only: FastVideo's ``dmd_denoising_steps``, the fixed timesteps the checkpoint was distilled at.
    dmd_timesteps: tuple[int, ...] | None = None
    #: What a request must give besides the prompt: "t2v" (nothing), "i2v" (``inputs.image_path``), "flf2v"
    #: (``inputs.image_path`` and ``inputs.last_image``), "ti2v" (optionally ``inputs.image_path``: Wan2.2 TI2V-5B).
    #: A loaded pipeline sets it from its model folder.
    workload: str = "t2v"
    #: Two-expert models (Wan2.2 A14B): the switch point (``model_index.json``'s ``boundary_ratio``; None: one
    #: expert) and the low-noise expert's default guidance (None: the same as ``guidance_scale``).
    boundary_ratio: float | None = None
    guidance_scale_2: float | None = None

    @classmethod
    def from_inference(cls, preset: InferencePreset) -> "ModelPreset":
        """The engine's view of a registered :class:`~fastvideo.api.presets.InferencePreset`."""
        d, m = preset.defaults, preset.model_defaults
        missing = [k for k in ("width", "height", "num_frames", "fps", "num_inference_steps", "guidance_scale")
                   if k not in d] + [k for k in ("flow_shift",) if k not in m]
        if missing:
            raise ConfigError("pipeline.preset", f"preset {preset.name!r} lacks {missing} (defaults: width, height, "
                                                 "num_frames, fps, num_inference_steps, guidance_scale; "
                                                 "model_defaults: flow_shift), so this engine cannot run it")
        dmd = m.get("dmd_denoising_steps")
        return cls(preset.engine_name, width=d["width"], height=d["height"], num_frames=d["num_frames"], fps=d["fps"],
                   num_inference_steps=d["num_inference_steps"], guidance_scale=float(d["guidance_scale"]),
                   shift=float(m["flow_shift"]), negative_prompt=d.get("negative_prompt") or "",
                   max_frames=m.get("max_frames", 161), max_side=m.get("max_side", 1920),
                   text_length=m.get("text_length", 512), description=preset.description,
                   sampler=m.get("sampler"), dmd_timesteps=None if dmd is None else tuple(dmd),
                   workload=preset.workload_type if preset.workload_type in ("i2v", "flf2v", "ti2v") else "t2v",
                   guidance_scale_2=None if d.get("guidance_scale_2") is None else float(d["guidance_scale_2"]))


def _runnable(preset: InferencePreset) -> InferencePreset:
    if preset.refusal:
        raise ConfigError("pipeline.preset", f"preset {preset.name!r} ({preset.description}) cannot run on this "
                                             f"engine: {preset.refusal}")
    return preset


#: The built-in presets by engine name (built from :mod:`fastvideo.api.presets`, the one list).
PRESETS: dict[str, ModelPreset] = {
    p.engine_name: ModelPreset.from_inference(p) for p in api_presets.get_presets_for_family("wan")
}


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name`` (FastVideo's name, ours, or another alias); unknown names raise
    :class:`~fastvideo.api.ConfigError` (a ValueError) listing the registered ones."""
    return ModelPreset.from_inference(_runnable(api_presets.get_preset(name)))


def infer_preset(model_index: dict[str, Any], transformer_config: dict[str, Any]) -> ModelPreset:
    """Pick the preset of a model folder from ``model_index.json`` and the transformer config."""
    return ModelPreset.from_inference(_runnable(api_presets.infer_preset_for_folder(model_index, transformer_config)))
