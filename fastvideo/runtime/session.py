"""Streaming sessions on a worker: hot continuation state, snapshot and hydrate.

Contract:
- A *session* is a chain of segments; its latest :class:`ContinuationState` is *hot* on the worker
  that produced it (kept in that worker's memory, never serialized between segments). A
  :class:`SessionHost` wraps one :class:`~fastvideo.runtime.worker.BatchWorker`: ``generate`` with a
  ``session_id`` and no explicit ``request.state`` continues from the hot state (the first segment
  of a new session runs the initial branch); an explicit state always wins. After a segment the
  host keeps its state hot and hands it to ``on_done`` as well (so the pool can write it through
  to the SessionStore); the caller's result carries a state only if it asked ``return_state``.
- ``snapshot(session_id)`` returns the hot state (or None); ``hydrate(session_id, state)`` makes a
  state hot here (a moved or restored session); ``drop(session_id)`` forgets it.
- Callbacks: ``on_start()`` once when the request's batch starts (optional), ``on_step(step,
  total)`` after every step, then ``on_done(result, state)`` or ``on_error(code, message,
  field)``: ``invalid_request`` (with the field; the message is then the error's ``reason``, so the
  receiver rebuilds the same RequestError without parsing text), ``queue_full``, ``cancelled``,
  ``shutting_down`` (cancelled because the worker is stopping), ``generation_failed``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from fastvideo.api import (ContinuationState, FastVideoError, GenerationCancelled, GenerationRequest, RequestError,
                           VideoResult, parse_config)
from fastvideo.runtime.scheduler import QueueFull, WorkItem

logger = logging.getLogger(__name__)


class SessionLost(FastVideoError, RuntimeError):
    """The worker holding a session's hot state is gone; the session needs resume() or a state."""

    def __init__(self, session_id: str, message: str) -> None:
        self.session_id = session_id
        super().__init__(message)


@dataclass
class HostCallbacks:
    on_step: Callable[[int, int], None]
    on_done: Callable[[VideoResult, ContinuationState | None], None]
    on_error: Callable[[str, str, str | None], None]
    on_start: Callable[[], None] | None = None


class _Listener:
    def __init__(self, host: "SessionHost", session_id: str | None, want_state: bool, cb: HostCallbacks) -> None:
        self.host, self.session_id, self.want_state, self.cb = host, session_id, want_state, cb

    def on_start(self, item: WorkItem) -> None:
        if self.cb.on_start is not None:
            self.cb.on_start()

    def on_step(self, item: WorkItem, step: int, total: int) -> None:
        self.cb.on_step(step, total)

    def on_done(self, item: WorkItem, result: VideoResult) -> None:
        state = result.state
        if self.session_id is not None and state is not None:
            with self.host._lock:
                self.host.hot[self.session_id] = state
        if not self.want_state:
            result = replace(result, state=None)
        self.cb.on_done(result, state if self.session_id is not None else None)

    def on_cancelled(self, item: WorkItem, reason: GenerationCancelled) -> None:
        self.cb.on_error("shutting_down" if reason.shutting_down else "cancelled", str(reason), None)

    def on_failed(self, item: WorkItem, exc: BaseException) -> None:
        if isinstance(exc, RequestError):
            self.cb.on_error("invalid_request", exc.reason, exc.field)
        else:
            self.cb.on_error("generation_failed", f"{type(exc).__name__}: {exc}", None)


class SessionHost:
    """Hot session states on one worker (see module contract)."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.hot: dict[str, ContinuationState] = {}
        self._lock = threading.Lock()

    def generate(self, request: GenerationRequest | dict, session_id: str | None, cb: HostCallbacks) -> str | None:
        """Submit; returns the request id (errors are reported through ``cb.on_error``)."""
        try:
            req = parse_config(GenerationRequest, request)
            want_state = req.output.return_state
            if session_id is not None:
                if req.state is None:
                    with self._lock:
                        hot = self.hot.get(session_id)
                    if hot is not None:
                        req = replace(req, state=hot)
                req = replace(req, output=replace(req.output, return_state=True))
            self.worker.submit(req, listener=_Listener(self, session_id, want_state, cb), need_bytes=True)
        except RequestError as exc:
            cb.on_error("invalid_request", exc.reason, exc.field)
            return None
        except QueueFull as exc:
            cb.on_error("queue_full", str(exc), None)
            return None
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            cb.on_error("generation_failed", f"{type(exc).__name__}: {exc}", None)
            return None
        return req.request_id

    def cancel(self, request_id: str) -> str:
        return self.worker.cancel(request_id)

    def snapshot(self, session_id: str) -> ContinuationState | None:
        with self._lock:
            return self.hot.get(session_id)

    def hydrate(self, session_id: str, state: ContinuationState | dict) -> None:
        if isinstance(state, dict):
            state = ContinuationState.from_dict(state)
        state.validate()
        with self._lock:
            self.hot[session_id] = state

    def drop(self, session_id: str) -> bool:
        with self._lock:
            return self.hot.pop(session_id, None) is not None

    def session_ids(self) -> list[str]:
        with self._lock:
            return sorted(self.hot)
