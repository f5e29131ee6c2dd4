"""``fastvideo serve`` settings that reach the runtime: batching and the continuation state store."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from fastvideo.api import ConfigError  # noqa: E402
from fastvideo.serving.app import attach_state_store, build_app  # noqa: E402
from fastvideo.serving.config import StateConfig, load_serve_config  # noqa: E402


def test_queue_and_state_settings_parse_from_overrides():
    config = load_serve_config(overrides=["queue.max_batch=4", "queue.max_bypass=2",
                                          "state.url=redis://127.0.0.1:6379/0", "state.blob_threshold_bytes=1024"])
    assert (config.queue.max_batch, config.queue.max_bypass) == (4, 2)
    assert config.state == StateConfig(url="redis://127.0.0.1:6379/0", blob_threshold_bytes=1024)
    with pytest.raises(ConfigError, match="state.bogus"):
        load_serve_config(overrides=["state.bogus=1"])


def test_max_batch_reaches_the_service(tiny_model_dir):
    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")
    try:
        app = build_app(load_serve_config(overrides=["queue.max_batch=3", "server.warmup=false"]), generator)
        service = app.state.server.service
        assert service.config.max_batch == 3
        assert generator.blob_store is None  # memory:// keeps state inline
    finally:
        generator.shutdown()


def test_unknown_state_store_url_is_refused_with_the_choices(tiny_generator):
    with pytest.raises(ValueError, match="memory://.*redis://"):
        attach_state_store(tiny_generator, StateConfig(url="s3://bucket/state"))
    assert tiny_generator.blob_store is None
