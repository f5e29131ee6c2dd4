"""LTX-2 in ``fastvideo-build``: the audio+video DiT exported per shape case, and served from the loaded programs.

Contract
--------
- Shape cases (:func:`derive_ltx2_specs`): one DiT program per (profile, branch). A profile ``HxWxF`` must have
  ``F = k * temporal_ratio + 1`` and ``H``, ``W`` multiples of 32 and of the VAE's spatial ratio times the DiT patch
  (what :meth:`~fastvideo.engine.models.ltx2.served.LTX2ServedPipeline.check_resolved` accepts), else a
  :class:`~fastvideo.build.specs.SpecError` naming ``--profile``. The case's latent is the DiT token grid
  ``(F', H', W')`` (the ``num_frames, height, width`` the pipeline passes), its ``variant`` ``a<audio frames>-<branch>``
  and its ``params`` the fixed scalars the program is specialized for: ``audio_frames`` (``LTX2Pipeline``'s rule
  at the preset's fps), ``fps`` (the preset's; the DiT's conditioning fps with ``motion_speed`` 1) and
  ``use_cross_timestep`` (the preset's guidance). Only the DiT is built (``--components dit``); batches 1 and/or 2
  (``--cfg``) with the batch axis dynamic.
- Inputs (:class:`LTX2DiTExport`), in order: ``hidden_states (B, N_v, C)``, ``audio_hidden_states (B, N_a, C_a)``,
  ``encoder_hidden_states`` / ``audio_encoder_hidden_states`` ``(B, L, D)`` (the connector outputs),
  ``encoder_attention_mask (B, L)`` int64 (the one mask the pipeline passes for both streams), then per branch:
  ``initial``: ``timestep (B,)``, ``sigma (B,)`` float32; ``continuation`` (``st.conditioning`` set: the runtime's
  continuation, and image-to-video): ``timestep (B, N_v)`` (per-token ``t * (1 - mask)``), ``audio_timestep (B,)``,
  ``sigma (B,)`` float32 and ``video_coords (B, 3, N_v, 2)`` float32 (the conditioning's coordinates; the grid's
  when the call passes none). One output ``noise_pred (B, N_v * C_out + N_a * C_a_out)``: the video prediction
  flattened per sample, then the audio one (one tensor, so every backend's single-output path serves it).
- RoPE: the program's coordinates are fixed per case (the grid's video coordinates for ``initial``, the audio
  coordinates for both, as named buffers ``video_coords`` / ``audio_coords`` recomputed deterministically from the
  config), and the tables are computed from them inside the program (the DiT's coordinate path: the same function
  its eager RoPE cache uses, so the eager wrapper equals the pipeline's call exactly).
- Guidance passes: the CFG pass (batch 2, or the single batch-1 pass) runs the compiled program. The STG pass runs it
  too when the DiT has no ``perturbed_attn`` (the DiT ignores the STG blocks then, as diffusers does); with
  ``perturbed_attn`` it runs eagerly. The modality-isolation pass (no a2v/v2a attention) always runs eagerly. Those
  eager passes are by design, not misses: they are recorded in the manifest (``model.eager_passes``) and counted
  (:attr:`ArtifactLTX2DiT.eager_passes`).
- Serving (:func:`apply_ltx2_artifacts`): ``LTX2ServedPipeline.components.transformer`` becomes an
  :class:`ArtifactLTX2DiT` with the transformer's call signature and attributes (``config``, ``video_coords``, ...
  reach the eager DiT, which stays loaded: aoti and inductor programs share its weights). A call is dispatched on
  its branch (per-token timestep or not), token grid, audio frames, fps, ``use_cross_timestep`` and input
  shapes/dtypes; any batch runs on the case's program: rows split into the largest built batch (the batched
  executor's ``2N`` rows), a remainder padded up to the smallest built batch that holds it (copies of its last row,
  dropped from the output: every row of the DiT is computed independently), so a ``--cfg on`` build (batch 2) also
  serves the batch-1 STG pass. Anything else (another size, fps, per-token audio timesteps, a
  self-attention or keyframe mask, explicit audio coordinates) is a miss handled by the ``on_miss`` policy of
  :class:`fastvideo.build.artifact_modules.Dispatch` (``error``: :class:`~fastvideo.build.loading.ArtifactShapeError`
  naming the served shapes; ``eager``: the eager DiT, one warning per shape).
- A served call does no host sync and allocates nothing it keeps (the continuation's grid coordinates are made at
  apply time; the text masks are compared by identity first, as the pipeline passes one tensor for both), so the
  runtime's CUDA-graph capture of the DiT call can record it (not exercised here: no GPU).
- ``--lora``: the builder fuses the adapter into the DiT before exporting (the same code as Wan's builds:
  :func:`fastvideo.engine.lora.load_lora` reads it through the LTX-2 key map), so every program and the eager
  reference carry it and the manifest records it; a runtime with the same ``pipeline.components.lora_path`` and
  strength loads the build (it fuses the file into its eager DiT at load, before the artifacts take the DiT over).
- Backends: ``aoti`` and ``inductor`` (CPU and CUDA); ``tensorrt``: the dynamo ONNX export of both branches goes
  through and is checked with onnxruntime (measured on the tiny model: max |diff| ~7e-5 at batches 1 and 2), so
  without TensorRT / a GPU the build keeps the verified ONNX stage (exit 3, as for Wan); the engine stage is the
  shared TensorRT path (verified against eager at build time like every program) and is not exercised here. The
  eager DiT stays loaded for every backend (the pipeline holds it; the eager passes use it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from fastvideo.build.adapters import BuildAdapter
from fastvideo.build.exportable import BuildModels
from fastvideo.build.specs import (ComponentSpec, LatentShape, ModelDims, ShapeCase, SpecError, TensorSpec,
                                   VideoProfile, check_declared)

logger = logging.getLogger(__name__)

__all__ = ["LTX2_ADAPTER", "ArtifactLTX2DiT", "LTX2Dims", "LTX2DiTExport", "apply_ltx2_artifacts",
           "derive_ltx2_specs", "ltx2_model_dims"]

#: The guidance passes served eagerly by design (module contract), as recorded in ``manifest.model.eager_passes``.
EAGER_PASSES = ("modality_isolation",)
_COMMON_INPUTS = ("hidden_states", "audio_hidden_states", "encoder_hidden_states", "audio_encoder_hidden_states",
                  "encoder_attention_mask")
INPUT_NAMES: dict[str, tuple[str, ...]] = {
    "initial": (*_COMMON_INPUTS, "timestep", "sigma"),
    "continuation": (*_COMMON_INPUTS, "timestep", "audio_timestep", "sigma", "video_coords"),
}
OUTPUT_NAMES = ("noise_pred",)


@dataclass(frozen=True)
class LTX2Dims(ModelDims):
    """:class:`ModelDims` plus what LTX-2's cases depend on (read from the folder's configs and preset)."""

    audio_in_channels: int = 0
    audio_out_channels: int = 0
    audio_text_dim: int = 0
    audio_sample_rate: int = 16000
    audio_hop_length: int = 160
    audio_temporal_ratio: int = 4
    fps: float = 24.0
    use_cross_timestep: bool = True
    perturbed_attn: bool = False

    def audio_frames(self, frames: int) -> int:
        from fastvideo.engine.models.ltx2.audio_vae import audio_latent_length

        return audio_latent_length(frames, self.fps, self.audio_sample_rate, self.audio_hop_length,
                                   self.audio_temporal_ratio)


def ltx2_model_dims(folder: Any) -> tuple[LTX2Dims, Any]:
    """The export dimensions and engine preset of a checked LTX-2 folder (ModelLoadError / ValueError otherwise)."""
    from fastvideo.engine.models.ltx2.audio_vae import LATENT_DOWNSAMPLE_FACTOR, LTX2AudioVAEConfig
    from fastvideo.engine.models.ltx2.loading import read_ltx2_config
    from fastvideo.engine.models.ltx2.served import DEFAULT_LTX2_PRESET, ltx2_model_preset
    from fastvideo.engine.models.ltx2.vae_config import LTX2VideoVAEConfig

    cfg = read_ltx2_config(folder.component("transformer"))
    vae = LTX2VideoVAEConfig.from_dict(folder.read_config("vae"))
    audio = LTX2AudioVAEConfig.from_dict(folder.read_config("audio_vae"))
    preset, guidance, _ = ltx2_model_preset(str(folder.model_index.get("_fastvideo_preset") or DEFAULT_LTX2_PRESET))
    assert cfg.out_channels is not None and cfg.audio_out_channels is not None  # resolved by the config
    text, audio_text = ((cfg.caption_channels, cfg.caption_channels) if cfg.use_prompt_embeddings
                        else (cfg.inner_dim, cfg.audio_inner_dim))
    dims = LTX2Dims(in_channels=cfg.in_channels, out_channels=cfg.out_channels, text_dim=text,
                    text_length=preset.text_length, z_dim=vae.latent_channels, video_channels=3,
                    spatial_factor=vae.spatial_ratio, temporal_factor=vae.temporal_ratio,
                    patch_size=(cfg.patch_size_t, cfg.patch_size, cfg.patch_size), max_side=preset.max_side,
                    max_frames=preset.max_frames, audio_in_channels=cfg.audio_in_channels,
                    audio_out_channels=cfg.audio_out_channels, audio_text_dim=audio_text,
                    audio_sample_rate=audio.sample_rate, audio_hop_length=audio.mel_hop_length,
                    audio_temporal_ratio=LATENT_DOWNSAMPLE_FACTOR, fps=float(preset.fps),
                    use_cross_timestep=bool(guidance.use_cross_timestep), perturbed_attn=bool(cfg.perturbed_attn))
    return dims, preset


def _check_profile(profile: VideoProfile, dims: LTX2Dims) -> None:
    ratio = dims.spatial_factor * max(dims.patch_size[1], dims.patch_size[2])
    multiple = ratio * 32 // math.gcd(ratio, 32)
    for name, side in (("height", profile.height), ("width", profile.width)):
        if side < multiple or side % multiple:
            lower = max(multiple, side - side % multiple)
            raise SpecError(f"--profile {profile.label}: {name} {side} is not a multiple of {multiple} (LTX-2 needs "
                            f"multiples of 32 and of its VAE's {dims.spatial_factor}x downsampling times the DiT "
                            f"patch); use {lower} or {lower + multiple}")
        if dims.max_side is not None and side > dims.max_side:
            raise SpecError(f"--profile {profile.label}: {name} {side} exceeds {dims.max_side}, the largest side this "
                            "model allows")
    t = dims.temporal_factor
    if profile.frames < 1 or (profile.frames - 1) % t:
        lower = max(1, profile.frames - (profile.frames - 1) % t)
        raise SpecError(f"--profile {profile.label}: {profile.frames} frames; LTX-2 makes k*{t}+1 frames (its VAE's "
                        f"{t}x temporal compression): use {lower} or {lower + t}")
    if dims.max_frames is not None and profile.frames > dims.max_frames:
        raise SpecError(f"--profile {profile.label}: {profile.frames} frames exceed {dims.max_frames}, the most this "
                        "model allows")


def _case(dims: LTX2Dims, grid: LatentShape, audio_frames: int, branch: str, batches: tuple[int, ...],
          covers: tuple[tuple[VideoProfile, str], ...]) -> ShapeCase:
    lo, hi = min(batches), max(batches)
    axes = {0: "batch"} if len(batches) > 1 else {}
    n_video = grid.frames * grid.height * grid.width

    def spec(name: str, dtype: str, rest: tuple[int, ...]) -> TensorSpec:
        return TensorSpec(name, dtype, (lo, *rest), (hi, *rest), (hi, *rest), dict(axes))

    shapes: dict[str, tuple[str, tuple[int, ...]]] = {
        "hidden_states": ("compute", (n_video, dims.in_channels)),
        "audio_hidden_states": ("compute", (audio_frames, dims.audio_in_channels)),
        "encoder_hidden_states": ("compute", (dims.text_length, dims.text_dim)),
        "audio_encoder_hidden_states": ("compute", (dims.text_length, dims.audio_text_dim)),
        "encoder_attention_mask": ("int64", (dims.text_length,)),
        "timestep": ("float32", () if branch == "initial" else (n_video,)),
        "audio_timestep": ("float32", ()),
        "sigma": ("float32", ()),
        "video_coords": ("float32", (3, n_video, 2)),
    }
    inputs = tuple(spec(name, *shapes[name]) for name in INPUT_NAMES[branch])
    out = n_video * dims.out_channels + audio_frames * dims.audio_out_channels
    params = (("audio_frames", audio_frames), ("fps", dims.fps), ("use_cross_timestep", dims.use_cross_timestep))
    return ShapeCase("dit", grid, batches, inputs, (spec("noise_pred", "compute", (out,)),), covers,
                     variant=f"a{audio_frames}-{branch}", params=params)


def derive_ltx2_specs(dims: ModelDims, profiles: Iterable[VideoProfile], branches: tuple[str, ...] = ("initial",),
                      batches: tuple[int, ...] = (1, 2), components: tuple[str, ...] | None = None,
                      ) -> list[ComponentSpec]:
    """The LTX-2 DiT's shape cases for the declared profiles and branches (module contract; SpecError otherwise)."""
    assert isinstance(dims, LTX2Dims)
    profiles, branches, batches = check_declared(profiles, branches, batches)
    if components is not None and tuple(dict.fromkeys(components)) != ("dit",):
        raise SpecError(f"--components {','.join(components)}: LTX-2 builds export the DiT only (its video VAE, audio "
                        "VAE and vocoder run eagerly); use --components dit or leave it out")
    for profile in profiles:
        _check_profile(profile, dims)
    pt, ph, pw = dims.patch_size
    by_key: dict[tuple[LatentShape, int, str], list[tuple[VideoProfile, str]]] = {}
    for profile in profiles:
        latent_frames = (profile.frames - 1) // dims.temporal_factor + 1
        grid = LatentShape(latent_frames // pt, profile.height // dims.spatial_factor // ph,
                           profile.width // dims.spatial_factor // pw)
        for branch in branches:
            by_key.setdefault((grid, dims.audio_frames(profile.frames), branch), []).append((profile, branch))
    cases = tuple(_case(dims, grid, audio, branch, batches, tuple(covers))
                  for (grid, audio, branch), covers in sorted(by_key.items()))
    return [ComponentSpec("dit", INPUT_NAMES[branches[0]], OUTPUT_NAMES, cases)]


def load_ltx2_build_models(folder: Any, *, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype,
                           fp8_granularity: str | None = None) -> BuildModels:
    """The eager LTX-2 DiT of a checked folder, loaded as the runtime loads it (its VAEs are not compiled)."""
    from fastvideo.engine.models.ltx2.loading import load_ltx2_transformer

    if fp8_granularity is not None:  # refused earlier (refuse_ltx2); a guard for direct callers
        raise ValueError("LTX-2 DiT weights cannot be quantized yet")
    dit = load_ltx2_transformer(folder.component("transformer"), dtype=dtype, device=device)
    return BuildModels(dit=dit, vae=None, dtype=dtype, vae_dtype=vae_dtype, device=device)


class LTX2DiTExport(nn.Module):
    """The LTX-2 DiT at one shape case, initial branch (inputs: module contract)."""

    video_coords: torch.Tensor  # registered buffers
    audio_coords: torch.Tensor

    def __init__(self, dit: Any, case: ShapeCase, device: torch.device | str) -> None:
        super().__init__()
        self.dit = dit
        self.case = case
        self.use_cross_timestep = bool(case.param("use_cross_timestep", True))
        grid = (case.latent.frames, case.latent.height, case.latent.width)
        self.register_buffer("video_coords", dit.video_coords(1, *grid, device, fps=float(case.param("fps"))),
                             persistent=False)
        self.register_buffer("audio_coords", dit.audio_coords(1, int(case.param("audio_frames")), device),
                             persistent=False)

    @contextlib.contextmanager
    def tracing(self) -> Iterator["LTX2DiTExport"]:
        yield self

    @staticmethod
    def _pack(video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return torch.cat([video.flatten(1), audio.flatten(1)], dim=1)

    def forward(self, hidden_states: torch.Tensor, audio_hidden_states: torch.Tensor,
                encoder_hidden_states: torch.Tensor, audio_encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor, timestep: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        video, audio = self.dit(hidden_states, audio_hidden_states, encoder_hidden_states, audio_encoder_hidden_states,
                                timestep, sigma=sigma, encoder_attention_mask=encoder_attention_mask,
                                audio_encoder_attention_mask=encoder_attention_mask, video_coords=self.video_coords,
                                audio_coords=self.audio_coords, use_cross_timestep=self.use_cross_timestep)
        return self._pack(video, audio)


class LTX2ContinuationExport(LTX2DiTExport):
    """The LTX-2 DiT at one shape case, continuation branch: per-token timesteps and the coordinates as inputs."""

    def forward(self, hidden_states: torch.Tensor, audio_hidden_states: torch.Tensor,  # type: ignore[override]
                encoder_hidden_states: torch.Tensor, audio_encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor, timestep: torch.Tensor, audio_timestep: torch.Tensor,
                sigma: torch.Tensor, video_coords: torch.Tensor) -> torch.Tensor:
        video, audio = self.dit(hidden_states, audio_hidden_states, encoder_hidden_states, audio_encoder_hidden_states,
                                timestep, audio_timestep=audio_timestep, sigma=sigma,
                                encoder_attention_mask=encoder_attention_mask,
                                audio_encoder_attention_mask=encoder_attention_mask, video_coords=video_coords,
                                audio_coords=self.audio_coords, use_cross_timestep=self.use_cross_timestep)
        return self._pack(video, audio)


def ltx2_export_module(case: ShapeCase, models: BuildModels) -> nn.Module:
    """The wrapper a case is exported / compiled from (eval mode)."""
    cls = LTX2ContinuationExport if case.variant.endswith("-continuation") else LTX2DiTExport
    return cls(models.dit, case, models.device).eval()


def _probe(models: BuildModels, components: tuple[str, ...]) -> None:
    """One eager forward at a 1x1x1 grid, so a precision this torch cannot run fails here, clearly."""
    from fastvideo.build.builder import EXIT_USAGE, BuildError

    dit, dtype, device = models.dit, models.dtype, models.device
    cfg = dit.config
    text = cfg.caption_channels if cfg.use_prompt_embeddings else cfg.inner_dim
    audio_text = cfg.caption_channels if cfg.use_prompt_embeddings else cfg.audio_inner_dim
    try:
        with torch.no_grad():
            dit(torch.zeros(1, 1, cfg.in_channels, device=device, dtype=dtype),
                torch.zeros(1, 1, cfg.audio_in_channels, device=device, dtype=dtype),
                torch.zeros(1, 2, text, device=device, dtype=dtype),
                torch.zeros(1, 2, audio_text, device=device, dtype=dtype), torch.zeros(1, device=device),
                sigma=torch.zeros(1, device=device), num_frames=1, height=1, width=1, audio_num_frames=1,
                use_cross_timestep=True)
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        raise BuildError(f"this torch cannot run the LTX-2 DiT in {dtype} on {device} "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0]}); pick another --precision or "
                         "--device", EXIT_USAGE) from None


def _pipeline_models(pipeline: Any) -> BuildModels:
    components = pipeline.components
    dit = components.transformer
    if isinstance(dit, ArtifactLTX2DiT):
        dit = dit.eager
    return BuildModels(dit=dit, vae=None, dtype=pipeline.dtype, vae_dtype=pipeline.dtype,
                       device=torch.device(pipeline.device))


def _inductor_targets(models: BuildModels, cases: list[ShapeCase]) -> dict[str, tuple[str, nn.Module]]:
    return {case.key: (case.key, ltx2_export_module(case, models)) for case in cases}


def _refuse(request: Any) -> str | None:
    if request.transformer_quant is not None:
        return "--transformer-quant: LTX-2 DiT quantization is not supported yet; drop it"
    return None


def _manifest_model(dims: ModelDims) -> dict[str, Any]:
    assert isinstance(dims, LTX2Dims)
    eager = list(EAGER_PASSES) + (["stg"] if dims.perturbed_attn else [])
    return {"fps": dims.fps, "use_cross_timestep": dims.use_cross_timestep, "eager_passes": eager,
            "audio_text_dim": dims.audio_text_dim}


# --------------------------------------------------------------------------------------------------------- serving
Runner = Callable[..., torch.Tensor]


class ArtifactLTX2DiT(nn.Module):
    """The LTX-2 DiT served by compiled programs (module contract); called exactly as :class:`LTX2Transformer`."""

    def __init__(self, dit: Any, loaded: Any, programs: list[tuple[ShapeCase, Runner]], on_miss: str = "error"
                 ) -> None:
        from fastvideo.build.artifact_modules import Dispatch

        super().__init__()
        self.eager = dit
        self.config = dit.config
        self._dispatch = Dispatch(loaded, "dit", on_miss)
        self._programs: dict[tuple[Any, ...], tuple[ShapeCase, Runner]] = {}
        for case, runner in programs:
            branch = case.variant.rsplit("-", 1)[-1]
            key = (branch, (case.latent.frames, case.latent.height, case.latent.width),
                   int(case.param("audio_frames")), float(case.param("fps")), bool(case.param("use_cross_timestep")))
            self._programs[key] = (case, runner)
        self._dtype = loaded.dtype
        self._coords: dict[tuple[Any, ...], torch.Tensor] = {}
        device = next(dit.parameters()).device  # with its index, as the inputs' device reads
        for branch, grid, _, fps, _ in self._programs:  # made now, never inside a CUDA-graph capture
            if branch == "continuation":
                self._grid_coords(grid, fps, device)
        #: Calls run eagerly by design (module contract), and calls served by a compiled program.
        self.eager_passes = 0
        self.compiled_calls = 0

    def __getattr__(self, name: str) -> Any:  # everything else (video_coords, attention_backend, ...): the eager DiT
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "eager" not in modules:
                raise
            return getattr(modules["eager"], name)

    def _miss(self, what: str, key: Any, eager: Callable[[], Any]) -> Any:
        return self._dispatch.miss(what, key, eager)

    @property
    def misses(self) -> int:
        return self._dispatch.misses

    def forward(self, hidden_states: torch.Tensor, audio_hidden_states: torch.Tensor,
                encoder_hidden_states: torch.Tensor, audio_encoder_hidden_states: torch.Tensor,
                timestep: torch.Tensor, audio_timestep: torch.Tensor | None = None, sigma: torch.Tensor | None = None,
                audio_sigma: torch.Tensor | None = None, encoder_attention_mask: torch.Tensor | None = None,
                audio_encoder_attention_mask: torch.Tensor | None = None, num_frames: int | None = None,
                height: int | None = None, width: int | None = None, fps: float = 24.0,
                audio_num_frames: int | None = None, video_coords: torch.Tensor | None = None,
                audio_coords: torch.Tensor | None = None, isolate_modalities: bool = False,
                spatio_temporal_guidance_blocks: list[int] | None = None,
                perturbation_mask: torch.Tensor | None = None, use_cross_timestep: bool = False,
                video_self_attention_mask: torch.Tensor | None = None,
                video_keyframes_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        call = dict(hidden_states=hidden_states, audio_hidden_states=audio_hidden_states,
                    encoder_hidden_states=encoder_hidden_states,
                    audio_encoder_hidden_states=audio_encoder_hidden_states, timestep=timestep,
                    audio_timestep=audio_timestep, sigma=sigma, audio_sigma=audio_sigma,
                    encoder_attention_mask=encoder_attention_mask,
                    audio_encoder_attention_mask=audio_encoder_attention_mask, num_frames=num_frames, height=height,
                    width=width, fps=fps, audio_num_frames=audio_num_frames, video_coords=video_coords,
                    audio_coords=audio_coords, isolate_modalities=isolate_modalities,
                    spatio_temporal_guidance_blocks=spatio_temporal_guidance_blocks,
                    perturbation_mask=perturbation_mask, use_cross_timestep=use_cross_timestep,
                    video_self_attention_mask=video_self_attention_mask, video_keyframes_mask=video_keyframes_mask)

        def eager() -> Any:
            return self.eager(**call)

        self._dispatch.calls += 1
        perturbed = bool(self.config.perturbed_attn)
        if isolate_modalities or (perturbed and (spatio_temporal_guidance_blocks or perturbation_mask is not None)):
            self.eager_passes += 1
            return eager()
        extra = [name for name, value in (("audio_sigma", audio_sigma), ("audio_coords", audio_coords),
                                          ("video_self_attention_mask", video_self_attention_mask),
                                          ("video_keyframes_mask", video_keyframes_mask)) if value is not None]
        if extra:
            return self._miss(f"a DiT call with {', '.join(extra)}", ("extra", tuple(extra)), eager)
        if timestep.ndim == 2 and timestep.shape[1] == 1:
            timestep = timestep[:, 0]
        branch = "continuation" if timestep.ndim == 2 else "initial"
        grid = (num_frames, height, width)
        key = (branch, grid, audio_num_frames, float(fps), bool(use_cross_timestep))
        found = self._programs.get(key) if None not in grid and audio_num_frames is not None else None
        if found is None:
            return self._miss(
                f"the {branch} branch at token grid {grid}, {audio_num_frames} audio frames, fps {fps}, "
                f"use_cross_timestep={use_cross_timestep}", key, eager)
        case, runner = found
        mask = encoder_attention_mask
        if mask is None or sigma is None or (audio_encoder_attention_mask is not mask and (
                audio_encoder_attention_mask is None or not torch.equal(audio_encoder_attention_mask, mask))):
            return self._miss("a DiT call without sigma or with different video/audio text masks",
                                       ("mask", key), eager)
        if mask.dtype.is_floating_point or mask.dtype.is_complex:
            return self._miss(f"a {mask.dtype} text mask (the programs take 0/1 integer masks)",
                                       ("mask dtype", key), eager)
        batch = hidden_states.shape[0]
        f32 = torch.float32
        named: dict[str, torch.Tensor] = {
            "hidden_states": hidden_states, "audio_hidden_states": audio_hidden_states,
            "encoder_hidden_states": encoder_hidden_states, "audio_encoder_hidden_states": audio_encoder_hidden_states,
            "encoder_attention_mask": mask.to(torch.int64), "timestep": timestep.to(f32),
            "sigma": sigma.to(f32).reshape(-1).expand(batch)}
        if branch == "continuation":
            if audio_timestep is None or audio_timestep.numel() not in (1, batch):
                return self._miss("per-token audio timesteps (an audio prefix condition)",
                                           ("audio_timestep", key), eager)
            named["audio_timestep"] = audio_timestep.to(f32).reshape(-1).expand(batch)
            named["video_coords"] = (video_coords if video_coords is not None
                                     else self._grid_coords(grid, float(fps), hidden_states.device)
                                     ).to(f32).expand(batch, -1, -1, -1)
        elif audio_timestep is not None and audio_timestep is not timestep and not (
                audio_timestep.shape == timestep.shape and torch.equal(audio_timestep, timestep)):
            return self._miss("an initial-branch call with its own audio timesteps",
                                       ("audio_timestep", key), eager)
        elif video_coords is not None:
            return self._miss("an initial-branch call with video coordinates", ("coords", key), eager)
        inputs = [named[spec.name] for spec in case.inputs]
        roles = {"compute": self._dtype, "float32": f32, "int64": torch.int64}
        for spec, tensor in zip(case.inputs, inputs):
            want = tuple(spec.opt_shape[1:])
            if tuple(tensor.shape[1:]) != want or tensor.dtype != roles[spec.dtype]:
                return self._miss(
                    f"{spec.name} {tuple(tensor.shape)}/{tensor.dtype} (built: (B, {', '.join(map(str, want))}) in "
                    f"{roles[spec.dtype]})", ("shape", key, spec.name), eager)
        outs = []
        start = 0
        for rows, size in _chunks(batch, case.batches):
            part = [t[start:start + rows] for t in inputs]
            if size > rows:  # padded with copies of the last row (rows are independent), then dropped
                part = [torch.cat([t, t[-1:].expand(size - rows, *t.shape[1:])]) for t in part]
            outs.append(runner(*(t.contiguous() for t in part))[:rows])
            start += rows
        self.compiled_calls += 1
        packed = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
        n_video = hidden_states.shape[1] * self.config.out_channels
        video = packed[:, :n_video].reshape(batch, hidden_states.shape[1], -1)
        audio = packed[:, n_video:].reshape(batch, audio_hidden_states.shape[1], -1)
        return video, audio

    def _grid_coords(self, grid: tuple[Any, ...], fps: float, device: torch.device) -> torch.Tensor:
        key = (*grid, fps, device)
        coords = self._coords.get(key)
        if coords is None:
            coords = self._coords[key] = self.eager.video_coords(1, *grid, device, fps=fps)
        return coords


def _chunks(batch: int, built: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(rows, program batch)`` per program call for ``batch`` rows: the largest built batch while it fits, the rest
    on the smallest built batch that holds it (padded)."""
    if batch in built:
        return [(batch, batch)]
    biggest = max(built)
    count, rest = divmod(batch, biggest)
    return [(biggest, biggest)] * count + ([(rest, min(b for b in built if b >= rest))] if rest else [])


def apply_ltx2_artifacts(pipeline: Any, loaded: Any, on_miss: str = "error") -> None:
    """Serve an :class:`~fastvideo.engine.models.ltx2.served.LTX2ServedPipeline`'s DiT from ``loaded``."""
    from fastvideo.build.backends import artifact_backend
    from fastvideo.build.loading import ArtifactError

    t0 = time.perf_counter()
    components = pipeline.components
    if isinstance(components.transformer, ArtifactLTX2DiT):
        raise ArtifactError("artifacts are already applied to this pipeline")
    loaded.check_target(pipeline)
    backend = artifact_backend(loaded.backend)
    runners = backend.runners(pipeline, loaded)
    programs = [(entry.case, runners[key]) for key, entry in loaded.cases.items() if entry.case.component == "dit"]
    components.transformer = ArtifactLTX2DiT(components.transformer, loaded, programs, on_miss=on_miss)
    loaded.stats["apply_s"] = time.perf_counter() - t0
    logger.info("serving the LTX-2 DiT from %s artifacts (%s); eager passes: %s", loaded.backend, loaded.path.name,
                ", ".join(loaded.manifest.model.get("eager_passes", [])) or "none")


#: The ``ltx2`` entry of the build adapter registry (:mod:`fastvideo.build.adapters`).
LTX2_ADAPTER = BuildAdapter(runtime="ltx2", model_dims=ltx2_model_dims, derive_specs=derive_ltx2_specs,
                            load_models=load_ltx2_build_models, export_module=ltx2_export_module, probe=_probe,
                            pipeline_models=_pipeline_models, inductor_targets=_inductor_targets,
                            apply=apply_ltx2_artifacts, refuse=_refuse, manifest_model=_manifest_model)
