"""Tiled LTX-2 video VAE encode/decode: diffusers 0.42's ``AutoencoderKLLTX2Video`` tiling, for bounded memory.

Contract
--------
- :class:`LTX2VAETiling` holds diffusers' knobs in pixels / video frames (its defaults: tiles of 512x512 pixels
  every 448, and, with ``temporal``, 16 frames every 8). ``spatial`` is diffusers' ``enable_tiling()``
  (``use_tiling``); ``temporal`` is its ``use_framewise_decoding`` flag, which diffusers also consults when
  *encoding*. Neither is on in any diffusers LTX-2 pipeline; ``LTX2VideoVAE.encode/decode(tiling=...)`` opt in.
- :func:`tiled_decode` / :func:`tiled_encode` reproduce diffusers' schedules exactly, in the same order: overlapping
  tiles run through the plain decoder/encoder; each tile is blended in place with its already-blended upper and
  left neighbours (linear ramps over the overlap; decode blends in pixels, encode in latents) and cropped to the
  stride; temporal tiles overlap by one latent frame and are blended the same way along time. Whether a call tiles
  at all follows diffusers' thresholds (temporal first: more latent frames than ``min_num_frames // T``; spatial:
  a latent side above ``min // S``), so small inputs take the untiled path.
- Results equal diffusers' tiled results (not the untiled ones: tiling changes the output near tile seams).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["LTX2VAETiling", "tiled_decode", "tiled_encode"]

#: ``(input, causal) -> output``: the plain encoder or decoder (timestep bound in).
Coder = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LTX2VAETiling:
    """Tile sizes and strides in pixels / frames (diffusers' defaults); see the module contract."""

    spatial: bool = True
    temporal: bool = False
    min_height: int = 512
    min_width: int = 512
    stride_height: int = 448
    stride_width: int = 448
    min_num_frames: int = 16
    stride_num_frames: int = 8

    def __post_init__(self) -> None:
        for name in ("min_height", "min_width", "stride_height", "stride_width", "min_num_frames",
                     "stride_num_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"LTX2VAETiling.{name} must be positive, got {getattr(self, name)}")
        for size, stride in (("min_height", "stride_height"), ("min_width", "stride_width"),
                             ("min_num_frames", "stride_num_frames")):
            if getattr(self, stride) > getattr(self, size):
                raise ValueError(f"LTX2VAETiling.{stride} ({getattr(self, stride)}) must not exceed {size} "
                                 f"({getattr(self, size)}): tiles would leave gaps")


def _blend(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> None:
    """Ramp the first ``extent`` slices of ``b`` along ``dim`` from ``a``'s last ones into ``b``'s, in place."""
    extent = min(a.shape[dim], b.shape[dim], extent)
    for k in range(extent):
        dst = b.select(dim, k)
        dst.copy_(a.select(dim, a.shape[dim] - extent + k) * (1 - k / extent) + dst * (k / extent))


def _spatial_tiles(x: torch.Tensor, run: Coder, in_min: tuple[int, int], in_stride: tuple[int, int],
                   blend: tuple[int, int], out_stride: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """Run ``run`` on overlapping spatial tiles of ``x`` and stitch them (diffusers' tiled_encode/tiled_decode)."""
    height, width = x.shape[-2:]
    rows = [[run(x[..., i:i + in_min[0], j:j + in_min[1]]) for j in range(0, width, in_stride[1])]
            for i in range(0, height, in_stride[0])]
    stitched = []
    for i, row in enumerate(rows):
        pieces = []
        for j, tile in enumerate(row):
            if i > 0:
                _blend(rows[i - 1][j], tile, blend[0], dim=3)
            if j > 0:
                _blend(row[j - 1], tile, blend[1], dim=4)
            pieces.append(tile[..., :out_stride[0], :out_stride[1]])
        stitched.append(torch.cat(pieces, dim=4))
    return torch.cat(stitched, dim=3)[..., :out_size[0], :out_size[1]]


def _decode_spatial(z: torch.Tensor, decoder: Coder, cfg: LTX2VAETiling, ratio: int) -> torch.Tensor:
    lat_min = (cfg.min_height // ratio, cfg.min_width // ratio)
    lat_stride = (cfg.stride_height // ratio, cfg.stride_width // ratio)
    blend = (cfg.min_height - cfg.stride_height, cfg.min_width - cfg.stride_width)
    size = (z.shape[3] * ratio, z.shape[4] * ratio)
    return _spatial_tiles(z, decoder, lat_min, lat_stride, blend, (cfg.stride_height, cfg.stride_width), size)


def _encode_spatial(x: torch.Tensor, encoder: Coder, cfg: LTX2VAETiling, ratio: int) -> torch.Tensor:
    lat_min = (cfg.min_height // ratio, cfg.min_width // ratio)
    lat_stride = (cfg.stride_height // ratio, cfg.stride_width // ratio)
    blend = (lat_min[0] - lat_stride[0], lat_min[1] - lat_stride[1])
    size = (x.shape[3] // ratio, x.shape[4] // ratio)
    return _spatial_tiles(x, encoder, (cfg.min_height, cfg.min_width), (cfg.stride_height, cfg.stride_width),
                          blend, lat_stride, size)


def tiled_decode(z: torch.Tensor, decoder: Coder, cfg: LTX2VAETiling, spatial_ratio: int,
                 temporal_ratio: int) -> torch.Tensor:
    """Latents -> video with diffusers' tiling schedule (module contract)."""
    frames, height, width = z.shape[2:]
    lat_min_h, lat_min_w = cfg.min_height // spatial_ratio, cfg.min_width // spatial_ratio
    lat_min_t = cfg.min_num_frames // temporal_ratio

    def spatial_or_plain(tile: torch.Tensor) -> torch.Tensor:
        if cfg.spatial and (tile.shape[4] > lat_min_w or tile.shape[3] > lat_min_h):
            return _decode_spatial(tile, decoder, cfg, spatial_ratio)
        return decoder(tile)

    if not (cfg.temporal and frames > lat_min_t):
        return spatial_or_plain(z)
    lat_stride_t = cfg.stride_num_frames // temporal_ratio
    tiles = []
    for i in range(0, frames, lat_stride_t):
        decoded = spatial_or_plain(z[:, :, i:i + lat_min_t + 1])
        tiles.append(decoded if i == 0 else decoded[:, :, :-1])
    pieces = [tiles[0][:, :, :cfg.stride_num_frames + 1]]
    for prev, tile in zip(tiles, tiles[1:]):
        _blend(prev, tile, cfg.min_num_frames - cfg.stride_num_frames, dim=2)
        pieces.append(tile[:, :, :cfg.stride_num_frames])
    return torch.cat(pieces, dim=2)[:, :, :(frames - 1) * temporal_ratio + 1]


def tiled_encode(x: torch.Tensor, encoder: Coder, cfg: LTX2VAETiling, spatial_ratio: int,
                 temporal_ratio: int) -> torch.Tensor:
    """Video -> encoder output with diffusers' tiling schedule (module contract)."""
    frames, height, width = x.shape[2:]

    def spatial_or_plain(tile: torch.Tensor) -> torch.Tensor:
        if cfg.spatial and (width > cfg.min_width or height > cfg.min_height):
            return _encode_spatial(tile, encoder, cfg, spatial_ratio)
        return encoder(tile)

    if not (cfg.temporal and frames > cfg.min_num_frames):
        return spatial_or_plain(x)
    lat_min_t = cfg.min_num_frames // temporal_ratio
    lat_stride_t = cfg.stride_num_frames // temporal_ratio
    tiles = []
    for i in range(0, frames, cfg.stride_num_frames):
        encoded = spatial_or_plain(x[:, :, i:i + cfg.min_num_frames + 1])
        tiles.append(encoded if i == 0 else encoded[:, :, 1:])
    pieces = [tiles[0][:, :, :lat_stride_t + 1]]
    for prev, tile in zip(tiles, tiles[1:]):
        _blend(prev, tile, lat_min_t - lat_stride_t, dim=2)
        pieces.append(tile[:, :, :lat_stride_t])
    return torch.cat(pieces, dim=2)[:, :, :(frames - 1) // temporal_ratio + 1]
