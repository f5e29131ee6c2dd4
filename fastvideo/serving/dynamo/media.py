"""Where ``response_format: "url"`` videos go: an fsspec folder plus an optional public base URL.

Contract: ``MediaStore(fs_url, http_url)`` opens the folder ``fs_url`` names (``file:///dir``,
``s3://bucket/prefix``, ``memory://x``, ... any fsspec protocol that is installed; local folders are
created on demand). ``await put(name, data)`` writes the bytes (off the event loop) and returns the
URL a client fetches: ``{http_url}/{name}`` when a base URL is configured, else
``{protocol}://{root}/{name}`` (for local disk that is a ``file://`` URL on the worker's machine).
Names are single path components; anything else is a ``ValueError``.
"""

from __future__ import annotations

import asyncio
import logging

import fsspec
from fsspec.implementations.dirfs import DirFileSystem

logger = logging.getLogger(__name__)


class MediaStore:
    """An fsspec-backed output folder for generated videos."""

    def __init__(self, fs_url: str, http_url: str | None = None) -> None:
        if "://" not in fs_url:
            raise ValueError(f"media output {fs_url!r} is not a URL; use e.g. file:///tmp/videos or s3://bucket/dir")
        protocol, root = fs_url.split("://", 1)
        options = {"auto_mkdir": True} if protocol in ("file", "local") else {}
        self.protocol = protocol
        self.root = root.rstrip("/") or "/"
        self.http_url = http_url.rstrip("/") if http_url else None
        self.fs = DirFileSystem(path=self.root, fs=fsspec.filesystem(protocol, **options))
        if protocol in ("file", "local"):
            self.fs.fs.makedirs(self.root, exist_ok=True)
        logger.info("media output folder %s://%s%s", protocol, self.root,
                    f" served at {self.http_url}" if self.http_url else "")

    def url_for(self, name: str) -> str:
        if self.http_url:
            return f"{self.http_url}/{name}"
        return f"{self.protocol}://{self.root}/{name}"

    async def put(self, name: str, data: bytes) -> str:
        """Write ``data`` as ``name`` in the folder; return its URL."""
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"media name {name!r} must be a plain file name")
        await asyncio.to_thread(self.fs.pipe_file, name, data)
        return self.url_for(name)
