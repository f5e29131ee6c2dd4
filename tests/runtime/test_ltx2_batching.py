"""LTX-2 batched DiT forwards across requests (``LTX2Components.denoise_steps`` and ``LTX2BatchExecutor.denoise``).

On the built-in tiny LTX-2 (CPU, fp32): a batch of 2 or 3 requests with different prompts, seeds and guidance scales
runs one DiT call per guidance pass per step (main CFG rows, STG, modality: the tiny preset has all three), and each
member equals its solo run (the batch of one) within float rounding of the batched kernels. Where the rounding comes
from and how large it is (measured on this machine, CPU fp32):

- one DiT call, a row batched with others vs the same row alone: max difference 1.7e-6 on outputs of magnitude
  ~3.4 (a few fp32 ulps: ulp(3.4) = 2.4e-7; a batched matmul / attention blocks its sums differently); asserted
  <= 4e-6 (``DIT_ATOL``);
- guidance then combines differences of x0 predictions with gains up to ``1 + 2 (scale - 1) + 2 stg + 2 (modality -
  1)`` = 19 for the tiny preset's audio stream (scale 7, STG 1, modality 3), so after 2 steps the latents differ by
  up to 1.0e-5 (measured, batch of 3); asserted <= 5e-5 (``LATENT_ATOL``); decoded frames within one uint8 level,
  waveforms <= 1e-5.

Image-to-video and continuation buckets batch the same way (per-token timesteps and coordinates stacked). In the
executor, a member cancelled mid-batch is dropped and the others finish equal to their solo runs; a member that
breaks the shared forward is found by retrying alone and dropped with its own error, the others go on.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from fastvideo.api import GenerationCancelled

STEPS = 2
#: fp32 tolerances, justified and measured in the module docstring (the largest latent difference is printed by -s)
DIT_ATOL = 4e-6
LATENT_ATOL = 5e-5

MEMBERS = [("a fox runs through snow", 3, 3.0), ("a cat in rain", 4, 5.0), ("robot dancing on beach", 5, 2.0)]


def _request(prompt: str, seed: int, guidance_scale: float) -> dict:
    return {"prompt": prompt, "sampling": {"seed": seed, "num_inference_steps": STEPS,
                                           "guidance_scale": guidance_scale},
            "output": {"save_video": False, "return_frames": True}}


def _ltx2_request(generator, prompt: str, seed: int, guidance_scale: float, **fields):
    req, resolved = generator.resolve(_request(prompt, seed, guidance_scale))
    return replace(generator.pipeline.to_request(req, resolved), **fields)


def _image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _passes(guidance) -> int:
    g = guidance.resolved()
    return 1 + int(g.stg) + int(g.modality)


def _run_batched(components, requests):
    """Prepare every request, run every step batched through a counting forward; the states and the calls' rows."""
    states = [components.prepare(r) for r in requests]
    rows: list[list[int]] = []

    def forward(inputs):
        rows[-1].append(inputs.rows)
        return components.dit_forward(inputs)

    for i in range(STEPS):
        rows.append([])
        components.denoise_steps(states, i, forward=forward)
    return states, rows


#: Solo runs by label (each solo request is run once per module: the tests share members).
_SOLO: dict[str, tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]] = {}


def _solo(components, request, label: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """``(latents, audio_latents, frames, waveform)`` of ``request`` run alone (the batch of one)."""
    if label not in _SOLO:
        st = components.prepare(request)
        for i in range(STEPS):
            components.denoise_step(st, i)
        out = components.decode(st)
        _SOLO[label] = (st.latents, st.audio_latents, out.frames, out.waveform.numpy())
    return _SOLO[label]


def _assert_equals_solo(frames: np.ndarray, waveform: np.ndarray, solo: tuple) -> None:
    assert np.abs(frames.astype(np.int16) - solo[2].astype(np.int16)).max() <= 1
    np.testing.assert_allclose(waveform, solo[3], atol=1e-5, rtol=0)


def _assert_batch_equals_solo(components, requests, states, labels) -> float:
    worst = 0.0
    for request, st, label in zip(requests, states, labels):
        solo = _solo(components, request, label)
        for batched, alone in ((st.latents, solo[0]), (st.audio_latents, solo[1])):
            diff = float((batched - alone).abs().max())
            worst = max(worst, diff)
            assert diff <= LATENT_ATOL, diff
        out = components.decode(st)
        _assert_equals_solo(out.frames, out.waveform.numpy(), solo)
    print(f"max |batched - solo| on latents: {worst:.3g}")
    return worst


@pytest.mark.parametrize("count", [2, 3])
def test_a_batch_equals_each_solo_run_with_one_dit_call_per_guidance_pass(ltx2_generator, count: int) -> None:
    components = ltx2_generator.pipeline.components
    requests = [_ltx2_request(ltx2_generator, *m) for m in MEMBERS[:count]]
    assert len({r.guidance.guidance_scale for r in requests}) == count  # the members differ in guidance too
    states, rows = _run_batched(components, requests)
    g = requests[0].guidance.resolved()
    assert g.cfg and _passes(g) == 3  # the tiny preset has CFG, STG and modality guidance
    per_pass = [count * 2, count, count]  # CFG: [uncond, cond] rows per member; STG/modality: cond rows
    assert rows == [per_pass] * STEPS
    _assert_batch_equals_solo(components, requests, states, [repr(m) for m in MEMBERS[:count]])


def test_a_batched_dit_call_equals_each_row_alone_within_fp32_ulps(ltx2_generator) -> None:
    from fastvideo.engine.models.ltx2.denoise import LTX2DiTInputs, step_passes

    components = ltx2_generator.pipeline.components
    states = [components.prepare(_ltx2_request(ltx2_generator, *m)) for m in MEMBERS]
    passes = [step_passes(st, 0) for st in states]
    for name in ("main", "stg", "modality"):
        calls = [getattr(p, name) for p in passes]
        video, audio = components.dit_forward(LTX2DiTInputs.cat(calls))
        start = 0
        for call in calls:
            alone_v, alone_a = components.dit_forward(call)
            rows = slice(start, start + call.rows)
            assert float((video[rows] - alone_v).abs().max()) <= DIT_ATOL
            assert float((audio[rows] - alone_a).abs().max()) <= DIT_ATOL
            start += call.rows
        assert start == video.shape[0]


def test_image_to_video_and_continuation_buckets_batch_too(ltx2_generator) -> None:
    from fastvideo.engine.models.ltx2.state import LTX2ContinuationState

    components = ltx2_generator.pipeline.components
    preset = ltx2_generator.preset
    h, w = preset.height, preset.width
    frames = components.vae.temporal_compression_ratio + 1
    makers = {"i2v": lambda seed: {"image": _image(h, w, seed)},
              "continuation": lambda seed: {"continuation": LTX2ContinuationState(
                  video_frames=[_image(h, w, seed + k) for k in range(frames)])}}
    for name, make in makers.items():
        requests = [_ltx2_request(ltx2_generator, *m, **make(k)) for k, m in enumerate(MEMBERS[:2])]
        states, rows = _run_batched(components, requests)
        assert all(st.conditioning is not None for st in states)  # per-token timesteps (and coordinates)
        assert rows == [[4, 2, 2]] * STEPS
        _assert_batch_equals_solo(components, requests, states, [f"{name}{m!r}" for m in MEMBERS[:2]])


def test_members_that_cannot_stack_get_their_own_forward(ltx2_generator) -> None:
    """Members whose calls differ in a static setting (here STG on for one, off for the other) form their own
    groups: the shared passes stay one call, the rest run for the member that has them, numbers unchanged."""
    components = ltx2_generator.pipeline.components
    first = _ltx2_request(ltx2_generator, *MEMBERS[0])
    second = _ltx2_request(ltx2_generator, *MEMBERS[1])
    second = replace(second, guidance=replace(second.guidance, stg_scale=0.0, audio_stg_scale=0.0))
    states, rows = _run_batched(components, [first, second])
    assert rows == [[4, 1, 2]] * STEPS
    _assert_batch_equals_solo(components, [first, second], states, [repr(MEMBERS[0]), f"no-stg{MEMBERS[1]!r}"])


def _items(generator, executor, members):
    items = []
    for m in members:
        req, resolved = generator.resolve(_request(*m))
        item = executor.make_item(req, resolved, need_bytes=False)
        executor.prepare(item)
        items.append(item)
    return items


def _count_calls(transformer) -> tuple[list[int], object]:
    rows: list[int] = []
    handle = transformer.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs["hidden_states"].shape[0]), with_kwargs=True)
    return rows, handle


def test_the_executor_batches_and_drops_a_member_cancelled_mid_batch(ltx2_generator) -> None:
    from fastvideo.runtime.ltx2_executor import LTX2BatchExecutor

    executor = LTX2BatchExecutor(ltx2_generator)
    items = _items(ltx2_generator, executor, MEMBERS)
    assert len({item.key for item in items}) == 1
    cancel = {"on": False}
    items[1]._external_cancel = lambda: cancel["on"]
    steps: list[tuple[str, int]] = []

    def on_step(item, step, total) -> None:
        steps.append((item.request_id, step))
        if step == 1 and item is items[2]:
            cancel["on"] = True  # after step 1 of every member: the middle one is cancelled before step 2

    rows, handle = _count_calls(ltx2_generator.pipeline.components.transformer)
    try:
        dropped = executor.denoise(items, on_step)
    finally:
        handle.remove()
    ids = [item.request_id for item in items]
    assert steps == [(ids[0], 1), (ids[1], 1), (ids[2], 1), (ids[0], 2), (ids[2], 2)]
    assert rows == [6, 3, 3, 4, 2, 2]  # one call per guidance pass: 3 members at step 1, 2 at step 2
    assert [(item, type(exc)) for item, exc in dropped] == [(items[1], GenerationCancelled)]
    components = ltx2_generator.pipeline.components
    for item, member in ((items[0], MEMBERS[0]), (items[2], MEMBERS[2])):
        result = executor.finish(item)
        executor.release(item)
        assert result.metadata["batch_size"] == 3
        _assert_equals_solo(result.frames, result.audio,
                            _solo(components, _ltx2_request(ltx2_generator, *member), repr(member)))


def test_a_member_that_breaks_the_shared_forward_is_found_alone_and_dropped(ltx2_generator, caplog) -> None:
    """One member's text mask has a row too many: the stacked call raises (the mask no longer matches the rows);
    the executor retries each member alone, drops that one with its own error, and the others go on."""
    from fastvideo.runtime.ltx2_executor import LTX2BatchExecutor

    executor = LTX2BatchExecutor(ltx2_generator)
    items = _items(ltx2_generator, executor, MEMBERS[:2])
    bad = items[0].ctx.state
    bad.text_mask = torch.cat([bad.text_mask, bad.text_mask[:1]])  # same per-row shape: it stacks with the other
    before = ltx2_generator.counters.snapshot().get("generations_failed", 0)
    steps: list[tuple[str, int]] = []
    dropped = executor.denoise(items, lambda item, step, total: steps.append((item.request_id, step)))
    assert [item for item, _ in dropped] == [items[0]]
    assert isinstance(dropped[0][1], ValueError) and "encoder_attention_mask" in str(dropped[0][1])
    assert steps == [(items[1].request_id, 1), (items[1].request_id, 2)]
    assert ltx2_generator.counters.snapshot()["generations_failed"] == before + 1
    assert any("retrying each alone" in r.getMessage() for r in caplog.records)
    result = executor.finish(items[1])
    components = ltx2_generator.pipeline.components
    _assert_equals_solo(result.frames, result.audio,
                        _solo(components, _ltx2_request(ltx2_generator, *MEMBERS[1]), repr(MEMBERS[1])))
