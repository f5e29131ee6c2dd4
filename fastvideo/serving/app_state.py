"""What one ``fastvideo serve`` app holds, passed explicitly to its route builders.

Contract: :class:`ServerState` bundles the config, the runtime's :class:`VideoService` (the only
seam to the runtime), the :class:`VideoStore`, metrics, streaming sessions and the served
model's identity. It is created by :func:`fastvideo.serving.app.build_app` and stored on
``app.state.server``; there is no module-level instance. :meth:`submit` is the single admission
path for HTTP and WebSocket jobs (:meth:`validate` runs the same checks without queueing, for an
edge that must store an input only once the request is known good); both first fill what the request
left unset from the operator's ``default_request`` (:meth:`with_defaults`). It refuses with 503 before
warmup or while draining, 429 when the queue is full (both with ``retry-after``, and both before
any job exists), 400 for bad input with ``param`` naming the client's field (the engine's error
re-labelled by the request's :class:`~fastvideo.api.TranslatedRequest`). Unknown request fields are
logged once each (:meth:`report_extras`), remembering at most :data:`MAX_REPORTED_EXTRAS` names, so
clients sending ever-new field names cannot grow the server's memory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastvideo.api import ConfigError, GenerationRequest, RequestError, TranslatedRequest
from fastvideo.runtime.service import Job, QueueFull, ServiceNotReady, ServiceStopped, VideoService
from fastvideo.serving.config import ServeConfig, apply_request_defaults, request_defaults
from fastvideo.serving.errors import APIError, bad_request, queue_full, unavailable
from fastvideo.serving.metrics import ServingMetrics
from fastvideo.serving.request_mapping import ModelDefaults
from fastvideo.serving.session import SessionManager
from fastvideo.serving.video_store import VideoStore

logger = logging.getLogger(__name__)

#: Distinct unknown request-field names remembered (and logged once each); past it none are logged.
MAX_REPORTED_EXTRAS = 256


@dataclass
class ServerState:
    """Everything the routes of one server use (see module contract)."""

    config: ServeConfig
    service: VideoService
    store: VideoStore
    metrics: ServingMetrics
    sessions: SessionManager
    defaults: ModelDefaults
    model_ids: frozenset[str]
    started_at: float = field(default_factory=time.time)
    phase: str = "starting"  # starting | warming | ready | draining | stopped | warmup_failed
    warmup_s: float | None = None
    #: The prompt enhancer streaming sessions ask (a :class:`fastvideo.serving.prompt_source.PromptSource`);
    #: None: enhancement, rewrites and auto-extension are answered ``enhancer_not_configured``.
    prompt_source: Any = None
    #: The prompt pipeline of ``streaming.prompt`` / ``streaming.safety``
    #: (:class:`fastvideo.serving.prompting.SessionPrompting`); None: no safety check, no enhancer.
    prompting: Any = None
    _reported_extras: set[str] = field(default_factory=set)

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    def require_ready(self) -> None:
        retry = self.config.queue.retry_after_s
        if self.phase == "draining" or self.phase == "stopped":
            self.metrics.rejections.labels("shutting_down").inc()
            raise unavailable("the server is shutting down; retry on another replica", retry, "shutting_down")
        if self.phase != "ready":
            self.metrics.rejections.labels("not_ready").inc()
            raise unavailable(f"the server is not ready yet ({self.phase}); retry shortly", retry, "not_ready")

    def check_model(self, model: str | None) -> None:
        if model is not None and model not in self.model_ids:
            raise APIError(404, f"the model {model!r:.120} does not exist; this server serves {self.defaults.name!r}",
                           param="model", code="model_not_found")

    def report_extras(self, extras: dict[str, Any] | None) -> None:
        for key in sorted(extras or {}):
            if key in self._reported_extras or len(self._reported_extras) > MAX_REPORTED_EXTRAS:
                continue
            self._reported_extras.add(key)
            if len(self._reported_extras) > MAX_REPORTED_EXTRAS:
                logger.warning("more than %d different unsupported request fields seen; no longer reporting them",
                               MAX_REPORTED_EXTRAS)
            else:
                logger.warning("request field %r is not supported and is ignored (reported once)", key[:80])

    def with_defaults(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` with the operator's ``default_request`` values where it left a field unset."""
        return apply_request_defaults(request, request_defaults(self.config))

    def validate(self, request: GenerationRequest, translated: TranslatedRequest | None = None) -> None:
        """Check ``request`` against the served model without queueing it (400 naming the client's field)."""
        try:
            self.service.generator.resolve(self.with_defaults(request))
        except RequestError as exc:
            named = translated.relabel(exc) if translated is not None else exc
            raise bad_request(str(named), named.field) from exc
        except ConfigError as exc:
            raise bad_request(str(exc), exc.path or None) from exc

    def submit(self, request: GenerationRequest, translated: TranslatedRequest | None = None) -> Job:
        """Admit one job (see module contract); ``translated`` names the client's fields in a 400."""
        self.require_ready()
        try:
            return self.service.submit(self.with_defaults(request))
        except QueueFull as exc:
            self.metrics.rejections.labels("queue_full").inc()
            raise queue_full(str(exc), exc.retry_after_s) from exc
        except ServiceNotReady as exc:
            self.metrics.rejections.labels("not_ready").inc()
            raise unavailable(str(exc), exc.retry_after_s, "not_ready") from exc
        except ServiceStopped as exc:
            self.metrics.rejections.labels("shutting_down").inc()
            raise unavailable(str(exc), self.config.queue.retry_after_s, "shutting_down") from exc
        except RequestError as exc:
            named = translated.relabel(exc) if translated is not None else exc
            raise bad_request(str(named), named.field) from exc
        except ConfigError as exc:
            raise bad_request(str(exc), exc.path or None) from exc
