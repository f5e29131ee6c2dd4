"""CUDA-graph capture of the LTX-2 DiT call, on the CPU stand-in backend (``RecordingGraphBackend``: fixed-address
replay semantics, so a runner that forgets to refresh a static input gives stale results).

``LTX2BatchExecutor.capture_declared`` captures, per declared bucket x served branch (initial, continuation) x batch
size, each DiT call of a step (main CFG rows, STG, modality). Denoising then replays them: every step of a batch of 1
and of 2, initial and continuation, replays a graph (no eager call) and the latents, frames and waveform equal the
eager executor's exactly (the replay recomputes the captured ops on the same shapes: bitwise the eager arithmetic).
A runner that skipped refreshing one static input (the text embeddings) would differ; a call whose shape was not
declared (another size here) runs eagerly and is counted. The family no longer refuses ``engine.cuda_graphs``.
The real ``torch.cuda.CUDAGraph`` path: tests/gpu/test_ltx2_graphs_cuda.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

STEPS = 2
PASSES = ("main", "stg", "modality")


def _request(seed: int, prompt: str = "a fox runs through snow", state: dict | None = None, **extra) -> dict:
    req = {"prompt": prompt, "sampling": {"seed": seed, "num_inference_steps": STEPS},
           "output": {"save_video": False, "return_frames": True}, **extra}
    if state is not None:
        req["state"] = state
    return req


@pytest.fixture(scope="module")
def graphed(ltx2_generator):
    """An executor with graphs captured for the preset size, batch 1 and 2, both branches."""
    from fastvideo.runtime.cuda_graphs import GraphBucket, GraphConfig, RecordingGraphBackend
    from fastvideo.runtime.executor import ExecutorConfig
    from fastvideo.runtime.ltx2_executor import LTX2BatchExecutor

    preset = ltx2_generator.preset
    bucket = GraphBucket(width=preset.width, height=preset.height, num_frames=preset.num_frames, cfg=True,
                         batch_sizes=(1, 2))
    config = ExecutorConfig(graphs=GraphConfig(enabled=True, buckets=(bucket,), warmup_iters=1))
    before = ltx2_generator.counters.snapshot().get("graph_captures", 0)
    executor = LTX2BatchExecutor(ltx2_generator, config, graph_backend=RecordingGraphBackend())
    labels = executor.capture_declared()
    captured = ltx2_generator.counters.snapshot()["graph_captures"] - before
    return executor, labels, captured


def _state_wire(generator, seed: int) -> dict:
    from fastvideo.engine.models.ltx2.state import LTX2ContinuationState

    preset = generator.preset
    count = generator.pipeline.components.vae.temporal_compression_ratio + 1
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (preset.height, preset.width, 3), dtype=np.uint8) for _ in range(count)]
    return LTX2ContinuationState(video_frames=frames).to_continuation_state().to_dict()


def _denoise(generator, executor, requests) -> list:
    items = []
    for request in requests:
        req, resolved = generator.resolve(request)
        item = executor.make_item(req, resolved, need_bytes=False)
        executor.prepare(item)
        items.append(item)
    assert executor.denoise(items, lambda *args: None) == []
    return items


def test_capture_declared_captures_every_call_per_bucket_branch_and_batch(graphed, ltx2_generator) -> None:
    executor, labels, captured = graphed
    preset = ltx2_generator.preset
    size = f"{preset.width}x{preset.height}x{preset.num_frames}"
    assert labels == [f"{size}/{branch}/b{batch}/cfg/{name}" for branch in ("initial", "continuation")
                      for batch in (1, 2) for name in PASSES]
    assert captured == len(labels) == 12 and executor.runner.stats["capture_failures"] == 0
    assert sorted(labels) == executor.runner.captured_labels()


@pytest.mark.parametrize("branch", ["initial", "continuation"])
def test_graph_replay_equals_eager_for_batch_1_and_2(graphed, ltx2_generator, branch: str) -> None:
    from fastvideo.runtime.ltx2_executor import LTX2BatchExecutor

    executor, _, _ = graphed
    eager = LTX2BatchExecutor(ltx2_generator)
    runner = executor.runner
    for batch in (1, 2):
        requests = [_request(40 + k, state=_state_wire(ltx2_generator, k) if branch == "continuation" else None)
                    for k in range(batch)]
        replays, eager_calls = runner.stats["replays"], runner.stats["eager_calls"]
        counted = ltx2_generator.counters.snapshot()["graph_replays"]
        graph_items = _denoise(ltx2_generator, executor, requests)
        assert runner.stats["replays"] - replays == STEPS * len(PASSES)  # every call of every step replayed
        assert runner.stats["eager_calls"] == eager_calls
        assert ltx2_generator.counters.snapshot()["graph_replays"] - counted == STEPS * len(PASSES)
        eager_items = _denoise(ltx2_generator, eager, requests)
        for g_item, e_item in zip(graph_items, eager_items):
            assert torch.equal(g_item.ctx.state.latents, e_item.ctx.state.latents)
            assert torch.equal(g_item.ctx.state.audio_latents, e_item.ctx.state.audio_latents)
        result, reference = executor.finish(graph_items[-1]), eager.finish(eager_items[-1])
        np.testing.assert_array_equal(result.frames, reference.frames)
        np.testing.assert_array_equal(result.audio, reference.audio)


def test_a_stale_static_input_would_be_caught(graphed, ltx2_generator) -> None:
    """Replaying request B's call through the graph captured on the warm-up values equals B's eager call exactly;
    a runner that forgot to copy B's text embeddings into the static buffer gives another result."""
    from fastvideo.engine.models.ltx2.denoise import run_dit, step_passes
    from fastvideo.runtime.graph_runner import StaticGraphRunner

    executor, _, _ = graphed
    runner: StaticGraphRunner = executor.runner
    components = ltx2_generator.pipeline.components
    req, resolved = ltx2_generator.resolve(_request(50, prompt="robot dancing on beach"))
    state = components.prepare(ltx2_generator.pipeline.to_request(req, resolved))
    call = step_passes(state, 0).main
    key = call.shape_key()
    assert runner.has_graph(key)
    expected = run_dit(components.transformer, call)
    replayed = executor._forward(call)
    assert all(torch.equal(r, e) for r, e in zip(replayed, expected))

    req, resolved = ltx2_generator.resolve(_request(51, prompt="a cat in rain"))
    other = step_passes(components.prepare(ltx2_generator.pipeline.to_request(req, resolved)), 0).main
    executor._forward(other)  # the static buffers now hold another prompt's call
    stale = list(call.tensors())
    stale[2] = runner.graphs[key].inputs[2]  # copying the buffer onto itself: the embeddings are not refreshed
    wrong = runner.run(key, lambda *t: None, stale)
    assert float((wrong[0] - expected[0]).abs().max()) > 1e-3
    assert all(torch.equal(r, e) for r, e in zip(executor._forward(call), expected))  # refreshed again: exact


def test_an_undeclared_shape_runs_eagerly_and_is_counted(graphed, ltx2_generator) -> None:
    from fastvideo.runtime.ltx2_executor import LTX2BatchExecutor

    executor, _, _ = graphed
    runner = executor.runner
    request = _request(60)
    request["sampling"]["width"] = 2 * ltx2_generator.preset.width  # a size no bucket declares
    replays, eager_calls = runner.stats["replays"], runner.stats["eager_calls"]
    (item,) = _denoise(ltx2_generator, executor, [request])
    assert runner.stats["replays"] == replays and runner.stats["eager_calls"] - eager_calls == STEPS * len(PASSES)
    (reference,) = _denoise(ltx2_generator, LTX2BatchExecutor(ltx2_generator), [request])
    assert torch.equal(item.ctx.state.latents, reference.ctx.state.latents)


def test_the_ltx2_family_no_longer_refuses_cuda_graphs() -> None:
    from fastvideo.api.config import GeneratorConfig
    from fastvideo.api.parse import parse_config
    from fastvideo.engine.families import FAMILIES
    from fastvideo.runtime.generator import _check_family_config

    assert "engine.cuda_graphs.enabled" not in FAMILIES["ltx2"].unsupported_config
    config = parse_config(GeneratorConfig, {"model_path": "fastvideo-tiny-ltx2", "engine": {
        "cuda_graphs": {"enabled": True, "sizes": ["32x32x9"], "batch_sizes": [1, 2]}}})
    _check_family_config(config, FAMILIES["ltx2"])  # no ConfigError (on a CUDA device the core captures them)


def test_the_static_graph_runner_refreshes_inputs_keeps_none_and_falls_back() -> None:
    from fastvideo.runtime.counters import RuntimeCounters
    from fastvideo.runtime.cuda_graphs import RecordingGraphBackend
    from fastvideo.runtime.graph_runner import StaticGraphRunner

    def fn(a: torch.Tensor, b: torch.Tensor | None, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert b is None
        return a @ c, (a * c).sum(dim=-1)

    counters = RuntimeCounters()
    runner = StaticGraphRunner(RecordingGraphBackend(), counters=counters, warmup_iters=1)
    x, w = torch.randn(3, 3), torch.randn(3, 3)
    assert runner.capture("k", fn, (x, None, w), label="toy") and runner.captured_labels() == ["toy"]
    for _ in range(2):
        y, v = torch.randn(3, 3), torch.randn(3, 3)
        got = runner.run("k", fn, (y, None, v))
        assert all(torch.equal(g, e) for g, e in zip(got, fn(y, None, v)))
    assert runner.stats["replays"] == 2 and counters.snapshot()["graph_replays"] == 2
    with pytest.raises(ValueError, match="input 1"):
        runner.run("k", fn, (y, v, v))

    def broken(*tensors: torch.Tensor | None) -> None:
        raise RuntimeError("cannot capture")

    assert not runner.capture("bad", broken, (x,)) and runner.stats["capture_failures"] == 1
    assert runner.run("other", fn, (y, None, v))[0].shape == (3, 3) and runner.stats["eager_calls"] == 1
