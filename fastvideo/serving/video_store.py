"""HTTP job records, their output files, and their expiry.

Contract:
- :class:`VideoStore` keeps one :class:`VideoRecord` per job created over HTTP (``/v1/videos``,
  ``/v1/videos/generations``, ``/v1/images/generations``), in creation order, and answers the
  OpenAI ``Video`` object for it (:meth:`VideoRecord.to_openai`).
- :meth:`VideoStore.track` starts one watcher task per job. The watcher follows the job's events
  (recording step times), and when the job ends writes the output (MP4 for videos, PNG for
  images) atomically under ``output_dir`` *before* the record reports ``completed``, records the
  job's metrics, then drops the runtime's copy of the job so its bytes are not held twice.
  A failed or cancelled job reports ``failed`` with ``error{code, message}``; a job the server
  cancels while shutting down (``shutting_down`` set) reports code ``shutting_down``.
- Status moves only forward: ``queued -> in_progress -> completed | failed``; ``progress`` is the
  runtime's (0..100) and 100 only once the file exists.
- Finished records and their files expire ``ttl_s`` after they finish (:meth:`reap`, run
  periodically by the app); :meth:`delete` removes a record at once (cancelling a live job).
  :meth:`sweep_stale_files` removes files a previous process left behind that are past the TTL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastvideo.api import VideoFinalEvent, VideoProgressEvent
from fastvideo.runtime.media import write_mp4_atomic
from fastvideo.runtime.service import Job, VideoService
from fastvideo.serving.metrics import ServingMetrics
from fastvideo.serving.still_images import png_bytes, thumbnail_png

logger = logging.getLogger(__name__)

_FILE_PREFIXES = ("video_", "img_", "ref_")


@dataclass
class VideoRecord:
    """One HTTP job and what its ``Video`` object reports."""

    id: str
    kind: str  # "video" | "image"
    model: str
    prompt: str
    width: int
    height: int
    seconds: str
    num_frames: int
    fps: int
    job: Job | None
    created_at: float = field(default_factory=time.time)
    status: str = "queued"
    progress: int = 0
    started_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    file_path: Path | None = None
    thumbnail_path: Path | None = None
    inference_time_s: float | None = None
    queue_time_s: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    input_path: Path | None = None
    #: ``url`` or ``b64_json`` for synchronous routes.
    response_format: str | None = None

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    def refresh(self) -> None:
        """Pull live status/progress from the runtime job while it runs."""
        job = self.job
        if job is None or self.done.is_set():
            return
        if job.status == "in_progress" or job.started_at is not None:
            self.status = "in_progress"
            self.started_at = job.started_at
        self.progress = max(self.progress, min(99, int(job.progress)))

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``Video`` object (plus extension fields the SDK ignores)."""
        self.refresh()
        error = None
        if self.status == "failed":
            error = {"code": self.error_code or "generation_failed", "message": self.error_message or "failed"}
        return {
            "id": self.id, "object": "video", "model": self.model, "status": self.status,
            "progress": int(self.progress), "created_at": int(self.created_at),
            "completed_at": int(self.completed_at) if self.completed_at is not None else None,
            "expires_at": int(self.expires_at) if self.expires_at is not None else None,
            "prompt": self.prompt, "seconds": self.seconds, "size": self.size, "error": error,
            "remixed_from_video_id": None,
            # extensions
            "num_frames": self.num_frames, "fps": self.fps,
            "started_at": self.started_at, "queue_time_s": self.queue_time_s,
            "inference_time_s": self.inference_time_s,
        }


class VideoStore:
    """Records + files + expiry (see module contract)."""

    def __init__(self, service: VideoService, metrics: ServingMetrics, output_dir: str | Path, ttl_s: float,
                 max_records: int = 10000) -> None:
        self.service = service
        self.metrics = metrics
        self.output_dir = Path(output_dir).expanduser()
        self.ttl_s = float(ttl_s)
        self.max_records = max_records
        self.records: OrderedDict[str, VideoRecord] = OrderedDict()
        self._watchers: set[asyncio.Task] = set()
        #: Set by the app when shutdown begins: jobs cancelled from then on failed because of it.
        self.shutting_down = False

    # ------------------------------------------------------------------ records
    def track(self, record: VideoRecord) -> VideoRecord:
        """Register ``record`` and start following its job."""
        self.records[record.id] = record
        self._evict_overflow()
        if record.job is not None:
            task = asyncio.create_task(self._watch(record, record.job), name=f"fastvideo-watch-{record.id}")
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)
        return record

    def get(self, record_id: str) -> VideoRecord | None:
        return self.records.get(record_id)

    def page(self, *, kind: str = "video", after: str | None, limit: int, order: str) -> tuple[list[VideoRecord], bool]:
        items = [r for r in self.records.values() if r.kind == kind]
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [r.id for r in items]
            if after not in ids:
                raise KeyError(after)
            items = items[ids.index(after) + 1:]
        return items[:limit], len(items) > limit

    def delete(self, record_id: str) -> bool:
        record = self.records.pop(record_id, None)
        if record is None:
            return False
        if record.job is not None and not record.done.is_set():
            self.service.delete(record.job.id)
        self._remove_files(record)
        return True

    def input_path_for(self, record_id: str, ext: str) -> Path:
        return self.output_dir / f"ref_{record_id}.{ext}"

    # ------------------------------------------------------------------ expiry
    def reap(self, now: float | None = None) -> int:
        """Drop finished records (and files) older than the TTL; returns how many."""
        now = time.time() if now is None else now
        expired = [r.id for r in self.records.values() if r.expires_at is not None and r.expires_at <= now]
        for record_id in expired:
            self.delete(record_id)
        return len(expired)

    def sweep_stale_files(self, now: float | None = None) -> int:
        """Remove our files older than the TTL that no record owns (left by an earlier process)."""
        now = time.time() if now is None else now
        if not self.output_dir.is_dir():
            return 0
        owned = {p for r in self.records.values() for p in (r.file_path, r.thumbnail_path, r.input_path) if p}
        removed = 0
        for path in self.output_dir.iterdir():
            if path.is_file() and path.name.startswith(_FILE_PREFIXES) and path not in owned:
                try:
                    if now - path.stat().st_mtime > self.ttl_s:
                        path.unlink()
                        removed += 1
                except OSError:
                    pass
        return removed

    async def run_reaper(self, stop: asyncio.Event, interval_s: float | None = None) -> None:
        interval = interval_s or max(1.0, min(30.0, self.ttl_s / 4))
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
            count = self.reap()
            if count:
                logger.info("expired %d finished jobs and their files", count)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Let watchers write what finished jobs produced, then stop them."""
        if self._watchers:
            done, pending = await asyncio.wait(set(self._watchers), timeout=timeout_s)
            for task in pending:
                task.cancel()

    # ------------------------------------------------------------------ internals
    def _evict_overflow(self) -> None:
        while len(self.records) > self.max_records:
            oldest = next((r for r in self.records.values() if r.done.is_set()), None)
            if oldest is None:
                break
            self.delete(oldest.id)

    def _remove_files(self, record: VideoRecord) -> None:
        for path in (record.file_path, record.thumbnail_path, record.input_path):
            if path is not None:
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    logger.warning("cannot remove %s: %s", path, exc)

    async def _watch(self, record: VideoRecord, job: Job) -> None:
        events = job.subscribe()
        previous = 0.0
        try:
            while True:
                item = await events.get()
                if isinstance(item, VideoProgressEvent):
                    self.metrics.step_time.observe(max(item.elapsed_s - previous, 0.0))
                    previous = item.elapsed_s
                    record.refresh()
                    continue
                break
            record.started_at = job.started_at
            record.queue_time_s = job.queue_time_s
            if isinstance(item, VideoFinalEvent):
                try:
                    await asyncio.to_thread(self._write_output, record, item)
                except Exception as exc:  # noqa: BLE001 - an unwritable output fails the job visibly
                    logger.exception("job %s: cannot write its output", record.id)
                    self._finish(record, "failed", "output_write_failed", f"{type(exc).__name__}: {exc}")
                else:
                    record.inference_time_s = float(item.metadata.get("inference_time_s") or 0.0) or None
                    record.metadata = {k: v for k, v in item.metadata.items() if k != "timings"}
                    record.metadata["timings"] = dict(item.metadata.get("timings", {}))
                    self._finish(record, "completed", None, None)
                    if record.id not in self.records:  # deleted while its file was being written
                        self._remove_files(record)
            else:  # JobFailed
                code = getattr(item, "code", "generation_failed")
                message = getattr(item, "message", "the job failed")
                if code == "cancelled" and self.shutting_down and record.id in self.records:
                    code, message = "shutting_down", "the server shut down before the job finished"
                self._finish(record, "failed", code, message)
        except asyncio.CancelledError:
            if not record.done.is_set():
                self._finish(record, "failed", "shutting_down", "the server stopped before the job finished")
            raise
        finally:
            # The record now holds everything; let the runtime forget the job (and its bytes).
            self.service.delete(job.id)

    def _write_output(self, record: VideoRecord, final: VideoFinalEvent) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if record.kind == "image":
            frames = final.frames
            if frames is None or len(frames) == 0:
                raise ValueError("the generator returned no frame")
            path = self.output_dir / f"{record.id}.png"
            _write_atomic(path, png_bytes(frames[0]))
            record.file_path = path
            return
        if not final.video_bytes:
            raise ValueError("the generator returned no MP4 bytes")
        record.file_path = write_mp4_atomic(self.output_dir / f"{record.id}.mp4", final.video_bytes)

    def thumbnail(self, record: VideoRecord) -> Path:
        """The record's first-frame PNG, made on first request."""
        if record.thumbnail_path is not None and record.thumbnail_path.is_file():
            return record.thumbnail_path
        if record.file_path is None:
            raise FileNotFoundError(record.id)
        if record.kind == "image":
            return record.file_path
        path = self.output_dir / f"{record.id}.thumb.png"
        _write_atomic(path, thumbnail_png(record.file_path.read_bytes()))
        record.thumbnail_path = path
        return path

    def _finish(self, record: VideoRecord, status: str, code: str | None, message: str | None) -> None:
        now = time.time()
        record.status = status
        record.completed_at = now
        record.expires_at = now + self.ttl_s
        if status == "completed":
            record.progress = 100
        else:
            record.error_code, record.error_message = code, message
        if record.input_path is not None:
            record.input_path.unlink(missing_ok=True)
            record.input_path = None
        generation = None
        if record.started_at is not None:
            generation = now - record.started_at
        self.metrics.observe_job(record.kind, status, e2e_s=now - record.created_at, queue_s=record.queue_time_s,
                                 generation_s=generation, error_code=code)
        logger.info("job %s %s in %.2fs (queue %.2fs)%s", record.id, status, now - record.created_at,
                    record.queue_time_s or 0.0, f": {code}: {message}" if code else "")
        record.done.set()


def _write_atomic(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
