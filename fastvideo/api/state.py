"""Continuation state: the JSON-safe envelope carried between streaming segments.

Contract: ``ContinuationState(kind, payload)`` where ``kind`` names the producer and layout
(``"wan.v1"``) and ``payload`` is a JSON-serializable dict that always carries an integer
``schema_version``. Tensors inside the payload are encoded by the runtime (safetensors bytes,
base64) or referenced by a blob id when large; this module never sees a tensor. Parsing an
unknown kind or an unsupported schema version raises ``ValueError`` saying what is supported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

#: kind -> schema versions this package can read.
KNOWN_STATE_KINDS: dict[str, tuple[int, ...]] = {"wan.v1": (1,), "ltx2.v1": (1,)}


@dataclass
class ContinuationState:
    """Opaque, versioned state that lets a segment continue a previous one."""

    kind: str
    payload: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError(f"ContinuationState.kind must be a non-empty string, got {self.kind!r}")
        if not isinstance(self.payload, dict):
            raise ValueError(f"ContinuationState.payload must be a dict, got {type(self.payload).__name__}")

    @property
    def schema_version(self) -> int | None:
        version = self.payload.get("schema_version")
        return version if isinstance(version, int) and not isinstance(version, bool) else None

    def validate(self) -> "ContinuationState":
        """Check kind and schema version are ones this package reads; return self."""
        if self.kind not in KNOWN_STATE_KINDS:
            raise ValueError(f"unknown continuation state kind {self.kind!r}; "
                             f"supported kinds: {sorted(KNOWN_STATE_KINDS)}")
        supported = KNOWN_STATE_KINDS[self.kind]
        if self.schema_version not in supported:
            raise ValueError(f"continuation state {self.kind!r} has schema_version "
                             f"{self.payload.get('schema_version')!r}; supported: {list(supported)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "payload": self.payload}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ContinuationState":
        """Parse and validate ``{"kind", "payload"}``."""
        if not isinstance(data, dict) or "kind" not in data or "payload" not in data:
            raise ValueError("continuation state must be an object with 'kind' and 'payload'")
        extra = set(data) - {"kind", "payload"}
        if extra:
            raise ValueError(f"continuation state has unknown keys {sorted(extra)}")
        return cls(kind=data["kind"], payload=data["payload"]).validate()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "ContinuationState":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"continuation state is not valid JSON: {exc}") from exc
        return cls.from_dict(data)
