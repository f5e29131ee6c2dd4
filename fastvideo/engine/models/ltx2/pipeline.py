"""LTX-2 text-to-video+audio: the components composed into diffusers 0.42's ``LTX2Pipeline``, numerically equal.

Contract
--------
- :func:`load_ltx2_pipeline` ``(folder, dtype, device)`` loads a diffusers-format LTX-2 folder (``model_index.json``
  with ``_class_name == "LTX2Pipeline"``): ``transformer/``, ``vae/``, ``audio_vae/``, ``vocoder/``,
  ``connectors/`` through this package's meta-device loaders, ``tokenizer/`` + ``text_encoder/`` (Gemma-3) through
  ``transformers`` (:class:`~.text_encoding.LTX2TextEncoder`), and ``scheduler/scheduler_config.json`` (read as
  :class:`LTX2ScheduleConfig`; settings we do not implement are refused naming them). A missing sub-folder or a
  folder of another pipeline class raises :class:`~fastvideo.api.errors.ModelLoadError` naming it. It returns
  :class:`LTX2Components`.
- :meth:`LTX2Components.generate` is ``LTX2Pipeline.__call__`` for one text prompt (``num_videos_per_prompt=1``,
  no prompt enhancement, no duration head, no caller latents): it returns ``(frames, waveform, sample_rate)``:
  ``frames`` uint8 ``(T, H, W, 3)`` (diffusers' ``output_type="pil"`` frames as arrays), ``waveform`` float32
  ``(channels, samples)`` (the vocoder output) and the vocoder's ``output_sampling_rate``.
- The step-wise API the runtime core calls (:class:`~fastvideo.runtime.ltx2_executor.LTX2BatchExecutor`):

  * :meth:`LTX2Components.prepare` ``(LTX2Request) -> LTX2State``: prompt encoding (positive, and for guidance
    the negative prompt, each through Gemma separately, then ``[negative, positive]`` through the connectors in
    one batch), the noise (one CPU ``torch.Generator`` seeded with ``seed``: the video latents
    ``(1, C, F', H', W')`` are drawn **first**, then the audio latents ``(1, C_a, L_a, M')``, both float32; the
    decode noise of a timestep-conditioned VAE is drawn last, in :meth:`decode`) and the schedule;
  * :meth:`LTX2Components.denoise_step` ``(state, i)``: step ``i`` (in order ``0..steps-1``) for both streams;
  * :meth:`LTX2Components.denoise_steps` ``(states, i, forward=None)``: step ``i`` of several states (one runtime
    bucket: same sizes, frames, steps, branch; prompts, seeds and guidance scales may differ) with one DiT call per
    guidance pass for all of them (:func:`~.denoise.denoise_steps`: rows stacked, split back, guidance and sampler
    per state); ``denoise_step`` is its batch of one. ``forward`` (default :meth:`LTX2Components.dit_forward`, the
    eager transformer call) may be a CUDA-graph runner of the same call;
  * :meth:`LTX2Components.decode` ``(state) -> LTX2Output``: the video VAE (timestep-conditioned decode through
    :func:`~.latents.mix_decode_noise` when the VAE config says so) and the audio VAE + vocoder.

  ``generate(...)`` is exactly ``decode`` after ``prepare`` and every ``denoise_step``.
- Conditioning (optional :class:`LTX2Request` fields; none given: text-to-video as above). ``image`` (RGB uint8
  ``(H, W, 3)``, with ``image_crf``) is ``LTX2ImageToVideoPipeline``: the first latent frame is the encoded image,
  kept through every step, the DiT sees per-token timesteps ``t * (1 - mask)``. ``conditions``
  (:class:`~.conditioning.LTX2Condition` frames/image at latent indices with strengths, with ``noise_scale``) is
  ``LTX2ConditionPipeline``: index-0 conditions replace the first tokens, later ones are appended as extra tokens
  with their own RoPE coordinates, each step blends the clean condition into x0 by the mask, the appended tokens
  are dropped before decoding, and that pipeline's packed noise layout is drawn. Both at once raise
  ``ValueError``. Details in :mod:`~.conditioning`.
- Continuation (``continuation``: an :class:`~.state.LTX2ContinuationState`): the state's ``video_frames`` become
  one more frame condition (at ``video_conditioning_frame_idx``: pixel frame 0 or ``1 + k * temporal_ratio``, with
  ``video_conditioning_strength``) on the condition path; its ``audio_latents`` (denoiser space ``(1, C, T, M)``,
  what :attr:`LTX2Output.audio_latents` holds) give the first ``audio_conditioning_num_frames`` audio latent frames
  (:func:`~.conditioning.audio_prefix_latents`). Blob-backed media (ids, no data) and a non-zero
  ``video_position_offset_sec`` raise ``ValueError``. :meth:`LTX2Components.continuation_state` builds the state
  from an output; :meth:`LTX2Components.continue_from` runs the next segment from an output or a state.
- Schedule (:func:`ltx2_sigmas`): ``FlowMatchEulerDiscreteScheduler.set_timesteps(sigmas=..., mu=...)`` as the
  pipeline calls it: base sigmas ``linspace(1, 1/n, n)`` (or the caller's ``sigmas``) in float32, the dynamic
  shift ``mu = calculate_shift(video tokens, base_image_seq_len, max_image_seq_len, base_shift, max_shift)``
  (exponential or linear time shift) when ``use_dynamic_shifting``, else the static ``shift``, then the
  ``shift_terminal`` stretch; timesteps are ``sigmas * num_train_timesteps``. The Euler update is our
  :class:`~fastvideo.engine.sampler.FlowEulerSampler` (bit-equal to diffusers' step) fed that schedule (it cannot
  build this schedule itself: it has no dynamic shift or custom sigmas); video and audio each get their own
  :class:`~fastvideo.engine.sampler.SamplerState` on the one schedule, as diffusers deep-copies its scheduler.
- Guidance (:class:`LTX2Guidance`, defaults those of ``LTX2Pipeline.__call__``): per stream, in x0 space, the
  classifier-free term ``(scale - 1) * (x0_cond - x0_uncond)`` (one DiT call on ``[uncond, cond]``), the STG term
  ``stg_scale * (x0_cond - x0_stg)`` (an extra DiT call perturbing ``stg_blocks``; effective only for DiTs with
  ``perturbed_attn``, as in diffusers), the modality-isolation term ``(modality_scale - 1) * (x0_cond - x0_iso)``
  (an extra call without a2v/v2a attention), then ``rescale_noise_cfg`` by ``guidance_rescale`` and back to a
  velocity. Audio scales left ``None`` (or 0) take the video ones (diffusers' ``or``).
- Precision as diffusers: latents and guidance in float32, the DiT input cast to the text embeddings' dtype (the
  text encoder's), its output upcast to float32; the decode casts to each VAE's dtype.
- Sizes: ``height``/``width`` must be multiples of 32 (diffusers' rule) and of the VAE's spatial ratio times the
  DiT patch; latent frames are ``(num_frames - 1) // temporal_ratio + 1`` (floor, as diffusers); audio latent
  frames ``round(num_frames / fps * sample_rate / hop / 4)``. Bad values raise ``ValueError`` saying which.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from fastvideo.api.errors import ModelLoadError
from fastvideo.engine.models.ltx2.audio_vae import (LTX2AudioVAE, load_ltx2_audio_vae, pack_audio_latents,
                                                    unpack_audio_latents)
from fastvideo.engine.models.ltx2.conditioning import (AudioConditioning, LTX2Condition, VideoConditioning,
                                                       audio_prefix_latents, conditioned_latents,
                                                       image_to_video_latents)
from fastvideo.engine.models.ltx2.connectors import LTX2Connectors, load_ltx2_connectors
from fastvideo.engine.models.ltx2.denoise import DiTForward, LTX2DiTInputs, denoise_steps, run_dit
from fastvideo.engine.models.ltx2.latents import denormalize_latents, mix_decode_noise, pack_latents, unpack_latents
from fastvideo.engine.models.ltx2.loading import load_ltx2_transformer
from fastvideo.engine.models.ltx2.state import LTX2ContinuationState
from fastvideo.engine.models.ltx2.text_encoding import DEFAULT_MAX_SEQUENCE_LENGTH, LTX2TextEncoder
from fastvideo.engine.models.ltx2.transformer import LTX2Transformer
from fastvideo.engine.models.ltx2.vae import LTX2VideoVAE, load_ltx2_video_vae
from fastvideo.engine.models.ltx2.vocoder import load_ltx2_vocoder, mel_to_waveform
from fastvideo.engine.sampler import FlowEulerSampler, SamplerConfig, SamplerState

logger = logging.getLogger(__name__)

__all__ = ["LTX2Components", "LTX2Condition", "LTX2Guidance", "LTX2Output", "LTX2Request", "LTX2ScheduleConfig",
           "LTX2State", "calculate_shift", "load_ltx2_pipeline", "ltx2_sigmas"]

_PIPELINE_CLASS = "LTX2Pipeline"
_SUBFOLDERS = ("transformer", "vae", "audio_vae", "vocoder", "connectors", "text_encoder", "tokenizer", "scheduler")


# ----------------------------------------------------------------------------------------------------- schedule

@dataclass(frozen=True)
class LTX2ScheduleConfig:
    """The ``FlowMatchEulerDiscreteScheduler`` settings LTX-2 uses (defaults: the scheduler class's)."""

    num_train_timesteps: int = 1000
    shift: float = 1.0
    use_dynamic_shifting: bool = False
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    shift_terminal: float | None = None
    time_shift_type: str = "exponential"

    def __post_init__(self) -> None:
        if self.time_shift_type not in ("exponential", "linear"):
            raise ValueError(f"scheduler time_shift_type must be 'exponential' or 'linear', "
                             f"got {self.time_shift_type!r}")
        if self.shift_terminal is not None and not 0 <= self.shift_terminal < 1:
            raise ValueError(f"scheduler shift_terminal must be in [0, 1), got {self.shift_terminal!r}")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "LTX2ScheduleConfig":
        """Read a diffusers ``scheduler_config.json`` dict; features we do not implement are refused by name."""
        name = cfg.get("_class_name", "FlowMatchEulerDiscreteScheduler")
        if name != "FlowMatchEulerDiscreteScheduler":
            raise ValueError(f"LTX-2 needs scheduler _class_name 'FlowMatchEulerDiscreteScheduler', got {name!r}")
        refused = ("invert_sigmas", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                   "stochastic_sampling")
        for key in refused:
            if cfg.get(key):
                raise ValueError(f"scheduler setting {key}={cfg[key]!r} is not supported by the LTX-2 pipeline "
                                 "(only the default false)")
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in cfg.items() if k in known and v is not None}
        if "shift_terminal" in cfg:
            values["shift_terminal"] = cfg["shift_terminal"] or None
        return cls(**values)


def calculate_shift(seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5,
                    max_shift: float = 1.15) -> float:
    """``mu`` of the dynamic shift: linear in the video token count (diffusers' ``calculate_shift``)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return seq_len * m + b


def ltx2_sigmas(steps: int, config: LTX2ScheduleConfig, video_tokens: int,
                sigmas: list[float] | None = None) -> np.ndarray:
    """The ``steps`` float32 noise levels ``LTX2Pipeline`` denoises at (module contract; no terminal 0)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    base = np.linspace(1.0, 1 / steps, steps) if sigmas is None else sigmas
    if len(base) != steps:
        raise ValueError(f"{len(base)} custom sigmas for {steps} steps; give one sigma per step")
    s: Any = np.array(base).astype(np.float32)  # numpy float32 arithmetic, as diffusers
    if config.use_dynamic_shifting:
        mu = calculate_shift(video_tokens, config.base_image_seq_len, config.max_image_seq_len, config.base_shift,
                             config.max_shift)
        if config.time_shift_type == "exponential":
            s = math.exp(mu) / (math.exp(mu) + (1 / s - 1) ** 1.0)
        else:
            s = mu / (mu + (1 / s - 1) ** 1.0)
    else:
        s = config.shift * s / (1 + (config.shift - 1) * s)
    if config.shift_terminal:
        if float(s[-1]) >= 1.0:  # diffusers divides 0 by 0 here and denoises with NaN sigmas
            raise ValueError(f"the last sigma is {float(s[-1])}: the scheduler's shift_terminal stretch needs it "
                             "below 1 (use at least 2 steps, or custom sigmas ending below 1)")
        one_minus_z = 1 - s
        scale_factor = one_minus_z[-1] / (1 - config.shift_terminal)
        s = 1 - (one_minus_z / scale_factor)
    return np.asarray(s, dtype=np.float32)


class _ScheduledEuler(FlowEulerSampler):
    """Our flow-Euler sampler on a schedule computed outside it (:func:`ltx2_sigmas`)."""

    def __init__(self, num_train_timesteps: int, sigmas: np.ndarray) -> None:
        super().__init__(SamplerConfig(kind="euler", num_train_timesteps=num_train_timesteps))
        self._given = torch.from_numpy(np.ascontiguousarray(sigmas, dtype=np.float32))

    def _build(self, n: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
        if n != self._given.numel():
            raise ValueError(f"this schedule has {self._given.numel()} steps, not {n}")
        sig = self._given.clone()
        return sig * self.config.num_train_timesteps, torch.cat([sig, sig.new_zeros(1)])


# ------------------------------------------------------------------------------------------------- request/state

@dataclass(frozen=True)
class LTX2Guidance:
    """Guidance settings; defaults are ``LTX2Pipeline.__call__``'s (module contract)."""

    guidance_scale: float = 3.0
    stg_scale: float = 1.0
    modality_scale: float = 3.0
    guidance_rescale: float = 0.7
    audio_guidance_scale: float | None = 7.0
    audio_stg_scale: float | None = 1.0
    audio_modality_scale: float | None = 3.0
    audio_guidance_rescale: float | None = 0.7
    stg_blocks: tuple[int, ...] | None = (28,)
    use_cross_timestep: bool = True

    def resolved(self) -> "LTX2Guidance":
        """Audio values left ``None``/0 take the video ones (diffusers' ``or``)."""
        return replace(self, audio_guidance_scale=self.audio_guidance_scale or self.guidance_scale,
                       audio_stg_scale=self.audio_stg_scale or self.stg_scale,
                       audio_modality_scale=self.audio_modality_scale or self.modality_scale,
                       audio_guidance_rescale=self.audio_guidance_rescale or self.guidance_rescale)

    @property
    def cfg(self) -> bool:
        return self.guidance_scale > 1.0 or float(self.audio_guidance_scale or 0) > 1.0

    @property
    def stg(self) -> bool:
        return self.stg_scale > 0.0 or float(self.audio_stg_scale or 0) > 0.0

    @property
    def modality(self) -> bool:
        return self.modality_scale > 1.0 or float(self.audio_modality_scale or 0) > 1.0


@dataclass(frozen=True)
class LTX2Request:
    """One text-to-video+audio request (defaults: ``LTX2Pipeline.__call__``'s)."""

    prompt: str
    negative_prompt: str | None = None
    width: int = 768
    height: int = 512
    num_frames: int = 121
    fps: float = 24.0
    steps: int = 30
    seed: int = 0
    guidance: LTX2Guidance = field(default_factory=LTX2Guidance)
    sigmas: tuple[float, ...] | None = None
    motion_speed: float = 1.0
    decode_timestep: float = 0.0
    decode_noise_scale: float | None = None
    #: image-to-video: RGB uint8 (H, W, 3) first frame (``LTX2ImageToVideoPipeline``'s ``image``)
    image: np.ndarray | None = None
    #: its H.264 re-compression CRF (None: diffusers' default 33; 0: none)
    image_crf: int | None = None
    #: frame conditions (``LTX2ConditionPipeline``'s ``conditions``); not together with ``image``
    conditions: tuple[LTX2Condition, ...] = ()
    #: initial noise level of the condition path (None: the first custom sigma, else 1.0, as diffusers)
    noise_scale: float | None = None
    #: continue a previous segment: its trailing frames (condition path) and audio latents (audio prefix)
    continuation: LTX2ContinuationState | None = None


@dataclass
class LTX2State:
    """Everything between :meth:`LTX2Components.prepare` and :meth:`LTX2Components.decode` for one request."""

    request: LTX2Request
    guidance: LTX2Guidance  #: resolved
    generator: torch.Generator
    latents: torch.Tensor  #: (1, N_v, C) float32 video tokens
    audio_latents: torch.Tensor  #: (1, N_a, C_a * M') float32 audio tokens
    video_embeds: torch.Tensor  #: connector output, [uncond, cond] under CFG
    audio_embeds: torch.Tensor
    text_mask: torch.Tensor
    grid: tuple[int, int, int]  #: latent (frames, height, width) after patching
    audio_frames: int
    conditioning_fps: float
    sampler: _ScheduledEuler
    video_state: SamplerState
    audio_state: SamplerState
    next_step: int = 0
    conditioning: VideoConditioning | None = None  #: image / frame conditioning (None: text-to-video)
    audio_conditioning: AudioConditioning | None = None  #: carried-over audio prefix (continuation)

    @property
    def steps(self) -> int:
        return self.sampler.num_inference_steps

    @property
    def text_dtype(self) -> torch.dtype:
        return self.video_embeds.dtype


@dataclass
class LTX2Output:
    """Decoded result: ``video`` float32 ``(T, H, W, 3)`` in [0, 1]; ``frames`` its uint8 frames; ``waveform``
    float32 ``(channels, samples)`` at ``sample_rate``."""

    video: np.ndarray
    frames: np.ndarray
    waveform: torch.Tensor
    sample_rate: int
    audio_latents: torch.Tensor | None = None  #: denoiser-space (1, C, L, M) audio latents (for a continuation)


# ------------------------------------------------------------------------------------------------------ pipeline

@dataclass
class LTX2Components:
    """A loaded LTX-2 pipeline (module contract)."""

    transformer: LTX2Transformer
    vae: LTX2VideoVAE
    audio_vae: LTX2AudioVAE
    vocoder: torch.nn.Module
    connectors: LTX2Connectors
    text_encoder: LTX2TextEncoder
    schedule: LTX2ScheduleConfig
    device: torch.device

    @property
    def sample_rate(self) -> int:
        return int(getattr(self.vocoder, "config").output_sampling_rate)

    # -- prompt ----------------------------------------------------------------------------------
    def _encode(self, prompt: str, negative_prompt: str | None,
                cfg: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embeds, mask = self.text_encoder.gemma_embeds([prompt])
        if cfg:
            neg, neg_mask = self.text_encoder.gemma_embeds([negative_prompt or ""])
            embeds, mask = torch.cat([neg, embeds], dim=0), torch.cat([neg_mask, mask], dim=0)
        param = next(self.connectors.parameters())
        with torch.no_grad():
            video, audio, dit_mask = self.connectors(embeds.to(param.device, param.dtype), mask.to(param.device),
                                                     padding_side=self.text_encoder.tokenizer.padding_side)
        return video, audio, dit_mask

    # -- step-wise API -----------------------------------------------------------------------------
    def _check(self, req: LTX2Request) -> None:
        cfg = self.transformer.config
        ratio = self.vae.spatial_compression_ratio * cfg.patch_size
        for name in ("width", "height"):
            value = getattr(req, name)
            if not isinstance(value, int) or value <= 0 or value % 32 or value % ratio:
                raise ValueError(f"{name}={value!r}: must be a positive multiple of 32 and of {ratio} "
                                 "(the VAE's spatial ratio times the DiT patch)")
        if not isinstance(req.num_frames, int) or req.num_frames < 1:
            raise ValueError(f"num_frames={req.num_frames!r}: must be a positive int")
        if req.fps <= 0 or req.motion_speed <= 0:
            raise ValueError(f"fps ({req.fps!r}) and motion_speed ({req.motion_speed!r}) must be positive")
        if req.image is not None and (req.conditions or req.continuation is not None):
            raise ValueError("give either image (image-to-video) or conditions / continuation (frame "
                             "conditioning), not both")
        g = req.guidance.resolved()
        if g.stg and not g.stg_blocks:
            raise ValueError("STG is on (stg_scale or audio_stg_scale > 0) but stg_blocks is empty: give the "
                             "blocks to perturb or set both STG scales to 0")

    def _continuation_conditions(self, req: LTX2Request) -> tuple[LTX2Condition, ...]:
        """The previous segment's trailing frames as one frame condition (none when it carries no frames)."""
        cont = req.continuation
        if cont is None:
            return ()
        if cont.video_position_offset_sec:
            raise ValueError(f"video_position_offset_sec={cont.video_position_offset_sec!r}: shifting the video "
                             "RoPE of a continuation is not supported; use 0")
        if not cont.video_frames:
            if cont.video_frames_blob_id is not None:
                raise ValueError("the continuation's video frames are blob-backed: resolve "
                                 f"video_frames_blob_id={cont.video_frames_blob_id!r} first")
            return ()
        tr = self.vae.temporal_compression_ratio
        frame = int(cont.video_conditioning_frame_idx)
        if frame < 0 or (frame and (frame - 1) % tr):
            raise ValueError(f"video_conditioning_frame_idx={frame}: must be 0 or 1 + a multiple of {tr} (the "
                             "first frame of a latent frame)")
        index = 0 if frame == 0 else (frame - 1) // tr + 1
        return (LTX2Condition(np.stack([np.asarray(f) for f in cont.video_frames]), index=index,
                              strength=float(cont.video_conditioning_strength)),)

    def prepare(self, req: LTX2Request) -> LTX2State:
        """Encode the prompt(s), draw the noise and build the schedule (module contract)."""
        self._check(req)
        g = req.guidance.resolved()
        device = self.device
        video_embeds, audio_embeds, text_mask = self._encode(req.prompt, req.negative_prompt, g.cfg)

        cfg = self.transformer.config
        tr = self.vae.temporal_compression_ratio
        latent_frames = (req.num_frames - 1) // tr + 1
        lh = req.height // self.vae.spatial_compression_ratio
        lw = req.width // self.vae.spatial_compression_ratio
        generator = torch.Generator(device="cpu").manual_seed(req.seed)
        noise_scale = req.noise_scale if req.noise_scale is not None else (
            float(req.sigmas[0]) if req.sigmas is not None else 1.0)
        conditioning_fps = req.fps / req.motion_speed
        conditioning: VideoConditioning | None = None
        if req.image is not None:
            latents, conditioning = image_to_video_latents(
                self.vae, req.image, height=req.height, width=req.width, latent_frames=latent_frames,
                channels=cfg.in_channels, patch_size=cfg.patch_size, patch_size_t=cfg.patch_size_t,
                generator=generator, device=device, crf=req.image_crf)
        elif req.conditions or req.continuation is not None:
            base_coords = self.transformer.video_coords(1, latent_frames, lh, lw, device, fps=conditioning_fps)
            latents, conditioning = conditioned_latents(
                self.vae, tuple(req.conditions) + self._continuation_conditions(req), height=req.height,
                width=req.width, num_frames=req.num_frames, channels=cfg.in_channels, patch_size=cfg.patch_size,
                patch_size_t=cfg.patch_size_t,
                fps=conditioning_fps, noise_scale=noise_scale, base_coords=base_coords, generator=generator,
                device=device)
        else:
            noise = torch.randn((1, cfg.in_channels, latent_frames, lh, lw), generator=generator, device="cpu",
                                dtype=torch.float32).to(device)
            latents = pack_latents(noise, cfg.patch_size, cfg.patch_size_t)

        acfg = self.audio_vae.config
        audio_conditioning: AudioConditioning | None = None
        latents_per_second = acfg.sample_rate / acfg.mel_hop_length / float(self.audio_vae.temporal_compression_ratio)
        audio_frames = round(req.num_frames / req.fps * latents_per_second)
        if conditioning is not None and conditioning.packed_audio_noise:  # LTX2ConditionPipeline draws it packed
            audio_latents = torch.randn((1, audio_frames, acfg.latent_channels * acfg.latent_mel_bins),
                                        generator=generator, device="cpu", dtype=torch.float32).to(device)
            cont = req.continuation
            if cont is not None and cont.audio_conditioning_num_frames > 0:
                if cont.audio_latents is None:
                    raise ValueError("the continuation asks for audio_conditioning_num_frames="
                                     f"{cont.audio_conditioning_num_frames} but carries no audio_latents (resolve "
                                     "a blob-backed state first)")
                audio_latents, audio_conditioning = audio_prefix_latents(
                    audio_latents, cont.audio_latents.float(), cont.audio_conditioning_num_frames,
                    float(cont.audio_conditioning_strength), noise_scale)
        else:
            audio_noise = torch.randn((1, acfg.latent_channels, audio_frames, acfg.latent_mel_bins),
                                      generator=generator, device="cpu", dtype=torch.float32).to(device)
            audio_latents = pack_audio_latents(audio_noise)

        sigmas = ltx2_sigmas(req.steps, self.schedule, latents.shape[1],
                             None if req.sigmas is None else list(req.sigmas))
        sampler = _ScheduledEuler(self.schedule.num_train_timesteps, sigmas)
        sampler.set_timesteps(req.steps, device=device)
        grid = (latent_frames // cfg.patch_size_t, lh // cfg.patch_size, lw // cfg.patch_size)
        return LTX2State(request=req, guidance=g, generator=generator, latents=latents, audio_latents=audio_latents,
                         video_embeds=video_embeds, audio_embeds=audio_embeds, text_mask=text_mask, grid=grid,
                         audio_frames=audio_frames, conditioning_fps=conditioning_fps, sampler=sampler,
                         video_state=sampler.new_state(), audio_state=sampler.new_state(),
                         conditioning=conditioning, audio_conditioning=audio_conditioning)

    def dit_forward(self, inputs: LTX2DiTInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """The eager DiT call (:func:`~.denoise.run_dit`): the default ``forward`` of :meth:`denoise_steps`."""
        return run_dit(self.transformer, inputs)

    def denoise_step(self, st: LTX2State, i: int) -> None:
        """Step ``i`` for both streams, in place on ``st`` (module contract): the batch of one."""
        self.denoise_steps([st], i)

    def denoise_steps(self, states: Sequence[LTX2State], i: int, forward: DiTForward | None = None) -> None:
        """Step ``i`` of every state with one DiT call per guidance pass for the batch (module contract);
        ``forward`` replaces the eager call (e.g. a CUDA-graph runner)."""
        denoise_steps(states, i, self.dit_forward if forward is None else forward)

    def decode(self, st: LTX2State) -> LTX2Output:
        """Latents -> frames and waveform (module contract); every step must have run."""
        if st.next_step != st.steps:
            raise ValueError(f"decode: {st.next_step} of {st.steps} denoising steps have run; run them all first")
        cfg = self.transformer.config
        f, h, w = st.grid
        tokens = st.latents if st.conditioning is None else st.latents[:, :st.conditioning.base_tokens]
        latents = unpack_latents(tokens, f, h, w, cfg.patch_size, cfg.patch_size_t).to(st.text_dtype)
        timestep: torch.Tensor | None = None
        if self.vae.config.timestep_conditioning:
            req = st.request
            latents, timestep = mix_decode_noise(latents, req.decode_timestep, req.decode_noise_scale,
                                                 generator=st.generator)
        latents = denormalize_latents(latents, self.vae.latents_mean, self.vae.latents_std,
                                      self.vae.config.scaling_factor)
        vae_dtype = next(self.vae.parameters()).dtype
        video = self.vae.decode(latents.to(vae_dtype), timestep)
        video = (video * 0.5 + 0.5).clamp(0, 1)
        frames_f = video[0].permute(1, 2, 3, 0).float().cpu().numpy()  # (T, H, W, 3)
        frames_u8 = (frames_f * 255).round().astype("uint8")
        waveform = mel_to_waveform(self.audio_vae, self.vocoder, st.audio_latents)
        return LTX2Output(video=frames_f, frames=frames_u8, waveform=waveform[0].float(),
                          sample_rate=self.sample_rate,
                          audio_latents=unpack_audio_latents(st.audio_latents, self.audio_vae.config.latent_mel_bins))

    def continuation_state(self, previous: LTX2Output, *, video_frames: int | None = None,
                           audio_frames: int = 0, video_strength: float = 1.0, audio_strength: float = 0.0,
                           segment_index: int = 0) -> LTX2ContinuationState:
        """The :class:`LTX2ContinuationState` after segment ``previous``: its last ``video_frames`` decoded frames
        (default ``temporal_ratio + 1``, one latent frame past the causal first) at frame 0 with ``video_strength``,
        and its last ``audio_frames`` audio latent frames with ``audio_strength`` (0: kept as they are)."""
        count = self.vae.temporal_compression_ratio + 1 if video_frames is None else int(video_frames)
        if not 1 <= count <= len(previous.frames):
            raise ValueError(f"video_frames={count}: the previous segment has {len(previous.frames)} frames")
        if audio_frames and previous.audio_latents is None:
            raise ValueError("the previous output carries no audio_latents to continue from")
        latents = None if previous.audio_latents is None else previous.audio_latents.detach().cpu()
        return LTX2ContinuationState(
            segment_index=segment_index, video_frames=[np.array(f) for f in previous.frames[-count:]],
            video_conditioning_frame_idx=0, video_conditioning_strength=float(video_strength),
            audio_latents=latents, audio_sample_rate=previous.sample_rate,
            audio_conditioning_num_frames=int(audio_frames), audio_conditioning_strength=float(audio_strength))

    def continue_from(self, previous: LTX2Output | LTX2ContinuationState, req: LTX2Request,
                      **state_options: Any) -> LTX2Output:
        """Generate the segment after ``previous`` (an output, turned into a state by :meth:`continuation_state`
        with ``state_options``, or a state as is): ``req`` with its ``continuation`` set, run."""
        state = previous if isinstance(previous, LTX2ContinuationState) else self.continuation_state(
            previous, **state_options)
        return self.run(replace(req, continuation=state))

    def run(self, req: LTX2Request) -> LTX2Output:
        """``prepare``, every ``denoise_step``, ``decode``."""
        st = self.prepare(req)
        for i in range(st.steps):
            self.denoise_step(st, i)
        return self.decode(st)

    def generate(self, prompt: str, negative_prompt: str | None = None, width: int = 768, height: int = 512,
                 num_frames: int = 121, fps: float = 24.0, steps: int = 30, guidance_scale: float | None = None,
                 seed: int = 0, *, guidance: LTX2Guidance | None = None, **options: Any,
                 ) -> tuple[np.ndarray, torch.Tensor, int]:
        """``(frames uint8 (T, H, W, 3), waveform float32 (channels, samples), sample_rate)`` (module contract).
        ``guidance_scale`` overrides ``guidance.guidance_scale``; ``options`` are further :class:`LTX2Request`
        fields (``sigmas``, ``motion_speed``, ``decode_timestep``, ``decode_noise_scale``)."""
        g = guidance or LTX2Guidance()
        if guidance_scale is not None:
            g = replace(g, guidance_scale=float(guidance_scale))
        out = self.run(LTX2Request(prompt=prompt, negative_prompt=negative_prompt, width=width, height=height,
                                   num_frames=num_frames, fps=fps, steps=steps, seed=seed, guidance=g, **options))
        return out.frames, out.waveform, out.sample_rate


# ------------------------------------------------------------------------------------------------------- loading

def load_ltx2_pipeline(folder: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                       *, attention_backend: str | None = None,
                       max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH) -> LTX2Components:
    """Load every component of a diffusers-format LTX-2 folder (module contract)."""
    root = Path(folder).expanduser()
    index_path = root / "model_index.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {index_path}: {exc}; point at a diffusers-format LTX-2 folder") from exc
    if index.get("_class_name") != _PIPELINE_CLASS:
        raise ModelLoadError(f"{index_path} describes a {index.get('_class_name')!r}, not an {_PIPELINE_CLASS}")
    for sub in _SUBFOLDERS:
        if not (root / sub).is_dir():
            raise ModelLoadError(f"the LTX-2 folder {root} has no {sub}/ sub-folder")
    dev = torch.device(device)
    try:
        schedule = LTX2ScheduleConfig.from_dict(json.loads((root / "scheduler" / "scheduler_config.json").read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot use {root / 'scheduler' / 'scheduler_config.json'}: {exc}") from exc
    transformer = load_ltx2_transformer(root / "transformer", dtype=dtype, device=dev,
                                        attention_backend=attention_backend)
    components = LTX2Components(
        transformer=transformer,
        vae=load_ltx2_video_vae(root / "vae", dtype=dtype, device=dev),
        audio_vae=load_ltx2_audio_vae(root / "audio_vae", dtype=dtype, device=dev),
        vocoder=load_ltx2_vocoder(root / "vocoder", dtype=dtype, device=dev),
        connectors=load_ltx2_connectors(root / "connectors", dtype=dtype, device=dev),
        text_encoder=LTX2TextEncoder.from_folder(root / "tokenizer", root / "text_encoder", dtype=dtype, device=dev,
                                                 max_sequence_length=max_sequence_length),
        schedule=schedule, device=dev)
    logger.info("loaded the LTX-2 pipeline from %s (%s, %s)", root, dev, dtype)
    return components
