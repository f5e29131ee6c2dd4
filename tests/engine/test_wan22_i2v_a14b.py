"""Wan2.2 I2V A14B (two experts, image-to-video without a CLIP encoder) against diffusers 0.42's
``WanImageToVideoPipeline`` with ``transformer_2`` + ``boundary_ratio`` and no ``image_encoder``.

The folder is written by diffusers' ``save_pretrained`` (``wan22_i2v_fixtures``: two tiny transformers with
``in_channels`` 36 and no ``image_dim``, the switch between the 2nd and 3rd of 4 steps). Ours loads it through our
loader and runs the engine core's executor; fp32 frames must agree with diffusers' within 1e-4 with
``guidance_scale != guidance_scale_2``. Also: the family and preset picked for such folders, the switch at the
boundary (forwards counted per expert), ``guidance_scale_2`` honoured, the image required and conditioning the
video, and the folder checks (a CLIP encoder, a Wan2.1 I2V transformer or wrong ``in_channels`` refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from core_testing import core_latents  # noqa: E402
from fastvideo.api import GenerationRequest, InputConfig, RequestError, SamplingConfig  # noqa: E402
from fastvideo.api.errors import ModelLoadError  # noqa: E402
from wan22_i2v_fixtures import image, without_ftfy, write_i2v_a14b_folder  # noqa: E402

FRAME_TOLERANCE = 1e-4
STEPS = 4
PROMPT, NEGATIVE, SEED, WIDTH, HEIGHT, FRAMES = "a red fox running through snow", "blurry", 1234, 48, 32, 5


@pytest.fixture(scope="module")
def a14b_i2v(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, Any]:
    return write_i2v_a14b_folder(tiny_model_dir, tmp_path_factory.mktemp("i2v_a14b") / "model", STEPS)


@pytest.fixture(scope="module")
def ours(a14b_i2v: tuple[Path, float, Any]) -> Any:
    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained(str(a14b_i2v[0]), device="cpu", dtype="fp32")
    yield generator
    generator.shutdown()


def _request(path: Any, **sampling: Any) -> GenerationRequest:
    values = dict(width=WIDTH, height=HEIGHT, num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=5.0,
                  seed=SEED)
    return GenerationRequest(prompt=PROMPT, negative_prompt=NEGATIVE, inputs=InputConfig(image_path=str(path)),
                             sampling=SamplingConfig(**{**values, **sampling}))


def _frames(generator: Any, latents: torch.Tensor) -> np.ndarray:
    pipe = generator.pipeline
    with torch.no_grad():
        video = pipe.vae.decode(pipe.vae.denormalize_latents(latents))[0]
    return (video / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()


def test_family_preset_and_experts(ours: Any, a14b_i2v: tuple[Path, float, Any]) -> None:
    from fastvideo.api.presets import get_preset as api_preset
    from fastvideo.api.presets import infer_preset_for_folder
    from fastvideo.engine.presets import get_preset

    pipe = ours.pipeline
    assert pipe.family.name == "wan2.2-i2v-a14b"
    assert pipe.image_encoder is None and pipe.dit_2 is not None
    assert pipe.preset.workload == "i2v" and pipe.preset.boundary_ratio == pytest.approx(a14b_i2v[1])
    assert pipe.preset.name == "fastvideo-tiny-i2v"  # a tiny test folder: the tiny I2V preset's sizes
    assert not pipe.dit.config.is_image_conditioned and pipe.dit.config.in_channels == 36
    first = dict(pipe.dit.named_parameters())
    assert max((p - first[n]).abs().max().item() for n, p in pipe.dit_2.named_parameters()) > 1e-2
    # The published folder (a 5120-wide transformer) picks the Wan2.2 I2V A14B preset, with FastVideo's defaults.
    big = {"num_attention_heads": 40, "attention_head_dim": 128, "num_layers": 40, "in_channels": 36}
    index = {"_class_name": "WanImageToVideoPipeline", "boundary_ratio": 0.9, "image_encoder": [None, None]}
    assert infer_preset_for_folder(index, big).name == "wan_i2v_a14b"
    assert infer_preset_for_folder({**index, "boundary_ratio": None}, {**big, "image_dim": 1280}).name \
        == "wan_i2v_14b_480p"  # Wan2.1 I2V stays Wan2.1
    preset = get_preset("wan2.2-i2v-a14b")
    assert (preset.width, preset.height, preset.num_frames, preset.fps, preset.num_inference_steps,
            preset.guidance_scale, preset.guidance_scale_2, preset.shift, preset.workload) == (
        1280, 720, 81, 16, 40, 3.5, 3.5, 5.0, "i2v")
    assert api_preset("wan_2_2_i2v_a14b").name == api_preset("wan2.2-i2v-a14b").name == "wan_i2v_a14b"


def test_pipeline_matches_diffusers(ours: Any, a14b_i2v: tuple[Path, float, Any], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    without_ftfy(monkeypatch)
    first = image(0)
    first.save(tmp_path / "first.png")
    before = ours.counters.snapshot()
    latents, resolved = core_latents(ours, _request(tmp_path / "first.png", guidance_scale_2=2.0))
    after = ours.counters.snapshot()
    assert resolved.workload == "i2v" and resolved.guidance_scale_2 == 2.0
    # CFG batched: one forward per step; steps 0-1 on transformer (t >= boundary), 2-3 on transformer_2.
    timesteps = ours.pipeline.make_sampler(resolved).state.schedule.timesteps_host[:STEPS]
    boundary = a14b_i2v[1] * 1000
    assert [t >= boundary for t in timesteps] == [True, True, False, False]
    assert after["expert_0_forwards"] - before["expert_0_forwards"] == 2
    assert after["expert_1_forwards"] - before["expert_1_forwards"] == 2
    mine = _frames(ours, latents)
    reference = a14b_i2v[2]

    def theirs(guidance_2: float, picture: Any = first) -> np.ndarray:
        return reference(image=picture, prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH,
                         num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=5.0,
                         guidance_scale_2=guidance_2, output_type="np",
                         generator=torch.Generator("cpu").manual_seed(SEED),
                         max_sequence_length=ours.preset.text_length).frames[0]

    want = theirs(2.0)
    assert mine.shape == want.shape == (FRAMES, HEIGHT, WIDTH, 3) and float(mine.std()) > 1e-3
    err = float(np.abs(mine - want).max())
    print(f"Wan2.2 I2V A14B pipeline max abs frame diff {err:.3e}")
    assert err <= FRAME_TOLERANCE, f"max abs frame error {err:.2e} > {FRAME_TOLERANCE}"
    # guidance_scale_2 matters (the low-noise expert's CFG): diffusers with another value is far from ours ...
    assert float(np.abs(mine - theirs(5.0)).max()) > 10 * FRAME_TOLERANCE
    # ... and so does the image: another image gives another video (here and in diffusers).
    image(1).save(tmp_path / "other.png")
    other, _ = core_latents(ours, _request(tmp_path / "other.png", guidance_scale_2=2.0))
    assert (other - latents).abs().max().item() > 1e-3
    assert float(np.abs(_frames(ours, other) - theirs(2.0, image(1))).max()) <= FRAME_TOLERANCE


def test_condition_has_no_image_tokens(ours: Any) -> None:
    """The image enters as the 20 condition channels only: no CLIP tokens (diffusers: image_embeds None)."""
    _, resolved = ours.resolve(_request("unused.png"))
    condition, tokens = ours.pipeline.image_condition(InputConfig(pil_image=image(2)), resolved)
    assert tokens is None and condition.shape == (1, 20, 2, HEIGHT // 8, WIDTH // 8)


def test_request_checks(ours: Any, tmp_path: Path) -> None:
    image(3).save(tmp_path / "in.png")
    cases = [
        (GenerationRequest(prompt="x"), "inputs.image_path", "image-to-video"),
        (GenerationRequest(prompt="x", inputs=InputConfig(image_path=str(tmp_path / "in.png"),
                                                          last_image=str(tmp_path / "in.png"))),
         "inputs.last_image", "first frame"),
        (_request(tmp_path / "in.png", boundary_ratio=1.5), "sampling.boundary_ratio", ""),
    ]
    for request, field, words in cases:
        with pytest.raises(RequestError) as info:
            ours.resolve(request)
        assert info.value.field == field and words in str(info.value), (field, str(info.value))
    # The two experts' fields are honoured; guidance_scale_2 defaults to guidance_scale (diffusers' rule).
    _, resolved = ours.resolve(_request(tmp_path / "in.png", boundary_ratio=0.5, guidance_scale_2=1.5))
    assert (resolved.boundary_ratio, resolved.guidance_scale_2) == (0.5, 1.5)
    assert ours.resolve(_request(tmp_path / "in.png", guidance_scale=4.0))[1].guidance_scale_2 == 4.0


def test_boundary_ratio_of_the_request_moves_the_switch(ours: Any, tmp_path: Path) -> None:
    image(4).save(tmp_path / "in.png")
    before = ours.counters.snapshot()
    core_latents(ours, _request(tmp_path / "in.png", num_inference_steps=2, boundary_ratio=1.0))
    after = ours.counters.snapshot()
    # t >= 1000 never holds: every step on transformer_2.
    assert after["expert_0_forwards"] - before["expert_0_forwards"] == 0
    assert after["expert_1_forwards"] - before["expert_1_forwards"] == 2


_INDEX = {"_class_name": "WanImageToVideoPipeline", "transformer": ["diffusers", "WanTransformer3DModel"],
          "transformer_2": ["diffusers", "WanTransformer3DModel"], "boundary_ratio": 0.9, "expand_timesteps": False,
          "image_encoder": [None, None], "image_processor": [None, None]}


def test_folder_family_rules() -> None:
    from fastvideo.engine.families import match_family

    assert match_family(_INDEX, {}).name == "wan2.2-i2v-a14b"
    # Without the second expert and the ratio it is a Wan2.1 I2V folder; half of them is neither.
    wan21 = {**_INDEX, "transformer_2": [None, None], "boundary_ratio": None}
    assert match_family(wan21, {}).name == "wan2.1-i2v"
    with pytest.raises(ModelLoadError, match="transformer_2"):
        match_family({**wan21, "boundary_ratio": 0.9}, {})
    # A CLIP encoder is no part of this family (and Wan2.1 I2V refuses the ratio): refused, naming it.
    with pytest.raises(ModelLoadError, match="image_encoder"):
        match_family({**_INDEX, "image_encoder": ["transformers", "CLIPVisionModel"]}, {})
    # TI2V-5B's expand_timesteps stays refused.
    with pytest.raises(ModelLoadError, match="expand_timesteps"):
        match_family({**_INDEX, "expand_timesteps": True}, {})


def test_transformer_kind_checked(ours: Any, a14b_i2v: tuple[Path, float, Any]) -> None:
    """A Wan2.1 I2V transformer (image_dim: CLIP tokens) or one whose in_channels are not noise + condition is
    refused for this family, naming the file and the field."""
    from fastvideo.engine.loader import ModelFolder
    from fastvideo.engine.models.wan.image_conditioning import check_image_conditioning
    from fastvideo.engine.models.wan.transformer import WanDiTConfig

    family, folder = ours.pipeline.family, ModelFolder(root=a14b_i2v[0], model_index={})
    config = ours.pipeline.dit.config.to_dict()
    check_image_conditioning(family, WanDiTConfig.from_dict(config), folder, z_dim=16)
    with pytest.raises(ModelLoadError, match="image_dim"):
        check_image_conditioning(family, WanDiTConfig.from_dict({**config, "image_dim": 24, "added_kv_proj_dim": 32}),
                                 folder, z_dim=16)
    with pytest.raises(ModelLoadError, match="in_channels must be 36") as info:
        check_image_conditioning(family, WanDiTConfig.from_dict({**config, "in_channels": 16}), folder, z_dim=16,
                                 component="transformer_2")
    assert "transformer_2/config.json" in str(info.value)


def test_artifacts_refused_by_name() -> None:
    """Built artifacts of this family's experts are not checked yet: engine.artifacts_path is refused, naming it,
    before any weight is read."""
    from fastvideo.api import ConfigError, GeneratorConfig, parse_config
    from fastvideo.engine.families import FAMILIES
    from fastvideo.runtime.generator import _check_family_config

    family = FAMILIES["wan2.2-i2v-a14b"]
    _check_family_config(GeneratorConfig(), family)
    with pytest.raises(ConfigError) as err:
        _check_family_config(parse_config(GeneratorConfig, {"engine": {"artifacts_path": "/a"}}), family)
    assert err.value.path == "engine.artifacts_path" and "wan2.2-i2v-a14b" in str(err.value)
