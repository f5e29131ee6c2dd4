"""Wan2.2 TI2V-5B: the DiT's per-token timesteps against diffusers' WanTransformer3DModel (2-D timestep).

Tiny random models (seconds on CPU), diffusers as the oracle. The per-token timestep is what diffusers'
TI2V pipelines pass: the first latent frame's tokens at 0 (the clean image frame), every other token at t.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

pytest.importorskip("diffusers")

from wan_dit_fixtures import ours_from, reference_dit  # noqa: E402

FP32_TOL = 1e-4

# TI2V-5B's shape family in miniature: in == out channels (48 in the real model), patch (1, 2, 2).
TINY_TI2V: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=6,
    out_channels=6, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
    rope_max_seq_len=64,
)
FHW = (3, 4, 6)
TOKENS = 3 * 2 * 3


def _first_frame_timesteps(t: list[float]) -> torch.Tensor:
    """``(B, L)``: 0 on the first latent frame's tokens, ``t[b]`` elsewhere (diffusers' mask * t)."""
    mask = torch.ones(FHW[0], FHW[1] // 2, FHW[2] // 2)
    mask[0] = 0
    return torch.stack([(mask * v).flatten() for v in t])


def _inputs(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, TINY_TI2V["in_channels"], *FHW, generator=gen)
    ctx = torch.randn(2, 7, TINY_TI2V["text_dim"], generator=gen)
    return x, ctx


@torch.no_grad()
def test_per_token_timesteps_match_diffusers() -> None:
    ref = reference_dit(TINY_TI2V)
    ours = ours_from(ref)
    x, ctx = _inputs()
    t = _first_frame_timesteps([999.0, 421.7])
    expected = ref(x, t, ctx, return_dict=False)[0]
    got = ours(x, t, ctx)
    assert got.shape == expected.shape == x.shape
    assert expected.std() > 0.1
    err = (got - expected).abs().max().item()
    assert err <= FP32_TOL, f"max abs error {err:.3e} > {FP32_TOL}"
    # a (1, L) timestep broadcasts over the batch as diffusers' does after its expand
    one = _first_frame_timesteps([500.0])
    err1 = (ours(x, one, ctx) - ref(x, one.expand(2, -1), ctx, return_dict=False)[0]).abs().max().item()
    assert err1 <= FP32_TOL
    # the per-token steps really differ from a uniform timestep (the first frame's tokens see t = 0)
    uniform = ours(x, torch.tensor([999.0, 421.7]), ctx)
    assert (uniform - got).abs().max().item() > 100 * FP32_TOL
    # ... and a per-token timestep that is uniform equals the 1-D one
    flat = torch.tensor([999.0, 421.7])[:, None].expand(2, TOKENS)
    assert (ours(x, flat, ctx) - uniform).abs().max().item() <= FP32_TOL


@torch.no_grad()
def test_per_token_split_forward_and_rows() -> None:
    """embed / run_blocks (a subset of rows) / head give the forward's rows with per-token timesteps."""
    ours = ours_from(reference_dit(TINY_TI2V))
    x, ctx = _inputs(5)
    t = _first_frame_timesteps([800.0, 100.0])
    full = ours(x, t, ctx)
    step = ours.embed(x, t, ctx)
    assert step.temb.shape == (2, TOKENS, ours.config.inner_dim)
    assert step.modulation.shape == (2, TOKENS, 6, ours.config.inner_dim)
    row = ours.run_blocks(step, torch.tensor([1]))
    whole = ours.run_blocks(step)
    torch.testing.assert_close(row, whole[1:2], rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.head(whole, step), full, rtol=0, atol=0)


def test_rejects_bad_per_token_timestep() -> None:
    ours = ours_from(reference_dit(TINY_TI2V))
    x, ctx = _inputs()
    with pytest.raises(ValueError, match="per token"):
        ours(x, torch.zeros(2, TOKENS + 1), ctx)


# ----------------------------------------------------------------------------- the whole pipeline
# The built-in tiny TI2V model (a WanPipeline folder with expand_timesteps: a 48-channel DiT, a tiny Wan2.2 VAE),
# run by our engine core and by diffusers' WanPipeline (text only) / WanImageToVideoPipeline (with an image),
# both with expand_timesteps=True.
FRAME_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def ti2v_folder(fastvideo_cache: Any) -> Any:
    from fastvideo.engine.builtin_model import ensure_builtin_model

    return ensure_builtin_model(fastvideo_cache, "fastvideo-tiny-ti2v")


@pytest.fixture(scope="module")
def ti2v_generator(ti2v_folder: Any) -> Any:
    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained(str(ti2v_folder), device="cpu", dtype="fp32")
    yield generator
    generator.shutdown()


def _image(seed: int, size: tuple[int, int] = (40, 72)) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size[1])[None, :, None] * np.ones((size[0], 1, 3))
    return Image.fromarray(np.clip(ramp * 0.6 + rng.integers(0, 100, (*size, 3)), 0, 255).astype("uint8"))


def _decoded(generator: Any, latents: torch.Tensor) -> Any:
    pipe = generator.pipeline
    with torch.no_grad():
        video = pipe.vae.decode(pipe.vae.denormalize_latents(latents))[0]
    return (video / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()


PROMPT, NEGATIVE, SEED, STEPS, GUIDANCE, FRAMES, (WIDTH, HEIGHT) = (
    "a red fox running through snow", "blurry", 1234, 3, 5.0, 5, (64, 32))


def _request(inputs: Any = None) -> Any:
    from fastvideo.api import GenerationRequest, InputConfig, SamplingConfig

    return GenerationRequest(prompt=PROMPT, negative_prompt=NEGATIVE, inputs=inputs or InputConfig(),
                             sampling=SamplingConfig(width=WIDTH, height=HEIGHT, num_frames=FRAMES,
                                                     num_inference_steps=STEPS, guidance_scale=GUIDANCE, seed=SEED))


def _reference_call(pipe: Any, **extra: Any) -> Any:
    return pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH, num_frames=FRAMES,
                num_inference_steps=STEPS, guidance_scale=GUIDANCE, output_type="np",
                generator=torch.Generator("cpu").manual_seed(SEED), max_sequence_length=64, **extra).frames[0]


def test_text_to_video_matches_diffusers(ti2v_generator: Any, ti2v_folder: Any) -> None:
    import diffusers
    import numpy as np

    from core_testing import core_latents

    latents, resolved = core_latents(ti2v_generator, _request())
    assert resolved.workload == "ti2v"
    assert ti2v_generator.pipeline.family.name == "wan2.2-ti2v-5b"
    assert latents.shape == (1, 48, 2, HEIGHT // 16, WIDTH // 16)
    mine = _decoded(ti2v_generator, latents)
    reference = diffusers.WanPipeline.from_pretrained(str(ti2v_folder), dtype=torch.float32)
    assert reference.config.expand_timesteps is True
    theirs = _reference_call(reference)
    assert mine.shape == theirs.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert float(mine.std()) > 1e-3
    err = float(np.abs(mine - theirs).max())
    print(f"TI2V text-to-video max abs frame diff {err:.3e}")
    assert err <= FRAME_TOLERANCE, f"max abs frame error {err:.2e} > {FRAME_TOLERANCE}"


def test_image_to_video_matches_diffusers(ti2v_generator: Any, ti2v_folder: Any, tmp_path: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import diffusers
    import numpy as np
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_i2v

    # diffusers 0.42's I2V prompt cleaning calls ftfy unguarded; WanPipeline's cleaning (what ours mirrors) when
    # ftfy is absent
    monkeypatch.setattr(pipeline_wan_i2v, "basic_clean", pipeline_wan.basic_clean)
    from core_testing import core_latents
    from fastvideo.api import InputConfig

    image = _image(0)
    path = tmp_path / "first.png"
    image.save(path)
    latents, _ = core_latents(ti2v_generator, _request(InputConfig(image_path=str(path))))
    mine = _decoded(ti2v_generator, latents)
    t2v = diffusers.WanPipeline.from_pretrained(str(ti2v_folder), dtype=torch.float32)
    reference = diffusers.WanImageToVideoPipeline(tokenizer=t2v.tokenizer, text_encoder=t2v.text_encoder,
                                                  vae=t2v.vae, scheduler=t2v.scheduler,
                                                  transformer=t2v.transformer, expand_timesteps=True)
    theirs = _reference_call(reference, image=image)
    assert mine.shape == theirs.shape == (FRAMES, HEIGHT, WIDTH, 3)
    err = float(np.abs(mine - theirs).max())
    print(f"TI2V image-to-video max abs frame diff {err:.3e}")
    assert float(mine.std()) > 1e-3 and err <= FRAME_TOLERANCE, f"max abs frame error {err:.2e}"
    # The image matters (and the text-to-video run differs): another image gives another video.
    text_only, _ = core_latents(ti2v_generator, _request())
    other, _ = core_latents(ti2v_generator, _request(InputConfig(pil_image=_image(1))))
    assert (other - latents).abs().max().item() > 1e-3
    assert (text_only - latents).abs().max().item() > 1e-3


def test_image_to_video_folder_is_the_ti2v_family(ti2v_folder: Any, tmp_path: Any) -> None:
    """diffusers' save_pretrained of a TI2V WanImageToVideoPipeline (no image encoder) is the TI2V family; without
    expand_timesteps the same folder is refused for its TI2V transformer-less image pipeline, and expand_timesteps
    stays refused for the other families."""
    import json

    import diffusers

    from fastvideo.api.errors import ModelLoadError
    from fastvideo.engine.families import FAMILIES, match_family

    t2v = diffusers.WanPipeline.from_pretrained(str(ti2v_folder), dtype=torch.float32)
    diffusers.WanImageToVideoPipeline(tokenizer=t2v.tokenizer, text_encoder=t2v.text_encoder, vae=t2v.vae,
                                      scheduler=t2v.scheduler, transformer=t2v.transformer,
                                      expand_timesteps=True).save_pretrained(str(tmp_path / "i2v"))
    index = json.loads((tmp_path / "i2v" / "model_index.json").read_text())
    assert match_family(index, {}).name == "wan2.2-ti2v-5b"
    t2v_index = json.loads((ti2v_folder / "model_index.json").read_text())
    assert match_family(t2v_index, {}).name == "wan2.2-ti2v-5b"
    assert match_family({**t2v_index, "expand_timesteps": False}, {}).name == "wan2.1-t2v"
    with pytest.raises(ModelLoadError, match="expand_timesteps"):
        match_family({**t2v_index, "boundary_ratio": 0.9, "transformer_2": ["diffusers", "WanTransformer3DModel"]},
                      {})
    with pytest.raises(ModelLoadError):  # an image encoder is not TI2V's (nor Wan2.1 I2V's with expand_timesteps)
        match_family({**index, "image_encoder": ["transformers", "CLIPVisionModel"]}, {})
    assert [f.name for f in FAMILIES.values() if "expand_timesteps" in f.index_options
            and True in f.index_options["expand_timesteps"]] == ["wan2.2-ti2v-5b"]


def test_ti2v_refusals(ti2v_generator: Any) -> None:
    from fastvideo.api import GenerationRequest, InputConfig, RequestError, SamplingConfig
    from fastvideo.api.request import OutputConfig, RequestRuntimeConfig

    image = _image(2)
    cases = [
        (GenerationRequest(prompt="x", inputs=InputConfig(pil_image=image, last_image=image)), "inputs.last_image"),
        (GenerationRequest(prompt="x", sampling=SamplingConfig(width=48, height=32)), "sampling.width"),
        (GenerationRequest(prompt="x", runtime=RequestRuntimeConfig(enable_teacache=True)), "runtime.enable_teacache"),
    ]
    for request, field in cases:
        with pytest.raises(RequestError) as info:
            ti2v_generator.generate(request)
        assert info.value.field == field
    first = ti2v_generator.generate(GenerationRequest(prompt="x", sampling=SamplingConfig(num_inference_steps=2),
                                                     output=OutputConfig(return_state=True)))
    with pytest.raises(RequestError) as info:  # continuing a video: refused for TI2V
        ti2v_generator.generate(GenerationRequest(prompt="x", state=first.state))
    assert info.value.field == "state"
