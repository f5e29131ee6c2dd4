"""Blob and session stores: where continuation state lives between segments, restarts and workers.

Contract:
- :class:`BlobStore` keeps opaque bytes by id: ``put(data, ttl_s=None) -> blob_id`` (a fresh
  ``blob_<hex>`` id), ``get(blob_id) -> bytes`` (raises :class:`BlobNotFound`, saying the blob may
  have expired), ``delete``, ``exists``. Ids are safe in JSON and Redis keys.
- :class:`SessionStore` keeps one :class:`SessionRecord` per streaming session (the latest
  continuation state as a JSON-safe dict — large tensors in it are blob references — plus which
  worker owns the hot copy and the segment index): ``put``, ``get`` (``None`` when unknown or
  expired), ``delete``, ``ids``.
- Two backends with identical behaviour: in-memory (one process; tests, single-server setups) and
  Redis (``redis://host:port/db``; survives a server restart, shared by workers and replicas).
  Entries expire ``ttl_s`` after their last write (0 or None: never). The Redis backend needs the
  ``redis`` package only when used.
- :func:`open_stores` builds both from a :class:`StoreConfig` (``memory://`` or ``redis://...``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

from fastvideo.api.errors import FastVideoError


class BlobNotFound(FastVideoError, KeyError):
    """A blob id that the store does not hold (never written, deleted or expired)."""

    def __init__(self, blob_id: str) -> None:
        self.blob_id = blob_id
        super().__init__(blob_id)

    def __str__(self) -> str:
        return (f"blob {self.blob_id!r} is not in the blob store (it expired, was deleted, or was written "
                "to a different store)")


def new_blob_id() -> str:
    return f"blob_{uuid.uuid4().hex}"


def _check_blob_id(blob_id: Any) -> str:
    if not isinstance(blob_id, str) or not blob_id or len(blob_id) > 200 or any(c.isspace() for c in blob_id):
        raise ValueError(f"invalid blob id {blob_id!r}")
    return blob_id


@dataclass
class SessionRecord:
    """The durable part of a streaming session."""

    session_id: str
    #: ``ContinuationState.to_dict()`` of the latest segment (tensors possibly blob references).
    state: dict[str, Any] | None = None
    #: The worker holding the hot (in-memory) copy, if any.
    worker_id: str | None = None
    segment_index: int = -1
    updated_at: float = field(default_factory=time.time)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "SessionRecord":
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


class BlobStore(ABC):
    """Bytes by id (see module contract)."""

    @abstractmethod
    def put(self, data: bytes, *, ttl_s: float | None = None, blob_id: str | None = None) -> str: ...

    @abstractmethod
    def get(self, blob_id: str) -> bytes: ...

    @abstractmethod
    def delete(self, blob_id: str) -> bool: ...

    @abstractmethod
    def exists(self, blob_id: str) -> bool: ...

    def close(self) -> None:
        """Release connections (no-op for in-memory)."""


class SessionStore(ABC):
    """Session records by id (see module contract)."""

    @abstractmethod
    def put(self, record: SessionRecord, *, ttl_s: float | None = None) -> None: ...

    @abstractmethod
    def get(self, session_id: str) -> SessionRecord | None: ...

    @abstractmethod
    def delete(self, session_id: str) -> bool: ...

    @abstractmethod
    def ids(self) -> list[str]: ...

    def close(self) -> None:
        """Release connections (no-op for in-memory)."""


class _Expiring:
    """A dict whose entries expire; guarded by a lock."""

    def __init__(self, default_ttl_s: float | None) -> None:
        self.default_ttl_s = default_ttl_s
        self._data: dict[str, tuple[Any, float | None]] = {}
        self._lock = threading.Lock()

    def set(self, key: str, value: Any, ttl_s: float | None) -> None:
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        with self._lock:
            self._data[key] = (value, time.monotonic() + ttl if ttl else None)

    def get(self, key: str) -> Any:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            value, deadline = entry
            if deadline is not None and time.monotonic() >= deadline:
                del self._data[key]
                return None
            return value

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._data.pop(key, None) is not None

    def keys(self) -> list[str]:
        with self._lock:
            keys = list(self._data)
        return [k for k in keys if self.get(k) is not None]


class InMemoryBlobStore(BlobStore):
    def __init__(self, default_ttl_s: float | None = None) -> None:
        self._items = _Expiring(default_ttl_s)

    def put(self, data: bytes, *, ttl_s: float | None = None, blob_id: str | None = None) -> str:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"blob data must be bytes, got {type(data).__name__}")
        blob_id = _check_blob_id(blob_id or new_blob_id())
        self._items.set(blob_id, bytes(data), ttl_s)
        return blob_id

    def get(self, blob_id: str) -> bytes:
        data = self._items.get(_check_blob_id(blob_id))
        if data is None:
            raise BlobNotFound(blob_id)
        return data

    def delete(self, blob_id: str) -> bool:
        return self._items.delete(blob_id)

    def exists(self, blob_id: str) -> bool:
        return self._items.get(blob_id) is not None

    def __len__(self) -> int:
        return len(self._items.keys())


class InMemorySessionStore(SessionStore):
    def __init__(self, default_ttl_s: float | None = None) -> None:
        self._items = _Expiring(default_ttl_s)

    def put(self, record: SessionRecord, *, ttl_s: float | None = None) -> None:
        record.updated_at = time.time()
        self._items.set(record.session_id, record.to_json(), ttl_s)  # stored as JSON: same as Redis

    def get(self, session_id: str) -> SessionRecord | None:
        text = self._items.get(session_id)
        return None if text is None else SessionRecord.from_json(text)

    def delete(self, session_id: str) -> bool:
        return self._items.delete(session_id)

    def ids(self) -> list[str]:
        return sorted(self._items.keys())


def _redis_client(url: str) -> Any:
    try:
        import redis  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(f"the store URL {url!r} needs the 'redis' package: pip install 'redis>=5'") from exc
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def _ttl_ms(ttl_s: float | None) -> int | None:
    return int(ttl_s * 1000) if ttl_s else None


class _RedisBacked:
    """Connection, key prefix and default TTL shared by the Redis stores."""

    def __init__(self, url: str, *, prefix: str = "fastvideo:", default_ttl_s: float | None = None,
                 client: Any = None) -> None:
        self.url = url
        self.prefix = prefix
        self.default_ttl_s = default_ttl_s
        self._client = client if client is not None else _redis_client(url)

    def close(self) -> None:
        self._client.close()


class RedisBlobStore(_RedisBacked, BlobStore):
    """Blobs as Redis strings under ``{prefix}blob:{id}``."""

    def _key(self, blob_id: str) -> str:
        return f"{self.prefix}blob:{_check_blob_id(blob_id)}"

    def put(self, data: bytes, *, ttl_s: float | None = None, blob_id: str | None = None) -> str:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"blob data must be bytes, got {type(data).__name__}")
        blob_id = _check_blob_id(blob_id or new_blob_id())
        self._client.set(self._key(blob_id), bytes(data),
                         px=_ttl_ms(self.default_ttl_s if ttl_s is None else ttl_s))
        return blob_id

    def get(self, blob_id: str) -> bytes:
        data = self._client.get(self._key(blob_id))
        if data is None:
            raise BlobNotFound(blob_id)
        return bytes(data)

    def delete(self, blob_id: str) -> bool:
        return bool(self._client.delete(self._key(blob_id)))

    def exists(self, blob_id: str) -> bool:
        return bool(self._client.exists(self._key(blob_id)))


class RedisSessionStore(_RedisBacked, SessionStore):
    """Session records as JSON strings under ``{prefix}session:{id}``."""

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    def put(self, record: SessionRecord, *, ttl_s: float | None = None) -> None:
        record.updated_at = time.time()
        self._client.set(self._key(record.session_id), record.to_json(),
                         px=_ttl_ms(self.default_ttl_s if ttl_s is None else ttl_s))

    def get(self, session_id: str) -> SessionRecord | None:
        text = self._client.get(self._key(session_id))
        return None if text is None else SessionRecord.from_json(text)

    def delete(self, session_id: str) -> bool:
        return bool(self._client.delete(self._key(session_id)))

    def ids(self) -> list[str]:
        head = len(self._key(""))
        return sorted(k.decode()[head:] if isinstance(k, bytes) else k[head:]
                      for k in self._client.scan_iter(match=self._key("*"), count=500))


@dataclass
class StoreConfig:
    """Where state goes: ``memory://`` or ``redis://host:port/db``; sizes and lifetimes."""

    url: str = "memory://"
    #: Tensors whose safetensors bytes exceed this go to the BlobStore by id; smaller stay inline.
    blob_threshold_bytes: int = 64 * 1024
    blob_ttl_s: float | None = 24 * 3600.0
    session_ttl_s: float | None = 24 * 3600.0
    key_prefix: str = "fastvideo:"


@dataclass
class Stores:
    blobs: BlobStore
    sessions: SessionStore
    config: StoreConfig

    def close(self) -> None:
        self.blobs.close()
        self.sessions.close()


def open_stores(config: StoreConfig | None = None) -> Stores:
    """Both stores for ``config.url`` (one shared Redis connection pool for ``redis://``)."""
    config = config or StoreConfig()
    url = config.url
    if url in ("memory://", "memory", ""):
        return Stores(InMemoryBlobStore(config.blob_ttl_s), InMemorySessionStore(config.session_ttl_s), config)
    if url.startswith(("redis://", "rediss://", "unix://")):
        client = _redis_client(url)
        return Stores(RedisBlobStore(url, prefix=config.key_prefix, default_ttl_s=config.blob_ttl_s, client=client),
                      RedisSessionStore(url, prefix=config.key_prefix, default_ttl_s=config.session_ttl_s,
                                        client=client), config)
    raise ValueError(f"unknown store URL {url!r}; use 'memory://' or 'redis://host:port/db'")
