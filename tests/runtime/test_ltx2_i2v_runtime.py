"""LTX-2 image-to-video through the one runtime core, on the built-in tiny LTX-2 (``fastvideo-tiny-ltx2``).

A request with ``inputs.image_path`` (a PNG) or ``inputs.pil_image`` equals the engine's
``load_ltx2_pipeline(folder).run(LTX2Request(..., image=<the same RGB uint8 image>))`` for the same seed (frames within
one level, waveform tight; that request's parity with diffusers' ``LTX2ImageToVideoPipeline`` is
tests/engine/test_ltx2_conditioning.py); the image changes the video; image requests never share a bucket with
text-to-video ones; a last image, two images, a missing file and an image with a continuation state are refused
naming the field. (Random weights: closeness of the first frame to the image is not asserted.)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fastvideo.api import RequestError

PROMPT = "a fox runs through snow"
STEPS = 2
SEED = 5


def _image(height: int = 40, width: int = 48) -> np.ndarray:
    """A structured RGB uint8 image (gradients, not one colour), at a size other than the video's."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (width + height - 2)],
                    axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("ltx2-i2v") / "first.png"
    Image.fromarray(_image()).save(path)
    return path


def _request(inputs: dict, **sampling: object) -> dict:
    return {"prompt": PROMPT, "inputs": inputs, "sampling": {"seed": SEED, "num_inference_steps": STEPS, **sampling},
            "output": {"save_video": False, "return_frames": True}}


def test_image_path_equals_the_engine_image_to_video_run(ltx2_generator, png: Path) -> None:
    from fastvideo.engine.models.ltx2 import load_ltx2_pipeline
    from fastvideo.engine.models.ltx2.pipeline import LTX2Request

    result = ltx2_generator.generate(_request({"image_path": str(png)}))
    preset, served = ltx2_generator.preset, ltx2_generator.pipeline
    reference = load_ltx2_pipeline(ltx2_generator.model_path, max_sequence_length=preset.text_length)
    out = reference.run(LTX2Request(prompt=PROMPT, negative_prompt=preset.negative_prompt, width=preset.width,
                                    height=preset.height, num_frames=preset.num_frames, fps=float(preset.fps),
                                    steps=STEPS, seed=SEED, guidance=served.guidance, sigmas=served.sigmas,
                                    image=_image()))
    assert result.frames.shape == out.frames.shape == (preset.num_frames, preset.height, preset.width, 3)
    assert np.abs(result.frames.astype(np.int16) - out.frames.astype(np.int16)).max() <= 1
    np.testing.assert_allclose(result.audio, out.waveform.numpy(), atol=1e-5, rtol=0)
    assert result.audio_sample_rate == out.sample_rate

    # the same image as a PIL image gives the same video; without the image the video differs
    from PIL import Image

    pil = ltx2_generator.generate(_request({"pil_image": Image.fromarray(_image())}))
    assert np.array_equal(pil.frames, result.frames)
    plain = ltx2_generator.generate(_request({}))
    assert np.abs(plain.frames.astype(np.int16) - result.frames.astype(np.int16)).max() > 1


def test_image_requests_get_their_own_bucket(ltx2_generator, png: Path) -> None:
    executor = ltx2_generator.engine_core().executor
    keys = []
    for inputs in ({"image_path": str(png)}, {}):
        req, resolved = ltx2_generator.resolve(_request(inputs))
        keys.append(executor.make_item(req, resolved).key)
    assert keys[0].workload == "i2v" and keys[1].workload == "t2v"
    assert keys[0] != keys[1] and replace(keys[0], workload="t2v") == keys[1]


@pytest.mark.parametrize("inputs, field", [
    ({"image_path": "first.png", "last_image": "last.png"}, "inputs.last_image"),
    ({"last_image": "last.png"}, "inputs.last_image"),
    ({"image_path": "first.png", "pil_image": "PIL"}, "inputs.pil_image"),
    ({"image_path": ["a.png", "b.png"]}, "inputs.image_path"),
])
def test_image_fields_ltx2_cannot_honour_are_refused_by_name(ltx2_generator, png: Path, inputs: dict,
                                                             field: str) -> None:
    from PIL import Image

    values = {k: (Image.fromarray(_image()) if v == "PIL" else str(png) if v == "first.png" else v)
              for k, v in inputs.items()}
    with pytest.raises(RequestError) as info:
        ltx2_generator.resolve(_request(values))
    assert info.value.field == field


def test_a_missing_image_file_is_refused_naming_image_path(ltx2_generator, tmp_path: Path) -> None:
    with pytest.raises(RequestError) as info:
        ltx2_generator.generate(_request({"image_path": str(tmp_path / "nope.png")}))
    assert info.value.field == "inputs.image_path" and "does not exist" in str(info.value)


def test_an_image_with_a_continuation_state_is_refused(ltx2_generator, png: Path) -> None:
    first = ltx2_generator.generate({**_request({}), "output": {"save_video": False, "return_state": True}})
    assert first.state is not None
    with pytest.raises(RequestError) as info:
        ltx2_generator.resolve({**_request({"image_path": str(png)}), "state": first.state})
    assert info.value.field == "inputs.image_path"
