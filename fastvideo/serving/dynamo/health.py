"""The health-check payload Dynamo's canary sends through the worker's ``generate``.

Contract: :func:`health_check_payload` turns ``VideoGenerator.default_health_check_request()``
(256x256, 8 frames, 1 step) into the ``NvCreateVideoRequest`` dict our handler accepts, answered as
``b64_json`` so no file is written. ``DYN_HEALTH_CHECK_PAYLOAD`` (a JSON object, or ``@path`` to a
JSON file) overrides it, the same rule Dynamo's ``HealthCheckPayload`` applies. Dynamo's canary
gives up after ``DYN_HEALTH_CHECK_REQUEST_TIMEOUT`` (3 s by default), so the default request must
stay small; the built-in tiny model answers it in about 1 s on two CPU cores.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from fastvideo import VideoGenerator

logger = logging.getLogger(__name__)

ENV_OVERRIDE = "DYN_HEALTH_CHECK_PAYLOAD"


def default_health_check_payload(model_name: str) -> dict[str, Any]:
    """The Dynamo-shaped form of FastVideo's default health-check request."""
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
    """The payload handed to ``serve_endpoint(health_check_payload=...)`` (env override first)."""
    override = _env_override()
    if override is not None:
        logger.info("health-check payload from %s", ENV_OVERRIDE)
        return override
    return default_health_check_payload(model_name)
