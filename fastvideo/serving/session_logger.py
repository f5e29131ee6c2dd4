"""Per-session JSON event logs of ``/v1/stream`` (FastVideo's ``SessionLogger``).

Contract: :meth:`SessionLogger.log` writes one JSON object per event,
``{"ts", "session_id", "event", "request_id"?, ...payload}``: always to the ``fastvideo.sessions``
logger (INFO, the JSON as the message), and, when the logger has a ``log_dir``, appended as one line
to ``<log_dir>/<session_id>.jsonl`` (the folder is created; a session id that is not a safe file
name is not written to disk). ``request_id`` is the id of the segment's generation request, so a
session's lines join the server's request logs and ``/v1/videos`` records. Thread-safe; an IO error
is logged once and never reaches the session. Values that are not JSON are written as strings.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from fastvideo.serving.session import SESSION_ID_RE

logger = logging.getLogger("fastvideo.sessions")


class SessionLogger:
    """Append-only JSON lines keyed by session id (see module contract)."""

    def __init__(self, log_dir: str | Path | None = None) -> None:
        self.log_dir = Path(log_dir) if log_dir else None
        self._lock = threading.Lock()
        self._failed = False

    def path(self, session_id: str) -> Path | None:
        if self.log_dir is None or not SESSION_ID_RE.fullmatch(session_id) or session_id.startswith("."):
            return None
        return self.log_dir / f"{session_id}.jsonl"

    def log(self, session_id: str, event: str, *, request_id: str | None = None, **payload: Any) -> dict[str, Any]:
        """Record ``event`` for ``session_id``; returns the object written."""
        entry: dict[str, Any] = {"ts": round(time.time(), 6), "session_id": session_id, "event": event}
        if request_id is not None:
            entry["request_id"] = request_id
        entry.update(payload)
        line = json.dumps(entry, default=str, separators=(",", ":"))
        logger.info("%s", line)
        target = self.path(session_id)
        if target is not None:
            try:
                with self._lock:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with target.open("a", encoding="utf-8") as fh:
                        fh.write(line + "\n")
            except OSError as exc:
                if not self._failed:
                    self._failed = True
                    logger.warning("session logs cannot be written to %s: %s", self.log_dir, exc)
        return entry
