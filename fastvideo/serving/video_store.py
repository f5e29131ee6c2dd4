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
  periodically by the app with :meth:`sweep_files`); :meth:`delete` removes a record at once (cancelling a
  live job). A finished record holds no output bytes: the watcher drops its runtime job once the file is
  written.
- Persistence (:meth:`open`, called by the app at startup): every record is mirrored in a SQLite index
  beside the files (:mod:`fastvideo.serving.job_index`), so a restarted server on the same ``output_dir``
  lists every unexpired job with its status, metadata and file; a job that was queued or running when
  the previous process died comes back ``failed`` with code ``server_restarted``; a completed record whose
  file is gone, and expired ones, are dropped.
- :meth:`sweep_files` removes our files that no record owns (orphans) and leftover dot-temp files
  (``.<name>.*.part``) once they are older than ``orphan_grace_s``.
- Downloads: :meth:`open_content` opens the file (making the thumbnail first if needed) *before* the
  response starts, and :class:`~fastvideo.serving.file_response.OpenFileResponse` streams from that open
  handle (with range requests), so a DELETE or expiry racing a download neither breaks nor cuts it (the
  unlinked file lives until the handle closes); a file already gone raises ``FileNotFoundError``. Every
  file is written through a uniquely named temp file in the same folder and ``os.replace``.
- Disk errors: :func:`check_output_dir` refuses a folder that cannot be created or written
  (``ConfigError`` naming ``server.output_dir``); :func:`storage_failure` turns an ``OSError`` into a
  code and a client-safe message without paths (``insufficient_storage`` for a full disk or quota,
  ``output_write_failed`` otherwise); a job whose output cannot be written fails with that code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


from fastvideo.api import ConfigError, VideoFinalEvent, VideoProgressEvent
from fastvideo.runtime.service import Job, VideoService
from fastvideo.serving.job_index import JobIndex
from fastvideo.serving.metrics import ServingMetrics
from fastvideo.serving.still_images import png_bytes, thumbnail_png
from fastvideo.fileio import write_atomic

logger = logging.getLogger(__name__)

_FILE_PREFIXES = ("video_", "img_", "ref_")
_TEMP_PREFIXES = tuple("." + p for p in _FILE_PREFIXES)
#: Record fields that are not persisted (live objects).
_TRANSIENT_FIELDS = frozenset({"job", "done"})
_PATH_FIELDS = frozenset({"file_path", "thumbnail_path", "input_path"})
_FULL_DISK = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def storage_failure(exc: BaseException) -> tuple[str, str]:
    """``(code, message)`` for a failed write, safe to show a client (no paths)."""
    if isinstance(exc, OSError) and exc.errno in _FULL_DISK:
        return "insufficient_storage", "the server has no space left to store the output; retry later"
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "output_write_failed", "the server cannot write to its output folder (read-only or no permission)"
    return "output_write_failed", "the server could not write the output"


def check_output_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove it is writable (a probe file), else ``ConfigError``."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe_", suffix=".part", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError("server.output_dir", f"{str(folder)!r} is not a writable folder ({reason}); choose "
                                               "another --output-dir, or fix its permissions / free space") from exc
    return folder


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

    def to_row(self) -> dict[str, Any]:
        """The persisted fields (no live objects; paths as strings)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in _TRANSIENT_FIELDS:
                continue
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "VideoRecord":
        names = {f.name for f in dataclasses.fields(cls)} - _TRANSIENT_FIELDS
        values: dict[str, Any] = {k: (Path(v) if k in _PATH_FIELDS and v else v) for k, v in row.items()
                                  if k in names}
        record = cls(job=None, **values)
        record.done.set()
        return record

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
                 max_records: int = 10000, orphan_grace_s: float = 300.0) -> None:
        self.service = service
        self.metrics = metrics
        self.output_dir = Path(output_dir).expanduser()
        self.ttl_s = float(ttl_s)
        self.max_records = max_records
        self.orphan_grace_s = float(orphan_grace_s)
        #: Files held by live owners other than records (a stream session's reference image): never swept.
        self.held: set[Path] = set()
        self.records: OrderedDict[str, VideoRecord] = OrderedDict()
        self._index: JobIndex | None = None
        self._watchers: set[asyncio.Task] = set()
        #: Set by the app when shutdown begins: jobs cancelled from then on failed because of it.
        self.shutting_down = False

    # ------------------------------------------------------------------ persistence
    def open(self, now: float | None = None) -> int:
        """Check the folder, open the index and restore the records it holds; returns how many."""
        check_output_dir(self.output_dir)
        self._index = JobIndex(self.output_dir)
        now = time.time() if now is None else now
        restored = 0
        for row in self._index.load():
            try:
                record = VideoRecord.from_row(row)
            except (TypeError, ValueError):
                logger.warning("skipping an unreadable job record %r in the index", row.get("id"))
                continue
            if record.status not in ("completed", "failed"):
                record.status = "failed"
                record.error_code = "server_restarted"
                record.error_message = "the server restarted before the job finished; submit it again"
                record.completed_at = now
                record.expires_at = now + self.ttl_s
            if record.input_path is not None:
                record.input_path.unlink(missing_ok=True)
                record.input_path = None
            gone = record.status == "completed" and (record.file_path is None or not record.file_path.is_file())
            if (record.expires_at is not None and record.expires_at <= now) or gone:
                self._remove_files(record)
                self._index.remove(record.id)
                continue
            self.records[record.id] = record
            self._persist(record)
            restored += 1
        return restored

    def close_index(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def _persist(self, record: VideoRecord) -> None:
        if self._index is not None and record.id in self.records:
            self._index.put(record.id, record.kind, record.to_row())

    # ------------------------------------------------------------------ records
    def track(self, record: VideoRecord) -> VideoRecord:
        """Register ``record`` and start following its job."""
        self.records[record.id] = record
        self._persist(record)
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
        if self._index is not None:
            self._index.remove(record_id)
        if record.job is not None and not record.done.is_set():
            self.service.delete(record.job.id)
        self._remove_files(record)
        return True

    def input_path_for(self, record_id: str, ext: str) -> Path:
        return self.output_dir / f"ref_{record_id}.{ext}"

    def save_input(self, record_id: str, ext: str, data: bytes) -> Path:
        """Write an uploaded reference atomically (nothing is left behind on error; OSError propagates)."""
        path = self.input_path_for(record_id, ext)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(path, data)

    # ------------------------------------------------------------------ expiry
    def reap(self, now: float | None = None) -> int:
        """Drop finished records (and files) older than the TTL; returns how many."""
        now = time.time() if now is None else now
        expired = [r.id for r in self.records.values() if r.expires_at is not None and r.expires_at <= now]
        for record_id in expired:
            self.delete(record_id)
        return len(expired)

    def owned_files(self) -> set[Path]:
        """Every file a record owns or may make (call on the event loop: it reads the records)."""
        owned = {p for r in self.records.values() for p in (r.file_path, r.thumbnail_path, r.input_path) if p}
        return owned | {self._thumbnail_path(r) for r in self.records.values()} | self.held

    def sweep_files(self, now: float | None = None, owned: set[Path] | None = None) -> int:
        """Remove our files no record owns and leftover dot-temp files, once older than ``orphan_grace_s``
        (``owned``: :meth:`owned_files` taken on the event loop, when this runs in a thread)."""
        now = time.time() if now is None else now
        if not self.output_dir.is_dir():
            return 0
        owned = self.owned_files() if owned is None else owned
        removed = 0
        for path in self.output_dir.iterdir():
            name = path.name
            temp = name.startswith(_TEMP_PREFIXES) and name.endswith(".part")
            orphan = name.startswith(_FILE_PREFIXES) and path not in owned
            if not (temp or orphan):
                continue
            try:
                if path.is_file() and now - path.stat().st_mtime > self.orphan_grace_s:
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
            swept = await asyncio.to_thread(self.sweep_files, None, self.owned_files())
            if swept:
                logger.info("removed %d orphaned or temporary files from %s", swept, self.output_dir)

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
                    self._finish(record, "failed", *storage_failure(exc))
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
            if record.done.is_set():
                record.job = None

    def _write_output(self, record: VideoRecord, final: VideoFinalEvent) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if record.kind == "image":
            frames = final.frames
            if frames is None or len(frames) == 0:
                raise ValueError("the generator returned no frame")
            path = self.output_dir / f"{record.id}.png"
            write_atomic(path, png_bytes(frames[0]))
            record.file_path = path
            return
        if not final.video_bytes:
            raise ValueError("the generator returned no MP4 bytes")
        record.file_path = write_atomic(self.output_dir / f"{record.id}.mp4", final.video_bytes)

    def _thumbnail_path(self, record: VideoRecord) -> Path:
        return self.output_dir / f"{record.id}.thumb.png"

    def thumbnail(self, record: VideoRecord) -> Path:
        """The record's first-frame PNG, made on first request (FileNotFoundError once the video is gone)."""
        if record.thumbnail_path is not None and record.thumbnail_path.is_file():
            return record.thumbnail_path
        if record.file_path is None:
            raise FileNotFoundError(record.id)
        if record.kind == "image":
            return record.file_path
        path = self._thumbnail_path(record)
        with open(record.file_path, "rb") as handle:
            data = handle.read()
        write_atomic(path, thumbnail_png(data))
        record.thumbnail_path = path
        return path

    def open_content(self, record: VideoRecord, variant: str = "video") -> IO[bytes]:
        """An open handle on the record's file (``variant="thumbnail"``: its first-frame PNG), opened now so a
        later delete cannot break the download; ``FileNotFoundError`` when the file is already gone. Blocking:
        call it in a thread."""
        path = self.thumbnail(record) if variant == "thumbnail" else record.file_path
        if path is None:
            raise FileNotFoundError(record.id)
        return open(path, "rb")

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
            try:
                record.input_path.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("cannot remove %s: %s", record.input_path, exc)
            record.input_path = None
        self._persist(record)
        generation = None
        if record.started_at is not None:
            generation = now - record.started_at
        self.metrics.observe_job(record.kind, status, e2e_s=now - record.created_at, queue_s=record.queue_time_s,
                                 generation_s=generation, error_code=code)
        logger.info("job %s %s in %.2fs (queue %.2fs)%s", record.id, status, now - record.created_at,
                    record.queue_time_s or 0.0, f": {code}: {message}" if code else "")
        record.done.set()


