"""The Wan text-to-video model stages: text encode, initial noise, sampler, one DiT step, VAE decode.

Contract:
- :meth:`WanT2VPipeline.from_folder` loads a checked diffusers folder: DiT and VAE built on the meta
  device and filled from memory-mapped safetensors, UMT5 through ``transformers``, the sampler
  from ``scheduler/scheduler_config.json``, the attention backend chosen once here. Every component
  loads from :meth:`ModelFolder.component` (its override folder when one is given), its weights in the
  folder's chosen variant. Before any weight is read, the declared classes are matched against the
  family registry (:func:`fastvideo.engine.families.match_family`); a transformer config of the wrong kind
  for the family (image-conditioned in a T2V folder or the reverse), a
  config that does not match its weights, or a tokenizer that cannot tokenize is a ModelLoadError.
- Shift precedence: the request's ``sampling.shift``, else the shift the folder's scheduler config
  sets (``flow_shift`` / ``shift``), else the preset's. The pipeline's :attr:`preset` carries the
  folder's shift when it sets one, and :attr:`shift_source` says which (``model_folder`` / ``preset``).
- Stage functions only; the denoising loop lives in the engine core
  (:class:`fastvideo.runtime.executor.WanBatchExecutor`), the one loop every entry point runs.
  :meth:`encode_prompts` gives ``(1 or 2, L, D)`` embeddings (conditional first under CFG);
  :meth:`initial_noise` draws float32 noise on the CPU from ``torch.Generator().manual_seed(seed)``
  (a seed gives the same video on any device, and the noise diffusers' ``WanPipeline`` draws with a
  CPU generator); :meth:`make_sampler` builds a fresh per-request sampler (for ``"dmd"`` with the
  request's own generator, continuing its seeded stream after the initial noise); :func:`guided` is the CFG
  formula; :meth:`decode` turns clean latents into ``uint8`` ``(T, H, W, 3)`` frames trimmed to the
  requested count; :class:`Conditioning` imposes a continuation's clean tail latents.
- CPU offload (``offload_text_encoder`` / ``offload_vae`` of :meth:`WanT2VPipeline.from_folder`, on a CUDA
  device only; on the CPU everything already lives there): that component loads on the CPU and its
  weights visit the device for each use (:meth:`encode_prompts` / :meth:`decode`), back to the CPU
  after (:class:`fastvideo.engine.offload.ComponentOffloader`); ``offloaders`` holds them by name.
  ``offload_dit_layerwise`` (CUDA only): the DiT (both experts) loads on the CPU, its embeddings and head move to the
  device and its blocks stream through a small device window each forward
  (:func:`fastvideo.engine.layer_offload.offload_layerwise`); ``layerwise_offloaders`` holds them.
- Image-to-video (the ``wan2.1-i2v`` family, diffusers' ``WanImageToVideoPipeline`` folders): the CLIP
  ``image_processor`` / ``image_encoder`` load too (:attr:`image_encoder`), the preset's ``workload`` becomes
  ``"i2v"`` (``"flf2v"`` when the transformer has ``pos_embed_seq_len``: first and last frame), and
  :meth:`image_condition` gives the condition channels and image tokens the DiT takes with each step; the
  initial noise has the VAE's ``z_dim`` channels (the DiT's ``in_channels`` include the condition's 20).
- Two experts (the ``wan2.2-t2v-a14b`` family): ``transformer_2/`` loads as :attr:`dit_2` (same dtype, quantization
  and attention backend as :attr:`dit`), :attr:`experts` holds both (:class:`~.experts.ExpertSet`;
  ``offload_experts`` keeps one resident at a time on a CUDA device) and the preset's ``boundary_ratio`` is the
  folder's ``model_index.json`` value. One-expert models: ``dit_2`` None, ``experts`` holds ``dit`` alone.
- Two-expert image-to-video (the ``wan2.2-i2v-a14b`` family, ``latent_image_condition``: diffusers'
  ``WanImageToVideoPipeline`` with ``transformer_2`` and no image encoder): both experts load as above, no CLIP
  component loads (:attr:`image_encoder` None), the preset's ``workload`` is ``"i2v"``, and
  :meth:`image_condition` gives the condition channels with no image tokens (None in their place); each expert's
  config is checked (no ``image_dim``; ``in_channels`` = 2 * the VAE's ``z_dim`` + 4).
- Text-image-to-video (the ``wan2.2-ti2v-5b`` family, ``per_token_timesteps``: Wan2.2 TI2V-5B, its 48-channel
  VAE with 16x spatial compression): the preset's ``workload`` becomes ``"ti2v"`` (the image is optional),
  :meth:`first_frame` gives the clean first-frame latent of a request's image (None without one: text-to-video)
  and :meth:`step_timesteps` the DiT's timesteps for a step's rows (per token where a row is image-conditioned;
  see :mod:`fastvideo.engine.models.wan.ti2v`). :meth:`check_sampling` refuses a size the VAE and the DiT's
  patches cannot tile (multiples of 32 for TI2V-5B, 16 for Wan2.1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from fastvideo.api.errors import ModelLoadError, RequestError
from fastvideo.api.request import InputConfig
from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel, inference_param_dtype
from fastvideo.engine.models.wan.experts import ExpertSet
from fastvideo.engine.families import ModelFamily, match_family
from fastvideo.engine.fp8 import FP8Linear, FP8Spec, fp8_path, parse_transformer_quant, quantize_dit
from fastvideo.engine.models.wan.image_conditioning import (
    WanImageEncoder,
    check_image_conditioning,
    condition_latents,
    family_workload,
    image_tokens,
    load_image,
)
from fastvideo.engine.loader import ModelFolder, load_module_weights, read_json
from fastvideo.engine.layer_offload import LayerwiseOffloader, offload_layerwise
from fastvideo.engine.offload import ComponentOffloader, on_device_of
from fastvideo.engine.presets import ModelPreset, infer_preset
from fastvideo.engine.sampler import (
    DEFAULT_DMD_TIMESTEPS,
    FlowDMDSampler,
    FlowEulerSampler,
    FlowUniPCSampler,
    SamplerConfig,
    make_sampler,
    scheduler_shift,
)
from fastvideo.engine.models.wan.text_encoder import WanTextEncoder
from fastvideo.engine.models.wan.ti2v import first_frame_latents, token_timesteps
from fastvideo.engine.validation import ResolvedSampling
from fastvideo.engine.models.wan.vae import WanVAE, WanVAEConfig
from fastvideo.kernels.fused import select_ops_backend
from fastvideo.kernels.registry import select_attention_backend

logger = logging.getLogger(__name__)

def overlap_video_frames(latent_frames: int) -> int:
    """Decoded frames covered by the first ``latent_frames`` latent frames (causal VAE: 1 + 4(k-1))."""
    return 0 if latent_frames <= 0 else 1 + 4 * (latent_frames - 1)


@dataclass
class Conditioning:
    """Clean latents imposed on the first frames of a segment (continuation branch)."""

    clean: torch.Tensor
    noise: torch.Tensor
    strength: float = 1.0

    def to(self, like: torch.Tensor) -> "Conditioning":
        return Conditioning(self.clean.to(like), self.noise.to(like), self.strength)

    def impose(self, latents: torch.Tensor, sigma: float) -> torch.Tensor:
        k = self.clean.shape[2]
        target = (1.0 - sigma) * self.clean + sigma * self.noise
        head = torch.lerp(latents[:, :, :k], target, self.strength)
        return torch.cat([head, latents[:, :, k:]], dim=2)


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)`` (diffusers' order of operations)."""
    return uncond + scale * (cond - uncond)


def frames_to_uint8(video: torch.Tensor) -> np.ndarray:
    """VAE output ``(C, T, H, W)`` in [-1, 1] -> ``(T, H, W, C)`` uint8 (round-to-nearest)."""
    scaled = ((video.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return scaled.permute(1, 2, 3, 0).contiguous().cpu().numpy()


class WanT2VPipeline:
    """Wan2.1 T2V inference over our own DiT/VAE and transformers' UMT5."""

    def __init__(self, *, text_encoder: WanTextEncoder, dit: WanTransformer3DModel, vae: WanVAE,
                 sampler_config: SamplerConfig, preset: ModelPreset, device: torch.device,
                 dtype: torch.dtype, vae_dtype: torch.dtype, shift_source: str = "preset",
                 family: ModelFamily | None = None) -> None:
        self.text_encoder = text_encoder
        self.dit = dit
        self.vae = vae
        self.sampler_config = sampler_config
        self.preset = preset
        self.device = device
        self.dtype = dtype
        self.vae_dtype = vae_dtype
        #: Where ``preset.shift`` came from: "model_folder" (its scheduler config) or "preset".
        self.shift_source = shift_source
        self.family = family
        #: CPU offloaders by component name ("text_encoder", "vae"); empty: everything stays on ``device``.
        self.offloaders: dict[str, ComponentOffloader] = {}
        #: Layerwise DiT offloaders (one per expert); empty: the DiT's blocks stay on ``device``.
        self.layerwise_offloaders: list[LayerwiseOffloader] = []
        #: The DiT's weight quantization (None: weights in ``dtype``).
        self.quantization: FP8Spec | None = None
        #: Image-to-video models: the CLIP image encoder (None for text-to-video).
        self.image_encoder: WanImageEncoder | None = None
        #: Two-expert models: ``transformer_2`` (the low-noise expert); None otherwise.
        self.dit_2: WanTransformer3DModel | None = None
        self.experts = ExpertSet([dit], device)

    @classmethod
    def from_folder(cls, folder: ModelFolder, *, device: torch.device, dtype: torch.dtype,
                    vae_dtype: torch.dtype = torch.float32, attention_backend: str | None = None,
                    ops_backend: str | None = None, preset: ModelPreset | None = None,
                    offload_text_encoder: bool = False, offload_vae: bool = False,
                    pin_cpu_memory: bool = True, transformer_quant: str | None = None,
                    offload_experts: bool = False, offload_dit_layerwise: bool = False) -> "WanT2VPipeline":
        """Load every component of a checked diffusers folder onto ``device``; ``ops_backend`` picks the
        DiT's fused ops (None: its eager code); ``offload_*`` keep that component on the CPU between uses
        on a CUDA device (see module contract), its CPU copy pinned when ``pin_cpu_memory``; ``transformer_quant``
        (``QuantizationConfig.transformer_quant``, e.g. ``"FP8"``) quantizes the DiT's block linears once loaded
        (:func:`fastvideo.engine.fp8.quantize_dit`; :attr:`quantization` records it)."""
        offload_text_encoder = offload_text_encoder and device.type == "cuda"
        offload_vae = offload_vae and device.type == "cuda"
        layerwise = offload_dit_layerwise and device.type == "cuda"
        if layerwise and offload_experts:
            raise ValueError("offload_experts and offload_dit_layerwise both offload the DiT; keep one")
        cpu = torch.device("cpu")
        configs = {name: folder.read_config(name) for name in ("transformer", "vae", "text_encoder")}
        configs["scheduler"] = folder.read_config("scheduler", "scheduler_config.json")
        tokenizer_config = folder.component("tokenizer") / "tokenizer_config.json"
        if tokenizer_config.exists():
            configs["tokenizer"] = read_json(tokenizer_config)
        for name, file in (("image_encoder", "config.json"), ("image_processor", "preprocessor_config.json"),
                           ("transformer_2", "config.json")):
            if (folder.component(name) / file).exists():
                configs[name] = folder.read_config(name, file)
        family = match_family(folder.model_index, configs, {name: str(folder.component(name)) for name in configs},
                              index_path=str(folder.root / "model_index.json"))
        dit_cfg_dict = configs["transformer"]
        preset = preset or infer_preset(folder.model_index, dit_cfg_dict)
        try:
            dit_config = WanDiTConfig.from_dict(dit_cfg_dict)
            vae_config = WanVAEConfig.from_dict(configs["vae"])
            sampler_config = SamplerConfig.from_scheduler_config(configs["scheduler"])
        except (ValueError, TypeError) as exc:
            raise ModelLoadError(f"unsupported model config in {folder.root}: {exc}") from exc
        check_image_conditioning(family, dit_config, folder, z_dim=vae_config.z_dim)
        preset = dataclasses.replace(preset, workload="ti2v" if family.per_token_timesteps
                                     else family_workload(family, dit_config))
        folder_shift = scheduler_shift(configs["scheduler"])
        if folder_shift is not None and folder_shift != preset.shift:
            logger.info("shift %.3g from %s/scheduler_config.json (preset %s says %.3g)", folder_shift,
                        folder.component("scheduler"), preset.name, preset.shift)
        if folder_shift is not None:
            preset = dataclasses.replace(preset, shift=folder_shift)
        dit_2_config = None
        if family.two_experts:
            preset = dataclasses.replace(preset, boundary_ratio=float(folder.model_index["boundary_ratio"]))
            try:
                dit_2_config = WanDiTConfig.from_dict(configs["transformer_2"])
            except KeyError:
                raise ModelLoadError(f"{folder.component('transformer_2')}/config.json is missing; "
                                     f"{family.description} needs both experts") from None
            except (ValueError, TypeError) as exc:
                raise ModelLoadError(f"unsupported model config in {folder.component('transformer_2')}: {exc}") from exc
            check_image_conditioning(family, dit_2_config, folder, z_dim=vae_config.z_dim, component="transformer_2")
        backend = select_attention_backend(attention_backend, dtype=dtype, head_dim=dit_config.attention_head_dim,
                                           device=device)
        ops = select_ops_backend(ops_backend, dtype=dtype, device=device) if ops_backend else None
        t0 = time.perf_counter()
        try:
            with torch.device("meta"):
                dit = WanTransformer3DModel(dit_config, attention_backend=backend)
                vae = WanVAE(vae_config)
        except NotImplementedError as exc:  # e.g. an image-conditioned config other than Wan2.1 I2V's
            raise ModelLoadError(f"{folder.component('transformer')}/config.json: {exc}. This engine runs "
                                 f"{family.description}; use a checkpoint of that pipeline") from exc
        load_module_weights(dit, folder.component("transformer"), dtype=dtype, device=cpu if layerwise else device,
                            dtype_for=inference_param_dtype, variant=folder.variant)
        dit.set_ops_backend(ops)
        dit_2 = None
        if dit_2_config is not None:
            with torch.device("meta"):
                dit_2 = WanTransformer3DModel(dit_2_config, attention_backend=backend)
            load_module_weights(dit_2, folder.component("transformer_2"), dtype=dtype,
                                device=cpu if (offload_experts or layerwise) and device.type == "cuda" else device,
                                dtype_for=inference_param_dtype, variant=folder.variant)
            dit_2.set_ops_backend(ops)
        quantization = None
        if transformer_quant is not None:
            try:
                granularity = parse_transformer_quant(transformer_quant)
            except ValueError as exc:
                raise ModelLoadError(f"engine.quantization.transformer_quant: {exc}") from None
            quantization = quantize_dit(dit, granularity) if granularity is not None else None
            if dit_2 is not None and granularity is not None:
                quantize_dit(dit_2, granularity)
        load_module_weights(vae, folder.component("vae"), dtype=vae_dtype, device=cpu if offload_vae else device,
                            variant=folder.variant)
        encoder_files, encoder_variant = folder.weights("text_encoder")
        try:
            text_encoder = WanTextEncoder.from_folder(folder.component("tokenizer"), folder.component("text_encoder"),
                                                      dtype=dtype, device=cpu if offload_text_encoder else device,
                                                      max_length=preset.text_length,
                                                      weights=encoder_files, variant=encoder_variant)
        except (OSError, ValueError, SafetensorError) as exc:
            raise ModelLoadError(f"cannot load the text encoder/tokenizer from {folder.component('text_encoder')} / "
                                 f"{folder.component('tokenizer')}: {exc}") from exc
        image_encoder = (WanImageEncoder.from_folder(folder.component("image_processor"),
                                                     folder.component("image_encoder"), device=device,
                                                     variant=folder.variant) if family.image_conditioned else None)
        logger.info("loaded %s (%s) in %.2fs on %s/%s%s", folder.root, preset.name, time.perf_counter() - t0,
                    device, dtype, "".join(f"; {name} from {path}" for name, path in folder.overrides.items()))
        pipeline = cls(text_encoder=text_encoder, dit=dit, vae=vae, sampler_config=sampler_config, preset=preset,
                       device=device, dtype=dtype, vae_dtype=vae_dtype,
                       shift_source="preset" if folder_shift is None else "model_folder", family=family)
        pipeline.quantization = quantization
        pipeline.image_encoder = image_encoder
        if dit_2 is not None:
            pipeline.dit_2 = dit_2
            pipeline.experts = ExpertSet([dit, dit_2], device, offload=offload_experts and device.type == "cuda",
                                         pin_memory=pin_cpu_memory)
        if layerwise:
            pipeline.layerwise_offloaders = [offload_layerwise(m, device, pin_memory=pin_cpu_memory, name=f"expert {k}")
                                             for k, m in enumerate((dit, dit_2)) if m is not None]
            for layer in (m for e in (dit, dit_2) if e is not None for m in e.modules() if isinstance(m, FP8Linear)):
                layer.path = fp8_path(device, layer.compute_dtype, layer.granularity, layer.in_features,
                                      layer.out_features)  # quantized on the CPU; the matmuls run on ``device``
        if offload_text_encoder:
            pipeline.offload("text_encoder", text_encoder.model, pin_memory=pin_cpu_memory)
        if offload_vae:
            pipeline.offload("vae", vae, pin_memory=pin_cpu_memory)
        return pipeline

    def offload(self, name: str, module: torch.nn.Module, *, pin_memory: bool = True) -> ComponentOffloader:
        """Keep ``module`` (the ``name`` component's weights) on the CPU between uses of that component."""
        offloader = ComponentOffloader(module, self.device, name=name, pin_memory=pin_memory)
        self.offloaders[name] = offloader
        logger.info("%s offloaded to the CPU between uses (pinned: %s)", name, offloader.pinned)
        return offloader

    def _on_device(self, name: str) -> contextlib.AbstractContextManager:
        return on_device_of(self.offloaders, name)

    # ------------------------------------------------------------------ stages
    def encode_prompts(self, prompt: str, negative_prompt: str, do_cfg: bool) -> torch.Tensor:
        """Text embeddings ``(1 or 2, L, D)``: conditional first, unconditional second under CFG."""
        prompts = [prompt, negative_prompt] if do_cfg else [prompt]
        with self._on_device("text_encoder"):
            return self.text_encoder.encode(prompts).to(device=self.device, dtype=self.dtype)

    def initial_noise(self, s: ResolvedSampling, batch: int = 1) -> torch.Tensor:
        """Seeded float32 noise ``(B, C, T', H/8, W/8)`` drawn on the CPU, moved to the device."""
        generator = torch.Generator(device="cpu").manual_seed(s.seed)
        return torch.randn(self.noise_shape(s, batch), generator=generator, dtype=torch.float32).to(self.device)

    def noise_shape(self, s: ResolvedSampling, batch: int = 1) -> tuple[int, int, int, int, int]:
        """The latent shape ``(B, C, T', H/8, W/8)`` of a request."""
        return (batch, self.vae.config.z_dim, s.latent_frames,
                s.height // self.vae.spatial_factor, s.width // self.vae.spatial_factor)

    @property
    def latent_image_condition(self) -> bool:
        """Whether the model is image-to-video through the condition latents alone (Wan2.2 I2V A14B: no CLIP)."""
        return self.family is not None and self.family.latent_image_condition

    def image_condition(self, inputs: InputConfig,
                        s: ResolvedSampling) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Image-to-video: ``(condition (1, 4 + z_dim, T', h, w) float32, image tokens (1, L_img, D) in the
        compute dtype)`` from ``inputs`` (see :mod:`fastvideo.engine.models.wan.image_conditioning`); the tokens
        are None for a model without an image encoder (Wan2.2 I2V A14B); None for T2V."""
        if self.image_encoder is None and not self.latent_image_condition:
            return None
        first = load_image(inputs.image_path if inputs.image_path is not None else inputs.pil_image,
                           "inputs.image_path")
        last = None if inputs.last_image is None else load_image(inputs.last_image, "inputs.last_image")
        tokens = (None if self.image_encoder is None
                  else image_tokens(self.image_encoder, first, last).to(device=self.device, dtype=self.dtype))
        with self._on_device("vae"):
            condition = condition_latents(self.vae, first, last, height=s.height, width=s.width,
                                          num_frames=s.generated_frames, vae_dtype=self.vae_dtype)
        return condition.to(self.device), tokens

    @property
    def per_token_timesteps(self) -> bool:
        """Whether the model takes per-token timesteps with a first-frame image (Wan2.2 TI2V-5B)."""
        return self.family is not None and self.family.per_token_timesteps

    def first_frame(self, inputs: InputConfig, s: ResolvedSampling) -> torch.Tensor | None:
        """Text-image-to-video: the clean first-frame latent ``(1, z_dim, 1, h, w)`` float32 of the request's
        image on the device; None for other models and for a TI2V request without an image (text-to-video)."""
        image = inputs.image_path if inputs.image_path is not None else inputs.pil_image
        if not self.per_token_timesteps or image is None:
            return None
        with self._on_device("vae"):
            first = first_frame_latents(self.vae, load_image(image, "inputs.image_path"), height=s.height,
                                        width=s.width, vae_dtype=self.vae_dtype)
        return first.to(self.device)

    def step_timesteps(self, t: torch.Tensor, latents: torch.Tensor, conditioned: list[bool]) -> torch.Tensor:
        """The DiT's timesteps for one step's rows: ``t`` ``(R,)`` as is when no row is image-conditioned, else
        per token ``(R, L)`` with the first latent frame at 0 in the ``conditioned`` rows."""
        if not any(conditioned):
            return t
        pt, ph, pw = self.dit.config.patch_size
        _, _, frames, height, width = latents.shape
        return token_timesteps(t, (frames // pt, height // ph, width // pw), conditioned)

    def check_sampling(self, s: ResolvedSampling) -> None:
        """RequestError unless the video size tiles into the VAE's spatial factor times the DiT's patch."""
        factor, (_, ph, pw) = self.vae.spatial_factor, self.dit.config.patch_size
        for name, side, patch in (("sampling.width", s.width, pw), ("sampling.height", s.height, ph)):
            multiple = factor * patch
            if side % multiple:
                lower = side - side % multiple
                raise RequestError(name, f"{side} is not a multiple of {multiple} for model {self.preset.name!r} (the "
                                         f"VAE's {factor}x downsampling times the DiT's {patch}-latent patches); use "
                                         f"{max(lower, multiple)} or {lower + multiple}")

    def make_sampler(self, s: ResolvedSampling) -> FlowUniPCSampler | FlowEulerSampler | FlowDMDSampler:
        """A fresh sampler for one request: the model's scheduler config (or ``s.sampler``), with
        ``s``'s step count and shift. For ``"dmd"``: ``s.dmd_timesteps`` and the request's own CPU generator,
        seeded with ``s.seed`` and moved past the initial noise, so the re-noising continues the request's
        seeded stream (as FastVideo's DMD stage continues ``batch.generator``)."""
        config = self.sampler_config
        if s.sampler is not None and s.sampler != config.kind:
            config = dataclasses.replace(config, kind=s.sampler)
        if config.kind == "dmd":
            generator = torch.Generator(device="cpu").manual_seed(s.seed)
            torch.randn(self.noise_shape(s), generator=generator, dtype=torch.float32)  # the initial noise's draw
            dmd = make_sampler(dataclasses.replace(config, dmd_timesteps=s.dmd_timesteps or DEFAULT_DMD_TIMESTEPS))
            assert isinstance(dmd, FlowDMDSampler)
            return dmd.set_timesteps(s.num_inference_steps, device=self.device, shift=s.shift, generator=generator)
        sampler = make_sampler(config)
        sampler.set_timesteps(s.num_inference_steps, device=self.device, shift=s.shift)
        return sampler

    def decode(self, latents: torch.Tensor, s: ResolvedSampling, skip_frames: int = 0) -> np.ndarray:
        """Clean latents -> uint8 frames ``[skip_frames, skip_frames + s.num_frames)``."""
        with self._on_device("vae"):
            raw = self.vae.denormalize_latents(latents.to(self.vae_dtype))
            video = self.vae.decode(raw)[0]
            return frames_to_uint8(video[:, skip_frames: skip_frames + s.num_frames])

    def close(self) -> None:
        """Drop references to the models (frees device memory once callers let go)."""
        self.experts.release()
        self.experts = ExpertSet([], self.device)
        for name in ("text_encoder", "dit", "dit_2", "vae", "image_encoder"):
            setattr(self, name, None)
        self.offloaders = {}
        for offloader in self.layerwise_offloaders:
            offloader.remove()  # hooks off, device slots dropped
        self.layerwise_offloaders = []
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def model_dtype(name: str, device: torch.device) -> torch.dtype:
    """Resolve an EngineConfig dtype string for ``device``: ``auto`` is bf16 on Ampere and newer GPUs,
    fp16 on older ones (no bf16 tensor cores), fp32 on the CPU."""
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def model_path_or_default(path: str | None, cache_dir: Path) -> Path:
    """``path``, or a built-in model folder (synthesized on first use): the default one when ``path`` is
    empty, the one named by ``path`` (e.g. ``fastvideo-tiny-i2v``) when no such local folder exists."""
    from fastvideo.engine.builtin_model import ensure_builtin_model

    if path and not is_builtin_name(path):
        return Path(path).expanduser()
    return ensure_builtin_model(cache_dir, path or "fastvideo-tiny")


def is_builtin_name(path: str) -> bool:
    """Whether a model path names a built-in model (``fastvideo-tiny``, ``fastvideo-tiny-i2v``) rather than a
    local folder (a folder of that name wins)."""
    from fastvideo.engine.builtin_model import BUILTIN_MODELS

    return path in BUILTIN_MODELS and not Path(path).exists()
