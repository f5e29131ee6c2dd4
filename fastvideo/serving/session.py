"""Streaming sessions: the state machine, the session record, and the per-server session manager.

Contract:
- :class:`SessionState` positions (FastVideo's): ``INITIALIZING -> QUEUED | GPU_BINDING -> ACTIVE ->
  COMPLETE | ERROR | TIMEOUT | REJECTED``. A session waits in ``INITIALIZING`` until
  ``session_init_v2``; each segment goes ``QUEUED`` (its job waits) -> ``GPU_BINDING`` (its job was
  picked) -> ``ACTIVE`` (steps / media flowing); after a segment the session stays ``ACTIVE`` until
  the next segment is queued again. ``COMPLETE``, ``ERROR``, ``TIMEOUT`` and ``REJECTED`` are
  terminal. :meth:`Session.transition` raises :class:`InvalidSessionTransition` (a FastVideoError)
  on any edge not in :data:`VALID_TRANSITIONS` (re-asserting the current state is allowed, as
  FastVideo's ACTIVE self-loop). Pause is a flag (``generation_paused``), not a state.
- :class:`Session` carries FastVideo's fields (``client_id``, ``preset``, ``preset_label``,
  ``curated_prompts``, ``segment_idx``, the feature flags ``enhancement_enabled``,
  ``auto_extension_enabled``, ``loop_generation_enabled``, ``single_clip_mode``,
  ``generation_paused``, ``stream_mode``, ``gpu_id``, ``continuation_state``, ``metadata``) plus this
  server's (``sampling``, ``negative_prompt``, ``last_prompt``, ``history``, ``client`` address).
- :class:`SessionManager` admits at most ``max_sessions`` live sessions, and at most
  ``max_per_client`` of them from one client address (None: no cap of its own); :meth:`create`
  raises :class:`SessionRejected` beyond either, before any resource is taken, saying which limit
  was hit. :meth:`release` is idempotent. It owns the time budgets: :meth:`deadline` says when an
  idle session ends (``handshake_timeout`` before ``session_init_v2``, else ``session_timeout``
  ``idle_timeout_s`` after its last activity; never while a segment runs or waits),
  :meth:`reap_timed_out` lists the sessions past it; ``segment_cap`` (FastVideo's
  ``generation_segment_cap``) bounds loop generation, ``max_segments`` every session.
- Durability: :meth:`SessionManager.persist` writes the session (continuation state as
  ``{kind, payload}`` - its large tensors are blob ids when the server has a blob store - sampling,
  preset, prompts and flags) to the :class:`~fastvideo.runtime.stores.SessionStore` as a
  :class:`SessionRecord` that expires ``idle_timeout_s`` after the write; :meth:`load` reads it
  back. With a Redis store a session survives a worker restart: a new process resumes it by id.
  Store calls do blocking IO: callers on an event loop run them in a thread.
- ``last_activity`` moves only with real session activity (:meth:`Session.touch`: the caller decides
  what counts; a state transition counts); the idle timeout is measured from it.
"""

from __future__ import annotations

import enum
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastvideo.api import ContinuationState, FastVideoError
from fastvideo.runtime.stores import InMemorySessionStore, SessionRecord, SessionStore


class SessionState(str, enum.Enum):
    INITIALIZING = "initializing"
    QUEUED = "queued"
    GPU_BINDING = "gpu_binding"
    ACTIVE = "active"
    COMPLETE = "complete"
    ERROR = "error"
    TIMEOUT = "timeout"
    REJECTED = "rejected"


S = SessionState
TERMINAL_STATES = frozenset({S.COMPLETE, S.ERROR, S.TIMEOUT, S.REJECTED})
_ENDINGS = frozenset({S.COMPLETE, S.ERROR, S.TIMEOUT})

VALID_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    S.INITIALIZING: frozenset({S.QUEUED, S.GPU_BINDING, S.ACTIVE, S.REJECTED}) | _ENDINGS,
    S.QUEUED: frozenset({S.GPU_BINDING, S.ACTIVE}) | _ENDINGS,
    S.GPU_BINDING: frozenset({S.ACTIVE, S.QUEUED}) | _ENDINGS,
    S.ACTIVE: frozenset({S.QUEUED, S.GPU_BINDING}) | _ENDINGS,
    S.COMPLETE: frozenset(),
    S.ERROR: frozenset(),
    S.TIMEOUT: frozenset(),
    S.REJECTED: frozenset(),
}

#: The feature flags a client may set (``session_init_v2`` and the ``*_updated`` frames), in frame order.
FLAGS = ("enhancement_enabled", "auto_extension_enabled", "loop_generation_enabled", "single_clip_mode",
         "generation_paused")
#: What a session id given by a client must look like before it is used as a store key.
SESSION_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


class InvalidSessionTransition(FastVideoError, RuntimeError):
    """An edge the session state machine does not allow."""


class SessionRejected(FastVideoError, RuntimeError):
    """The server already runs its maximum number of sessions."""


@dataclass
class Session:
    """One ``/v1/stream`` connection's state (see module contract)."""

    id: str = field(default_factory=lambda: f"sess_{uuid.uuid4().hex[:24]}")
    state: SessionState = S.INITIALIZING
    created_at: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    client_id: str | None = None
    preset: str | None = None
    preset_label: str | None = None
    curated_prompts: list[str] = field(default_factory=list)
    segment_idx: int = 0
    enhancement_enabled: bool = False
    auto_extension_enabled: bool = False
    loop_generation_enabled: bool = False
    single_clip_mode: bool = False
    generation_paused: bool = False
    stream_mode: str = "av_fmp4"
    gpu_id: int | None = None
    continuation_state: ContinuationState | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Sampling every segment of this session uses unless a segment overrides what may change.
    sampling: dict[str, Any] = field(default_factory=dict)
    negative_prompt: str | None = None
    #: The prompt of the latest requested segment (what loop generation repeats without curated prompts).
    last_prompt: str | None = None
    history: list[SessionState] = field(default_factory=lambda: [S.INITIALIZING])
    #: The client address the session was opened from (what the per-client cap counts).
    client: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def transition(self, target: SessionState) -> None:
        """Move to ``target`` or raise InvalidSessionTransition."""
        if target is self.state and not self.terminal:
            self.touch()
            return
        if target not in VALID_TRANSITIONS[self.state]:
            raise InvalidSessionTransition(f"session {self.id}: {self.state.value} -> {target.value} "
                                           "is not a valid transition")
        self.state = target
        self.history.append(target)
        self.touch()

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def idle_for(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.last_activity

    def is_active(self) -> bool:
        return self.state is S.ACTIVE

    def segment_cap_reached(self, cap: int) -> bool:
        return self.segment_idx >= cap

    def describe(self) -> dict[str, Any]:
        """The client-visible settings (the ``session_updated`` frame's fields)."""
        return {"state": self.state.value, "segment_idx": self.segment_idx, "client_id": self.client_id,
                "preset": self.preset, "preset_label": self.preset_label,
                "curated_prompts": list(self.curated_prompts), **{f: getattr(self, f) for f in FLAGS}}

    def to_record(self) -> SessionRecord:
        state = self.continuation_state
        meta = {"sampling": dict(self.sampling), "negative_prompt": self.negative_prompt,
                "last_prompt": self.last_prompt, "client_id": self.client_id, "preset": self.preset,
                "preset_label": self.preset_label, "curated_prompts": list(self.curated_prompts),
                "stream_mode": self.stream_mode, **{f: getattr(self, f) for f in FLAGS}}
        return SessionRecord(session_id=self.id, state=state.to_dict() if state is not None else None,
                             segment_index=self.segment_idx - 1, metadata=meta)

    def restore(self, record: SessionRecord) -> None:
        """Take the continuation state, segment index, prompts and settings of a stored session (its id too)."""
        meta = record.metadata
        self.id = record.session_id
        self.continuation_state = ContinuationState.from_dict(record.state) if record.state is not None else None
        self.segment_idx = record.segment_index + 1
        self.sampling = dict(meta.get("sampling") or {})
        self.negative_prompt = meta.get("negative_prompt")
        self.last_prompt = meta.get("last_prompt")
        self.curated_prompts = [p for p in meta.get("curated_prompts") or [] if isinstance(p, str)]
        for name in ("client_id", "preset", "preset_label", "stream_mode"):
            if meta.get(name) is not None:
                setattr(self, name, meta[name])
        for name in FLAGS:
            setattr(self, name, bool(meta.get(name, False)))


class SessionManager:
    """Admission, time budgets and durability of live sessions (see module contract)."""

    def __init__(self, max_sessions: int, max_per_client: int | None = None, *, segment_cap: int = 6,
                 max_segments: int = 64, idle_timeout_s: float = 300.0, handshake_timeout_s: float = 10.0,
                 store: SessionStore | None = None) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if max_per_client is not None and max_per_client < 1:
            raise ValueError(f"max_per_client must be >= 1 or None, got {max_per_client}")
        if segment_cap < 1:
            raise ValueError(f"segment_cap must be >= 1, got {segment_cap}")
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self.segment_cap = segment_cap
        self.max_segments = max_segments
        self.idle_timeout_s = idle_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.store: SessionStore = store if store is not None else InMemorySessionStore()
        self.sessions: dict[str, Session] = {}

    @property
    def session_timeout_seconds(self) -> float:
        """FastVideo's name of the idle timeout."""
        return self.idle_timeout_s

    def __len__(self) -> int:
        return len(self.sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self.sessions

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def active_sessions(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.is_active()]

    def held_by(self, client: str | None) -> int:
        """Live sessions opened from ``client``."""
        return sum(1 for s in self.sessions.values() if s.client == client)

    def create(self, client: str | None = None) -> Session:
        if len(self.sessions) >= self.max_sessions:
            raise SessionRejected(f"the server is at its limit of {self.max_sessions} concurrent streaming sessions")
        cap = self.max_per_client
        if cap is not None and client is not None and self.held_by(client) >= cap:
            raise SessionRejected(f"this client ({client}) already holds {cap} streaming session(s), the limit per "
                                  "client (streaming.max_sessions_per_client); end one before opening another")
        session = Session(client=client)
        self.sessions[session.id] = session
        return session

    def release(self, session: Session) -> None:
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]

    def rename(self, session: Session, new_id: str) -> None:
        """Register ``session`` under ``new_id`` (a resumed session takes its old id)."""
        self.release(session)
        session.id = new_id
        self.sessions[new_id] = session

    # ------------------------------------------------------------------ time budgets
    def deadline(self, session: Session, *, busy: bool, initialized: bool) -> tuple[float, str] | None:
        """(monotonic time, error code) at which ``session`` ends unless something happens; None while busy."""
        if busy:
            return None
        idle_at = session.last_activity + self.idle_timeout_s
        if not initialized:
            handshake_at = session.created_at + self.handshake_timeout_s
            if handshake_at <= idle_at:
                return handshake_at, "handshake_timeout"
        return idle_at, "session_timeout"

    def reap_timed_out(self, now: float | None = None) -> list[str]:
        """Ids of live, non-terminal sessions idle for longer than ``idle_timeout_s`` (the caller closes them)."""
        now = time.monotonic() if now is None else now
        return [sid for sid, s in self.sessions.items() if not s.terminal and s.idle_for(now) > self.idle_timeout_s]

    # ------------------------------------------------------------------ durability (blocking IO)
    def persist(self, session: Session) -> None:
        """Write ``session`` to the store (expires ``idle_timeout_s`` after this write)."""
        self.store.put(session.to_record(), ttl_s=self.idle_timeout_s)

    def load(self, session_id: str) -> SessionRecord | None:
        """The stored session ``session_id`` (None: unknown, expired, or not a valid id)."""
        if not isinstance(session_id, str) or not SESSION_ID_RE.fullmatch(session_id):
            return None
        return self.store.get(session_id)

    def forget(self, session_id: str) -> None:
        self.store.delete(session_id)
