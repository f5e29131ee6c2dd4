"""LTX-2 image / frame conditioning: what diffusers 0.42's ``LTX2ImageToVideoPipeline`` and ``LTX2ConditionPipeline``
do to the initial latents, the per-token timesteps and each denoising step, as pure functions over our components.

Contract
--------
- Inputs are typed: :class:`LTX2Condition` ``(frames, index, strength, crf)`` is diffusers' ``LTX2VideoCondition``
  with RGB ``uint8`` numpy frames only: ``(H, W, 3)`` (an image) or ``(F, H, W, 3)``. ``index`` is a *latent* frame
  index (negative counts from the end), ``strength`` in ``[0, 1]`` (1: the condition is kept clean). ``crf``: the
  H.264 re-compression single images get before encoding (``None``: :data:`DEFAULT_IMAGE_CRF`, diffusers' default
  for Gemma-3 LTX-2 checkpoints; ``0``: none); multi-frame conditions are never re-compressed.
- :func:`h264_roundtrip` is that re-compression (PyAV libx264, ``preset=veryfast``, one frame at rate 1, the image
  cropped to even sizes, decoded back to RGB), as ``diffusers.pipelines.ltx2.utils.apply_image_conditioning_crf``.
- :func:`image_to_video_latents` is ``LTX2ImageToVideoPipeline.prepare_latents`` for one image: the image (CRF'd,
  then stretched to ``(width, height)`` with PIL bilinear when its size differs, ``/255``, ``*2 - 1``) is encoded
  (posterior mode), normalized with scaling factor 1, repeated over every latent frame; the noise ``(1, C, F, H, W)``
  is drawn from the generator and mixed ``init * mask + noise * (1 - mask)`` with mask 1 on latent frame 0. It
  returns the packed latents and a :class:`VideoConditioning` with ``keep_first_frame``: the DiT sees per-token
  timesteps ``t * (1 - mask)`` and every step keeps latent frame 0 as it was (diffusers steps only frames ``1:``).
  Audio is unconditioned (its noise drawn after, as in text-to-video).
- :func:`conditioned_latents` is ``LTX2ConditionPipeline.prepare_latents``: every condition is resized to cover
  ``(height, width)`` (``F.interpolate`` bilinear on the 0..255 values, then a centre crop), mapped to ``[-1, 1]``,
  trimmed to ``k * temporal_ratio + 1`` frames that fit after its start frame, encoded (posterior mode) and
  normalized (scaling factor 1). A condition at latent index 0 overwrites the first tokens (mask = strength);
  one at index > 0 is *appended* as extra tokens (mask = strength) with its own RoPE coordinates
  (:func:`keyframe_coords`). Then packed noise ``(1, N_total, C)`` is drawn and mixed
  ``noise * s + latents * (1 - s)``, ``s = (1 - mask) * noise_scale``. Each step the guided x0 is blended
  ``x0 * (1 - mask) + clean * mask`` before the Euler update; the appended tokens are dropped before decoding.
  This pipeline draws its audio noise in packed shape ``(1, L, C * M)`` (``packed_audio_noise``).
- :func:`audio_prefix_latents` is the continuation's audio side (no diffusers counterpart): the previous
  segment's last ``n`` denoiser-space audio latent frames become the first ``n`` of the new segment, with clean-mask
  ``1 - audio_conditioning_strength`` (the reference state's convention: 0 keeps them), mixed into the packed
  noise like the video condition path; the DiT gets per-token audio timesteps ``t * (1 - mask)`` and each step
  blends the carried latents into the audio x0 by the mask.
- An index at or past the last latent frame raises ``ValueError`` (diffusers logs and skips it); so do frames that
  are not RGB ``uint8``, a strength outside ``[0, 1]`` and a DiT whose temporal patch is not 1.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fastvideo.engine.models.ltx2.latents import normalize_latents, pack_latents
from fastvideo.engine.models.ltx2.vae import LTX2VideoVAE

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_IMAGE_CRF", "AudioConditioning", "LTX2Condition", "VideoConditioning", "audio_prefix_latents",
           "conditioned_latents", "h264_roundtrip", "image_to_video_latents", "keyframe_coords"]

#: diffusers' default image-conditioning CRF for Gemma-3 LTX-2 checkpoints (LTX-2.5 / Gemma-4 uses 18).
DEFAULT_IMAGE_CRF = 33


@dataclass(frozen=True, eq=False)
class LTX2Condition:
    """One frame condition (module contract): RGB ``uint8`` ``(H, W, 3)`` or ``(F, H, W, 3)`` at a latent index."""

    frames: np.ndarray
    index: int = 0
    strength: float = 1.0
    crf: int | None = None

    def rgb(self) -> np.ndarray:
        """The frames as ``(F, H, W, 3)`` uint8, checked."""
        arr = np.asarray(self.frames)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
            raise ValueError(f"a condition's frames must be RGB uint8 (H, W, 3) or (F, H, W, 3), got {arr.dtype} "
                             f"{tuple(np.shape(self.frames))}")
        if not 0.0 <= float(self.strength) <= 1.0:
            raise ValueError(f"a condition's strength must be in [0, 1], got {self.strength!r}")
        if self.crf is not None and (not isinstance(self.crf, int) or not 0 <= self.crf <= 51):
            raise ValueError(f"a condition's crf must be an int in [0, 51] (0: no re-compression), got {self.crf!r}")
        return arr


@dataclass
class VideoConditioning:
    """How one request's video tokens are conditioned (module contract)."""

    mask: torch.Tensor  #: (1, N_total) float32 conditioning mask in [0, 1]
    base_tokens: int  #: tokens of the generated grid (appended keyframe tokens follow)
    keep_first_frame: bool = False  #: image-to-video: latent frame 0 is never stepped
    first_frame_tokens: int = 0
    clean: torch.Tensor | None = None  #: (1, N_total, C) clean condition latents (condition pipeline)
    coords: torch.Tensor | None = None  #: (1, 3, N_total, 2) RoPE coordinates when keyframes were appended
    packed_audio_noise: bool = False


def h264_roundtrip(image: np.ndarray, crf: int) -> np.ndarray:
    """One RGB ``uint8`` image through H.264 at ``crf`` and back (module contract); ``crf == 0`` returns it as is."""
    if crf == 0:
        return image
    import av

    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    cropped = np.ascontiguousarray(image[:height, :width])
    buffer = io.BytesIO()
    container = av.open(buffer, "w", format="mp4")
    try:
        stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = height, width
        frame = av.VideoFrame.from_ndarray(cropped, format="rgb24").reformat(format="yuv420p")
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    finally:
        container.close()
    reader = av.open(io.BytesIO(buffer.getvalue()), "r")
    try:
        decoded = next(reader.decode(reader.streams.video[0]))
    finally:
        reader.close()
    return decoded.to_ndarray(format="rgb24")


def _encode(vae: LTX2VideoVAE, pixels: torch.Tensor, normalize_first: bool = False) -> torch.Tensor:
    """Pixels ``(1, 3, F, H, W)`` in [-1, 1] -> normalized float32 latents (posterior mode, scaling factor 1).
    ``normalize_first``: normalize in the VAE's dtype, then cast (the condition pipeline's order; the image-to-video
    pipeline casts to float32 first)."""
    param = next(vae.parameters())
    raw = vae.encode(pixels.to(param.device, param.dtype)).mode()
    if normalize_first:
        return normalize_latents(raw, vae.latents_mean, vae.latents_std).float()
    return normalize_latents(raw.float(), vae.latents_mean, vae.latents_std)


def _check_patch(patch_size_t: int) -> None:
    if patch_size_t != 1:
        raise ValueError(f"LTX-2 frame conditioning needs a DiT temporal patch of 1, this one has {patch_size_t}")


def image_to_video_latents(vae: LTX2VideoVAE, image: np.ndarray, *, height: int, width: int, latent_frames: int,
                           channels: int, patch_size: int, patch_size_t: int, generator: torch.Generator,
                           device: torch.device, crf: int | None = None,
                           ) -> tuple[torch.Tensor, VideoConditioning]:
    """``LTX2ImageToVideoPipeline.prepare_latents`` for one image (module contract)."""
    _check_patch(patch_size_t)
    rgb = LTX2Condition(image, crf=crf).rgb()
    if rgb.shape[0] != 1:
        raise ValueError(f"image-to-video takes one image (H, W, 3), got {rgb.shape[0]} frames")
    img = h264_roundtrip(rgb[0], DEFAULT_IMAGE_CRF if crf is None else crf)
    if img.shape[:2] != (height, width):
        from PIL import Image

        img = np.array(Image.fromarray(img).resize((width, height), resample=Image.Resampling.BILINEAR))
    pixels = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]  # (1, 3, H, W)
    pixels = 2.0 * pixels - 1.0
    init = _encode(vae, pixels.unsqueeze(2).to(device))  # (1, C, 1, h, w)
    init = init.repeat(1, 1, latent_frames, 1, 1)
    lh, lw = init.shape[3], init.shape[4]
    mask = torch.zeros((1, 1, latent_frames, lh, lw), device=device, dtype=torch.float32)
    mask[:, :, 0] = 1.0
    noise = torch.randn((1, channels, latent_frames, lh, lw), generator=generator, device=generator.device,
                        dtype=torch.float32).to(device)
    latents = init * mask + noise * (1 - mask)
    packed_mask = pack_latents(mask, patch_size, patch_size_t).squeeze(-1)
    tokens = packed_mask.shape[1]
    return pack_latents(latents, patch_size, patch_size_t), VideoConditioning(
        mask=packed_mask, base_tokens=tokens, keep_first_frame=True,
        first_frame_tokens=(lh // patch_size) * (lw // patch_size))


def _cover_resize(arr: np.ndarray, height: int, width: int, device: torch.device) -> torch.Tensor:
    """``(F, h, w, 3)`` uint8 -> ``(1, 3, F, height, width)`` in [-1, 1]: cover-resize then centre crop."""
    frames, src_h, src_w = arr.shape[0], arr.shape[1], arr.shape[2]
    pixels = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32).to(device)
    pixels = pixels.permute(0, 3, 1, 2)  # (F, 3, h, w)
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    pixels = F.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    pixels = pixels[:, :, top:top + height, left:left + width]
    pixels = pixels.reshape(1, frames, 3, height, width).permute(0, 2, 1, 3, 4)
    return pixels / 127.5 - 1.0


def keyframe_coords(latent_frames: int, latent_height: int, latent_width: int, *, pixel_frame: int,
                    pixel_frames: int, patch_size: int, patch_size_t: int, temporal_ratio: int, spatial_ratio: int,
                    fps: float, device: torch.device) -> torch.Tensor:
    """``(1, 3, N, 2)`` RoPE coordinates of an appended keyframe condition: its latent grid in pixel units, time
    shifted to ``pixel_frame`` (no causal shift), a single pixel frame spanning ``[idx, idx + 1)``, then seconds."""
    axes = [torch.arange(0, n, step, dtype=torch.float32, device=device)
            for n, step in ((latent_frames, patch_size_t), (latent_height, patch_size), (latent_width, patch_size))]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)
    ends = grid + torch.tensor((patch_size_t, patch_size, patch_size), dtype=grid.dtype,
                               device=device).view(3, 1, 1, 1)
    coords = torch.stack([grid, ends], dim=-1).flatten(1, 3).unsqueeze(0)  # (1, 3, N, 2)
    scale = torch.tensor((temporal_ratio, spatial_ratio, spatial_ratio), dtype=coords.dtype, device=device)
    coords = coords * scale.view(1, -1, 1, 1)
    coords[:, 0] = coords[:, 0] + pixel_frame
    if pixel_frames == 1:
        coords[:, 0, :, 1:] = coords[:, 0, :, :1] + 1
    coords[:, 0] = coords[:, 0] / fps
    return coords


def conditioned_latents(vae: LTX2VideoVAE, conditions: tuple[LTX2Condition, ...], *, height: int, width: int,
                        num_frames: int, channels: int, patch_size: int, patch_size_t: int, fps: float,
                        noise_scale: float, base_coords: torch.Tensor, generator: torch.Generator,
                        device: torch.device) -> tuple[torch.Tensor, VideoConditioning]:
    """``LTX2ConditionPipeline.prepare_latents`` (module contract). ``base_coords``: the generated grid's
    ``(1, 3, N, 2)`` RoPE coordinates (the DiT's), to which appended keyframes' coordinates are joined."""
    _check_patch(patch_size_t)
    tr, sr = vae.temporal_compression_ratio, vae.spatial_compression_ratio
    latent_frames = (num_frames - 1) // tr + 1
    lh, lw = height // sr, width // sr
    latents = pack_latents(torch.zeros((1, channels, latent_frames, lh, lw), device=device), patch_size,
                           patch_size_t)
    mask = torch.zeros(latents.shape[:2] + (1,), device=device)
    clean = torch.zeros_like(latents)
    base_tokens = latents.shape[1]
    extra_tokens, extra_mask, extra_coords = [], [], []
    for n, cond in enumerate(conditions):
        arr = cond.rgb()
        if arr.shape[0] == 1:
            arr = h264_roundtrip(arr[0], DEFAULT_IMAGE_CRF if cond.crf is None else cond.crf)[None]
        index = cond.index % latent_frames if cond.index < 0 else cond.index
        if index >= latent_frames:
            raise ValueError(f"condition {n}: latent index {cond.index} is past the {latent_frames} latent frames "
                             f"of a {num_frames}-frame video")
        start = max((index - 1) * tr + 1, 0)
        keep = (min(arr.shape[0], num_frames - start) - 1) // tr * tr + 1
        pixels = _cover_resize(arr, height, width, device)[:, :, :keep]
        cond_latents = _encode(vae, pixels, normalize_first=True).to(device)
        packed = pack_latents(cond_latents, patch_size, patch_size_t)
        if index == 0:
            count = packed.shape[1]
            latents[:, :count] = packed
            mask[:, :count] = float(cond.strength)
            clean[:, :count] = packed
            continue
        extra_tokens.append(packed)
        extra_mask.append(torch.full((1, packed.shape[1], 1), float(cond.strength), device=device))
        extra_coords.append(keyframe_coords(cond_latents.shape[2], cond_latents.shape[3], cond_latents.shape[4],
                                            pixel_frame=(index - 1) * tr + 1, pixel_frames=keep,
                                            patch_size=patch_size, patch_size_t=patch_size_t, temporal_ratio=tr,
                                            spatial_ratio=sr, fps=fps, device=device))
    coords = None
    if extra_tokens:
        latents = torch.cat([latents, *extra_tokens], dim=1)
        mask = torch.cat([mask, *extra_mask], dim=1)
        clean = torch.cat([clean, *extra_tokens], dim=1)
        coords = torch.cat([base_coords.to(device), *extra_coords], dim=2)
    noise = torch.randn(latents.shape, generator=generator, device=generator.device,
                        dtype=latents.dtype).to(device)
    scaled = (1.0 - mask) * noise_scale
    latents = noise * scaled + latents * (1 - scaled)
    return latents, VideoConditioning(mask=mask.squeeze(-1), base_tokens=base_tokens, clean=clean, coords=coords,
                                      packed_audio_noise=True)


@dataclass
class AudioConditioning:
    """Audio latent frames carried over from a previous segment (module contract of :func:`audio_prefix_latents`)."""

    mask: torch.Tensor  #: (1, L_a) float32 clean-mask (1 - the state's audio_conditioning_strength on the prefix)
    clean: torch.Tensor  #: (1, L_a, C * M) the carried latents on the prefix, zeros elsewhere


def audio_prefix_latents(noise: torch.Tensor, cached: torch.Tensor, num_frames: int, strength: float,
                         noise_scale: float) -> tuple[torch.Tensor, AudioConditioning]:
    """Put the last ``num_frames`` latent frames of ``cached`` (denoiser-space ``(1, C, T, M)``, as
    :attr:`~.pipeline.LTX2Output.audio_latents`) at the start of a segment's packed audio ``noise`` ``(1, L, C*M)``
    with clean-mask ``1 - strength`` (``strength`` is the reference's: 0 keeps the cached audio, 1 renoises it),
    mixed as the video condition path does: ``noise * s + clean * (1 - s)``, ``s = (1 - mask) * noise_scale``."""
    if cached.ndim != 4 or cached.shape[0] != 1 or cached.shape[1] * cached.shape[3] != noise.shape[2]:
        raise ValueError(f"cached audio latents of shape {tuple(cached.shape)} do not fit this model's audio "
                         f"tokens of width {noise.shape[2]} (expected (1, C, T, M) with C * M = {noise.shape[2]})")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"audio_conditioning_strength must be in [0, 1], got {strength!r}")
    n = min(int(num_frames), cached.shape[2], noise.shape[1])
    mask = torch.zeros(noise.shape[:2], device=noise.device, dtype=noise.dtype)
    clean = torch.zeros_like(noise)
    if n > 0:
        tail = cached[:, :, cached.shape[2] - n:].to(noise.device, noise.dtype)
        clean[:, :n] = tail.transpose(1, 2).flatten(2, 3)  # (1, n, C * M), LTX2Pipeline's audio packing
        mask[:, :n] = 1.0 - float(strength)
    scaled = (1.0 - mask.unsqueeze(-1)) * noise_scale
    return noise * scaled + clean * (1 - scaled), AudioConditioning(mask=mask, clean=clean)
