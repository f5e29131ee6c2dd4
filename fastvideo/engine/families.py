"""The model families this engine runs, and the diffusers classes each one accepts.

Contract: :data:`FAMILIES` is the one registry of what a model folder may declare. A
:class:`ModelFamily` lists the pipeline classes (``model_index.json``'s ``_class_name``), for every
component the classes it accepts (``model_index.json``'s ``[library, class]`` entries, a component
config's ``_class_name``, a text encoder's ``architectures``, a tokenizer's ``tokenizer_class``) and
the ``model_index.json`` options that must keep their T2V value. ``wan2.2-t2v-a14b`` (``two_experts``) is a
``WanPipeline`` folder with ``transformer_2/`` and a numeric ``boundary_ratio``; a single-expert family refuses
both. ``wan2.2-ti2v-5b`` (``per_token_timesteps``) is a ``WanPipeline`` / ``WanImageToVideoPipeline`` folder
that must set ``expand_timesteps: true`` (and no image encoder); every other family refuses that option.
:func:`match_family` returns the
family a folder belongs to, or raises :class:`ModelLoadError` naming the file, the field, the class
found and the classes supported, so a Flux, Wan2.2 or other pipeline is refused before any weight is
read instead of being run as Wan2.1; a pipeline in :data:`NOT_SERVED` (model code in the engine, not served by the
runtime yet; empty today) is refused with the reason given there. ``image_conditioned`` says whether the
family's transformer must be an image-to-video one (``image_dim`` set); the pipeline refuses a transformer
config that disagrees. ``wan2.2-i2v-a14b`` (``two_experts`` and ``latent_image_condition``) is a
``WanImageToVideoPipeline`` folder with ``transformer_2/``, a numeric ``boundary_ratio`` and no CLIP
``image_encoder`` / ``image_processor``: its image enters only through the condition latents concatenated to the
noise (a transformer without ``image_dim``). :func:`family_of_folder` is :func:`match_family` on a checked model folder.
``ltx2`` (``LTX2Pipeline``: video + audio) is a family like Wan's, with its own runtime binding.
Runtime binding: ``ModelFamily.runtime`` names how the family's pipeline loads
(:data:`fastvideo.engine.models.registry.PIPELINE_LOADERS`) and which batch executor runs it (the runtime's
``fastvideo.runtime.worker.EXECUTORS``), ``preset_family`` which presets its folders take; ``continuation`` /
``lora`` say whether the family serves continued
videos / LoRA adapters, and ``unsupported_config`` lists the generator config fields it refuses (by dotted path,
with why). The generator, worker and loaders choose by these lookups, never by a family or class name.
Decisions are membership tests in the registry, never branches on class names. A declaration that is
absent is not checked (hand-made folders may omit them); one that is present must be listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastvideo.api.errors import ModelLoadError


@dataclass(frozen=True)
class ModelFamily:
    """One pipeline this engine implements and the classes a folder of it may declare."""

    name: str
    description: str
    #: ``model_index.json`` ``_class_name`` values.
    pipelines: tuple[str, ...]
    #: Component sub-folder -> accepted class names (model_index entry, config ``_class_name`` /
    #: ``architectures`` / ``tokenizer_class``).
    components: Mapping[str, tuple[str, ...]]
    #: ``model_index.json`` keys whose value must be one of these (another value selects a variant of
    #: the pipeline this engine does not run, e.g. Wan2.2's two-expert ``boundary_ratio``).
    index_options: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    #: Whether the transformer must be image-conditioned (``image_dim`` set: Wan2.1 I2V) or must not be.
    image_conditioned: bool = False
    #: Two experts (Wan2.2 A14B): ``transformer_2/`` loads too and ``model_index.json``'s ``boundary_ratio``
    #: must be a number in (0, 1] (the switch point; see :mod:`fastvideo.engine.models.wan.experts`).
    two_experts: bool = False
    #: Wan2.2 I2V A14B: image-to-video through the condition latents alone (mask + VAE latents of the image
    #: concatenated to the noise: the DiT's ``in_channels`` = 2 * ``z_dim`` + 4), no CLIP image tokens; the
    #: transformer must not be ``image_conditioned`` (no ``image_dim``); see
    #: :mod:`fastvideo.engine.models.wan.image_conditioning`.
    latent_image_condition: bool = False
    #: Wan2.2 TI2V-5B: ``model_index.json`` must set ``expand_timesteps: true``; the DiT takes per-token
    #: timesteps and an optional first-frame image conditions the video (:mod:`fastvideo.engine.models.wan.ti2v`).
    per_token_timesteps: bool = False
    #: The family's runtime binding: the key of :data:`fastvideo.engine.models.registry.PIPELINE_LOADERS` (how its
    #: pipeline loads) and of the runtime's executor registry (``fastvideo.runtime.worker.EXECUTORS``: which batch
    #: executor runs its work items). Families sharing a binding share the loader and the executor.
    runtime: str = "wan"
    #: The ``model_family`` of the presets (:mod:`fastvideo.api.presets`) a folder of this family takes.
    preset_family: str = "wan"
    #: Whether the family's videos can be continued from a returned state (the ``continuation`` branch).
    continuation: bool = True
    #: Whether LoRA adapters can be merged into the family's DiT.
    lora: bool = True
    #: Generator config fields (dotted paths) the family cannot honour yet -> why / what to do instead; a value
    #: other than ``GeneratorConfig()``'s default is a ConfigError naming the field, raised before any weight is read.
    unsupported_config: Mapping[str, str] = field(default_factory=dict)


WAN_T2V = ModelFamily(
    name="wan2.1-t2v",
    description="Wan2.1 text-to-video (diffusers WanPipeline)",
    # WanDMDPipeline: FastVideo's FastWan (DMD-distilled) folders, the same components sampled in a few steps.
    pipelines=("WanPipeline", "WanDMDPipeline"),
    components={
        "transformer": ("WanTransformer3DModel",),
        "vae": ("AutoencoderKLWan",),
        "text_encoder": ("UMT5EncoderModel",),
        "tokenizer": ("T5TokenizerFast", "T5Tokenizer", "PreTrainedTokenizerFast", "TokenizersBackend"),
        "scheduler": ("UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler"),
        # Wan2.2's second expert: present in newer diffusers' WanPipeline folders, always null for Wan2.1.
        "transformer_2": (),
    },
    index_options={"boundary_ratio": (None,), "expand_timesteps": (None, False)},
)

WAN_I2V = ModelFamily(
    name="wan2.1-i2v",
    description="Wan2.1 image-to-video (diffusers WanImageToVideoPipeline)",
    pipelines=("WanImageToVideoPipeline",),
    components={
        **WAN_T2V.components,
        "image_encoder": ("CLIPVisionModel",),
        "image_processor": ("CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPImageProcessorPil"),
    },
    index_options={"boundary_ratio": (None,), "expand_timesteps": (None, False)},
    image_conditioned=True,
)

WAN22_T2V_A14B = ModelFamily(
    name="wan2.2-t2v-a14b",
    description="Wan2.2 text-to-video with two experts (diffusers WanPipeline with transformer_2 and boundary_ratio)",
    pipelines=("WanPipeline",),
    components={**WAN_T2V.components, "transformer_2": ("WanTransformer3DModel",)},
    # boundary_ratio: checked as a number by _check_index (two_experts); TI2V-5B's expand_timesteps stays refused.
    index_options={"expand_timesteps": (None, False)},
    two_experts=True,
)

_LTX2_LATER = "is not supported for LTX-2 yet"

LTX2_T2AV = ModelFamily(
    name="ltx2",
    description="LTX-2 text-to-video+audio (diffusers LTX2Pipeline)",
    pipelines=("LTX2Pipeline",),
    components={  # LTX2Pipeline.__init__'s components, as diffusers 0.42 declares them
        "transformer": ("LTX2VideoTransformer3DModel",),
        "vae": ("AutoencoderKLLTX2Video",),
        "audio_vae": ("AutoencoderKLLTX2Audio",),
        "vocoder": ("LTX2Vocoder", "LTX2VocoderWithBWE"),
        "connectors": ("LTX2TextConnectors",),
        "text_encoder": ("Gemma3ForConditionalGeneration",),
        "tokenizer": ("GemmaTokenizer", "GemmaTokenizerFast", "PreTrainedTokenizerFast", "TokenizersBackend"),
        "scheduler": ("FlowMatchEulerDiscreteScheduler",),
        # prompt enhancement only (never used here): accepted when present, not loaded
        "processor": ("Gemma3Processor",),
        "prompt_enhancer": (),
        "duration_head": (),
    },
    runtime="ltx2",
    preset_family="ltx2",
    unsupported_config={
        "engine.quantization": f"DiT quantization {_LTX2_LATER}; drop engine.quantization",
        "engine.ops_backend": f"fused op backends {_LTX2_LATER}; drop engine.ops_backend",
        "engine.offload.dit": "offloads one of two experts (Wan2.2 A14B) and LTX-2 has one DiT; turn it off "
                              "(engine.offload.dit_layerwise keeps the DiT's blocks on the CPU)",
        "pipeline.experimental": f"experimental pipeline options (vae_dtype, ...) {_LTX2_LATER}: every LTX-2 "
                                 "component runs in engine.dtype; drop them",
        "pipeline.variant": f"weight variants {_LTX2_LATER}; drop pipeline.variant (plain *.safetensors load)",
        **{f"pipeline.components.{name}_path": f"component overrides {_LTX2_LATER}; put the component in the "
                                               "model folder" for name in ("transformer", "vae", "text_encoder",
                                                                          "tokenizer")},
    },
)

WAN22_TI2V_5B = ModelFamily(
    name="wan2.2-ti2v-5b",
    description="Wan2.2 text-image-to-video 5B (diffusers WanPipeline / WanImageToVideoPipeline with "
                "expand_timesteps)",
    pipelines=("WanPipeline", "WanImageToVideoPipeline", "WanDMDPipeline"),
    # No CLIP: the image enters as the first latent frame (image_encoder / image_processor must be null).
    components={**WAN_T2V.components, "image_encoder": (), "image_processor": ()},
    index_options={"boundary_ratio": (None,), "expand_timesteps": (True,)},
    per_token_timesteps=True,
    continuation=False,  # the first frame is the image's (or noise's), not a previous segment's tail
)

WAN22_I2V_A14B = ModelFamily(
    name="wan2.2-i2v-a14b",
    description="Wan2.2 image-to-video with two experts (diffusers WanImageToVideoPipeline with transformer_2 and "
                "boundary_ratio, no image encoder)",
    pipelines=("WanImageToVideoPipeline",),
    # No CLIP: image_encoder / image_processor must be null (the image enters as condition latents only).
    components={**WAN22_T2V_A14B.components, "image_encoder": (), "image_processor": ()},
    index_options={"expand_timesteps": (None, False)},
    two_experts=True,
    latent_image_condition=True,
    continuation=False,  # an image-to-video model: its first frame is the image, not a previous segment's tail
    unsupported_config={
        "engine.artifacts_path": "compiled artifacts are not exported or checked for Wan2.2 I2V A14B yet (no parity "
                                 "test of its built experts); drop engine.artifacts_path (both experts run eagerly)",
    },
)

#: Every family the engine runs, by name.
FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (WAN_T2V, WAN_I2V, WAN22_T2V_A14B,
                                                                       WAN22_TI2V_5B, WAN22_I2V_A14B, LTX2_T2AV)}

#: Where each component declares its class: (file in the component folder, key).
_CONFIG_CLASS_KEYS: dict[str, tuple[str, str]] = {
    "transformer": ("config.json", "_class_name"),
    "transformer_2": ("config.json", "_class_name"),
    "vae": ("config.json", "_class_name"),
    "text_encoder": ("config.json", "architectures"),
    "tokenizer": ("tokenizer_config.json", "tokenizer_class"),
    "scheduler": ("scheduler_config.json", "_class_name"),
    "image_encoder": ("config.json", "architectures"),
    "image_processor": ("preprocessor_config.json", "image_processor_type"),
    "audio_vae": ("config.json", "_class_name"),
    "vocoder": ("config.json", "_class_name"),
    "connectors": ("config.json", "_class_name"),
}


def declares_two_experts(model_index: Mapping[str, Any]) -> bool:
    """Whether ``model_index.json`` declares a second expert (a non-null ``transformer_2``: Wan2.2 A14B)."""
    entry = model_index.get("transformer_2")
    return isinstance(entry, (list, tuple)) and bool(entry) and entry[-1] is not None


def _supported(family: ModelFamily, component: str) -> str:
    names = family.components.get(component, ())
    return ", ".join(names) if names else "nothing (leave it null)"


def _families_text() -> str:
    return "; ".join(f"{f.description}: {', '.join(f.pipelines)}" for f in FAMILIES.values())


def _check_index(family: ModelFamily, index: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    if family.two_experts:
        ratio = index.get("boundary_ratio")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
            problems.append(f"{where} sets boundary_ratio={ratio!r}; {family.description} needs a number in (0, 1]")
        if not (isinstance(index.get("transformer_2"), (list, tuple)) and index["transformer_2"][-1] is not None):
            problems.append(f"{where} has no transformer_2 component; {family.description} needs both experts")
    if family.per_token_timesteps and index.get("expand_timesteps") is not True:
        problems.append(f"{where} does not set expand_timesteps=true; {family.description} needs it")
    for key, value in index.items():
        if key.startswith("_") or (family.two_experts and key == "boundary_ratio"):
            continue
        if key in family.index_options:
            if value not in family.index_options[key]:
                problems.append(f"{where} sets {key}={value!r}, which selects a pipeline variant this engine does "
                                f"not run (supported: {list(family.index_options[key])})")
            continue
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            continue  # a plain pipeline option, not a component
        declared = value[1]
        if declared is None:
            continue
        if key not in family.components:
            problems.append(f"{where} declares a {key!r} component ({declared}), which {family.description} "
                            "does not use")
        elif declared not in family.components[key]:
            problems.append(f"{where}: {key} is {declared}; {family.description} supports {_supported(family, key)}")
    return problems


def _check_component_configs(family: ModelFamily, configs: Mapping[str, Mapping[str, Any]],
                             paths: Mapping[str, str]) -> list[str]:
    problems = []
    for component, (file, key) in _CONFIG_CLASS_KEYS.items():
        config = configs.get(component)
        if config is None or config.get(key) is None:
            continue
        value = config[key]
        declared = value if isinstance(value, list) else [value]
        for name in declared:
            if name not in family.components.get(component, ()):
                problems.append(f"{paths.get(component, component)}/{file}: {key} is {name!r}; "
                                f"{family.description} supports {_supported(family, component)}")
    return problems


#: Pipelines whose model code exists in the engine but that the runtime core does not serve yet -> why, and what
#: runs them instead (:func:`match_family` refuses them with that text rather than as unknown pipelines).
NOT_SERVED: Mapping[str, str] = {}


def match_family(model_index: Mapping[str, Any], configs: Mapping[str, Mapping[str, Any]],
                 paths: Mapping[str, str] | None = None, *, index_path: str = "model_index.json") -> ModelFamily:
    """The family a folder belongs to: ``model_index`` is its ``model_index.json``, ``configs`` maps a
    component to its parsed config file (see ``_CONFIG_CLASS_KEYS``; absent ones are skipped), ``paths``
    a component to the folder shown in messages. Raises ModelLoadError listing every mismatch."""
    paths = paths or {}
    pipeline = model_index.get("_class_name")
    if pipeline is None:
        candidates = list(FAMILIES.values())
    else:
        candidates = [f for f in FAMILIES.values() if pipeline in f.pipelines]
        if not candidates and pipeline in NOT_SERVED:
            raise ModelLoadError(f"{index_path}: _class_name is {pipeline!r}: {NOT_SERVED[pipeline]}")
        if not candidates:
            raise ModelLoadError(f"{index_path}: _class_name is {pipeline!r}, a pipeline this engine does not run; "
                                 f"supported pipelines: {_families_text()}. Use a folder of a supported pipeline")
    failures: list[str] = []
    for family in candidates:
        problems = _check_index(family, model_index, index_path) + _check_component_configs(family, configs, paths)
        if not problems:
            return family
        failures.extend(problems)
    raise ModelLoadError("the model folder does not hold a pipeline this engine runs: " + "; ".join(failures)
                         + ". Use a folder of a supported pipeline")


def family_of_folder(folder: Any) -> ModelFamily:
    """The family of a checked :class:`~fastvideo.engine.loader.ModelFolder` (its ``model_index.json`` and the
    component configs that declare a class, read through the folder's overrides); ModelLoadError if none."""
    configs: dict[str, Mapping[str, Any]] = {}
    paths: dict[str, str] = {}
    for component, (file, _key) in _CONFIG_CLASS_KEYS.items():
        path = folder.component(component) / file
        if path.is_file():
            configs[component] = folder.read_config(component, file)
            paths[component] = str(folder.component(component))
    return match_family(folder.model_index, configs, paths, index_path=str(folder.root / "model_index.json"))
