"""The HTTP edge's side of request translation: an OpenAI body -> ``GenerationRequest``, and what the
``Video`` object reports about it; reference images.

Contract:
- :func:`map_video_request` hands the body's plain mapping (JSON, or a form mapped to the same
  nesting) to :func:`fastvideo.api.translate_request` on the ``http`` edge (the one translation
  layer: field table, precedence rule, size parser, coercions; see :mod:`fastvideo.api.wire`) and
  adds what the ``Video`` object reports: the size, frames, fps and seconds the job will have (the
  model's defaults for what the client left out). A bad value raises
  :class:`fastvideo.api.RequestError` naming the client's field; the routes answer it as a 400
  with that ``param``. :func:`map_image_request` does the same for one frame of an image request (image
  ``i`` of ``n`` takes seed ``(seed + i) % 2**63``). Both apply the server's ``max_prompt_chars``.
- :func:`decode_image_reference` accepts uploaded bytes, a data URL, bare base64, or
  ``{"image_url": ...}``; checks the bytes are a PNG/JPEG/WebP/GIF image and returns them with an
  extension. Remote URLs and ``file_id`` are refused (the server fetches nothing).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from fastvideo.api import (
    MAX_PROMPT_CHARS,
    GenerationRequest,
    OutputConfig,
    RequestError,
    TranslatedRequest,
    translate_request,
)
from fastvideo.serving.errors import bad_request


@dataclass(frozen=True)
class ModelDefaults:
    """The served model's identity and default shape (from the runtime's preset)."""

    name: str
    width: int
    height: int
    num_frames: int
    fps: int
    max_frames: int


@dataclass(frozen=True)
class MappedRequest:
    """A translated request plus what the ``Video`` object reports about it."""

    translated: TranslatedRequest
    width: int
    height: int
    num_frames: int
    fps: int
    seconds: str

    @property
    def request(self) -> GenerationRequest:
        return self.translated.request


def _fmt_seconds(num_frames: int, fps: int) -> str:
    value = num_frames / fps
    return str(int(value)) if value == int(value) else f"{value:.4f}".rstrip("0")


def _mapped(translated: TranslatedRequest, defaults: ModelDefaults) -> MappedRequest:
    s = translated.request.sampling
    width = s.width if s.width is not None else defaults.width
    height = s.height if s.height is not None else defaults.height
    num_frames = s.num_frames if s.num_frames is not None else defaults.num_frames
    fps = s.fps if s.fps is not None else defaults.fps
    seconds = _fmt_seconds(num_frames, fps) if fps > 0 else str(num_frames)
    return MappedRequest(translated=translated, width=width, height=height, num_frames=num_frames, fps=fps,
                         seconds=seconds)


def map_video_request(body: Mapping[str, Any], defaults: ModelDefaults, *, request_id: str,
                      image_path: str | None = None, max_prompt_chars: int = MAX_PROMPT_CHARS) -> MappedRequest:
    """The typed request for an OpenAI video body (see module contract)."""
    translated = translate_request("http", body, fps=defaults.fps, request_id=request_id, image_path=image_path,
                                   output=OutputConfig(save_video=False, return_frames=False),
                                   max_prompt_chars=max_prompt_chars)
    return _mapped(translated, defaults)


#: Fields an image request cannot set (an image is one frame).
_FRAME_FIELDS = ("sampling.num_frames", "sampling.fps", "state")


def map_image_request(body: Mapping[str, Any], defaults: ModelDefaults, *, request_id: str,
                      index: int = 0, max_prompt_chars: int = MAX_PROMPT_CHARS) -> MappedRequest:
    """One frame of an image request; image ``index`` > 0 takes ``(seed + index) % 2**63`` (when a seed is
    given: every seed in range gives ``n`` seeds in range)."""
    translated = translate_request("http", body, fps=defaults.fps, request_id=request_id,
                                   output=OutputConfig(save_video=False, return_frames=True),
                                   max_prompt_chars=max_prompt_chars)
    for path in _FRAME_FIELDS:
        if path in translated.given:
            raise RequestError(translated.given[path], "does not apply to an image (one frame); remove it")
    request = translated.request
    seed = request.sampling.seed
    sampling = replace(request.sampling, num_frames=1,
                       seed=(seed + index) % 2**63 if seed is not None and index else seed)
    translated = replace(translated, request=replace(request, sampling=sampling))
    return _mapped(translated, defaults)


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"))


def sniff_image(data: bytes) -> str | None:
    """The image type of ``data`` by its magic bytes, or None."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def decode_image_reference(value: Any, *, param: str = "input_reference",
                           max_bytes: int = 32 * 1024 * 1024) -> tuple[bytes, str]:
    """``(bytes, ext)`` of an image reference (see module contract); APIError 400 otherwise."""
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    else:
        if isinstance(value, dict):
            if value.get("file_id"):
                raise bad_request("input_reference.file_id is not supported; upload the image or send a data URL",
                                  param, "unsupported_value")
            value = value.get("image_url")
            if isinstance(value, dict):  # {"image_url": {"url": ...}}
                value = value.get("url")
        if not isinstance(value, str) or not value.strip():
            raise bad_request("input_reference must be an image upload, a data URL or base64 image bytes", param,
                              "invalid_image")
        text = value.strip()
        if text.startswith(("http://", "https://")):
            raise bad_request("input_reference URLs are not fetched by this server; send the image bytes "
                              "(multipart upload, data URL or base64)", param, "unsupported_value")
        if text.startswith("data:"):
            header, _, text = text.partition(",")
            if ";base64" not in header:
                raise bad_request("input_reference data URL must be base64-encoded", param, "invalid_image")
        if len(text) > max_bytes * 4 // 3 + 8:
            raise bad_request(f"input_reference is larger than {max_bytes} bytes", param, "invalid_image")
        try:
            data = base64.b64decode(re.sub(r"\s+", "", text), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_request(f"input_reference is not valid base64: {exc}", param, "invalid_image") from exc
    if not data:
        raise bad_request("input_reference is empty", param, "invalid_image")
    if len(data) > max_bytes:
        raise bad_request(f"input_reference is larger than {max_bytes} bytes", param, "invalid_image")
    ext = sniff_image(data)
    if ext is None:
        raise bad_request("input_reference is not a PNG, JPEG, WebP or GIF image", param, "invalid_image")
    return data, ext
