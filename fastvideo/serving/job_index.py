"""The on-disk index of HTTP job records: one small SQLite file beside the outputs.

Contract: :class:`JobIndex` keeps one row per job record (``id``, ``kind``, a creation sequence number and
the record's fields as JSON) in ``<output_dir>/fastvideo-jobs.sqlite3`` (stdlib :mod:`sqlite3`, one
connection used from the event loop's thread only). :meth:`put` inserts or replaces a row, :meth:`remove`
drops one, :meth:`load` returns every row's fields in creation order. Writes are best-effort: a failing
write (a full or read-only disk) is logged once and the server keeps its records in memory; it never
fails a request. The index never holds output bytes, only what a record reports.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

INDEX_NAME = "fastvideo-jobs.sqlite3"


class JobIndex:
    """Rows of job records (see module contract)."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / INDEX_NAME
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                           "seq INTEGER NOT NULL, data TEXT NOT NULL)")
        row = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()
        self._seq = int(row[0])
        self._warned = False

    def load(self) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT data FROM records ORDER BY seq").fetchall()
        out = []
        for (data,) in rows:
            try:
                value = json.loads(data)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out

    def put(self, record_id: str, kind: str, fields: dict[str, Any]) -> None:
        data = json.dumps(fields, default=str)
        self._seq += 1
        self._run("INSERT INTO records (id, kind, seq, data) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT(id) DO UPDATE SET data = excluded.data", (record_id, kind, self._seq, data))

    def remove(self, record_id: str) -> None:
        self._run("DELETE FROM records WHERE id = ?", (record_id,))

    def close(self) -> None:
        self._conn.close()

    def _run(self, sql: str, args: tuple[Any, ...]) -> None:
        try:
            self._conn.execute(sql, args)
        except sqlite3.Error as exc:
            if not self._warned:
                self._warned = True
                logger.warning("cannot update the job index %s (%s); records stay in memory only", self.path, exc)
