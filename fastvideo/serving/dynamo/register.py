"""Advertise the worker's endpoint to Dynamo's discovery as a video-generation model.

Contract: ``register_video_generation_model(endpoint, model_path, served_name)`` calls Dynamo
1.6.1's ``register_model(ModelInput.Text, ModelType.Videos, endpoint, model_path, served_name,
worker_type=WorkerType.Aggregated, needs=[])``. For ``ModelType.Videos`` Dynamo skips Hugging Face
downloads and registers a minimal model card, so ``model_path`` may be a local folder or just a
name. After it returns, the frontend's watcher adds the model to ``/v1/models`` and routes
``POST /v1/videos`` for ``served_name`` to this endpoint (round-robin across workers by default).
Raises ``RuntimeError`` naming the model if registration fails.
"""

from __future__ import annotations

import logging
from typing import Any

from dynamo.llm import ModelInput, ModelType, WorkerType, register_model

logger = logging.getLogger(__name__)


async def register_video_generation_model(endpoint: Any, model_path: str, served_name: str) -> None:
    """Register ``endpoint`` as an aggregated Videos model named ``served_name``."""
    try:
        await register_model(
            ModelInput.Text,
            ModelType.Videos,
            endpoint,
            model_path,
            served_name,
            worker_type=WorkerType.Aggregated,
            needs=[],
        )
    except Exception as exc:
        raise RuntimeError(f"registering video model {served_name!r} with Dynamo failed: {exc}") from exc
    logger.info("registered video model %r (path %s) with Dynamo", served_name, model_path)
