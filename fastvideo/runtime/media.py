"""Video container encoding with PyAV (FFmpeg): frames in, playable MP4 bytes out.

Contract: :func:`encode_mp4(frames, fps)` takes ``uint8`` RGB frames shaped ``(T, H, W, 3)`` (even
``H`` and ``W``) and returns an H.264 / yuv420p MP4 with the ``moov`` atom first (``+faststart``)
that browsers and players open; :func:`write_mp4_atomic` writes such bytes to a path through a
temporary sibling and a rename, so a failure never leaves a half-written file at the path.
:func:`decode_mp4` is the inverse used by tests and tools.
"""

from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

DEFAULT_CRF = 18


def encode_mp4(frames: np.ndarray, fps: int, *, crf: int = DEFAULT_CRF, extra_options: dict[str, str] | None = None,
               container_options: dict[str, str] | None = None) -> bytes:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames as H.264 yuv420p MP4 bytes."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    count, height, width, _ = frames.shape
    if count < 1:
        raise ValueError("cannot encode a video with no frames")
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even sizes, got {width}x{height}")
    options = {"movflags": "+faststart"}
    options.update(container_options or {})
    # faststart rewrites the file to move ``moov`` first, which needs a real file to reopen.
    with tempfile.TemporaryDirectory(prefix="fastvideo-mp4-") as tmp:
        path = os.path.join(tmp, "video.mp4")
        with av.open(path, mode="w", format="mp4", options=options) as container:
            stream = container.add_stream("libx264", rate=Fraction(int(fps), 1))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast", **(extra_options or {})}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        with open(path, "rb") as handle:
            return handle.read()


def decode_mp4(data: bytes) -> tuple[np.ndarray, float]:
    """Decode MP4 bytes to ``(T, H, W, 3)`` uint8 RGB frames and the stream's frame rate."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.base_rate or 0)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise ValueError("the MP4 holds no decodable video frames")
    return np.stack(frames), fps


def write_mp4_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), 0o644)  # mkstemp makes 0600; a finished video is an ordinary file
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
