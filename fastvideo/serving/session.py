"""Streaming sessions: the state machine and the per-server session registry.

Contract:
- :class:`SessionState` positions: ``INITIALIZING -> QUEUED | GPU_BINDING -> ACTIVE -> COMPLETE |
  ERROR | TIMEOUT | REJECTED``. A session waits in ``INITIALIZING`` until ``session_init_v2``;
  each segment goes ``QUEUED`` (its job waits) -> ``GPU_BINDING`` (its job was picked) -> ``ACTIVE``
  (steps / media flowing); after a segment the session stays ``ACTIVE`` until the next segment is
  queued again. ``COMPLETE``, ``ERROR``, ``TIMEOUT`` and ``REJECTED`` are terminal.
  :meth:`Session.transition` raises :class:`InvalidSessionTransition` on any edge not in
  :data:`VALID_TRANSITIONS` (re-asserting the current state is allowed).
- :class:`SessionManager` admits at most ``max_sessions`` live sessions, and at most
  ``max_per_client`` of them from one client address (None: no cap of its own); :meth:`create`
  raises :class:`SessionRejected` beyond either, before any resource is taken, saying which limit
  was hit. :meth:`release` is idempotent. Nothing here does IO.
- ``last_activity`` moves only with real session activity (:meth:`Session.touch`: the caller decides
  what counts; a state transition counts); the idle timeout is measured from it.
"""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastvideo.api import ContinuationState, FastVideoError


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


class InvalidSessionTransition(FastVideoError, RuntimeError):
    """An edge the session state machine does not allow."""


class SessionRejected(FastVideoError, RuntimeError):
    """The server already runs its maximum number of sessions."""


@dataclass
class Session:
    """One ``/v1/stream`` connection's state."""

    id: str = field(default_factory=lambda: f"sess_{uuid.uuid4().hex[:24]}")
    state: SessionState = S.INITIALIZING
    created_at: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    segment_idx: int = 0
    continuation_state: ContinuationState | None = None
    #: Sampling every segment of this session uses unless a segment overrides what may change.
    sampling: dict[str, Any] = field(default_factory=dict)
    negative_prompt: str | None = None
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


class SessionManager:
    """Admission and bookkeeping of live sessions."""

    def __init__(self, max_sessions: int, max_per_client: int | None = None) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if max_per_client is not None and max_per_client < 1:
            raise ValueError(f"max_per_client must be >= 1 or None, got {max_per_client}")
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self.sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self.sessions)

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
        self.sessions.pop(session.id, None)
