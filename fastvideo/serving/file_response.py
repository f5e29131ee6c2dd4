"""Streaming a file the route already opened, with HTTP range requests (what a ``<video>`` element seeks with).

Contract: :class:`OpenFileResponse` takes an open binary handle (opened before the route returns, so a DELETE or
TTL expiry racing the download cannot break it: the open file outlives its unlinking) and streams it in chunks
read in a worker thread, then closes it, whatever happens. It answers ``accept-ranges: bytes``, an ``etag``
(size and mtime) and ``last-modified``; a single ``range: bytes=a-b`` / ``a-`` / ``-n`` gets ``206`` with
``content-range``; an unsatisfiable range ``416`` with ``content-range: bytes */size``; a multi-range or
malformed header is ignored (the whole file, ``200``), as RFC 9110 allows. ``HEAD`` sends headers only.
"""

from __future__ import annotations

import os
import re
from email.utils import formatdate
from typing import IO, Literal

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | Literal[False]:
    """``(start, end)`` inclusive for a satisfiable single range, ``False`` for an unsatisfiable one, ``None``
    when there is no usable range header (serve the whole file)."""
    if not header:
        return None
    match = _RANGE_RE.match(header)
    if not match:
        return None  # multi-range or malformed: ignored
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        length = int(last)
        if length == 0:
            return False
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return False
    return start, end


class OpenFileResponse(Response):
    """Streams an already open file (see module contract) and closes it at the end."""

    chunk_size = 256 * 1024

    def __init__(self, handle: IO[bytes], *, media_type: str, filename: str) -> None:
        stat = os.fstat(handle.fileno())
        super().__init__(content=b"", media_type=media_type,
                         headers={"content-disposition": f'attachment; filename="{filename}"',
                                  "accept-ranges": "bytes", "etag": f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"',
                                  "last-modified": formatdate(stat.st_mtime, usegmt=True)})
        self.handle = handle
        self.size = stat.st_size
        self.headers["content-length"] = str(self.size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            wanted = parse_range(headers.get("range"), self.size)
            start, remaining, status = 0, self.size, self.status_code
            if wanted is False:
                self.headers["content-range"] = f"bytes */{self.size}"
                self.headers["content-length"] = "0"
                status, remaining = 416, 0
            elif isinstance(wanted, tuple):
                start, end = wanted
                remaining, status = end - start + 1, 206
                self.headers["content-range"] = f"bytes {start}-{end}/{self.size}"
                self.headers["content-length"] = str(remaining)
            await send({"type": "http.response.start", "status": status, "headers": self.raw_headers})
            if scope.get("method") == "HEAD" or remaining == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if start:
                await anyio.to_thread.run_sync(self.handle.seek, start)
            while remaining > 0:
                chunk = await anyio.to_thread.run_sync(self.handle.read, min(self.chunk_size, remaining))
                remaining = remaining - len(chunk) if chunk else 0
                await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
        finally:
            self.handle.close()
