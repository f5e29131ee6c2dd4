"""LTX-2 as the runtime core serves it: a loaded pipeline plus its preset, and GenerationRequest -> LTX2Request.

Contract:
- :func:`load_served_ltx2` is the ``ltx2`` binding's loader (:data:`fastvideo.engine.models.registry.PIPELINE_LOADERS`):
  it loads a checked ``LTX2Pipeline`` folder with :func:`~.pipeline.load_ltx2_pipeline` (every component in
  ``dtype`` on ``device``, the text encoder reading the preset's ``text_length`` tokens) and returns an
  :class:`LTX2ServedPipeline`. The preset is ``preset_name`` (a ConfigError at ``pipeline.preset`` unless it is an
  LTX-2 preset), else the folder's ``_fastvideo_preset`` tag, else ``ltx2_base``. Load options LTX-2 cannot honour
  are refused by name (:class:`~fastvideo.api.ConfigError`; the generator refuses the family's
  ``unsupported_config`` first, so these only guard direct callers).
- :class:`LTX2ServedPipeline` exposes what the runtime reads of any served pipeline (``preset``: the engine's
  :class:`~fastvideo.engine.presets.ModelPreset` view of the LTX-2 preset, whose unset-field defaults the request
  resolution uses; ``device``, ``dtype``, ``shift_source``, ``sampler_config``, ``close()``; ``dit``: the DiT
  LoRA adapters merge into), the step-wise
  :class:`~.pipeline.LTX2Components` (``components``), the preset's :class:`~.pipeline.LTX2Guidance` and fixed
  ``sigmas`` (the distilled preset's), and ``sample_rate`` (the vocoder's).
- :meth:`LTX2ServedPipeline.check_resolved` refuses sizes the model cannot make, naming the field (RequestError):
  ``sampling.width`` / ``sampling.height`` must be multiples of 32 and of the VAE's spatial ratio times the DiT
  patch; ``sampling.num_frames`` must be ``k * temporal_ratio + 1`` (decoded exactly, never trimmed);
  ``sampling.num_inference_steps`` must equal the number of a preset's fixed sigmas (distilled), and be at least 2
  when the scheduler's ``shift_terminal`` stretch is on (one step has no stretch to make).
- :meth:`LTX2ServedPipeline.to_request` maps a resolved request onto :class:`~.pipeline.LTX2Request`: prompt,
  negative prompt (None: the preset's), width, height, num_frames, fps, steps, seed, the preset's guidance with the
  request's ``guidance_scale`` as the video CFG scale (audio scales stay the preset's), the preset's sigmas, and
  the first-frame image (``inputs.image_path`` or ``inputs.pil_image``, opened as RGB by the same
  :func:`~fastvideo.engine.models.wan.image_conditioning.load_image` the Wan image models use: an unreadable one
  is a RequestError naming the field) as an ``(H, W, 3)`` uint8 ``LTX2Request.image`` (image-to-video; the engine
  resizes it to the video size, ``image_crf`` None: diffusers' CRF 33).
- Offload (the Wan semantics of :class:`~fastvideo.api.OffloadConfig`, on a CUDA device only: on the CPU every
  component already lives there, so the options are honoured as they are and nothing moves). ``offload_text_encoder``
  keeps the prompt encoder, Gemma-3 and the text connectors (:data:`OFFLOAD_GROUPS`), on the CPU; it visits the
  device for each :meth:`~.pipeline.LTX2Components.prepare`. ``offload_vae`` does the same for the decoders, the
  video VAE, audio VAE and vocoder, during each ``decode`` and during a ``prepare`` that encodes frames (an image,
  frame conditions or a continuation). Both are :class:`~fastvideo.engine.offload.ComponentOffloader` s (pinned CPU
  copies when ``pin_cpu_memory``) held by :class:`OffloadableLTX2Components` (``components.offloaders``, also
  ``LTX2ServedPipeline.offloaders``), whose ``prepare`` / ``decode`` run the base stages inside them: the
  pipeline's own code is unchanged. ``offload_dit_layerwise`` streams the DiT's ``transformer_blocks`` through a
  device window each forward (:func:`fastvideo.engine.layer_offload.offload_layerwise`; the embeddings, time
  modulations and heads stay resident), held in ``layerwise_offloaders``. With any of them the folder loads on the
  CPU and only what stays resident moves to the device, so offloaded weights never occupy it at load; the attention
  backend is still chosen for ``device``, before any weight is read. ``offload_experts`` (``engine.offload.dit``)
  stays refused: LTX-2 has one DiT, and Wan's ``dit`` offload keeps one of two experts resident, which has no
  one-DiT meaning (Wan's one-expert models refuse it too); ``dit_layerwise`` is the DiT offload for LTX-2.
- ``dit`` is the DiT the runtime compiles (``engine.compile``: ``dit.compile(...)``, as for Wan's ``dit``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastvideo.api import presets as api_presets
from fastvideo.api import ConfigError, RequestError
from fastvideo.engine.layer_offload import LayerwiseOffloader, TransferBackend, offload_layerwise
from fastvideo.engine.models.ltx2.loading import read_ltx2_config
from fastvideo.engine.models.ltx2.pipeline import (LTX2Components, LTX2Guidance, LTX2Output, LTX2Request, LTX2State,
                                                   load_ltx2_pipeline)
from fastvideo.engine.models.ltx2.text_encoding import LTX2TextEncoder
from fastvideo.engine.offload import ComponentOffloader, on_device_of
from fastvideo.engine.models.wan.image_conditioning import load_image
from fastvideo.engine.presets import ModelPreset
from fastvideo.engine.sampler import SamplerConfig
from fastvideo.kernels.registry import AttentionBackend, AttentionBackendError, select_attention_backend

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_LTX2_PRESET", "LTX2ServedPipeline", "OFFLOAD_GROUPS", "OffloadableLTX2Components",
           "load_served_ltx2", "ltx2_model_preset", "offload_group", "stage_offload"]

#: The preset of an LTX-2 folder that names none (the published base checkpoint's).
DEFAULT_LTX2_PRESET = "ltx2_base"

#: Load options LTX-2 cannot honour yet -> the config field a set value came from.
_REFUSED_OPTIONS = {"ops_backend": "engine.ops_backend", "transformer_quant": "engine.quantization",
                    "offload_experts": "engine.offload.dit"}

#: Offload groups: the ``engine.offload`` field -> the :class:`~.pipeline.LTX2Components` members that visit the
#: device together (the text encoder's Gemma model with the connectors that finish the prompt encoding; the video
#: VAE with the audio decoders that share ``decode``).
OFFLOAD_GROUPS: dict[str, tuple[str, ...]] = {"text_encoder": ("text_encoder", "connectors"),
                                              "vae": ("vae", "audio_vae", "vocoder")}


def offload_group(components: LTX2Components, name: str) -> torch.nn.ModuleList:
    """The modules of offload group ``name`` (:data:`OFFLOAD_GROUPS`) of ``components``, as one module."""
    if name not in OFFLOAD_GROUPS:
        raise ValueError(f"unknown LTX-2 offload group {name!r}; choose one of {sorted(OFFLOAD_GROUPS)}")
    members = [getattr(components, attr) for attr in OFFLOAD_GROUPS[name]]
    return torch.nn.ModuleList([m.model if isinstance(m, LTX2TextEncoder) else m for m in members])


@dataclass
class OffloadableLTX2Components(LTX2Components):
    """:class:`~.pipeline.LTX2Components` whose stages run inside their groups' offloaders (module contract);
    without offloaders (the default) it is the base pipeline exactly."""

    #: Offloaders by group name (:data:`OFFLOAD_GROUPS`); empty: every component stays where it is.
    offloaders: dict[str, ComponentOffloader] = field(default_factory=dict)

    @classmethod
    def of(cls, components: LTX2Components, **changes: Any) -> "OffloadableLTX2Components":
        """``components`` (the same modules, not copies) with ``changes`` to its fields."""
        if isinstance(components, cls) and not changes:
            return components
        values = {f.name: getattr(components, f.name) for f in fields(components) if f.init}
        return cls(**{**values, **changes})

    def on_device(self, name: str) -> contextlib.AbstractContextManager:
        """Group ``name``'s weights on the device for the block (nothing to do when it is not offloaded)."""
        return on_device_of(self.offloaders, name)

    def prepare(self, req: LTX2Request) -> LTX2State:
        """The base ``prepare`` with the prompt encoder on the device, and the decoders when it encodes frames."""
        encodes_frames = req.image is not None or bool(req.conditions) or req.continuation is not None
        with self.on_device("text_encoder"), (self.on_device("vae") if encodes_frames else contextlib.nullcontext()):
            return super().prepare(req)

    def decode(self, st: LTX2State) -> LTX2Output:
        """The base ``decode`` with the decoders on the device."""
        with self.on_device("vae"):
            return super().decode(st)


def ltx2_model_preset(name: str) -> tuple[ModelPreset, LTX2Guidance, tuple[float, ...] | None]:
    """The engine preset, guidance and fixed sigmas of the LTX-2 preset ``name`` (ConfigError otherwise)."""
    preset = api_presets.get_preset(name)  # unknown names: ConfigError listing the registered ones
    if preset.model_family != "ltx2":
        raise ConfigError("pipeline.preset", f"preset {preset.name!r} is a {preset.model_family} preset; an LTX-2 "
                                             "folder takes an LTX-2 preset (ltx2_base, ltx2_distilled)")
    if preset.refusal:
        raise ConfigError("pipeline.preset", f"preset {preset.name!r} cannot run on this engine: {preset.refusal}")
    d, m = preset.defaults, preset.model_defaults
    guidance_values = dict(m["ltx2_guidance"])
    blocks = guidance_values.get("stg_blocks")
    guidance_values["stg_blocks"] = None if blocks is None else tuple(blocks)
    engine = ModelPreset(preset.engine_name, width=d["width"], height=d["height"], num_frames=d["num_frames"],
                         fps=d["fps"], num_inference_steps=d["num_inference_steps"],
                         guidance_scale=float(d["guidance_scale"]), shift=1.0,
                         negative_prompt=d.get("negative_prompt") or "", max_frames=m.get("max_frames", 257),
                         max_side=m.get("max_side", 2048), text_length=m.get("text_length", 1024),
                         description=preset.description)
    sigmas = m.get("sigmas")
    return engine, LTX2Guidance(**guidance_values), None if sigmas is None else tuple(float(s) for s in sigmas)


@dataclass
class LTX2ServedPipeline:
    """A loaded LTX-2 pipeline with its preset (module contract)."""

    components: LTX2Components
    preset: ModelPreset
    guidance: LTX2Guidance
    sigmas: tuple[float, ...] | None
    dtype: torch.dtype
    #: The schedule's shift comes from the folder's scheduler config (dynamic shift), never from the request.
    shift_source: str = "model_folder"
    sampler_config: SamplerConfig = field(default_factory=lambda: SamplerConfig(kind="euler"))
    #: Read by the runtime's LoRA / expert checks: LTX-2 has one DiT, unquantized.
    dit_2: Any = None
    quantization: Any = None
    #: Layerwise DiT offloaders (``offload_dit_layerwise``); empty: the DiT's blocks stay on ``device``.
    layerwise_offloaders: list[LayerwiseOffloader] = field(default_factory=list)

    @property
    def offloaders(self) -> dict[str, ComponentOffloader]:
        """The components' offloaders by group name (:data:`OFFLOAD_GROUPS`); empty when nothing is offloaded."""
        return self.components.offloaders if isinstance(self.components, OffloadableLTX2Components) else {}

    def offload(self, name: str, *, pin_memory: bool = True) -> ComponentOffloader:
        """Keep offload group ``name`` (``"text_encoder"`` or ``"vae"``) on the CPU between uses (module contract)."""
        group = offload_group(self.components, name)
        self.components = OffloadableLTX2Components.of(self.components)
        offloader = ComponentOffloader(group, self.device, name=name, pin_memory=pin_memory)
        self.components.offloaders[name] = offloader
        logger.info("LTX-2 %s offloaded to the CPU between uses (pinned: %s)", name, offloader.pinned)
        return offloader

    def offload_dit_layerwise(self, *, pin_memory: bool = True, window: int = 2,
                              backend: TransferBackend | None = None) -> LayerwiseOffloader:
        """Stream the DiT's blocks through a ``window``-block device window each forward (module contract);
        ``backend`` None: CUDA streams (:func:`~fastvideo.engine.layer_offload.default_backend`)."""
        offloader = offload_layerwise(self.components.transformer, self.device, blocks_attr="transformer_blocks",
                                      window=window, pin_memory=pin_memory, backend=backend, name="LTX-2 DiT")
        self.layerwise_offloaders.append(offloader)
        return offloader

    @property
    def dit(self) -> torch.nn.Module:
        """The DiT (``components.transformer``): what the runtime's LoRA adapters merge into, as Wan's ``dit``."""
        return self.components.transformer

    @property
    def device(self) -> torch.device:
        return self.components.device

    @property
    def sample_rate(self) -> int:
        return self.components.sample_rate

    def check_resolved(self, width: int, height: int, num_frames: int, steps: int) -> None:
        """Refuse a size or step count this model cannot make, naming the field (module contract)."""
        c = self.components
        if self.sigmas is not None and steps != len(self.sigmas):
            raise RequestError("sampling.num_inference_steps", f"{steps} steps: preset {self.preset.name!r} samples "
                                                               f"at {len(self.sigmas)} fixed sigmas; use "
                                                               f"{len(self.sigmas)} or drop it")
        if self.sigmas is None and c.schedule.shift_terminal and steps < 2:
            raise RequestError("sampling.num_inference_steps", f"{steps} step: this model's schedule (shift_terminal "
                                                               f"{c.schedule.shift_terminal}) needs at least 2 steps")
        ratio = c.vae.spatial_compression_ratio * c.transformer.config.patch_size
        multiple = ratio * 32 // _gcd(ratio, 32)
        for name, value in (("sampling.width", width), ("sampling.height", height)):
            if value % multiple:
                lower = value - value % multiple
                raise RequestError(name, f"{value} is not a multiple of {multiple} (LTX-2 needs multiples of 32 and "
                                         f"of its VAE's {c.vae.spatial_compression_ratio}x downsampling times the "
                                         f"DiT's patch); use {max(lower, multiple)} or {lower + multiple}")
        temporal = c.vae.temporal_compression_ratio
        if (num_frames - 1) % temporal:
            lower = num_frames - (num_frames - 1) % temporal
            raise RequestError("sampling.num_frames", f"{num_frames} frames: LTX-2 makes k*{temporal}+1 frames "
                                                      f"(its VAE's {temporal}x temporal compression); use {lower} or "
                                                      f"{lower + temporal}")

    def to_request(self, request: Any, resolved: Any) -> LTX2Request:
        """The :class:`LTX2Request` of a resolved GenerationRequest (module contract)."""
        negative = request.negative_prompt if request.negative_prompt is not None else self.preset.negative_prompt
        inputs = request.inputs
        image = None
        if inputs.image_path is not None or inputs.pil_image is not None:
            name = "inputs.image_path" if inputs.image_path is not None else "inputs.pil_image"
            value = inputs.image_path if inputs.image_path is not None else inputs.pil_image
            image = np.asarray(load_image(value, name), dtype=np.uint8)
        return LTX2Request(prompt=request.prompt, negative_prompt=negative, width=resolved.width,
                           height=resolved.height, num_frames=resolved.num_frames, fps=float(resolved.fps),
                           steps=resolved.num_inference_steps, seed=resolved.seed,
                           guidance=replace(self.guidance, guidance_scale=float(resolved.guidance_scale)),
                           sigmas=self.sigmas, image=image)

    def close(self) -> None:
        """Drop the components (their memory is freed once nothing else holds them)."""
        for offloader in self.layerwise_offloaders:
            offloader.remove()  # hooks off, device slots dropped
        self.layerwise_offloaders = []
        self.components = None  # type: ignore[assignment]
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def load_served_ltx2(folder: Any, *, family: Any, device: torch.device, dtype: torch.dtype,
                     preset_name: str | None = None, attention_backend: str | None = None,
                     offload_text_encoder: bool = False, offload_vae: bool = False,
                     offload_dit_layerwise: bool = False, pin_cpu_memory: bool = True, **options: Any,
                     ) -> LTX2ServedPipeline:
    """Load a checked LTX-2 folder for the runtime (module contract); ``family`` is its ModelFamily."""
    for option, config_field in _REFUSED_OPTIONS.items():
        if options.get(option):
            raise ConfigError(config_field, f"is not supported for LTX-2 yet ({family.description}); drop it")
    name = preset_name or folder.model_index.get("_fastvideo_preset") or DEFAULT_LTX2_PRESET
    preset, guidance, sigmas = ltx2_model_preset(str(name))
    on_device = device.type == "cuda"  # on the CPU every component already lives there: nothing to offload
    offloaded = [group for group, on in (("text_encoder", offload_text_encoder), ("vae", offload_vae)) if on]
    layerwise = offload_dit_layerwise and on_device
    staged = on_device and bool(offloaded or layerwise)
    backend = _attention_backend(Path(folder.root), attention_backend, dtype, device) if staged else None
    loaded = load_ltx2_pipeline(folder.root, dtype=dtype, device="cpu" if staged else device,
                                attention_backend=None if staged else attention_backend,
                                max_sequence_length=preset.text_length)
    if guidance.stg and guidance.stg_blocks:
        layers = loaded.transformer.config.num_layers
        bad = [b for b in guidance.stg_blocks if not 0 <= b < layers]
        if bad:
            raise ConfigError("pipeline.preset", f"preset {preset.name!r} perturbs DiT blocks {bad} for STG, but "
                                                 f"this DiT has {layers} blocks; use a preset made for it")
    served = LTX2ServedPipeline(components=OffloadableLTX2Components.of(loaded, device=device), preset=preset,
                                guidance=guidance, sigmas=sigmas, dtype=dtype)
    if staged:
        assert backend is not None
        stage_offload(served, backend, offloaded=offloaded, layerwise=layerwise,
                      pin_memory=pin_cpu_memory)
    logger.info("serving LTX-2 from %s with preset %s", folder.root, preset.name)
    return served


def _attention_backend(root: Path, name: str | None, dtype: torch.dtype, device: torch.device) -> AttentionBackend:
    """The DiT's attention backend for ``device`` (as :func:`~.loading.load_ltx2_transformer` picks it), chosen
    before any weight is read when the folder loads on the CPU first."""
    config = read_ltx2_config(root / "transformer")
    backend = select_attention_backend(name, dtype=dtype, head_dim=config.attention_head_dim, device=device)
    reason = backend.check(dtype, config.audio_attention_head_dim, device)
    if reason is not None:
        raise AttentionBackendError(f"attention backend {backend.name!r} rejected the audio head size "
                                    f"{config.audio_attention_head_dim}: {reason}")
    return backend


def stage_offload(served: LTX2ServedPipeline, backend: AttentionBackend, *, offloaded: list[str], layerwise: bool,
                  pin_memory: bool = True, layer_backend: TransferBackend | None = None) -> None:
    """Place a pipeline loaded on the CPU for ``served.device`` (module contract): the groups in ``offloaded``
    and (``layerwise``) the DiT's blocks stay on the CPU behind their offloaders, everything else moves to the
    device; the DiT takes ``backend``. ``layer_backend``: the layerwise transfer backend (None: CUDA streams)."""
    components, device = served.components, served.device
    components.transformer.set_attention_backend(backend)
    for name in OFFLOAD_GROUPS:
        if name in offloaded:
            served.offload(name, pin_memory=pin_memory)
        else:
            offload_group(components, name).to(device)
    if layerwise:
        served.offload_dit_layerwise(pin_memory=pin_memory, backend=layer_backend)
    else:
        components.transformer.to(device)
