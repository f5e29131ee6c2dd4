"""Mapping OpenAI/Dynamo request fields onto :class:`fastvideo.api.GenerationRequest`, and back.

Contract:
- :func:`build_generation_request` resolves size (``width``/``height`` > ``size`` "WxH" > the
  model's default), frames (``num_frames`` / ``nvext.num_frames`` > ``seconds * fps`` > default),
  and copies the sampling extensions (top level wins over ``nvext``). Every sampling field the
  reply reports (size, frames, fps) is made explicit, so the ``Video`` object tells the truth.
- A malformed value the runtime cannot judge (size string, base64 image, URL reference) raises
  :class:`fastvideo.serving.errors.APIError` 400 with ``param`` the client's field name.
- :func:`param_for_field` maps a runtime field path (``sampling.width``) back to the field the
  client sent (``size``, or ``width`` when they sent that) for the error's ``param``.
- :func:`decode_image_reference` accepts uploaded bytes, a data URL, bare base64, or
  ``{"image_url": ...}``; checks the bytes are a PNG/JPEG/WebP/GIF image and returns them with an
  extension. Remote URLs and ``file_id`` are refused (the server fetches nothing).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from fastvideo.api import ContinuationState, GenerationRequest, InputConfig, OutputConfig, SamplingConfig
from fastvideo.serving.errors import bad_request
from fastvideo.serving.openai_protocol import CreateVideoBody, ImageGenerationBody

_SIZE_RE = re.compile(r"^\s*(\d{1,5})\s*[xX*]\s*(\d{1,5})\s*$")


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
    """A GenerationRequest plus what the ``Video`` object reports about it."""

    request: GenerationRequest
    width: int
    height: int
    num_frames: int
    fps: int
    seconds: str
    #: Fields the client set explicitly (for error ``param`` mapping).
    given: frozenset[str]


def parse_size(text: str, param: str = "size") -> tuple[int, int]:
    match = _SIZE_RE.match(text or "")
    if not match:
        raise bad_request(f"size {text!r} is not of the form WIDTHxHEIGHT (e.g. 832x480)", param, "invalid_size")
    return int(match.group(1)), int(match.group(2))


def _fmt_seconds(num_frames: int, fps: int) -> str:
    value = num_frames / fps
    return str(int(value)) if value == int(value) else f"{value:.4f}".rstrip("0")


def _pick(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def build_generation_request(body: CreateVideoBody | ImageGenerationBody, defaults: ModelDefaults, *,
                             request_id: str, image_path: str | None = None, single_frame: bool = False,
                             return_frames: bool = False) -> MappedRequest:
    """The typed request for an OpenAI video (or image) body; see module contract."""
    nv = body.nvext
    given = set(body.model_fields_set)
    if nv is not None:
        given |= {f"nvext.{k}" for k in nv.model_fields_set}
    width, height = defaults.width, defaults.height
    if body.size is not None:
        width, height = parse_size(body.size)
    width = body.width if body.width is not None else width
    height = body.height if body.height is not None else height

    fps = _pick(getattr(body, "fps", None), nv.fps if nv else None, defaults.fps)
    num_frames: int | None
    if single_frame:
        num_frames = 1
    else:
        num_frames = _pick(getattr(body, "num_frames", None), nv.num_frames if nv else None)
        seconds = getattr(body, "seconds", None)
        if num_frames is None and seconds is not None:
            if not 0 < seconds <= 3600:
                raise bad_request(f"seconds {seconds!r} is out of range; use a positive duration", "seconds")
            num_frames = max(1, round(seconds * fps)) if isinstance(fps, int) and fps > 0 else None
        if num_frames is None:
            num_frames = defaults.num_frames
    state = None
    if nv is not None and nv.continuation_state is not None:
        try:
            state = ContinuationState.from_dict(nv.continuation_state)
        except ValueError as exc:
            raise bad_request(f"nvext.continuation_state: {exc}", "nvext.continuation_state", "invalid_state") from exc
    sampling = SamplingConfig(
        width=width, height=height, num_frames=num_frames, fps=fps,
        num_inference_steps=_pick(body.num_inference_steps, nv.num_inference_steps if nv else None),
        guidance_scale=_pick(body.guidance_scale, nv.guidance_scale if nv else None),
        seed=_pick(body.seed, nv.seed if nv else None))
    request = GenerationRequest(
        prompt=body.prompt, negative_prompt=_pick(body.negative_prompt, nv.negative_prompt if nv else None),
        inputs=InputConfig(image_path=image_path), sampling=sampling,
        output=OutputConfig(save_video=False, return_frames=return_frames, return_state=state is not None),
        state=state, request_id=request_id)
    seconds_text = _fmt_seconds(num_frames, fps) if isinstance(num_frames, int) and isinstance(fps, int) and fps > 0 \
        else str(num_frames)
    return MappedRequest(request=request, width=width, height=height, num_frames=num_frames, fps=fps,
                         seconds=seconds_text, given=frozenset(given))


_FIELD_PARAMS: dict[str, tuple[str, ...]] = {
    # runtime field -> candidate client fields, the first one the client sent wins; last is the fallback
    "sampling.width": ("width", "size"),
    "sampling.height": ("height", "size"),
    "sampling.num_frames": ("num_frames", "nvext.num_frames", "seconds", "num_frames"),
    "sampling.fps": ("fps", "nvext.fps", "fps"),
    "sampling.num_inference_steps": ("num_inference_steps", "nvext.num_inference_steps", "num_inference_steps"),
    "sampling.guidance_scale": ("guidance_scale", "nvext.guidance_scale", "guidance_scale"),
    "sampling.seed": ("seed", "nvext.seed", "seed"),
    "negative_prompt": ("negative_prompt", "nvext.negative_prompt", "negative_prompt"),
    "prompt": ("prompt",),
    "inputs.image_path": ("input_reference",),
    "inputs.video_path": ("input_reference",),
    "state": ("nvext.continuation_state", "continuation_state"),
}


def param_for_field(field: str, given: frozenset[str] | set[str]) -> str:
    """The client's name for runtime field ``field`` (see module contract)."""
    candidates = _FIELD_PARAMS.get(field)
    if not candidates:
        return field
    for name in candidates:
        if name in given:
            return name
    return candidates[-1]


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
