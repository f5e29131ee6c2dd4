"""The ``/v1/stream`` WebSocket: continued segments streamed as one fragmented MP4.

Contract (frames in :mod:`fastvideo.serving.stream_protocol`):
- Origin: a browser socket whose ``Origin`` is neither the server's own (the ``Host`` it was opened
  on) nor in ``server.allowed_origins`` is refused before accept (HTTP 403); a request without an
  ``Origin`` header (not a browser) is not affected (:mod:`fastvideo.serving.ws_origin`, shared with the
  router).
- Admission: a bad key (compared in constant time) gets ``error{code:"unauthorized"}``, a server
  that is not ready ``error{code:"not_ready", retryable:true}``, a full server, or a client address
  that already holds ``max_sessions_per_client`` sessions, ``error{code:"session_rejected",
  retryable:true}`` (the message says which limit); each then closes (1008 / 1013). Nothing was
  started for them.
- A socket that sends no valid ``session_init_v2`` within ``handshake_timeout_s`` of connecting gets
  ``error{code:"handshake_timeout"}`` and is closed (1008), freeing its slot; pings do not extend it.
- ``session_init_v2`` fixes the session's size, fps, frames per segment and sampling (unset values
  take the server's streaming defaults, then the model's) and may carry a ``continuation_state``
  (from ``continuation_state_snapshot``) or the ``session_id`` of a session in the session store
  (this server's, or any server's sharing its Redis: :class:`~fastvideo.serving.session.SessionManager`
  writes each session there after every segment), to resume it; and FastVideo's session fields (client
  id, preset + label, curated prompts, feature flags: :mod:`fastvideo.serving.stream_features` owns
  the settings frames, pause, loop generation, single clip and the prompt-source hook). The server
  answers ``ltx2_stream_start{session_id, ...}``. With a ``prompt`` the first segment starts at once.
  Each session event is a JSON line of :class:`~fastvideo.serving.session_logger.SessionLogger`.
- Each ``segment_prompt_source`` runs one segment through the runtime's VideoService, continuing
  the previous segment's continuation state: ``queue_status`` (while it waits), ``gpu_assigned``
  (``worker_id`` and ``device`` of the pool worker that runs it, ``gpu_id`` its CUDA index; without a
  pool ``worker_id`` is null and ``device`` the server engine's; ``gpu_id`` is null on CPU),
  ``ltx2_segment_start``, one ``step_complete`` per denoising step, then (first segment only)
  ``media_init{mime, codec}`` followed by the binary init segment (``ftyp``+``moov``), then binary
  ``moof``+``mdat`` fragments, ``media_segment_complete`` and ``ltx2_segment_complete``. One encoder
  per session: all segments form one playable stream. Segments run one at a time, in order; up to
  ``max_pending_segments`` may wait. A model that makes sound (LTX-2) gives the stream an AAC track
  (the encoder is created with the first segment's ``audio_sample_rate`` and channels; every segment's waveform
  is muxed with its frames); a model without the continuation branch (image-to-video) runs every segment as a fresh clip
  of the same stream (no continuation state is asked for; ``has_continuation_state`` is false).
- Image-to-video: ``session_init_v2.input_reference`` (a data URL or base64 image bytes) is decoded by the HTTP
  edge's :func:`~fastvideo.serving.request_mapping.decode_image_reference` (same size limit,
  ``server.max_body_bytes``, and messages), checked with the session's values, then written once (atomically) to
  the video store's reference path (``ref_<id>.<ext>`` under ``server.output_dir``, held from the orphan sweep
  while the session lives) and given as ``inputs.image_path`` to every segment of the session. A bad image gets
  ``error{code:"invalid_request", param:"input_reference"}``; an I2V model's session without one gets the
  model's refusal at init (``invalid_message``, ``param:"input_reference"``); in both the session stays open,
  uninitialized, for a corrected ``session_init_v2``. The image is per session, not per segment (a segment frame's
  ``input_reference`` is ignored): one file whose life is the session's. The file is deleted when the session ends.
- ``snapshot_state`` -> ``continuation_state_snapshot{state: {kind, payload} | null}``;
  ``end_stream`` -> ``ltx2_stream_complete`` after the requested segments, then close (1000).
- Errors are frames ``error{code, message, retryable}``: ``invalid_message`` (malformed or
  out-of-order frame; the session goes on), ``invalid_request`` (the runtime refused a segment's
  values, with ``param``), ``queue_full`` (retryable, with ``retry_after_s``), ``segment_cap``,
  ``generation_failed``, ``shutting_down``, ``session_timeout`` (no session activity and nothing
  running for ``idle_timeout_s``; closes), ``prompt_blocked`` (the safety filter, ``streaming.safety``,
  refused a segment's prompt before it was queued: nothing runs, the session goes on),
  ``internal_error``. Session activity is an accepted
  ``session_init_v2``, ``segment_prompt_source`` or ``end_stream`` and a running segment's progress;
  ``ping``, ``snapshot_state`` and refused frames do not keep a session (or its slot) alive. A
  client that disconnects cancels its running and pending segments. The handler never lets an
  exception escape.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from fastvideo.api import (
    ContinuationState,
    OutputConfig,
    RequestError,
    TranslatedRequest,
    VideoFinalEvent,
    VideoProgressEvent,
    translate_request,
)
from fastvideo.runtime.pool import normalize_device
from fastvideo.runtime.service import Job
from fastvideo.serving.app_state import ServerState
from fastvideo.serving.errors import APIError
from fastvideo.serving.prompting import PromptBlocked
from fastvideo.serving.fmp4 import FragmentedMP4Encoder
from fastvideo.serving.observability import request_id_var
from fastvideo.envs import read_session_log_dir
from fastvideo.serving.prompt_source import NOT_CONFIGURED
from fastvideo.serving.request_mapping import decode_image_reference
from fastvideo.serving.session import FLAGS, Session, SessionRejected, SessionState
from fastvideo.serving.session_logger import SessionLogger
from fastvideo.serving.stream_features import ENHANCER_FRAMES, SETTINGS_FRAMES, SessionFeatures
from fastvideo.serving.video_store import storage_failure
from fastvideo.serving.ws_origin import WS_POLICY_VIOLATION, refuse_foreign_origin
from fastvideo.serving.stream_protocol import (
    SEGMENT_FIELDS,
    SESSION_FIELDS,
    EndStream,
    Ping,
    ProtocolError,
    SegmentPromptSource,
    SessionInitV2,
    SnapshotState,
    parse_client_message,
)

logger = logging.getLogger(__name__)

S = SessionState
WS_TRY_AGAIN_LATER = 1013
WS_INTERNAL_ERROR = 1011


@dataclass
class _Segment:
    prompt: str
    negative_prompt: str | None
    overrides: dict[str, Any]
    received_at: float
    #: Where the prompt came from: user, curated, loop, enhanced, auto_extension.
    source: str = "user"


class StreamSession(SessionFeatures):
    """One WebSocket connection (see module contract)."""

    def __init__(self, ws: WebSocket, session: Session, state: ServerState, slog: SessionLogger) -> None:
        self.ws, self.session, self.state, self.slog = ws, session, state, slog
        self.unpaused = asyncio.Event()
        self.unpaused.set()
        self.cfg = state.config.streaming
        self.pending: asyncio.Queue[_Segment | None] = asyncio.Queue()
        self.pending_count = 0
        self.requested = 0
        self.running_job: Job | None = None
        self.encoder: FragmentedMP4Encoder | None = None
        self.ending = False
        self.initialized = False
        self.closed = False
        self._send_lock = asyncio.Lock()
        self._worker: asyncio.Task | None = None
        #: The session's stored reference image (image-to-video), given to every segment; deleted at the end.
        self.image_path: Path | None = None

    # ------------------------------------------------------------------ sending
    async def send(self, kind: str, **fields: Any) -> None:
        if self.closed:
            return
        async with self._send_lock:
            await self.ws.send_text(json.dumps({"type": kind, "session_id": self.session.id, **fields}))

    async def send_bytes(self, data: bytes) -> None:
        if self.closed:
            return
        async with self._send_lock:
            await self.ws.send_bytes(data)

    async def error(self, code: str, message: str, *, retryable: bool = False, **extra: Any) -> None:
        logger.info("session %s: error %s: %s", self.session.id, code, message)
        await self.send("error", code=code, message=message, retryable=retryable, **extra)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            if self.ws.application_state == WebSocketState.CONNECTED:
                await self.ws.close(code=code, reason=reason)

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        self._worker = asyncio.create_task(self._segment_worker(), name=f"fastvideo-stream-{self.session.id}")
        try:
            await self._read_loop()
        finally:
            self.closed = True
            if self.running_job is not None:
                self.running_job.cancel()
            self._worker.cancel()
            with contextlib.suppress(BaseException):
                await self._worker
            if self.encoder is not None:
                await asyncio.to_thread(self.encoder.close)
            self._drop_image()
            await self._persist()

    def _drop_image(self) -> None:
        """Delete the session's reference image (its segments are done or cancelled)."""
        path, self.image_path = self.image_path, None
        if path is not None:
            self.state.store.held.discard(path)
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    async def _persist(self) -> None:
        """Write the session to the session store (only once it has a continuation state to resume)."""
        if self.session.continuation_state is None:
            return
        try:
            await asyncio.to_thread(self.state.sessions.persist, self.session)
        except Exception as exc:  # noqa: BLE001 - the stream goes on; resuming by id will not
            logger.warning("session %s: could not be written to the session store: %s", self.session.id, exc)

    def _has_work(self) -> bool:
        return self.running_job is not None or self.pending_count > 0

    def _busy(self) -> bool:
        """Whether a segment runs or waits to run (a paused session's waiting segments do not count)."""
        return self.running_job is not None or (self.pending_count > 0 and not self.session.generation_paused)

    def _deadline(self) -> tuple[float, str] | None:
        return self.state.sessions.deadline(self.session, busy=self._busy(), initialized=self.initialized)

    async def _expire(self, code: str) -> None:
        if code == "handshake_timeout":
            await self.error(code, f"no valid session_init_v2 within {self.cfg.handshake_timeout_s:g}s of "
                             "connecting; send session_init_v2 first (pings do not count)")
            self._end(S.TIMEOUT)
            await self.close(WS_POLICY_VIOLATION, code)
            return
        await self.error(code, f"no session activity and nothing running for {self.cfg.idle_timeout_s:g}s "
                         "(pings and snapshots do not count)")
        self._end(S.TIMEOUT)
        await self.close(1000, code)

    async def _read_loop(self) -> None:
        while not self.closed:
            deadline = self._deadline()
            timeout = self.cfg.idle_timeout_s if deadline is None else max(0.05, deadline[0] - time.monotonic())
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout)
            except asyncio.TimeoutError:
                deadline = self._deadline()
                if deadline is None or time.monotonic() < deadline[0]:
                    continue
                await self._expire(deadline[1])
                return
            if message["type"] == "websocket.disconnect":
                logger.info("session %s: client disconnected", self.session.id)
                if not self.session.terminal:
                    self._end(S.COMPLETE if not self._busy() else S.ERROR)
                self.closed = True
                return
            try:
                msg = parse_client_message(message.get("text") if message.get("text") is not None else None)
            except ProtocolError as exc:
                await self.error("invalid_message", str(exc))
                continue
            await self._handle(msg)

    async def _handle(self, msg: Any) -> None:
        if isinstance(msg, Ping):
            await self.send("pong", ts=time.time())
        elif isinstance(msg, SessionInitV2):
            await self._init(msg)
        elif not self.initialized:
            await self.error("invalid_message", "send session_init_v2 first")
        elif isinstance(msg, SETTINGS_FRAMES):
            await self.handle_settings(msg)
        elif isinstance(msg, ENHANCER_FRAMES):
            await self.handle_enhancer(msg)
        elif isinstance(msg, SegmentPromptSource):
            overrides = {k: getattr(msg, k) for k in SEGMENT_FIELDS if getattr(msg, k) is not None}
            try:  # judged now, so a bad segment is refused at once and takes no place in the session's budget
                wire = {**self.session.sampling, **overrides}
                if msg.negative_prompt is not None:
                    wire["negative_prompt"] = msg.negative_prompt
                self._checked(wire, msg.prompt)
            except RequestError as exc:
                await self.error("invalid_request", str(exc), param=exc.field)
                return
            await self._enqueue(_Segment(msg.prompt, msg.negative_prompt, overrides, time.perf_counter(), msg.source))
        elif isinstance(msg, SnapshotState):
            state = self.session.continuation_state
            await self.send("continuation_state_snapshot", segment_idx=self.session.segment_idx,
                            state=state.to_dict() if state is not None else None)
        elif isinstance(msg, EndStream):
            self.session.touch()
            self.ending = True
            if not self._has_work():
                await self._complete()

    # ------------------------------------------------------------------ init / segments
    async def _init(self, msg: SessionInitV2) -> None:
        if self.initialized:
            await self.error("invalid_message", "session_init_v2 was already received for this session")
            return
        resumed = False
        defaults, cfg = self.state.defaults, self.cfg
        base = {"width": cfg.width or defaults.width, "height": cfg.height or defaults.height,
                "num_frames": cfg.num_frames or defaults.num_frames, "fps": cfg.fps or defaults.fps,
                "num_inference_steps": cfg.num_inference_steps}
        wire = {k: v for k, v in base.items() if v is not None}
        wire.update({k: getattr(msg, k) for k in SESSION_FIELDS if getattr(msg, k) is not None})
        if msg.negative_prompt is not None:
            wire["negative_prompt"] = msg.negative_prompt
        reference: tuple[bytes, str] | None = None
        if msg.input_reference is not None:
            try:  # the HTTP edge's decoder: same limit, same messages
                reference = decode_image_reference(msg.input_reference,
                                                   max_bytes=self.state.config.server.max_body_bytes)
            except APIError as exc:
                await self.error("invalid_request", f"session_init_v2: {exc.message}",
                                 param=exc.param or "input_reference")
                return
        ref_id = f"stream_{uuid.uuid4().hex[:24]}"
        if reference is not None:  # judged with the path it will have; written once the session is accepted
            self.image_path = self.state.store.input_path_for(ref_id, reference[1])
        try:  # judge the session's values now, as its first segment would be judged
            sampling = self._checked(wire, msg.prompt if msg.prompt is not None else "session check")
        except RequestError as exc:
            await self.error("invalid_message", f"session_init_v2: {exc}", param=exc.field)
            return
        finally:
            self.image_path = None
        negative = sampling.pop("negative_prompt", None)
        why = self.preset_error(msg.preset)
        if why is not None:
            await self.error("preset_mismatch", why, param="preset")
            return
        if (msg.enhancement_enabled or msg.auto_extension_enabled) and self.prompt_source is None:
            await self.error(*NOT_CONFIGURED)
            return
        if msg.continuation_state is not None:
            try:
                self.session.continuation_state = ContinuationState.from_dict(msg.continuation_state)
            except ValueError as exc:
                await self.error("invalid_message", f"continuation_state: {exc}")
                return
            index = self.session.continuation_state.payload.get("segment_index")
            self.session.segment_idx = index + 1 if isinstance(index, int) and index >= 0 else 0
            resumed = True
        elif msg.session_id:
            if msg.session_id in self.state.sessions.sessions:
                await self.error("invalid_message",
                                 f"session {msg.session_id!r:.80} is still open on another connection")
                return
            try:
                record = await asyncio.to_thread(self.state.sessions.load, msg.session_id)
            except Exception as exc:  # noqa: BLE001 - e.g. Redis down
                await self.error("session_store_unavailable", f"the session store cannot be read ({exc}); retry, or "
                                 "resume with the continuation_state snapshot", retryable=True)
                return
            if record is None or (record.state is None):
                await self.error("session_not_found", f"session {msg.session_id!r:.80} is not held by this server "
                                 "or its session store (unknown or expired); resume with its continuation_state "
                                 "snapshot instead")
                return
            old_id = self.session.id
            self.state.sessions.rename(self.session, record.session_id)
            try:
                self.session.restore(record)
            except ValueError as exc:
                self.state.sessions.rename(self.session, old_id)
                await self.error("session_not_found", f"session {msg.session_id!r:.80}: its stored state is "
                                 f"unusable ({exc}); resume with a snapshot")
                return
            sampling.update({k: v for k, v in self.session.sampling.items() if k in ("width", "height", "fps")})
            negative = negative or self.session.negative_prompt
            resumed = True
        s = self.session
        for name in ("client_id", "preset", "preset_label", "stream_mode"):
            if getattr(msg, name) is not None:
                setattr(s, name, getattr(msg, name))
        if msg.curated_prompts is not None:
            s.curated_prompts = list(msg.curated_prompts)
        for name in FLAGS:
            if name != "generation_paused" and getattr(msg, name) is not None:
                setattr(s, name, getattr(msg, name))
        s.generation_paused = False  # a (re)opened session starts unpaused
        if reference is not None:
            try:
                path = await asyncio.to_thread(self.state.store.save_input, ref_id, reference[1], reference[0])
            except OSError as exc:
                logger.error("session %s: cannot store the reference image: %s", s.id, exc)
                await self._fatal(*storage_failure(exc))
                return
            self.image_path = path
            self.state.store.held.add(path)
        self.session.sampling, self.session.negative_prompt = sampling, negative
        self.initialized = True
        self.session.touch()
        request_id_var.set(self.session.id)
        await self.send("ltx2_stream_start", width=sampling["width"], height=sampling["height"], fps=sampling["fps"],
                        num_frames=sampling["num_frames"], codec=cfg.codec, model=defaults.name,
                        max_segments=cfg.max_segments, generation_segment_cap=self.state.sessions.segment_cap,
                        resumed=resumed, **s.describe())
        self.slog.log(s.id, "session_init", resumed=resumed, sampling=sampling, **s.describe())
        if msg.prompt:
            await self._enqueue(self._new_segment(msg.prompt, "user"))
        else:
            await self.maybe_loop()

    def _new_segment(self, prompt: str, source: str) -> _Segment:
        return _Segment(prompt, None, {}, time.perf_counter(), source)

    async def _enqueue(self, segment: _Segment) -> None:
        if self.state.prompting is not None:  # the safety filter (streaming.safety), before any queueing
            try:
                await self.state.prompting.check(segment.prompt, request_id=self.session.id)
            except PromptBlocked as exc:
                await self.error(exc.code, str(exc), param="prompt")
                return
        if self.ending:
            await self.error("invalid_message", "the stream is ending (end_stream was received)")
        elif self.session.single_clip_mode and self.requested >= 1:
            await self.error("single_clip", "single-clip mode makes one segment; open a new session for another")
        elif self.requested >= self.cfg.max_segments:
            await self.error("segment_cap", f"this session reached its limit of {self.cfg.max_segments} segments")
        elif self.pending_count >= self.cfg.max_pending_segments + (0 if self.running_job is None else 1):
            await self.error("too_many_pending", f"{self.pending_count} segments are already waiting; wait for one "
                             "to finish", retryable=True)
        else:
            self.requested += 1
            self.pending_count += 1
            self.session.touch()
            self.pending.put_nowait(segment)

    async def _segment_worker(self) -> None:
        while True:
            segment = await self.pending.get()
            if segment is None:
                return
            await self.unpaused.wait()  # pause: nothing new starts until resume
            before = self.session.segment_idx
            try:
                await self._run_segment(segment)
            except (WebSocketDisconnect, RuntimeError) as exc:
                if self.closed:
                    return
                logger.exception("session %s: segment failed: %s", self.session.id, exc)
                await self._fatal("internal_error", f"{type(exc).__name__}: {exc}")
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a segment must never crash the server
                logger.exception("session %s: segment failed", self.session.id)
                await self._fatal("internal_error", f"{type(exc).__name__}: {exc}")
                return
            finally:
                self.pending_count -= 1
                self.running_job = None
            advanced = self.session.segment_idx > before
            if advanced:
                await self._persist()
            if self.ending and self.pending_count == 0:
                await self._complete()
                return
            if advanced and self.session.single_clip_mode:
                await self._complete("single_clip")
                return
            if advanced:
                await self.maybe_loop()

    async def _fatal(self, code: str, message: str, retryable: bool = False) -> None:
        with contextlib.suppress(Exception):
            await self.error(code, message, retryable=retryable)
        self._end(S.ERROR)
        await self.close(WS_INTERNAL_ERROR, code)

    def _end(self, target: SessionState) -> None:
        if not self.session.terminal:
            self.session.transition(target)
            self.state.metrics.sessions.labels(target.value).inc()

    async def _complete(self, reason: str = "stop_requested") -> None:
        """End the stream: ``reason`` is ``stop_requested`` (end_stream), ``segment_cap`` or ``single_clip``."""
        await self.send("ltx2_stream_complete", reason=reason, segments=self.session.segment_idx,
                        duration_s=self.encoder.duration_s if self.encoder else 0.0)
        self.slog.log(self.session.id, "stream_complete", reason=reason, segments=self.session.segment_idx)
        self._end(S.COMPLETE)
        await self.close(1000, "stream_complete")

    def _translate(self, wire: dict[str, Any], request_id: str | None = None) -> TranslatedRequest:
        return translate_request("ws", {k: v for k, v in wire.items() if v is not None}, fps=self.state.defaults.fps,
                                 request_id=request_id, max_prompt_chars=self.state.config.server.max_prompt_chars,
                                 image_path=str(self.image_path) if self.image_path is not None else None,
                                 output=OutputConfig(save_video=False, return_frames=True,
                                                     return_state=self._continues))

    @property
    def _continues(self) -> bool:
        """Whether segments continue each other (the model serves the continuation branch); otherwise (image-to-video)
        every segment is a fresh clip of the same stream and no state is asked for."""
        generator = getattr(self.state.service, "generator", None)
        return generator is None or "continuation" in generator.served_branches

    def _checked(self, wire: dict[str, Any], prompt: Any) -> dict[str, Any]:
        """``wire`` translated and judged by the engine (ranges, sizes) as a segment would be; the typed
        values by their ws names. Raises RequestError naming the ws field."""
        translated = self._translate({**wire, "prompt": prompt})
        try:
            self.state.service.generator.resolve(translated.request)
        except RequestError as exc:
            raise translated.relabel(exc) from exc
        request = translated.request
        typed = {name: getattr(request.sampling, name) for name in wire if hasattr(request.sampling, name)}
        if request.negative_prompt is not None:
            typed["negative_prompt"] = request.negative_prompt
        return typed

    def _request(self, segment: _Segment) -> TranslatedRequest:
        wire = {**self.session.sampling, **segment.overrides}
        seed = self.session.sampling.get("seed")
        if seed is not None and "seed" not in segment.overrides:
            wire["seed"] = seed + self.session.segment_idx
        wire.update(prompt=segment.prompt, negative_prompt=segment.negative_prompt or self.session.negative_prompt,
                    continuation_state=self.session.continuation_state)
        return self._translate(wire, request_id=f"{self.session.id}_seg{self.session.segment_idx}")

    async def _run_segment(self, segment: _Segment) -> None:
        idx = self.session.segment_idx
        metrics = self.state.metrics
        prompt = await self.segment_prompt(segment.prompt, segment.source)
        if prompt is None:  # refused by the prompt source (e.g. the safety filter): no GPU time
            metrics.segments.labels("refused").inc()
            return
        segment.prompt, segment.source = prompt
        self.session.last_prompt = segment.prompt
        try:
            translated = self._request(segment)
            job = self.state.submit(translated.request, translated)
        except RequestError as exc:  # the translation layer refused a segment's field
            metrics.segments.labels("refused").inc()
            await self.error("invalid_request", str(exc), segment_idx=idx, param=exc.field)
            return
        except APIError as exc:
            metrics.segments.labels("refused").inc()
            code = {429: "queue_full", 503: "shutting_down" if exc.code == "shutting_down" else "not_ready"}.get(
                exc.status, "invalid_request")
            extra: dict[str, Any] = {"segment_idx": idx}
            if exc.param:
                extra["param"] = exc.param
            if "retry-after" in exc.headers:
                extra["retry_after_s"] = int(exc.headers["retry-after"])
            await self.error(code, exc.message, retryable=exc.status in (429, 503), **extra)
            return
        self.running_job = job
        self.slog.log(self.session.id, "segment_queued", request_id=job.id, segment_idx=idx, prompt=segment.prompt,
                      prompt_source=segment.source)
        self.session.transition(S.QUEUED)
        events = job.subscribe()
        position = self._position(job)
        await self.send("queue_status", segment_idx=idx, position=position, queue_depth=self.state.service.queue_depth,
                        request_id=job.id)
        assigned = False
        while True:
            try:
                item = await asyncio.wait_for(events.get(), 0.25)
            except asyncio.TimeoutError:
                if job.status == "queued":
                    now = self._position(job)
                    if now != position:
                        position = now
                        await self.send("queue_status", segment_idx=idx, position=position,
                                        queue_depth=self.state.service.queue_depth, request_id=job.id)
                elif not assigned:
                    assigned = await self._assigned(job, idx, segment)
                continue
            self.session.touch()
            if not assigned:
                assigned = await self._assigned(job, idx, segment)
            if isinstance(item, VideoProgressEvent):
                await self.send("step_complete", segment_idx=idx, step=item.step, total_steps=item.total_steps,
                                elapsed_s=round(item.elapsed_s, 4))
                continue
            break
        if isinstance(item, VideoFinalEvent):
            await self._deliver(job, idx, segment, item)
        else:
            code = getattr(item, "code", "generation_failed")
            self.slog.log(self.session.id, "segment_failed", request_id=job.id, segment_idx=idx, code=code)
            metrics.segments.labels("failed").inc()
            self.state.service.delete(job.id)
            if code == "shutting_down" or (code == "cancelled" and self.state.phase in ("draining", "stopped")):
                await self._fatal("shutting_down", "the server is shutting down; resume from your last snapshot "
                                  "on another replica", retryable=True)
                return
            await self.error(code if code != "cancelled" else "generation_cancelled",
                             getattr(item, "message", "the segment failed"), segment_idx=idx,
                             retryable=code == "cancelled")
            self.session.transition(S.ACTIVE)

    def _position(self, job: Any) -> int:
        queued = [j for j in self.state.service.jobs.values() if j.status == "queued"]
        return next((i for i, j in enumerate(queued) if j is job), -1) + 1

    async def _assigned(self, job: Any, idx: int, segment: _Segment) -> bool:
        self.session.transition(S.GPU_BINDING)
        device = job.device
        if device is None and not self.state.service.pooled:  # the server's own engine ran it
            device = normalize_device(str(self.state.service.generator.pipeline.device))
        gpu_id = int(device.split(":", 1)[1]) if device and device.startswith("cuda:") else None
        self.session.gpu_id = gpu_id
        await self.send("gpu_assigned", segment_idx=idx, gpu_id=gpu_id, worker_id=job.worker_id, device=device,
                        queue_time_s=round(job.queue_time_s or 0.0, 4))
        self.session.transition(S.ACTIVE)
        await self.send("ltx2_segment_start", segment_idx=idx, prompt=segment.prompt, prompt_source=segment.source,
                        total_steps=job.total_steps,
                        num_frames=job.request.sampling.num_frames, continuation=job.request.state is not None)
        return True

    async def _deliver(self, job: Any, idx: int, segment: _Segment, final: VideoFinalEvent) -> None:
        frames = final.frames
        result = final.result
        audio = getattr(result, "audio", None)  # families that make sound (LTX-2): the segment's waveform
        self.state.service.delete(job.id)
        if self.encoder is None:
            s = self.session.sampling
            rate = getattr(result, "audio_sample_rate", None) if audio is not None else None
            self.encoder = FragmentedMP4Encoder(width=s["width"], height=s["height"], fps=s["fps"],
                                                codec=self.cfg.codec, crf=self.cfg.crf, audio_sample_rate=rate,
                                                audio_channels=int(getattr(audio, "shape", (1,))[0]) if rate else 1)
        try:
            media = await asyncio.to_thread(self.encoder.encode_segment, frames, audio)
        except Exception as exc:  # noqa: BLE001
            logger.exception("session %s: encoding failed", self.session.id)
            await self._fatal("encode_failed", f"{type(exc).__name__}: {exc}")
            return
        if media.init is not None:
            await self.send("media_init", mime=self.encoder.mime, codec=self.encoder.codec_string,
                            width=self.encoder.width, height=self.encoder.height, fps=self.encoder.fps,
                            bytes=len(media.init))
            await self.send_bytes(media.init)
        for i, fragment in enumerate(media.fragments):
            if i == 0:
                self.state.metrics.ttff.observe(time.perf_counter() - segment.received_at)
            await self.send_bytes(fragment)
        await self.send("media_segment_complete", segment_idx=idx, fragments=len(media.fragments),
                        bytes=sum(len(f) for f in media.fragments), frames=media.frame_count,
                        start_time_s=round(media.start_time_s, 6), duration_s=round(media.duration_s, 6))
        self.session.continuation_state = final.continuation_state
        self.session.segment_idx = idx + 1
        meta = final.metadata
        self.state.metrics.segments.labels("completed").inc()
        self.state.metrics.observe_job("stream", "completed", e2e_s=time.time() - job.created_at,
                                       queue_s=job.queue_time_s, generation_s=meta.get("inference_time_s"))
        self.slog.log(self.session.id, "segment_complete", request_id=job.id, segment_idx=idx, frames=media.frame_count,
                      inference_time_s=meta.get("inference_time_s"), queue_time_s=job.queue_time_s)
        await self.send("ltx2_segment_complete", segment_idx=idx, frames=media.frame_count,
                        inference_time_s=meta.get("inference_time_s"), queue_time_s=job.queue_time_s,
                        seed=meta.get("seed"), branch=meta.get("branch"),
                        has_continuation_state=final.continuation_state is not None,
                        time_to_first_fragment_s=round(time.perf_counter() - segment.received_at, 4))


def register_stream_routes(app: FastAPI, state: ServerState) -> None:
    """Mount ``/v1/stream`` on ``app``."""
    slog = SessionLogger(read_session_log_dir())
    app.state.session_logger = slog

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        if await refuse_foreign_origin(ws, state.config.server.allowed_origins, "/v1/stream",
                                       "server.allowed_origins"):
            return
        await ws.accept()
        api_key = state.config.server.api_key
        if api_key:
            auth = ws.headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else ws.query_params.get("api_key")
            if not hmac.compare_digest((given or "").encode("utf-8", "replace"), api_key.encode()):  # constant time
                await ws.send_text(json.dumps({"type": "error", "code": "unauthorized", "retryable": False,
                                               "message": "missing or wrong API key"}))
                await ws.close(WS_POLICY_VIOLATION, "unauthorized")
                return
        if not state.config.streaming.enabled or not state.ready:
            await ws.send_text(json.dumps({"type": "error", "code": "not_ready", "retryable": True,
                                           "message": f"streaming is not available ({state.phase})"}))
            await ws.close(WS_TRY_AGAIN_LATER, "not_ready")
            return
        try:
            session = state.sessions.create(ws.client.host if ws.client else None)
        except SessionRejected as exc:
            state.metrics.sessions.labels("rejected").inc()
            await ws.send_text(json.dumps({"type": "error", "code": "session_rejected", "retryable": True,
                                           "message": str(exc)}))
            await ws.close(WS_TRY_AGAIN_LATER, "session_rejected")
            return
        request_id_var.set(session.id)
        state.metrics.sessions_active.inc()
        slog.log(session.id, "session_open", client=session.client)
        runner = StreamSession(ws, session, state, slog)
        try:
            await runner.run()
        except WebSocketDisconnect:
            pass
        except Exception:  # noqa: BLE001 - the server keeps serving whatever one session does
            logger.exception("session %s: unexpected error", session.id)
            with contextlib.suppress(Exception):
                await runner.error("internal_error", "unexpected server error")
            runner._end(S.ERROR)
            await runner.close(WS_INTERNAL_ERROR, "internal_error")
        finally:
            if not session.terminal:
                runner._end(S.COMPLETE)
            state.sessions.release(session)
            slog.log(session.id, "session_end", state=session.state.value, segments=session.segment_idx)
            state.metrics.sessions_active.dec()
