"""Inference presets: FastVideo's preset registry, and the one source of truth for our models' defaults.

Contract:
- :class:`InferencePreset` / :class:`PresetStageSpec` and :func:`register_preset`, :func:`get_preset`,
  :func:`get_presets_for_family`, :func:`get_all_preset_names`, :func:`validate_stage_names`,
  :func:`validate_stage_overrides`, :func:`validate_preset_selection` follow FastVideo's ``fastvideo.api``
  (registry keyed by ``(model_family, name, version)``; ``version=None`` picks the highest; a duplicate
  registration is a ``ValueError``; an unknown preset is a :class:`~fastvideo.api.ConfigValidationError` at
  ``pipeline.preset`` listing the registered names).
- The built-in presets carry FastVideo's names for the models this engine runs (``wan_t2v_1_3b``,
  ``wan_t2v_14b``, ``wan_t2v_a14b``: Wan2.2's two experts, picked for a folder with ``boundary_ratio``;
  ``wan_i2v_a14b``: Wan2.2 I2V A14B, alias ``wan2.2-i2v-a14b`` and FastVideo's ``wan_2_2_i2v_a14b``, 1280x720, 81
  frames at 16 fps, 40 steps, guidance 3.5 / 3.5, shift 5, workload ``i2v``, picked for a
  ``WanImageToVideoPipeline`` folder with ``boundary_ratio``), the
  few-step FastWan presets (``fastwan_t2v_1_3b``: DMD sampling, 3 steps, guidance 1, no
  CFG; ``fastwan_ti2v_5b``: FastWan2.2 TI2V-5B, DMD sampling, 3 steps), Wan2.2 TI2V-5B (``wan_ti2v_5b``: 1280x704,
  121 frames at 24 fps, 50 steps, guidance 5, shift 5, the image optional: workload ``ti2v``, picked for a folder
  with ``expand_timesteps``) plus ``fastvideo-tiny`` and ``fastvideo-tiny-ti2v``;
  our own names (``wan2.1-t2v-1.3b``, ``wan2.1-t2v-14b``) are
  aliases that resolve to the same preset (:attr:`InferencePreset.aliases`). :attr:`InferencePreset.engine_name`
  is the name the engine reports (metadata ``model``, continuation states): our name, so states and
  metadata written before the FastVideo names existed stay valid.
- ``defaults`` holds FastVideo's sampling keys (``height``, ``width``, ``num_frames``, ``fps``,
  ``guidance_scale``, ``num_inference_steps``, ``negative_prompt``); ``model_defaults`` holds what the
  engine needs besides (``flow_shift``, ``max_frames``, ``max_side``, ``text_length``, and for distilled
  checkpoints ``sampler`` = ``"dmd"`` with ``dmd_denoising_steps``, FastVideo's name for the fixed timesteps);
  ``workload_type`` is ``t2v``, or ``i2v`` / ``flf2v`` for Wan2.1 image-to-video (``wan_i2v_14b_480p``,
  ``wan_i2v_14b_720p``, ``wan_flf2v_14b_720p``, ``fastvideo-tiny-i2v``), whose folders
  (``WanImageToVideoPipeline``) :func:`infer_preset_for_folder` maps to them.
- LTX-2 (``model_family="ltx2"``): ``ltx2_base`` (alias ``ltx-2``; 768x512, 121 frames at 24 fps, 40 steps, CFG
  + STG + modality guidance), ``ltx2_distilled`` (alias ``ltx-2-distilled``; 8 steps at the fixed
  ``LTX2_DISTILLED_SIGMAS`` = ``model_defaults["sigmas"]``, guidance 1) and ``fastvideo-tiny-ltx2`` (the built-in
  tiny model); ``model_defaults["ltx2_guidance"]`` holds the ``LTX2Guidance`` fields. The runtime core serves
  them (the ``ltx2`` family's loader, ``fastvideo.engine.models.ltx2.served``, reads them); Wan's engine presets
  (:mod:`fastvideo.engine.presets`) do not include them.
- A preset with a non-empty ``refusal`` is listed and looked up like any other, but the engine refuses to
  load it (:mod:`fastvideo.engine.presets` raises a ConfigError at ``pipeline.preset`` with that reason).
  :mod:`fastvideo.engine.presets` builds its ``ModelPreset`` from these, so there is one list.
- :func:`infer_preset_for_folder` picks the preset of a model folder from its ``model_index.json``
  (``_fastvideo_preset`` tag; ``_class_name`` ``WanDMDPipeline``, FastVideo's FastWan folders, picks the
  FastWan preset of that size) or its transformer config (hidden size), reading JSON only.
- Stdlib only (no torch; nothing from engine or runtime).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastvideo.api.errors import ModelLoadError
from fastvideo.api.parse import ConfigValidationError

#: Wan's recommended negative prompt (the reference pipeline's examples use it).
WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
    "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still "
    "picture, messy background, three legs, many people in the background, walking backwards"
)


@dataclass(frozen=True)
class PresetStageSpec:
    """One stage of a preset and the request keys a ``stage_overrides`` entry may set for it."""

    name: str
    kind: str
    description: str = ""
    allowed_overrides: frozenset[str] = frozenset()


@dataclass(frozen=True)
class InferencePreset:
    """A model's named defaults (see module contract)."""

    name: str
    version: int
    model_family: str
    description: str = ""
    workload_type: str | None = None
    stage_schemas: tuple[PresetStageSpec, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    stage_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Other names that resolve to this preset (ours).
    aliases: tuple[str, ...] = ()
    #: Engine values besides sampling defaults: flow_shift, max_frames, max_side, text_length.
    model_defaults: dict[str, Any] = field(default_factory=dict)
    #: The name the engine reports (metadata ``model``, continuation states); empty: ``name``.
    engine_name_override: str = ""
    #: Non-empty: why this engine cannot run the preset yet (it is refused at load with this text).
    refusal: str = ""

    @property
    def engine_name(self) -> str:
        return self.engine_name_override or self.name


_REGISTRY: dict[tuple[str, str, int], InferencePreset] = {}


def register_preset(preset: InferencePreset) -> None:
    """Add ``preset``; a second preset with the same family, name and version is a ValueError."""
    key = (preset.model_family, preset.name, preset.version)
    if key in _REGISTRY:
        raise ValueError(f"Duplicate preset registration: model_family={preset.model_family!r}, "
                         f"name={preset.name!r}, version={preset.version}")
    _REGISTRY[key] = preset


def _matches(preset: InferencePreset, name: str) -> bool:
    return name in (preset.name, preset.engine_name) or name in preset.aliases


def _registered(model_family: str | None) -> str:
    names = sorted({p.name for p in _REGISTRY.values() if model_family is None or p.model_family == model_family})
    return ", ".join(repr(n) for n in names) or "(none)"


def get_preset(name: str, model_family: str | None = None, version: int | None = None) -> InferencePreset:
    """The preset called ``name`` (or one of its aliases) in ``model_family`` (None: any family), at
    ``version`` (None: the highest). Unknown: ConfigValidationError at ``pipeline.preset``."""
    found = [p for p in _REGISTRY.values()
             if _matches(p, name) and (model_family is None or p.model_family == model_family)]
    if version is not None:
        found = [p for p in found if p.version == version]
    if not found:
        family = f" for model family {model_family!r}" if model_family is not None else ""
        at = f" version {version}" if version is not None else ""
        raise ConfigValidationError("pipeline.preset", f"unknown preset {name!r}{at}{family}; registered: "
                                                       f"{_registered(model_family)}")
    families = {p.model_family for p in found}
    if len(families) > 1:
        raise ConfigValidationError("pipeline.preset", f"preset {name!r} exists in several model families "
                                                       f"{sorted(families)}; name the family")
    return max(found, key=lambda p: p.version)


def get_presets_for_family(model_family: str) -> list[InferencePreset]:
    """The presets of ``model_family`` in registration order."""
    return [p for p in _REGISTRY.values() if p.model_family == model_family]


def get_all_preset_names() -> list[str]:
    """Every registered preset name, sorted, without duplicates (aliases not included)."""
    return sorted({p.name for p in _REGISTRY.values()})


def validate_stage_names(preset: InferencePreset, stage_overrides: Mapping[str, Any]) -> None:
    """Every key of ``stage_overrides`` must be a stage of ``preset``."""
    stages = [s.name for s in preset.stage_schemas]
    for stage in stage_overrides:
        if stage not in stages:
            raise ConfigValidationError(f"stage_overrides.{stage}", f"unknown stage for preset {preset.name!r}; "
                                                                    f"valid stages: {stages}")


def validate_stage_overrides(preset: InferencePreset, stage_overrides: Mapping[str, Any]) -> None:
    """Stage names known, each entry a mapping of keys that stage allows."""
    validate_stage_names(preset, stage_overrides)
    specs = {s.name: s for s in preset.stage_schemas}
    for stage, values in stage_overrides.items():
        if not isinstance(values, Mapping):
            raise ConfigValidationError(f"stage_overrides.{stage}", "must be a mapping")
        allowed = specs[stage].allowed_overrides
        if values and not allowed:
            raise ConfigValidationError(f"stage_overrides.{stage}", f"stage {stage!r} does not accept overrides")
        for key in values:
            if key not in allowed:
                raise ConfigValidationError(f"stage_overrides.{stage}.{key}", f"not an allowed override for stage "
                                                                              f"{stage!r}; allowed: {sorted(allowed)}")


def validate_preset_selection(preset_name: str | None, model_family: str, *, preset_version: int | None = None,
                              stage_overrides: Mapping[str, Any] | None = None) -> InferencePreset | None:
    """The selected preset (None when ``preset_name`` is None), its stage overrides checked."""
    if preset_name is None:
        return None
    preset = get_preset(preset_name, model_family, preset_version)
    if stage_overrides:
        validate_stage_overrides(preset, stage_overrides)
    return preset


def infer_preset_for_folder(model_index: Mapping[str, Any], transformer_config: Mapping[str, Any]) -> InferencePreset:
    """The preset of a model folder: its ``_fastvideo_preset`` tag, else by the transformer's hidden size."""
    tagged = model_index.get("_fastvideo_preset")
    if isinstance(tagged, str):
        return get_preset(tagged)
    distilled = model_index.get("_class_name") == "WanDMDPipeline"  # FastVideo's FastWan folders
    heads = transformer_config.get("num_attention_heads")
    head_dim = transformer_config.get("attention_head_dim")
    layers = transformer_config.get("num_layers")
    if not (isinstance(heads, int) and isinstance(head_dim, int) and isinstance(layers, int)):
        raise ModelLoadError("transformer/config.json lacks num_attention_heads/attention_head_dim/num_layers")
    dim = heads * head_dim
    if distilled:
        if dim == 1536:
            return get_preset("fastwan_t2v_1_3b", "wan")
        if dim == 3072:  # FastWan2.2 TI2V 5B: registered, refused by the engine with its reason
            return get_preset("fastwan_ti2v_5b", "wan")
        raise ModelLoadError(f"model_index.json names WanDMDPipeline (a FastWan DMD-distilled folder) with a "
                             f"{dim}-wide transformer; only the 1.3B FastWan (1536) has a preset here. Pass "
                             "pipeline.preset explicitly and sampling.sampler='dmd' with the checkpoint's "
                             "sampling.dmd_denoising_steps")
    if model_index.get("expand_timesteps") is True:  # Wan2.2 TI2V-5B (WanPipeline or WanImageToVideoPipeline)
        return get_preset("wan_ti2v_5b" if dim >= 3072 else "fastvideo-tiny-ti2v", "wan")
    if model_index.get("_class_name") == "WanImageToVideoPipeline" and model_index.get("boundary_ratio") is not None:
        # Wan2.2 I2V A14B: two experts, no CLIP (a smaller one is a test folder: the tiny I2V preset)
        return get_preset("wan_i2v_a14b" if dim >= 5120 else "fastvideo-tiny-i2v", "wan")
    if model_index.get("_class_name") == "WanImageToVideoPipeline":  # Wan2.1 I2V / FLF2V folders
        if transformer_config.get("pos_embed_seq_len") is not None:
            return get_preset("wan_flf2v_14b_720p", "wan")
        if dim >= 5120:
            return get_preset("wan_i2v_14b_480p", "wan")
        return get_preset("fastvideo-tiny-i2v", "wan")
    if dim >= 5120 and model_index.get("boundary_ratio") is not None:  # Wan2.2 A14B: two experts
        return get_preset("wan_t2v_a14b", "wan")
    if dim >= 5120:
        return get_preset("wan_t2v_14b", "wan")
    if dim >= 1536:
        return get_preset("wan_t2v_1_3b", "wan")
    return get_preset("fastvideo-tiny", "wan")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is missing: the model folder is not a diffusers Wan folder") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object")
    return data


#: Names a model path may give for a built-in model (synthesized by the engine on first use); each is also the
#: name of that model's preset. :data:`fastvideo.engine.builtin_model.BUILTIN_MODELS` has the same keys (tested).
BUILTIN_MODEL_NAMES: tuple[str, ...] = ("fastvideo-tiny", "fastvideo-tiny-i2v", "fastvideo-tiny-ti2v",
                                        "fastvideo-tiny-ltx2")


def infer_preset_for_path(model_path: str | Path) -> InferencePreset:
    """:func:`infer_preset_for_folder` of a local model folder (reads two JSON files); a built-in model's name
    (:data:`BUILTIN_MODEL_NAMES`, when no folder of that name exists) gives its preset, as
    ``VideoGenerator.from_pretrained`` loads that model for it."""
    if str(model_path) in BUILTIN_MODEL_NAMES and not Path(model_path).exists():
        return get_preset(str(model_path))
    root = Path(check_local_model_path(str(model_path))).expanduser()
    return infer_preset_for_folder(_read_json(root / "model_index.json"),
                                   _read_json(root / "transformer" / "config.json"))


def check_local_model_path(model_path: str) -> str:
    """``model_path`` when it names an existing local folder; a ModelLoadError otherwise. A string that looks
    like a Hugging Face repo id (``org/name``) gets how to download it: this engine never downloads."""
    path = Path(model_path).expanduser()
    if path.is_dir():
        return model_path
    parts = model_path.split("/")
    looks_like_repo = (len(parts) == 2 and all(parts) and not model_path.startswith((".", "~"))
                       and not path.exists())
    if looks_like_repo:
        local = f"./models/{parts[1]}"
        raise ModelLoadError(f"{model_path!r} looks like a Hugging Face repo id and is not a local folder; this engine "
                             f"loads local folders only and never downloads. Download it first, e.g. "
                             f"`huggingface-cli download {model_path} --local-dir {local}`, then pass that "
                             f"folder as the model path (--model-path {local}, or "
                             f"VideoGenerator.from_pretrained({local!r}))")
    if path.exists():
        raise ModelLoadError(f"model path {model_path} is a file; pass the diffusers model folder (the one holding "
                             "model_index.json)")
    raise ModelLoadError(f"model folder {model_path} does not exist; pass a local diffusers folder (the one holding "
                         "model_index.json)")


_DENOISE = PresetStageSpec("denoise", "denoising", "the denoising loop",
                           frozenset({"num_inference_steps", "guidance_scale"}))


def _wan(name: str, engine_name: str, description: str, *, width: int, height: int, shift: float,
         guidance_scale: float, workload: str = "t2v") -> InferencePreset:
    return InferencePreset(
        name=name, version=1, model_family="wan", description=description, workload_type=workload,
        stage_schemas=(_DENOISE,), aliases=(engine_name,), engine_name_override=engine_name,
        defaults={"height": height, "width": width, "num_frames": 81, "fps": 16, "guidance_scale": guidance_scale,
                  "num_inference_steps": 50, "negative_prompt": WAN_NEGATIVE_PROMPT},
        model_defaults={"flow_shift": shift, "max_frames": 161, "max_side": 1920, "text_length": 512})


for _preset in (
    _wan("wan_t2v_1_3b", "wan2.1-t2v-1.3b", "Wan2.1 T2V 1.3B, 480p", width=832, height=480, shift=3.0,
         guidance_scale=5.0),
    _wan("wan_t2v_14b", "wan2.1-t2v-14b", "Wan2.1 T2V 14B, 720p", width=1280, height=720, shift=5.0,
         guidance_scale=5.0),
    InferencePreset(
        name="fastvideo-tiny", version=1, model_family="wan", workload_type="t2v", stage_schemas=(_DENOISE,),
        description="built-in tiny random-weight Wan-architecture model (tests, demos, CI)",
        defaults={"height": 256, "width": 256, "num_frames": 9, "fps": 16, "guidance_scale": 5.0,
                  "num_inference_steps": 8, "negative_prompt": ""},
        model_defaults={"flow_shift": 3.0, "max_frames": 129, "max_side": 1024, "text_length": 64}),
    InferencePreset(
        name="fastvideo-tiny-i2v", version=1, model_family="wan", workload_type="i2v", stage_schemas=(_DENOISE,),
        description="built-in tiny random-weight Wan2.1 image-to-video model (tests, demos, CI)",
        defaults={"height": 64, "width": 64, "num_frames": 9, "fps": 16, "guidance_scale": 5.0,
                  "num_inference_steps": 8, "negative_prompt": ""},
        model_defaults={"flow_shift": 3.0, "max_frames": 129, "max_side": 1024, "text_length": 512}),
    _wan("wan_i2v_14b_480p", "wan2.1-i2v-14b-480p", "Wan2.1 I2V 14B, 480p (Wan2.1-I2V-14B-480P-Diffusers)",
         width=832, height=480, shift=3.0, guidance_scale=5.0, workload="i2v"),
    _wan("wan_i2v_14b_720p", "wan2.1-i2v-14b-720p", "Wan2.1 I2V 14B, 720p (Wan2.1-I2V-14B-720P-Diffusers)",
         width=1280, height=720, shift=5.0, guidance_scale=5.0, workload="i2v"),
    _wan("wan_flf2v_14b_720p", "wan2.1-flf2v-14b-720p", "Wan2.1 first-last-frame 14B, 720p "
         "(Wan2.1-FLF2V-14B-720P-diffusers)", width=1280, height=720, shift=16.0, guidance_scale=5.5,
         workload="flf2v"),
    InferencePreset(
        name="fastwan_t2v_1_3b", version=1, model_family="wan", workload_type="t2v", stage_schemas=(_DENOISE,),
        description="FastWan2.1 T2V 1.3B (FastVideo/FastWan2.1-T2V-1.3B-Diffusers): DMD-distilled, 3 steps "
                    "at timesteps 1000, 757, 522, no CFG",
        aliases=("fastwan2.1-t2v-1.3b",), engine_name_override="fastwan2.1-t2v-1.3b",
        defaults={"height": 448, "width": 832, "num_frames": 61, "fps": 16, "guidance_scale": 1.0,
                  "num_inference_steps": 3, "negative_prompt": ""},
        model_defaults={"flow_shift": 8.0, "sampler": "dmd", "dmd_denoising_steps": [1000, 757, 522],
                        "max_frames": 161, "max_side": 1920, "text_length": 512}),
    InferencePreset(
        name="fastwan_ti2v_5b", version=1, model_family="wan", workload_type="ti2v", stage_schemas=(_DENOISE,),
        description="FastWan2.2 TI2V 5B (FastVideo/FastWan2.2-TI2V-5B-FullAttn-Diffusers): DMD-distilled, 3 steps "
                    "at timesteps 1000, 757, 522, no CFG",
        aliases=("fastwan2.2-ti2v-5b",), engine_name_override="fastwan2.2-ti2v-5b",
        defaults={"height": 704, "width": 1280, "num_frames": 121, "fps": 24, "guidance_scale": 1.0,
                  "num_inference_steps": 3, "negative_prompt": ""},
        model_defaults={"flow_shift": 5.0, "sampler": "dmd", "dmd_denoising_steps": [1000, 757, 522],
                        "max_frames": 161, "max_side": 1920, "text_length": 512}),
    # Wan2.2 TI2V-5B: Wan's ti2v_5B config (sample_fps 24, sample_shift 5.0, sample_steps 50, sample_guide_scale
    # 5.0, frame_num 121) and the Wan-AI/Wan2.2-TI2V-5B-Diffusers card's 704x1280.
    InferencePreset(
        name="wan_ti2v_5b", version=1, model_family="wan", workload_type="ti2v", stage_schemas=(_DENOISE,),
        description="Wan2.2 TI2V 5B (text and optional first-frame image to video), 720p",
        aliases=("wan2.2-ti2v-5b",), engine_name_override="wan2.2-ti2v-5b",
        defaults={"height": 704, "width": 1280, "num_frames": 121, "fps": 24, "guidance_scale": 5.0,
                  "num_inference_steps": 50, "negative_prompt": WAN_NEGATIVE_PROMPT},
        model_defaults={"flow_shift": 5.0, "max_frames": 161, "max_side": 1920, "text_length": 512}),
    InferencePreset(
        name="fastvideo-tiny-ti2v", version=1, model_family="wan", workload_type="ti2v", stage_schemas=(_DENOISE,),
        description="built-in tiny random-weight Wan2.2 TI2V-architecture model (tests, demos, CI)",
        defaults={"height": 64, "width": 64, "num_frames": 9, "fps": 24, "guidance_scale": 5.0,
                  "num_inference_steps": 8, "negative_prompt": ""},
        model_defaults={"flow_shift": 5.0, "max_frames": 129, "max_side": 1024, "text_length": 64}),
    # FastVideo's Wan2_2_T2V_A14B_SamplingParam / _Config: 40 steps, guidance 4.0 (transformer) and 3.0
    # (transformer_2), flow_shift 12; boundary_ratio comes from the folder's model_index.json (0.875).
    InferencePreset(
        name="wan_t2v_a14b", version=1, model_family="wan", workload_type="t2v", stage_schemas=(_DENOISE,),
        description="Wan2.2 T2V A14B (two experts), 720p", aliases=("wan2.2-t2v-a14b",),
        engine_name_override="wan2.2-t2v-a14b",
        defaults={"height": 720, "width": 1280, "num_frames": 81, "fps": 16, "guidance_scale": 4.0,
                  "guidance_scale_2": 3.0, "num_inference_steps": 40, "negative_prompt": WAN_NEGATIVE_PROMPT},
        model_defaults={"flow_shift": 12.0, "max_frames": 161, "max_side": 1920, "text_length": 512}),
    # FastVideo's Wan2_2_I2V_A14B_SamplingParam / _Config and its wan_2_2_i2v_a14b preset: 1280x720, 16 fps, 40
    # steps, guidance 3.5 (transformer) and 3.5 (transformer_2), flow_shift 5.0 (Wan's i2v_A14B config: sample_shift
    # 5.0, frame_num 81); boundary_ratio comes from the folder's model_index.json (0.9 published).
    InferencePreset(
        name="wan_i2v_a14b", version=1, model_family="wan", workload_type="i2v", stage_schemas=(_DENOISE,),
        description="Wan2.2 I2V A14B (two experts, image-to-video without a CLIP encoder), 720p",
        aliases=("wan2.2-i2v-a14b", "wan_2_2_i2v_a14b"), engine_name_override="wan2.2-i2v-a14b",
        defaults={"height": 720, "width": 1280, "num_frames": 81, "fps": 16, "guidance_scale": 3.5,
                  "guidance_scale_2": 3.5, "num_inference_steps": 40, "negative_prompt": WAN_NEGATIVE_PROMPT},
        model_defaults={"flow_shift": 5.0, "max_frames": 161, "max_side": 1920, "text_length": 512}),
):
    register_preset(_preset)


# ----------------------------------------------------------------------------------------------------- LTX-2
# Sources of the numbers: FastVideo's ``fastvideo/pipelines/basic/ltx2/presets.py`` (names ``ltx2_base`` /
# ``ltx2_distilled``; base: 512x768, 121 frames, 24 fps, 40 steps, video CFG 3.0, audio CFG 7.0, modality 3.0,
# rescale 0.7, STG 1.0 (on block 29 there, 28 in diffusers 0.42, whose numbers our pipeline equals); distilled:
# 1024x1536, 8 steps, guidance 1.0, no negative prompt), diffusers 0.42
# ``LTX2Pipeline.__call__`` (the same guidance defaults, ``max_sequence_length`` 1024, ``frame_rate`` 24) and
# ``diffusers.pipelines.ltx2.utils.DISTILLED_SIGMA_VALUES`` (the distilled checkpoint's fixed 8 sigmas).

#: FastVideo's LTX-2 negative prompt (``_LTX2_NEGATIVE_PROMPT`` of its ltx2 presets).
LTX2_NEGATIVE_PROMPT = (
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, grainy "
    "texture, poor lighting, flickering, motion blur, distorted proportions, unnatural skin tones, deformed facial "
    "features, asymmetrical face, missing facial features, extra limbs, disfigured hands, wrong hand count, "
    "artifacts around text, inconsistent perspective, camera shake, incorrect depth of field, background too sharp, "
    "background clutter, distracting reflections, harsh shadows, inconsistent lighting direction, color banding, "
    "cartoonish rendering, 3D CGI look, unrealistic materials, uncanny valley effect, incorrect ethnicity, wrong "
    "gender, exaggerated expressions, wrong gaze direction, mismatched lip sync, silent or muted audio, distorted "
    "voice, robotic voice, echo, background noise, off-sync audio, incorrect dialogue, added dialogue, repetitive "
    "speech, jittery movement, awkward pauses, incorrect timing, unnatural transitions, inconsistent framing, tilted "
    "camera, flat lighting, inconsistent tone, cinematic oversaturation, stylized filters, or AI artifacts."
)

#: The distilled LTX-2 checkpoint's fixed schedule (diffusers ``DISTILLED_SIGMA_VALUES``; 8 steps).
LTX2_DISTILLED_SIGMAS: tuple[float, ...] = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)

_LTX2_FULL_GUIDANCE = {  # LTX2Pipeline.__call__ defaults = FastVideo ltx2_base's ltx2_* keys
    "guidance_scale": 3.0, "stg_scale": 1.0, "modality_scale": 3.0, "guidance_rescale": 0.7,
    "audio_guidance_scale": 7.0, "audio_stg_scale": 1.0, "audio_modality_scale": 3.0, "audio_guidance_rescale": 0.7,
    "stg_blocks": [28], "use_cross_timestep": True,  # diffusers 0.42's defaults (FastVideo's ltx2_base: block 29)
}
_LTX2_NO_GUIDANCE = {  # distilled: one DiT call per step (guidance 1, no STG / modality isolation / rescale)
    "guidance_scale": 1.0, "stg_scale": 0.0, "modality_scale": 1.0, "guidance_rescale": 0.0,
    "audio_guidance_scale": 1.0, "audio_stg_scale": 0.0, "audio_modality_scale": 1.0, "audio_guidance_rescale": 0.0,
    "stg_blocks": [], "use_cross_timestep": True,
}


def _ltx2(name: str, engine_name: str, description: str, *, width: int, height: int, steps: int, guidance: dict[
        str, Any], negative_prompt: str, num_frames: int = 121, sigmas: tuple[float, ...] | None = None,
          text_length: int = 1024) -> InferencePreset:
    model_defaults: dict[str, Any] = {"ltx2_guidance": dict(guidance), "text_length": text_length,
                                      "max_frames": 257, "max_side": 2048}
    if sigmas is not None:
        model_defaults["sigmas"] = list(sigmas)
    return InferencePreset(
        name=name, version=1, model_family="ltx2", description=description, workload_type="t2v",
        stage_schemas=(_DENOISE,), aliases=(engine_name,) if engine_name != name else (),
        engine_name_override=engine_name if engine_name != name else "",
        defaults={"height": height, "width": width, "num_frames": num_frames, "fps": 24,
                  "guidance_scale": float(guidance["guidance_scale"]), "num_inference_steps": steps,
                  "negative_prompt": negative_prompt},
        model_defaults=model_defaults)


for _preset in (
    _ltx2("ltx2_base", "ltx-2", "LTX-2 19B text-to-video+audio (Lightricks/LTX-2, diffusers LTX2Pipeline), "
          "512x768, 40 steps with CFG + STG + modality guidance", width=768, height=512, steps=40,
          guidance=_LTX2_FULL_GUIDANCE, negative_prompt=LTX2_NEGATIVE_PROMPT),
    _ltx2("ltx2_distilled", "ltx-2-distilled", "LTX-2 19B distilled text-to-video+audio: 8 steps at fixed sigmas, "
          "guidance 1, 1024x1536", width=1536, height=1024, steps=len(LTX2_DISTILLED_SIGMAS),
          guidance=_LTX2_NO_GUIDANCE, negative_prompt="", sigmas=LTX2_DISTILLED_SIGMAS),
    # The built-in tiny model (fastvideo.engine.builtin_model): sizes its tiny VAE takes (x2 in space and time).
    _ltx2("fastvideo-tiny-ltx2", "fastvideo-tiny-ltx2", "built-in tiny random-weight LTX-2-architecture model "
          "(video + audio; tests, demos, CI)", width=32, height=32, num_frames=9, steps=4,
          guidance={**_LTX2_FULL_GUIDANCE, "stg_blocks": [0]}, negative_prompt="", text_length=32),
):
    register_preset(_preset)
