"""DiT-step graph runner: capture / replay / eager-fallback bookkeeping with the CPU stand-in graph, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastvideo.api import GenerationRequest, OutputConfig, SamplingConfig
from fastvideo.runtime.counters import RuntimeCounters
from fastvideo.runtime.cuda_graphs import (
    CudaGraphBackend,
    DiTGraphRunner,
    GraphBucket,
    GraphConfig,
    RecordingGraph,
    RecordingGraphBackend,
)
from fastvideo.runtime.executor import ExecutorConfig
from fastvideo.runtime.worker import BatchWorker, WorkerConfig

WEIGHT = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))


class CountingStep:
    """A DiT-step-shaped function that counts its Python-level calls."""

    def __init__(self, fail_on_shape: tuple[int, ...] | None = None) -> None:
        self.calls = 0
        self.fail_on_shape = fail_on_shape

    def __call__(self, latents, timestep, embeds):
        self.calls += 1
        if self.fail_on_shape is not None and tuple(latents.shape) == self.fail_on_shape:
            raise RuntimeError("operation not permitted when stream is capturing")
        mixed = torch.nn.functional.gelu(latents @ WEIGHT) * timestep[:, None].float()
        return mixed + embeds.mean(dim=1)


def inputs(batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 8, generator=g), torch.randint(0, 1000, (batch,), generator=g),
            torch.randn(batch, 5, 8, generator=g))


def test_recording_graph_replays_on_the_static_buffers():
    fn = CountingStep()
    static = inputs(2, 0)
    graph = RecordingGraph()
    with pytest.raises(RuntimeError, match="before capture"):
        graph.replay()
    graph.capture_begin()
    out = fn(*static)
    graph.capture_end()
    assert graph.num_ops > 0 and fn.calls == 1
    fresh = inputs(2, 1)
    for buf, new in zip(static, fresh):
        buf.copy_(new)
    graph.replay()
    assert fn.calls == 1  # no Python ran: the recorded ops did
    torch.testing.assert_close(out, fn(*fresh), rtol=0, atol=0)


def test_runner_capture_replay_fallback_bookkeeping():
    fn = CountingStep()
    counters = RuntimeCounters()
    backend = RecordingGraphBackend()
    runner = DiTGraphRunner(fn, backend, counters=counters, warmup_iters=2, keep_alive=lambda lat: ("rope", lat.shape))
    assert runner.capture(*inputs(2, 0), label="b2") is True
    assert fn.calls == 3 and backend.warmup_runs == 1  # two warm-up forwards + the captured one
    assert runner.capture(*inputs(2, 5), label="again") is True and fn.calls == 3  # already captured
    assert counters.graph_captures == 1 and runner.captured_labels() == ["b2"]

    embeds = inputs(2, 99)[2]
    for seed in range(3):  # new latents and timesteps every step, the same members' embeddings
        latents, timestep, _ = inputs(2, 10 + seed)
        out = runner(latents, timestep, embeds)
        torch.testing.assert_close(out, CountingStep()(latents, timestep, embeds), rtol=0, atol=0)
    assert fn.calls == 3  # replays never call the eager function
    assert counters.graph_replays == 3 and runner.stats["replays"] == 3
    assert runner.stats["embed_copies"] == 1  # the same embeddings tensor every step: copied once

    out = runner(*inputs(3, 0))  # a batch of 3 was never captured: eager fallback
    assert fn.calls == 4 and runner.stats["eager_calls"] == 1 and counters.graph_replays == 3
    assert out.shape == (3, 8)
    entry = next(iter(runner.graphs.values()))
    assert entry.keep_alive == ("rope", torch.Size([2, 8]))  # kept alive with the graph
    runner.reset()
    assert runner.graphs == {} and runner(*inputs(2, 0)) is not None and runner.stats["eager_calls"] == 2


def test_embeds_are_copied_unless_the_very_same_tensor_comes_back_unmodified():
    """Never keyed on request ids: a new tensor (even with the same request id behind it) or an
    in-place change is copied into the static input; only the same unmodified object is not."""
    runner = DiTGraphRunner(CountingStep(), RecordingGraphBackend(), warmup_iters=0)
    runner.capture(*inputs(2, 0))
    lat, t, emb_a = inputs(2, 1)
    emb_b = torch.randn_like(emb_a)
    first = runner(lat, t, emb_a)
    same = runner(lat, t, emb_a)
    assert runner.stats["embed_copies"] == 1
    changed = runner(lat, t, emb_b)
    equal_values_new_tensor = runner(lat, t, emb_b.clone())
    assert runner.stats["embed_copies"] == 3
    emb_b.mul_(2)  # the same object, modified in place: copied again
    doubled = runner(lat, t, emb_b)
    assert runner.stats["embed_copies"] == 4
    for out, emb in ((first, emb_a), (same, emb_a), (changed, emb_b / 2), (equal_values_new_tensor, emb_b / 2),
                     (doubled, emb_b)):
        torch.testing.assert_close(out, CountingStep()(lat, t, emb), rtol=0, atol=0)


def test_captures_are_serialized_across_runners():
    """Several in-process workers warming up at once: their captures never overlap (CUDA allows one at a time)."""
    import threading
    import time

    active, overlaps = [0], []

    class SlowCapture(RecordingGraphBackend):
        def capture(self, graph, pool):
            outer = super().capture(graph, pool)

            class Guarded:
                def __enter__(self_inner):
                    active[0] += 1
                    overlaps.append(active[0])
                    time.sleep(0.05)
                    return outer.__enter__()

                def __exit__(self_inner, *exc):
                    active[0] -= 1
                    return outer.__exit__(*exc)

            return Guarded()

    runners = [DiTGraphRunner(CountingStep(), SlowCapture(), warmup_iters=0) for _ in range(4)]
    threads = [threading.Thread(target=r.capture, args=inputs(2, i)) for i, r in enumerate(runners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(r.graphs) == 1 for r in runners)
    assert overlaps == [1, 1, 1, 1]


def test_failed_capture_falls_back_to_eager_and_is_not_retried():
    fn = CountingStep(fail_on_shape=(4, 8))
    counters = RuntimeCounters()
    runner = DiTGraphRunner(fn, RecordingGraphBackend(), counters=counters, warmup_iters=1)
    assert runner.capture(*inputs(4, 0), label="bad") is False
    assert runner.capture(*inputs(4, 0), label="bad") is False  # remembered, no second attempt
    assert runner.stats["capture_failures"] == 1 and counters.graph_captures == 0
    assert "not permitted" in next(iter(runner.failed.values()))


def test_cuda_backend_refuses_a_cpu_device():
    with pytest.raises(ValueError, match="CUDA device"):
        CudaGraphBackend(torch.device("cpu"))


BUCKET = GraphBucket(width=64, height=64, num_frames=5, cfg=True, batch_sizes=(1, 2))
WARM = GenerationRequest(prompt="warm",
                         sampling=SamplingConfig(width=64, height=64, num_frames=5, num_inference_steps=1,
                                                 guidance_scale=4.0, seed=0),
                         output=OutputConfig(return_frames=False))
GRAPHS = ExecutorConfig(graphs=GraphConfig(enabled=True, buckets=(BUCKET,)))


def request(seed: int, state=None, **sampling):
    return {"prompt": "waves on a beach", "sampling": {"width": 64, "height": 64, "num_frames": 5,
                                                       "num_inference_steps": 3, "guidance_scale": 4.0, "seed": seed,
                                                       **sampling},
            "output": {"return_state": True}, "state": state}


def test_executor_captures_both_branches_at_warmup_and_replays_every_step(tiny_generator):
    counters = tiny_generator.counters
    before = counters.snapshot()
    config = WorkerConfig(warmup_request=WARM, executor=GRAPHS)
    worker = BatchWorker(tiny_generator, config, graph_backend=RecordingGraphBackend())
    worker.start()
    try:
        info = worker.warmup()
        assert worker.ready
        assert info["graphs"] == ["64x64x5/initial/b1/cfg", "64x64x5/initial/b2/cfg",
                                  "64x64x5/continuation/b1/cfg", "64x64x5/continuation/b2/cfg"]
        runner = worker.executor.runner
        assert counters.graph_captures - before["graph_captures"] == 4
        # warmup's two 1-step segments (initial + continuation) replayed the b1 graphs
        assert counters.graph_replays - before["graph_replays"] == 2 and runner.stats["eager_calls"] == 0

        replays = counters.graph_replays
        first = worker.generate(request(7))
        second = worker.generate(request(8, state=first.state))
        assert second.metadata["branch"] == "continuation"
        assert counters.graph_replays - replays == 6 and runner.stats["eager_calls"] == 0  # 3 steps x 2

        odd = worker.generate(request(9, width=96))  # not declared: eager, counted
        assert runner.stats["eager_calls"] == 3 and counters.graph_replays - replays == 6
    finally:
        worker.stop()
    eager_first = tiny_generator.generate(request(7))
    eager_second = tiny_generator.generate(request(8, state=eager_first.state))
    assert np.array_equal(first.frames, eager_first.frames)  # graph replay == eager, exactly
    assert np.array_equal(second.frames, eager_second.frames)
    assert odd.frames.shape == (5, 64, 96, 3)


def test_a_repeated_request_id_never_replays_the_previous_prompt(tiny_generator):
    """Two requests with the same id (client-supplied, or a WebSocket segment id reused after a reset) but
    different prompts: each graph replay must use its own prompt's embeddings."""
    config = WorkerConfig(warmup_request=WARM, executor=GRAPHS)
    worker = BatchWorker(tiny_generator, config, graph_backend=RecordingGraphBackend())
    worker.start()
    try:
        worker.warmup()
        runner = worker.executor.runner
        first = worker.generate({**request(7), "request_id": "same-id", "prompt": "a red kite over the sea"})
        second = worker.generate({**request(7), "request_id": "same-id", "prompt": "a lighthouse at night"})
        assert runner.stats["eager_calls"] == 0
    finally:
        worker.stop()
    eager_first = tiny_generator.generate({**request(7), "prompt": "a red kite over the sea"})
    eager_second = tiny_generator.generate({**request(7), "prompt": "a lighthouse at night"})
    assert not np.array_equal(eager_first.frames, eager_second.frames)  # the prompts do differ
    assert np.array_equal(first.frames, eager_first.frames)
    assert np.array_equal(second.frames, eager_second.frames)


def test_inference_mode_embeddings_are_copied_every_replay():
    """Inference tensors carry no version counter: the runner cannot prove them unchanged, so it copies."""
    runner = DiTGraphRunner(CountingStep(), RecordingGraphBackend(), warmup_iters=0)
    runner.capture(*inputs(2, 0))
    with torch.inference_mode():
        lat, t, emb = inputs(2, 1)
        first = runner(lat, t, emb)
        emb.mul_(3)  # changed in place, unobservable through a version counter
        second = runner(lat, t, emb)
    assert runner.stats["embed_copies"] == 2
    torch.testing.assert_close(second, CountingStep()(lat, t, emb), rtol=0, atol=0)
    assert not torch.equal(first, second)
