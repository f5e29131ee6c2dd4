"""Atomic file writes: the one way this package writes an output file.

Contract: :func:`write_atomic` writes bytes (or UTF-8 text) to a uniquely named temporary sibling
(``.<name>.<random>.part``, so concurrent writers never share one), makes it an ordinary 0644 file and renames
it into place with ``os.replace``: a reader sees the old file or the whole new one, never part of it, and on any
error the temporary file is removed and the exception propagates. The folder must exist. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (see module contract); returns the path."""
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            os.fchmod(handle.fileno(), 0o644)  # mkstemp makes 0600; an output is an ordinary file
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target
