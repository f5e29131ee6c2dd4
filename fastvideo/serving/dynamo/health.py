"""Dynamo's health canary for a video worker: the payload, and an answer that never waits on a generation.

Contract:
- :func:`health_check_payload` is the dict handed to ``serve_endpoint(health_check_payload=...)``:
  ``VideoGenerator.default_health_check_request()`` (256x256, 8 frames, 1 step) as the
  ``NvCreateVideoRequest`` our handler accepts, answered as ``b64_json``; ``DYN_HEALTH_CHECK_PAYLOAD``
  (a JSON object, or ``@path``) overrides it. Like Dynamo 1.6.1's
  ``dynamo.common.backend.health_check.build_raw_health_check_payload`` it is stamped with the
  ``_HEALTH_CHECK: true`` marker, which :func:`is_health_check` detects (the frontend cannot forward a
  top-level ``_HEALTH_CHECK``: unknown client keys arrive under ``extra_args.media_passthrough``).
- Why the canary is answered at once: Dynamo sends the payload through ``generate`` every
  ``DYN_CANARY_WAIT_TIME`` seconds without *streamed* traffic (even while the previous canary still
  runs), waits ``DYN_HEALTH_CHECK_REQUEST_TIMEOUT`` (3 s) for the FIRST chunk, and marks the worker
  not ready on a timeout or when that chunk is an error (a Python exception; a ``failed`` data chunk
  counts as healthy). A video worker generates one request at a time, and a generation (the probe on
  a busy CPU, or any real non-streamed request) can take longer than 3 s, so running the payload in
  line makes the worker flap to ``notready`` while it is working correctly.
- :class:`HealthMonitor` therefore keeps the engine's health from real evidence and the canary
  reports it without queueing: a generation finishing proves health; a *probe* (the payload itself,
  run in the background by the handler, one at a time, only when nothing succeeded for
  ``probe_interval_s``) that fails makes the next canaries fail until a generation succeeds; a
  generation that makes no progress (no denoising step, no finish) for ``stall_timeout_s`` makes them
  fail too (a hung engine). The canary's first chunk is thus bounded by the event loop, not the model.
"""

from __future__ import annotations

import json
import logging
import itertools
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

logger = logging.getLogger(__name__)

ENV_OVERRIDE = "DYN_HEALTH_CHECK_PAYLOAD"
#: Dynamo's canary marker (``dynamo.health_check.HEALTH_CHECK_KEY`` in 1.6.1).
HEALTH_CHECK_KEY = "_HEALTH_CHECK"


def is_health_check(request: Any) -> bool:
    """True for Dynamo's canary (the payload carries ``_HEALTH_CHECK: true``), as Dynamo's ``is_probe``."""
    return isinstance(request, Mapping) and request.get(HEALTH_CHECK_KEY) is True


def default_health_check_payload(model_name: str) -> dict[str, Any]:
    """The Dynamo-shaped form of FastVideo's default health-check request (with the canary marker)."""
    from fastvideo import VideoGenerator  # imports torch: only when the payload is built

    req = VideoGenerator.default_health_check_request()
    s = req.sampling
    nvext: dict[str, Any] = {"fps": s.fps, "num_frames": s.num_frames, "num_inference_steps": s.num_inference_steps,
                             "guidance_scale": s.guidance_scale, "seed": s.seed}
    return {
        "prompt": req.prompt or "health check",
        "model": model_name,
        "size": f"{s.width}x{s.height}",
        "response_format": "b64_json",
        "nvext": {key: value for key, value in nvext.items() if value is not None},
        HEALTH_CHECK_KEY: True,
    }


def _env_override() -> dict[str, Any] | None:
    raw = os.environ.get(ENV_OVERRIDE)
    if not raw:
        return None
    try:
        if raw.startswith("@"):
            with open(raw[1:], encoding="utf-8") as handle:
                parsed = json.load(handle)
        else:
            parsed = json.loads(raw)
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("ignoring %s: %s", ENV_OVERRIDE, exc)
        return None
    if not isinstance(parsed, dict):
        logger.warning("ignoring %s: must be a JSON object, got %s", ENV_OVERRIDE, type(parsed).__name__)
        return None
    return parsed


def health_check_payload(model_name: str) -> dict[str, Any]:
    """The payload handed to ``serve_endpoint(health_check_payload=...)`` (env override first), marked."""
    override = _env_override()
    if override is not None:
        logger.info("health-check payload from %s", ENV_OVERRIDE)
        return {**override, HEALTH_CHECK_KEY: True}
    return default_health_check_payload(model_name)


@dataclass(frozen=True)
class HealthPolicy:
    """When the canary runs a probe, and when a silent generation counts as hung."""

    #: Run the payload as a background probe when no generation succeeded for this long.
    probe_interval_s: float = 30.0
    #: A generation with no denoising step and no finish for this long fails the canary.
    stall_timeout_s: float = 300.0


class HealthMonitor:
    """What the canary reports (see module contract); updated by the handler, read without waiting."""

    def __init__(self, policy: HealthPolicy | None = None) -> None:
        self.policy = policy or HealthPolicy()
        self.last_success: float | None = None
        self.probe_error: str | None = None
        #: Last progress time of every generation in flight, by token (a worker with several devices runs
        #: several at once; one stuck device must show even while the others progress).
        self._inflight: dict[int, float] = {}
        self._tokens = itertools.count()

    @property
    def busy(self) -> bool:
        return bool(self._inflight)

    def generation_started(self) -> int:
        """Record a generation starting; returns its token for :meth:`progressed` / :meth:`generation_finished`."""
        token = next(self._tokens)
        self._inflight[token] = time.monotonic()
        return token

    def progressed(self, token: int) -> None:
        if token in self._inflight:
            self._inflight[token] = time.monotonic()

    def generation_finished(self, ok: bool, token: int | None = None) -> None:
        if token is not None:
            self._inflight.pop(token, None)
        if ok:
            self.last_success = time.monotonic()
            self.probe_error = None

    def probe_failed(self, error: str) -> None:
        self.probe_error = error

    def needs_probe(self) -> bool:
        """No generation succeeded within ``probe_interval_s`` (or ever)."""
        return self.last_success is None or time.monotonic() - self.last_success > self.policy.probe_interval_s

    def problem(self) -> str | None:
        """Why the worker is unhealthy, or None."""
        if self.probe_error is not None:
            return f"the health probe failed: {self.probe_error}"
        if self._inflight:
            silent = time.monotonic() - min(self._inflight.values())  # the longest-silent generation in flight
            if silent > self.policy.stall_timeout_s:
                return (f"the running generation made no progress for {silent:.0f}s "
                        f"(over {self.policy.stall_timeout_s:.0f}s): the engine looks stuck")
        return None
