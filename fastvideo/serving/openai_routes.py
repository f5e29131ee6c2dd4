"""OpenAI-compatible HTTP routes: ``/v1/videos`` (jobs), ``/v1/videos/generations`` (synchronous),
``/v1/images/generations`` and ``/v1/models``.

Contract (see ``shared/design/contracts.md``):
- ``POST /v1/videos`` accepts JSON, multipart (SDK 3.x: extras as string fields, ``input_reference``
  as a file) and urlencoded bodies, creates a job and answers at once with a ``Video`` object
  (``queued``); ``GET /v1/videos/{id}`` shows ``queued -> in_progress -> completed | failed`` with
  live ``progress``; ``GET /v1/videos`` pages (``after``, ``limit``, ``order``) as
  ``{object:"list", data, has_more, first_id, last_id}``, a page also stopping before its body passes
  :data:`LIST_MAX_BYTES` (``has_more`` then true; ``after=last_id`` goes on); ``DELETE`` answers
  ``{id, object:"video.deleted", deleted:true}`` (cancelling a live job); ``GET .../content``
  returns the MP4 (``variant=video``) or a PNG of the first frame (``variant=thumbnail``).
  Every job read carries ``openai-poll-after-ms``.
- ``POST /v1/videos/generations`` runs one job and answers when it ends with
  ``{id, object, created, model, status, data:[{url | b64_json, output_format}], inference_time_s}``;
  a client that disconnects cancels its job. ``POST /v1/images/generations`` makes 1-frame
  videos and answers PNGs (``b64_json`` by default, or ``url``).
- Bodies (:func:`read_body`): POST routes read JSON, multipart and urlencoded bodies only (another or no
  content type is a 415 ``unsupported_media_type``: a web page's ``text/plain`` JSON is refused); the
  middleware bounds their size while they stream in (413). JSON that does not parse - invalid, an integer past
  Python's digit limit, nesting deeper than :data:`fastvideo.api.wire.MAX_JSON_DEPTH` - in the body or a
  form's ``nvext`` / ``extra_args`` field is a 400 envelope; ``prompt`` / ``negative_prompt`` longer than
  ``server.max_prompt_chars`` are a 400 naming the field. A job record keeps at most
  :data:`RECORD_PROMPT_CHARS` characters of its prompt (what ``Video.prompt`` shows). ``/v1/models`` names
  the model by its id (``root`` too), never by a server path.
- All admission goes through :meth:`ServerState.submit` (503 / 429 / 400 before a job exists).
- Handlers are module-level functions on :data:`router`; each takes the app's :class:`ServerState`
  through the :func:`get_state` dependency (``app.state.server``). Request fields are translated by
  :mod:`fastvideo.serving.request_mapping` (which uses :func:`fastvideo.api.translate_request`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from fastvideo.api import RequestError
from fastvideo.api.wire import HTTP_KEYS, parse_json
from fastvideo.serving.app_state import ServerState
from fastvideo.serving.errors import APIError, bad_request, not_found, unsupported_media_type
from fastvideo.serving.openai_protocol import (
    CreateVideoBody,
    ImageGenerationBody,
    ListQuery,
    form_to_mapping,
    request_body,
)
from fastvideo.serving.request_mapping import (
    MappedRequest,
    decode_image_reference,
    map_image_request,
    map_video_request,
)
from fastvideo.serving.file_response import OpenFileResponse
from fastvideo.serving.video_store import VideoRecord, storage_failure

logger = logging.getLogger(__name__)
B = TypeVar("B", bound=BaseModel)


#: Content types a POST body may have (anything else, ``text/plain`` included, is a 415).
BODY_TYPES = ("application/json", "multipart/form-data", "application/x-www-form-urlencoded")
#: Characters of a prompt a job record keeps (and every ``Video`` object shows); longer ones end in "...".
RECORD_PROMPT_CHARS = 2048
#: Largest ``GET /v1/videos`` body (bytes): a page stops before passing it (holding at least one item) and says
#: ``has_more``.
LIST_MAX_BYTES = 1024 * 1024


async def read_body(request: Request, model: type[B], max_bytes: int) -> tuple[B, dict[str, Any], bytes | None]:
    """Parse a JSON / multipart / urlencoded body: ``model`` (the edge-only fields), the plain mapping (what
    the translation layer reads) and an uploaded file's bytes. Another content type is a 415; JSON that does
    not parse (huge integers and deep nesting included, in the body or a form's JSON field) a 400."""
    raw_ctype = request.headers.get("content-type")
    ctype = (raw_ctype or "").split(";")[0].strip().lower()
    if ctype not in BODY_TYPES:
        raise unsupported_media_type(raw_ctype)
    upload: bytes | None = None
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_part_size=max_bytes)
        except APIError:  # the body limit, raised while the form streams in
            raise
        except Exception as exc:  # noqa: BLE001 - a broken form is bad input
            raise bad_request(f"cannot parse the form body: {exc}", None, "invalid_body") from exc
        items: list[tuple[str, Any]] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise APIError(413, f"upload {key!r} is larger than {max_bytes} bytes", code="request_too_large")
                if key == "input_reference":
                    upload = data
                    continue
                raise bad_request(f"unexpected file field {key!r}", key, "invalid_body")
            items.append((key, value))
        mapping = form_to_mapping(items)
        for key in ("nvext", "extra_args", "input_reference"):
            if isinstance(mapping.get(key), str) and mapping[key].strip().startswith(("{", "[")):
                try:
                    mapping[key] = parse_json(mapping[key], key)
                except RequestError as exc:
                    raise bad_request(str(exc), key, "invalid_json") from exc
    else:
        raw = await request.body()
        if not raw:
            raise bad_request("the request body is empty; send JSON (or a multipart form)", None, "invalid_body")
        try:
            mapping = parse_json(raw, "body")
        except RequestError as exc:
            raise bad_request(f"the JSON body {exc.reason}", None, "invalid_json") from exc
        if not isinstance(mapping, dict):
            raise bad_request("the JSON body must be an object", None, "invalid_body")
    try:
        body = model.model_validate(mapping)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        raise bad_request(f"{param}: {first.get('msg')}" if param else str(first.get("msg")), param) from exc
    return body, mapping, upload


router = APIRouter()


def get_state(request: Request) -> ServerState:
    """The app's :class:`ServerState` (a FastAPI dependency of every handler)."""
    return request.app.state.server  # type: ignore[no-any-return]


Server = Annotated[ServerState, Depends(get_state)]


def _poll_headers(state: ServerState) -> dict[str, str]:
    return {"openai-poll-after-ms": str(state.config.server.poll_after_ms)}


def _storage_error(exc: OSError) -> APIError:
    """507 for a full disk, else 500; the envelope names no server path."""
    code, message = storage_failure(exc)
    return APIError(507 if code == "insufficient_storage" else 500, message, type="server_error", code=code)


def _decode_reference(state: ServerState, body: CreateVideoBody, upload: bytes | None) -> tuple[bytes, str] | None:
    value = upload if upload is not None else body.input_reference
    if value is None:
        return None
    return decode_image_reference(value, max_bytes=state.config.server.max_body_bytes)


def _save_reference(state: ServerState, record_id: str, data: bytes, ext: str) -> Path:
    """Write a validated request's reference image atomically (nothing half-written on a disk error)."""
    try:
        return state.store.save_input(record_id, ext, data)
    except OSError as exc:
        logger.error("cannot store the reference image of %s: %s", record_id, exc)
        raise _storage_error(exc) from exc


def record_prompt(prompt: object) -> str:
    """The prompt a job record keeps: at most :data:`RECORD_PROMPT_CHARS` characters."""
    text = prompt if isinstance(prompt, str) else str(prompt)
    return text if len(text) <= RECORD_PROMPT_CHARS else text[:RECORD_PROMPT_CHARS - 3] + "..."


def _admit(state: ServerState, model: str | None, mapped: MappedRequest, kind: str, ref: Path | None) -> VideoRecord:
    try:
        job = state.submit(mapped.request, mapped.translated)
    except BaseException:
        if ref is not None:
            ref.unlink(missing_ok=True)
        raise
    record = VideoRecord(id=job.id, kind=kind, model=model or state.defaults.name,
                         prompt=record_prompt(mapped.request.prompt),
                         width=mapped.width, height=mapped.height, seconds=mapped.seconds,
                         num_frames=mapped.num_frames, fps=mapped.fps, job=job, input_path=ref)
    logger.info("job %s queued (%s, %dx%d, %d frames)", job.id, kind, mapped.width, mapped.height, mapped.num_frames)
    return state.store.track(record)


def _report_extras(state: ServerState, body: BaseModel) -> None:
    state.report_extras({k: v for k, v in (body.model_extra or {}).items() if k not in HTTP_KEYS})


async def _create(state: ServerState, request: Request) -> VideoRecord:
    state.require_ready()
    body, mapping, upload = await read_body(request, CreateVideoBody, state.config.server.max_body_bytes)
    state.check_model(body.model)
    _report_extras(state, body)
    record_id = f"video_{uuid.uuid4().hex[:24]}"
    reference = _decode_reference(state, body, upload)
    ref = state.store.input_path_for(record_id, reference[1]) if reference is not None else None
    mapped = map_video_request(mapping, state.defaults, request_id=record_id, image_path=str(ref) if ref else None,
                               max_prompt_chars=state.config.server.max_prompt_chars)
    if reference is not None:  # written only once the model accepted the request
        state.validate(mapped.request, mapped.translated)
        ref = _save_reference(state, record_id, *reference)
    record = _admit(state, body.model, mapped, "video", ref)
    record.response_format = body.response_format
    return record


def _get_record(state: ServerState, video_id: str, kind: str = "video") -> VideoRecord:
    record = state.store.get(video_id)
    if record is None or record.kind != kind:
        raise not_found(f"no {kind} with id {video_id!r} (it may have expired or been deleted)",
                        "video_id" if kind == "video" else "image_id", f"{kind}_not_found")
    return record


_BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.post("/v1/videos", openapi_extra={"requestBody": request_body("video")})
async def create_video(request: Request, state: Server) -> JSONResponse:
    record = await _create(state, request)
    return JSONResponse(record.to_openai(), headers=_poll_headers(state))


@router.get("/v1/videos")
async def list_videos(request: Request, state: Server) -> JSONResponse:
    try:
        query = ListQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        raise bad_request(f"{param}: {first.get('msg')}", param) from exc
    try:
        items, has_more = state.store.page(after=query.after, limit=query.limit, order=query.order)
    except KeyError:
        raise bad_request(f"after={query.after!r} is not a known video id", "after") from None
    data: list[dict[str, Any]] = []
    size = 256  # room for the envelope around the items
    for record in items:
        item = record.to_openai()
        item_bytes = len(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()) + 1
        if data and size + item_bytes > LIST_MAX_BYTES:
            has_more = True
            break
        data.append(item)
        size += item_bytes
    return JSONResponse({"object": "list", "data": data, "has_more": has_more,
                         "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None},
                        headers=_poll_headers(state))


@router.get("/v1/videos/{video_id}")
async def retrieve_video(video_id: str, state: Server) -> JSONResponse:
    return JSONResponse(_get_record(state, video_id).to_openai(), headers=_poll_headers(state))


@router.delete("/v1/videos/{video_id}")
async def delete_video(video_id: str, state: Server) -> JSONResponse:
    _get_record(state, video_id)
    state.store.delete(video_id)
    return JSONResponse({"id": video_id, "object": "video.deleted", "deleted": True})


async def _open_content(state: ServerState, record: VideoRecord, variant: str, param: str) -> OpenFileResponse:
    """Open the file before answering, so a DELETE or expiry racing the download cannot cut it."""
    try:
        handle = await asyncio.to_thread(state.store.open_content, record, variant)
    except FileNotFoundError:
        raise not_found(f"{record.kind} {record.id!r} was deleted or has expired", param,
                        f"{record.kind}_not_found") from None
    except OSError as exc:
        logger.error("cannot open the %s of %s: %s", variant, record.id, exc)
        raise _storage_error(exc) from exc
    media_type, ext = ("video/mp4", "mp4") if record.kind == "video" and variant == "video" else ("image/png", "png")
    return OpenFileResponse(handle, media_type=media_type, filename=f"{record.id}.{ext}")


@router.get("/v1/videos/{video_id}/content", response_class=Response,
            responses={200: {"description": "The MP4 (variant=video) or a PNG of its first frame (variant=thumbnail); "
                                            "range requests are answered with 206",
                             "content": {"video/mp4": _BINARY, "image/png": _BINARY}}})
async def video_content(video_id: str, state: Server, variant: str = "video") -> Response:
    record = _get_record(state, video_id)
    if variant not in ("video", "thumbnail"):
        raise bad_request(f"variant {variant!r} is not supported; use 'video' or 'thumbnail'", "variant")
    if record.status != "completed" or record.file_path is None:
        raise APIError(409, f"video {video_id!r} is {record.status}; its content exists once it is completed",
                       param="video_id", code="video_not_ready")
    return await _open_content(state, record, variant, "video_id")


async def _wait_or_cancel(state: ServerState, request: Request, records: list[VideoRecord]) -> None:
    """Wait for every record; a disconnecting client cancels its jobs."""
    for record in records:
        while not record.done.is_set():
            try:
                await asyncio.wait_for(record.done.wait(), 1.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    logger.info("client went away; cancelling %s", [r.id for r in records])
                    for r in records:
                        state.store.delete(r.id)
                    raise APIError(499, "client closed the request", code="client_closed") from None


def _raise_if_failed(state: ServerState, record: VideoRecord) -> None:
    if record.status == "completed":
        return
    code = record.error_code or "generation_failed"
    if code in ("shutting_down", "cancelled"):
        raise APIError(503, record.error_message or code, type="service_unavailable", code=code,
                       headers={"retry-after": str(state.config.queue.retry_after_s)})
    if code == "insufficient_storage":
        raise APIError(507, record.error_message or code, type="server_error", code=code)
    raise APIError(500, record.error_message or "generation failed", type="server_error", code=code)


@router.post("/v1/videos/generations", openapi_extra={"requestBody": request_body("video")})
async def generate_video(request: Request, state: Server) -> JSONResponse:
    t0 = time.time()
    record = await _create(state, request)
    await _wait_or_cancel(state, request, [record])
    _raise_if_failed(state, record)
    fmt = record.response_format or "url"
    item: dict[str, Any] = {"output_format": "mp4"}
    if fmt == "b64_json":
        assert record.file_path is not None
        item["b64_json"] = base64.b64encode(await asyncio.to_thread(record.file_path.read_bytes)).decode()
    else:
        item["url"] = str(request.url_for("video_content", video_id=record.id))
    return JSONResponse({"id": record.id, "object": "video", "model": record.model, "created": int(t0),
                         "status": "completed", "progress": 100, "data": [item],
                         "inference_time_s": record.inference_time_s, "queue_time_s": record.queue_time_s,
                         "seconds": record.seconds, "size": record.size, "error": None})


@router.post("/v1/images/generations", openapi_extra={"requestBody": request_body("image")})
async def generate_images(request: Request, state: Server) -> JSONResponse:
    state.require_ready()
    body, mapping, _ = await read_body(request, ImageGenerationBody, state.config.server.max_body_bytes)
    state.check_model(body.model)
    _report_extras(state, body)
    t0 = time.time()
    records: list[VideoRecord] = []
    try:
        for i in range(body.n):
            mapped = map_image_request(mapping, state.defaults, request_id=f"img_{uuid.uuid4().hex[:24]}", index=i,
                                       max_prompt_chars=state.config.server.max_prompt_chars)
            records.append(_admit(state, body.model, mapped, "image", None))
    except BaseException:
        for r in records:
            state.store.delete(r.id)
        raise
    await _wait_or_cancel(state, request, records)
    for record in records:
        _raise_if_failed(state, record)
    data = []
    for record in records:
        assert record.file_path is not None
        if (body.response_format or "b64_json") == "b64_json":
            data.append({"b64_json": base64.b64encode(await asyncio.to_thread(record.file_path.read_bytes))
                         .decode(), "revised_prompt": None})
        else:
            data.append({"url": str(request.url_for("image_content", image_id=record.id)), "revised_prompt": None})
    return JSONResponse({"created": int(t0), "data": data, "output_format": "png",
                         "size": records[0].size if records else None,
                         "inference_time_s": sum(r.inference_time_s or 0.0 for r in records)})


@router.get("/v1/images/{image_id}/content", response_class=Response,
            responses={200: {"description": "The PNG", "content": {"image/png": _BINARY}}})
async def image_content(image_id: str, state: Server) -> Response:
    record = _get_record(state, image_id, "image")
    if record.file_path is None:
        raise APIError(409, f"image {image_id!r} is {record.status}", param="image_id", code="image_not_ready")
    return await _open_content(state, record, "video", "image_id")


def _model_card(state: ServerState, model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": int(state.started_at), "owned_by": "fastvideo",
            "root": model_id, "max_frames": state.defaults.max_frames,
            "default_size": f"{state.defaults.width}x{state.defaults.height}",
            "default_num_frames": state.defaults.num_frames, "default_fps": state.defaults.fps}


@router.get("/v1/models")
async def list_models(state: Server) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [_model_card(state, state.defaults.name)]})


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, state: Server) -> JSONResponse:
    state.check_model(model_id)
    return JSONResponse(_model_card(state, model_id))
