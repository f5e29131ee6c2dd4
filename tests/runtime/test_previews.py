"""Preview frames while denoising (``output.preview_interval_steps``) through ``generate_async`` on the
built-in tiny model: how many, in which order, what they show, and that they change nothing else."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fastvideo.api import (
    ConfigError,
    RequestError,
    VideoFinalEvent,
    VideoPartialEvent,
    VideoProgressEvent,
)

SMALL = {"width": 64, "height": 32, "num_frames": 5, "seed": 21}


def request(steps: int, interval: int | None, **sampling) -> dict:
    return {"prompt": "a paper boat on a pond", "sampling": {**SMALL, "num_inference_steps": steps, **sampling},
            "output": {"preview_interval_steps": interval}}


def collect(generator, req: dict) -> list:
    async def run() -> list:
        return [event async for event in generator.generate_async(req)]

    return asyncio.run(run())


def shape_of(events: list) -> list[tuple[str, int]]:
    names = {VideoProgressEvent: "progress", VideoPartialEvent: "partial", VideoFinalEvent: "final"}
    return [(names[type(e)], getattr(e, "step", -1)) for e in events]


def test_a_preview_after_every_k_steps_but_the_last_in_order(tiny_generator):
    before = tiny_generator.counters.snapshot()["previews_decoded"]
    events = collect(tiny_generator, request(steps=5, interval=2))
    assert shape_of(events) == [("progress", 1), ("progress", 2), ("partial", 2), ("progress", 3), ("progress", 4),
                                ("partial", 4), ("progress", 5), ("final", -1)]
    partials = [e for e in events if isinstance(e, VideoPartialEvent)]
    final = events[-1]
    assert [(p.index, p.step, p.total_steps, p.frame_offset) for p in partials] == [(0, 2, 5, 0), (1, 4, 5, 0)]
    for p in partials:
        assert p.request_id == final.request_id
        assert p.frames.dtype == np.uint8 and p.frames.shape == final.frames.shape == (5, 32, 64, 3)
    assert not np.array_equal(partials[0].frames, partials[1].frames)  # the estimate moves as noise is removed
    assert tiny_generator.counters.snapshot()["previews_decoded"] - before == 2
    assert final.metadata["timings"]["preview_s"] > 0


@pytest.mark.parametrize("steps,interval,expected", [(3, 1, [1, 2]), (4, 3, [3]), (3, 3, []), (3, 7, []),
                                                     (3, None, [])])
def test_the_number_of_previews(tiny_generator, steps, interval, expected):
    before = tiny_generator.counters.snapshot()["previews_decoded"]
    events = collect(tiny_generator, request(steps=steps, interval=interval))
    assert [e.step for e in events if isinstance(e, VideoPartialEvent)] == expected
    assert [e.step for e in events if isinstance(e, VideoProgressEvent)] == list(range(1, steps + 1))
    assert isinstance(events[-1], VideoFinalEvent)
    assert tiny_generator.counters.snapshot()["previews_decoded"] - before == len(expected)
    assert ("preview_s" in events[-1].metadata["timings"]) == bool(expected)


def test_a_preview_is_the_decoded_clean_estimate(tiny_generator):
    """Euler's last step lands on the clean estimate (sigma -> 0), and every schedule starts at the same sigma:
    so the preview after step 1 of a 2-step run shows exactly the 1-step video."""
    events = collect(tiny_generator, request(steps=2, interval=1, sampler="euler"))
    (preview,) = [e for e in events if isinstance(e, VideoPartialEvent)]
    one_step = tiny_generator.generate(request(steps=1, interval=None, sampler="euler")).frames
    assert np.array_equal(preview.frames, one_step)


def test_previews_change_nothing_else(tiny_generator):
    with_previews = collect(tiny_generator, request(steps=3, interval=1))[-1]
    without = collect(tiny_generator, request(steps=3, interval=None))[-1]
    assert np.array_equal(with_previews.frames, without.frames)
    assert with_previews.video_bytes and without.video_bytes


def test_generate_decodes_no_preview_nobody_receives(tiny_generator):
    before = tiny_generator.counters.snapshot()["previews_decoded"]
    result = tiny_generator.generate(request(steps=3, interval=1))
    assert tiny_generator.counters.snapshot()["previews_decoded"] == before
    assert "preview_s" not in result.metadata["timings"]


@pytest.mark.parametrize("bad", [0, -2])
def test_a_bad_interval_is_refused_by_name(tiny_generator, bad):
    with pytest.raises(RequestError) as err:
        collect(tiny_generator, request(steps=2, interval=bad))
    assert err.value.field == "output.preview_interval_steps" and ">= 1" in str(err.value)


@pytest.mark.parametrize("bad", [True, 1.5, "2"])
def test_a_non_integer_interval_is_a_config_error(tiny_generator, bad):
    with pytest.raises(ConfigError) as err:
        tiny_generator.resolve(request(steps=2, interval=bad))
    assert err.value.path == "output.preview_interval_steps"
