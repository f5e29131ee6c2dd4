"""Wan image-to-video conditioning (Wan2.1 I2V / FLF2V, Wan2.2 I2V A14B): CLIP image tokens, VAE condition latents.

Contract (each step numerically the same as diffusers' ``WanImageToVideoPipeline``):
- :func:`load_image` opens ``inputs.image_path`` / ``inputs.last_image`` (a path or a PIL image) as RGB; an
  unreadable file is a :class:`~fastvideo.api.RequestError` naming the field.
- :class:`WanImageEncoder` is the folder's ``image_processor`` (transformers' ``CLIPImageProcessor``: resize,
  center crop, normalize) and ``image_encoder`` (transformers' ``CLIPVisionModel``, loaded in float32 as
  diffusers' docs load it); :meth:`WanImageEncoder.encode` returns the penultimate hidden states
  ``(N, tokens, hidden)`` of ``N`` images. For first-last-frame the two images' tokens are concatenated
  (first image first) into one ``(1, 2 * tokens, hidden)`` sequence, which is what diffusers' image embedder
  sees after its ``view(-1, 2 * seq_len, dim)``.
- :func:`vae_pixels` resizes an image to the video size with PIL's Lanczos filter and scales it to
  ``[-1, 1]`` (diffusers' ``VideoProcessor.preprocess``).
- :func:`condition_latents` builds the 20 extra DiT input channels: 4 mask channels (1 on the first video
  frame, and on the last one for first-last-frame; the first frame's value repeated over the VAE's temporal
  factor, then folded into latent frames) followed by the VAE encoding (the posterior's mode, normalized with
  the config's mean/std) of a video whose first frame is the image, last frame the last image or zero, and
  every other frame zero, all encoded together. Returns ``(1, 4 + z_dim, T', H/8, W/8)`` float32.
- Wan2.2 I2V A14B (a family with ``latent_image_condition``): no CLIP at all. The image enters only through
  :func:`condition_latents` (the same mask + VAE channels, as diffusers' ``WanImageToVideoPipeline`` builds them
  whatever its transformer), concatenated to the noise; its transformer has no ``image_dim`` and takes no image
  tokens (diffusers: ``image_embeds`` stay None when ``transformer.config.image_dim`` is None).
- :func:`family_workload` / :func:`check_image_conditioning`: a folder's workload (``t2v``, ``i2v``, ``flf2v``:
  a DiT with ``pos_embed_seq_len``, diffusers' first-last-frame models, which need both images; ``i2v`` for a
  ``latent_image_condition`` family) and the ModelLoadError for a transformer whose kind disagrees with its
  pipeline class (for ``latent_image_condition``: one with ``image_dim``, or whose ``in_channels`` are not the
  noise plus the condition channels, ``2 * z_dim + 4``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastvideo.api.errors import ModelLoadError, RequestError
from fastvideo.engine.models.wan.transformer import WanDiTConfig
from fastvideo.engine.families import ModelFamily
from fastvideo.engine.models.wan.vae import WanVAE

logger = logging.getLogger(__name__)

#: Image-conditioning workloads: "i2v" (first frame), "flf2v" (first and last frames).
IMAGE_WORKLOADS = ("i2v", "flf2v")


def load_image(value: Any, field: str) -> Any:
    """``value`` (a path or a PIL image) as an RGB PIL image; an unreadable one is a RequestError at ``field``."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if not isinstance(value, (str, Path)):
        raise RequestError(field, f"must be an image file path (or a PIL image in Python), got {type(value).__name__}")
    try:
        with Image.open(Path(value).expanduser()) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise RequestError(field, f"image file {value!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise RequestError(field, f"cannot read {value!r} as an image ({exc}); use a PNG or JPEG file") from None


def vae_pixels(image: Any, height: int, width: int) -> torch.Tensor:
    """``(1, 3, height, width)`` float32 in ``[-1, 1]``: Lanczos resize, then ``2 * x / 255 - 1``."""
    from PIL import Image

    resized = image.resize((width, height), resample=Image.Resampling.LANCZOS, reducing_gap=None)
    array = np.asarray(resized).astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0) * 2.0 - 1.0


class WanImageEncoder:
    """CLIP image processor + vision model giving Wan's image tokens (see module contract)."""

    def __init__(self, processor: Any, model: torch.nn.Module) -> None:
        self.processor = processor
        self.model = model

    @classmethod
    def from_folder(cls, processor_dir: Path, encoder_dir: Path, *, device: torch.device,
                    variant: str | None = None) -> "WanImageEncoder":
        """Load both from local sub-folders (offline), the encoder's weights checked against its config first."""
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

        from fastvideo.engine.loader import check_shapes, find_weight_files, read_shapes

        for folder, what in ((processor_dir, "image_processor"), (encoder_dir, "image_encoder")):
            if not folder.is_dir():
                raise ModelLoadError(f"{folder} is missing: an image-to-video folder needs {what}/ (the CLIP "
                                     "image processor and vision encoder of the original model)")
        try:
            processor = CLIPImageProcessor.from_pretrained(str(processor_dir), local_files_only=True)
            config = CLIPVisionConfig.from_pretrained(str(encoder_dir), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the CLIP image processor/encoder config from {processor_dir} / "
                                 f"{encoder_dir}: {exc}") from exc
        with torch.device("meta"):
            skeleton = CLIPVisionModel(config)
        files = find_weight_files(encoder_dir, variant)
        if not files:
            raise ModelLoadError(f"{encoder_dir} has no *.safetensors weights")
        check_shapes(skeleton, read_shapes(files), encoder_dir)
        model: torch.nn.Module = CLIPVisionModel.from_pretrained(str(encoder_dir), dtype=torch.float32,
                                                                 local_files_only=True, variant=variant)
        model.to(device).eval().requires_grad_(False)
        return cls(processor, model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, images: list[Any]) -> torch.Tensor:
        """Penultimate CLIP hidden states ``(len(images), tokens, hidden)`` in float32."""
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device, torch.float32)
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[-2]


def image_tokens(encoder: WanImageEncoder, first: Any, last: Any | None) -> torch.Tensor:
    """``(1, tokens, hidden)`` for I2V, ``(1, 2 * tokens, hidden)`` (first image first) for first-last-frame."""
    states = encoder.encode([first] if last is None else [first, last])
    return states.reshape(1, -1, states.shape[-1])


@torch.no_grad()
def condition_latents(vae: WanVAE, first: Any, last: Any | None, *, height: int, width: int,
                      num_frames: int, vae_dtype: torch.dtype) -> torch.Tensor:
    """The mask + image-latent channels ``(1, 4 + z_dim, T', h, w)`` float32 for a ``num_frames`` (4k+1) video."""
    factor_t, factor_s = vae.temporal_factor, vae.spatial_factor
    if (num_frames - 1) % factor_t:
        raise ValueError(f"num_frames must be {factor_t}k+1, got {num_frames}")
    frames = [vae_pixels(first, height, width)]
    middle = num_frames - (1 if last is None else 2)
    frames.append(torch.zeros(1, 3, middle, height, width))
    video = torch.cat([frames[0].unsqueeze(2), frames[1]] if last is None
                      else [frames[0].unsqueeze(2), frames[1], vae_pixels(last, height, width).unsqueeze(2)], dim=2)
    device = next(vae.parameters()).device
    latents = vae.encode(video.to(device=device, dtype=vae_dtype)).mode().float()
    latents = vae.normalize_latents(latents)
    latent_frames, h, w = latents.shape[2], height // factor_s, width // factor_s
    mask = torch.zeros(1, 1, num_frames, h, w, device=latents.device)
    mask[:, :, 0] = 1
    if last is not None:
        mask[:, :, -1] = 1
    mask = torch.cat([mask[:, :, :1].repeat_interleave(factor_t, dim=2), mask[:, :, 1:]], dim=2)
    mask = mask.view(1, latent_frames, factor_t, h, w).transpose(1, 2)
    return torch.cat([mask, latents], dim=1)


def family_workload(family: ModelFamily, config: WanDiTConfig) -> str:
    """``"t2v"``, ``"i2v"`` (also a ``latent_image_condition`` family), or ``"flf2v"`` (an image-conditioned DiT
    with ``pos_embed_seq_len``)."""
    if family.latent_image_condition:
        return "i2v"
    if not family.image_conditioned:
        return "t2v"
    return "flf2v" if config.pos_embed_seq_len is not None else "i2v"


def check_image_conditioning(family: ModelFamily, config: WanDiTConfig, folder: Any, *,
                             z_dim: int | None = None, component: str = "transformer") -> None:
    """A ModelLoadError when the ``component`` transformer's kind (``image_dim`` set or not) disagrees with the
    family's; for a ``latent_image_condition`` family also when its ``in_channels`` are not ``2 * z_dim + 4``
    (``z_dim``: the VAE's; None skips that check)."""
    where = f"{folder.component(component)}/config.json"
    if family.latent_image_condition:
        if config.is_image_conditioned:
            raise ModelLoadError(f"{where} sets image_dim={config.image_dim}, added_kv_proj_dim="
                                 f"{config.added_kv_proj_dim} (a Wan2.1 image-to-video transformer that takes CLIP "
                                 f"image tokens), but {folder.root}/model_index.json names a {family.description} "
                                 "folder, whose transformer takes the image through its input channels only; use the "
                                 "checkpoint shipped with that pipeline")
        if z_dim is not None and config.in_channels != 2 * z_dim + 4:
            raise ModelLoadError(f"{where} sets in_channels={config.in_channels}, but {family.description} takes the "
                                 f"noise ({z_dim} channels, the VAE's z_dim), the 4 mask channels and the image's "
                                 f"{z_dim} latent channels: in_channels must be {2 * z_dim + 4}")
        return
    if config.is_image_conditioned == family.image_conditioned:
        return
    if config.is_image_conditioned:
        raise ModelLoadError(f"{where} sets image_dim={config.image_dim}, added_kv_proj_dim="
                             f"{config.added_kv_proj_dim} (an image-to-video transformer), but "
                             f"{folder.root}/model_index.json names a {family.description} folder; use the "
                             "text-to-video checkpoint, or a complete WanImageToVideoPipeline folder (with "
                             "image_encoder/ and image_processor/)")
    raise ModelLoadError(f"{where} has no image_dim (a text-to-video transformer), but {folder.root}/model_index.json "
                         f"names a {family.description} folder, which needs the image-to-video transformer "
                         "(image_dim and added_kv_proj_dim set); use the checkpoint shipped with that pipeline")
