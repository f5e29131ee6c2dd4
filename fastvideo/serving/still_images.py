"""Still images for the HTTP API: PNG from an RGB frame, and a video's first frame as a thumbnail.

Contract: :func:`png_bytes` takes one ``uint8`` RGB frame ``(H, W, 3)`` (a numpy array the runtime
returned; nothing here touches tensors) and returns PNG bytes (lossless, via PyAV's PNG encoder);
:func:`thumbnail_png` decodes only the first frame of MP4 bytes and returns it as PNG. Both raise
``ValueError`` on input they cannot handle.
"""

from __future__ import annotations

import io
from typing import Any

import av
import numpy as np


def png_bytes(frame: Any) -> bytes:
    """PNG bytes of one ``(H, W, 3)`` uint8 RGB frame."""
    array = np.ascontiguousarray(np.asarray(frame))
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) frame, got {array.dtype} {array.shape}")
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = array.shape[1], array.shape[0], "rgb24"
    packets = list(codec.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
    packets += list(codec.encode(None))
    if not packets:
        raise ValueError("the PNG encoder produced no output")
    return b"".join(bytes(p) for p in packets)


def thumbnail_png(mp4: bytes) -> bytes:
    """The first frame of an MP4 as PNG bytes."""
    with av.open(io.BytesIO(mp4), mode="r") as container:
        for frame in container.decode(video=0):
            return png_bytes(frame.to_ndarray(format="rgb24"))
    raise ValueError("the video has no decodable frame")
