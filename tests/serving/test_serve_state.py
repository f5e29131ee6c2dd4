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
        assert service.config.worker.scheduler is app.state.server.config.queue  # passed down, not copied
        assert service.config.worker.scheduler.max_batch == 3
        assert generator.blob_store is None  # memory:// keeps state inline
    finally:
        generator.shutdown()


def test_unknown_state_store_url_is_refused_with_the_choices(tiny_generator):
    with pytest.raises(ValueError, match="memory://.*redis://"):
        attach_state_store(tiny_generator, StateConfig(url="s3://bucket/state"))
    assert tiny_generator.blob_store is None


def test_cuda_graphs_flags_reach_the_engine_config_and_the_service(tiny_generator):
    """``fastvideo serve --cuda-graphs [WxHxF ...]`` (with --max-batch) sets engine.cuda_graphs; the service captures
    what the generator declares."""
    from fastvideo.serving.cli import build_parser, serve_flags_from_args

    args = build_parser().parse_args(["serve", "--cuda-graphs", "832x480x81", "--max-batch", "2"])
    graphs = load_serve_config(flags=serve_flags_from_args(args)).generator.engine.cuda_graphs
    assert (graphs.enabled, graphs.sizes, graphs.batch_sizes) == (True, ["832x480x81"], [1, 2])
    default = load_serve_config(flags=serve_flags_from_args(build_parser().parse_args(["serve", "--cuda-graphs"])))
    assert default.generator.engine.cuda_graphs.enabled and default.generator.engine.cuda_graphs.sizes == []
    off = load_serve_config(flags=serve_flags_from_args(build_parser().parse_args(["serve"])))
    assert not off.generator.engine.cuda_graphs.enabled
    from fastvideo.runtime.worker import BatchWorker

    app = build_app(load_serve_config(overrides=["server.warmup=false"]), tiny_generator)
    worker = BatchWorker(tiny_generator, app.state.server.service.config.worker)
    assert worker.executor.graphs is tiny_generator.graph_config()


def test_cuda_graphs_without_warmup_are_refused(tiny_generator, monkeypatch):
    """Graphs are captured at warmup: ``--no-warmup`` with ``--cuda-graphs`` would silently capture nothing."""
    from fastvideo.runtime.cuda_graphs import GraphBucket, GraphConfig

    declared = GraphConfig(enabled=True, buckets=(GraphBucket(width=64, height=64, num_frames=5),))
    monkeypatch.setattr(tiny_generator, "graph_config", lambda: declared)
    with pytest.raises(ConfigError, match="server.warmup.*captured at warmup"):
        build_app(load_serve_config(overrides=["server.warmup=false"]), tiny_generator)
