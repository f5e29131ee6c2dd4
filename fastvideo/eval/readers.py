"""Readers of the videos ``fastvideo eval`` scores: MP4 (and other FFmpeg containers), frame folders, ``.npy``.

Contract: :func:`load_video` returns a :class:`Video` holding ``(T, H, W, C)`` frames (``C`` 1 or 3) as
``uint8`` or as ``float32`` in ``[0, 1]``, never anything else, plus its source and fps when known:

- a video file (``.mp4``, ``.mov``, ``.mkv``, ``.webm``, ``.avi``, ``.gif``) is decoded with PyAV to RGB;
- a folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.webp``) is one video, frames in name order
  (zero-pad the numbers), decoded with PyAV too; every image must have the same size;
- a ``.npy`` array is ``(T, H, W, C)`` / ``(T, H, W)``, ``uint8`` or float in ``[0, 1]``;
- an in-memory numpy array of that shape is taken as is (the Python API).

:func:`expand_sources` turns CLI arguments (files, globs, folders of videos or of frame folders) into
sources. Every failure raises :class:`~fastvideo.eval.registry.EvalError` naming the path and what is
wrong: a missing path, a file FFmpeg cannot decode, a video with no frames, an array of the wrong shape,
dtype or range.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import av
import numpy as np

from fastvideo.eval.registry import EvalError

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ARRAY_SUFFIXES = (".npy",)

#: What the Python API accepts as one video.
VideoSource = Union[str, Path, np.ndarray, "Video"]


@dataclass
class Video:
    """Decoded frames ``(T, H, W, C)``: ``uint8``, or ``float32`` in ``[0, 1]``."""

    frames: np.ndarray
    source: str
    fps: float | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def channels(self) -> int:
        return int(self.frames.shape[3])

    def shape_text(self) -> str:
        return f"{self.num_frames} frames of {self.width}x{self.height}x{self.channels}"

    def as_float(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``[start:stop]`` as float64 in ``[0, 1]``."""
        chunk = self.frames[start:stop]
        if chunk.dtype == np.uint8:
            return chunk.astype(np.float64) / 255.0
        return chunk.astype(np.float64)


def check_frames(frames: Any, source: str) -> np.ndarray:
    """``frames`` as ``(T, H, W, C)`` uint8 or float32 in [0, 1], or an EvalError saying what is wrong."""
    if not isinstance(frames, np.ndarray):
        raise EvalError(f"{source}: expected a numpy array of frames, got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        hint = (" (it looks channel-first: transpose to (T, H, W, C))"
                if frames.ndim == 4 and frames.shape[1] in (1, 3) else "")
        raise EvalError(f"{source}: frames must be shaped (T, H, W, C) with C 1 or 3, or (T, H, W); "
                        f"got {tuple(frames.shape)}{hint}")
    if 0 in frames.shape:
        raise EvalError(f"{source}: the video is empty (shape {tuple(frames.shape)})")
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise EvalError(f"{source}: frames must be uint8 (0-255) or float in [0, 1], got dtype {frames.dtype}")
    frames = frames.astype(np.float32, copy=False)
    if not np.isfinite(frames).all():
        raise EvalError(f"{source}: frames hold NaN or infinite values")
    lo, hi = float(frames.min()), float(frames.max())
    if lo < 0.0 or hi > 1.0:
        raise EvalError(f"{source}: float frames must lie in [0, 1], got {lo:.4g}..{hi:.4g} "
                        "(map [-1, 1] outputs with (x + 1) / 2, or pass uint8)")
    return frames


def _decode_container(path: Path) -> tuple[list[np.ndarray], float | None]:
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise EvalError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except EvalError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise EvalError(f"{path}: cannot decode it as a video or image ({exc.__class__.__name__}: {exc}); "
                        "give an MP4/MOV/MKV/WebM file, a folder of PNG/JPEG frames, or a .npy array") from None
    return frames, (float(rate) if rate else None)


def _load_frame_folder(path: Path) -> Video:
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise EvalError(f"{path}: the folder holds no frames ({', '.join(IMAGE_SUFFIXES)}) and no videos")
    frames: list[np.ndarray] = []
    for image in images:
        decoded, _ = _decode_container(image)
        if len(decoded) != 1:
            raise EvalError(f"{image}: expected one image, found {len(decoded)} frames")
        if frames and decoded[0].shape != frames[0].shape:
            h0, w0 = frames[0].shape[:2]
            h, w = decoded[0].shape[:2]
            raise EvalError(f"{image}: is {w}x{h} but {images[0].name} is {w0}x{h0}; every frame of a folder must "
                            "have the same size")
        frames.append(decoded[0])
    return Video(frames=np.stack(frames), source=str(path))


def _load_npy(path: Path) -> Video:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise EvalError(f"{path}: cannot read it as a .npy array ({exc})") from None
    return Video(frames=check_frames(array, str(path)), source=str(path))


def load_video(source: VideoSource, *, name: str | None = None) -> Video:
    """Decode one video from a path (video file, frame folder, ``.npy``) or wrap an in-memory array."""
    if isinstance(source, Video):
        return Video(frames=check_frames(source.frames, source.source), source=source.source, fps=source.fps)
    if isinstance(source, np.ndarray):
        label = name or "<array>"
        return Video(frames=check_frames(source, label), source=label)
    path = Path(source)
    if not path.exists():
        raise EvalError(f"{path}: no such file or folder")
    if path.is_dir():
        return _load_frame_folder(path)
    if path.suffix.lower() in ARRAY_SUFFIXES:
        return _load_npy(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise EvalError(f"{path}: is a single image; give the folder of frames it belongs to")
    frames, fps = _decode_container(path)
    if not frames:
        raise EvalError(f"{path}: the video has no frames")
    return Video(frames=np.stack(frames), source=str(path), fps=fps)


def _is_frame_folder(path: Path) -> bool:
    entries = list(path.iterdir())
    has_media = any(p.suffix.lower() in VIDEO_SUFFIXES + ARRAY_SUFFIXES for p in entries)
    return not has_media and any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries)


def expand_sources(patterns: list[str]) -> list[str]:
    """CLI paths to sources, in order and without repeats: a glob expands (sorted), a folder of videos/``.npy``
    (or of frame folders) expands to them (sorted), a folder of images is one video, a file is itself."""
    out: list[str] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            matched = sorted(glob.glob(pattern))
            if not matched:
                raise EvalError(f"{pattern}: the pattern matches no file")
            out += matched
            continue
        path = Path(pattern)
        if not path.exists():
            raise EvalError(f"{path}: no such file or folder")
        if path.is_dir() and not _is_frame_folder(path):
            media = VIDEO_SUFFIXES + ARRAY_SUFFIXES
            files = sorted(str(p) for p in path.iterdir()
                           if p.suffix.lower() in media or (p.is_dir() and _is_frame_folder(p)))
            if not files:
                raise EvalError(f"{path}: the folder holds no videos ({', '.join(VIDEO_SUFFIXES + ARRAY_SUFFIXES)}) "
                                f"and no frames ({', '.join(IMAGE_SUFFIXES)})")
            out += files
        else:
            out.append(str(path))
    return list(dict.fromkeys(out))
