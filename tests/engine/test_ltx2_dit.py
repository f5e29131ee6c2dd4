"""Parity of fastvideo.engine.models.ltx2.LTX2Transformer with diffusers' LTX2VideoTransformer3DModel.

Tiny random models built from the real diffusers class (both streams, two blocks, seconds on CPU). Every reference
parameter is re-drawn from seeded noise first (diffusers zero-inits nothing here, but its RMS norm weights are
ones and biases small), so a swapped modulation row, a wrong RoPE axis or a missing gate shows up as a large error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import LTX2VideoTransformer3DModel as DiffusersLTX2  # noqa: E402

from fastvideo.api.errors import ModelLoadError  # noqa: E402
from fastvideo.engine.models.ltx2 import LTX2DiTConfig, LTX2Transformer, load_ltx2_transformer  # noqa: E402
from fastvideo.kernels.registry import AttentionBackend, sdpa_attention  # noqa: E402

FP32_TOL = 1e-4
# bf16 against diffusers in bf16 on the same weights: our code mirrors its op order (the split RoPE's fused
# multiply-adds included), so on CPU it comes out bit-identical (observed 0.0); the bound is about one bf16 ulp at
# the outputs' magnitude (|y| ~ 10..30 here, ulp 2**-3), well below the bf16-vs-fp32 gap.
BF16_TOL = 0.125

# inner_dim 16 (16 % 6 != 0: the video RoPE's front padding is exercised), audio width 8, text 12 -> 16 / 8.
TINY: dict[str, Any] = dict(
    in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
    audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=4,
    audio_cross_attention_dim=8, num_layers=2, caption_channels=12,
)
# Second family: split RoPE (per-head halves), per-head gated attention, spatial/temporal patching in the
# coordinates, no FFN biases, float32 RoPE exponents, a non-default time/gate multiplier ratio and causal offset.
VARIANT: dict[str, Any] = dict(
    TINY, rope_type="split", gated_attn=True, audio_gated_attn=True, patch_size=2, patch_size_t=1,
    ff_bias=False, audio_ff_bias=False, rope_double_precision=False, cross_attn_timestep_scale_multiplier=500,
    causal_offset=0, audio_num_attention_heads=4, audio_attention_head_dim=2,
)
# Third family, the later LTX-2 versions' switches: text cross-attention modulation on both streams with the
# prompt AdaLN, connector-width prompts (no caption projection), STG-capable attention, the keyframe embedding.
LATER: dict[str, Any] = dict(
    TINY, rope_type="split", gated_attn=True, audio_gated_attn=True, cross_attn_mod=True, audio_cross_attn_mod=True,
    use_prompt_embeddings=False, perturbed_attn=True, use_keyframes_abs_pos_embedding=True,
)
GRID = (3, 4, 4)  # latent frames, height, width
AUDIO_FRAMES = 5
TEXT_LEN = 7


def _reference(config: dict[str, Any], seed: int = 0) -> DiffusersLTX2:
    torch.manual_seed(seed)
    ref = DiffusersLTX2(**config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in ref.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return ref


def _ours(ref: DiffusersLTX2, **kwargs: Any) -> LTX2Transformer:
    model = LTX2Transformer(LTX2DiTConfig.from_dict(dict(ref.config)), **kwargs).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    return model


def _tokens(config: dict[str, Any]) -> int:
    p, pt = config.get("patch_size", 1), config.get("patch_size_t", 1)
    f, h, w = GRID
    return -(-f // pt) * -(-h // p) * -(-w // p)


def _inputs(config: dict[str, Any], batch: int = 2, seed: int = 3) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    projected = config.get("use_prompt_embeddings", True)
    text = config["caption_channels"] if projected else config["num_attention_heads"] * config["attention_head_dim"]
    audio_text = (config["caption_channels"] if projected
                  else config["audio_num_attention_heads"] * config["audio_attention_head_dim"])
    return dict(
        hidden_states=torch.randn(batch, _tokens(config), config["in_channels"], generator=gen),
        audio_hidden_states=torch.randn(batch, AUDIO_FRAMES, config["audio_in_channels"], generator=gen),
        encoder_hidden_states=torch.randn(batch, TEXT_LEN, text, generator=gen),
        audio_encoder_hidden_states=torch.randn(batch, TEXT_LEN, audio_text, generator=gen),
        timestep=torch.tensor([300.0, 850.0][:batch]),
        num_frames=GRID[0], height=GRID[1], width=GRID[2], fps=24.0, audio_num_frames=AUDIO_FRAMES,
    )


def _max_diffs(ref: DiffusersLTX2, ours: LTX2Transformer, **inputs: Any) -> tuple[float, float]:
    with torch.no_grad():
        expected = ref(**inputs, return_dict=False)
        got = ours(**inputs)
    assert got[0].shape == expected[0].shape and got[1].shape == expected[1].shape
    assert got[0].dtype == expected[0].dtype and got[1].dtype == expected[1].dtype
    return ((got[0].float() - expected[0].float()).abs().max().item(),
            (got[1].float() - expected[1].float()).abs().max().item())


@pytest.mark.parametrize("config", [TINY, VARIANT], ids=["interleaved", "split-gated-patched"])
def test_forward_matches_diffusers_fp32_batch2_different_timesteps(config: dict[str, Any]) -> None:
    ref = _reference(config)
    ours = _ours(ref)
    inputs = _inputs(config)
    video_diff, audio_diff = _max_diffs(ref, ours, **inputs)
    assert video_diff <= FP32_TOL and audio_diff <= FP32_TOL, (video_diff, audio_diff)
    # the two samples really got different timesteps: swapping them changes the output
    with torch.no_grad():
        same = ours(**inputs)[0]
        swapped = ours(**{**inputs, "timestep": inputs["timestep"].flip(0)})[0]
    assert (same - swapped).abs().max() > 1e-2


@pytest.mark.parametrize("prompt_adaln", [True, False], ids=["prompt-adaln", "static-prompt-table"])
def test_later_version_switches_match_diffusers(prompt_adaln: bool) -> None:
    """Text cross-attention modulation, STG (some samples / all samples perturbed), a video self-attention mask and
    keyframe tokens, against diffusers on the same config."""
    config = dict(LATER, use_prompt_adaln_single=prompt_adaln)
    ref = _reference(config)
    ours = _ours(ref)
    inputs = {**_inputs(config), "sigma": torch.tensor([0.3, 0.85]), "use_cross_timestep": True}
    tokens = _tokens(config)
    self_mask = (torch.rand(2, tokens, tokens, generator=torch.Generator().manual_seed(9)) > 0.3).float()
    keyframes = torch.zeros(2, tokens, 1)
    keyframes[:, :16] = 1.0
    cases = {
        "plain": {},
        "stg some": {"spatio_temporal_guidance_blocks": [1], "perturbation_mask": torch.tensor([1.0, 0.0])},
        "stg all": {"spatio_temporal_guidance_blocks": [0, 1]},
        "self mask + keyframes": {"video_self_attention_mask": self_mask, "video_keyframes_mask": keyframes},
    }
    outputs = {}
    for name, extra in cases.items():
        video_diff, audio_diff = _max_diffs(ref, ours, **inputs, **extra)
        assert video_diff <= FP32_TOL and audio_diff <= FP32_TOL, (name, video_diff, audio_diff)
        with torch.no_grad():
            outputs[name] = ours(**inputs, **extra)
    for name in ("stg some", "stg all", "self mask + keyframes"):  # each switch changes the output
        assert (outputs[name][0] - outputs["plain"][0]).abs().max() > 1e-3, name
    # "stg some" perturbs sample 1 only: sample 0 is the plain output
    assert torch.equal(outputs["stg some"][0][0], outputs["plain"][0][0])
    if prompt_adaln:  # the prompt AdaLN reads sigma: leaving it out is refused, not guessed
        with pytest.raises(ValueError, match="sigma is required"):
            ours(**{**inputs, "sigma": None, "use_cross_timestep": False})


def test_text_attention_masks_match_diffusers() -> None:
    ref = _reference(TINY)
    ours = _ours(ref)
    inputs = _inputs(TINY)
    mask = torch.ones(2, TEXT_LEN)
    mask[0, 4:] = 0
    audio_mask = torch.ones(2, TEXT_LEN)
    audio_mask[1, 2:] = 0
    masked = {**inputs, "encoder_attention_mask": mask, "audio_encoder_attention_mask": audio_mask}
    video_diff, audio_diff = _max_diffs(ref, ours, **masked)
    assert video_diff <= FP32_TOL and audio_diff <= FP32_TOL, (video_diff, audio_diff)
    with torch.no_grad():  # the masks matter (else this test would prove nothing)
        plain, with_mask = ours(**inputs), ours(**masked)
    assert (plain[0][0] - with_mask[0][0]).abs().max() > 1e-3  # video sample 0 masked
    assert (plain[1][1] - with_mask[1][1]).abs().max() > 1e-3  # audio sample 1 masked


def test_per_token_timesteps_explicit_coords_and_cross_timestep_match_diffusers() -> None:
    """The conditioning path: per-token video timesteps, separate audio timesteps, coordinates passed in (shifted
    audio window, another fps) and the a2v/v2a modulation driven by the other stream's sigma."""
    ref = _reference(TINY)
    ours = _ours(ref)
    inputs = _inputs(TINY)
    tokens = _tokens(TINY)
    timestep = torch.full((2, tokens), 700.0)
    timestep[:, :16] = 0.0  # first latent frame "clean", as image conditioning does
    audio_timestep = torch.tensor([650.0, 200.0])
    video_coords = ref.rope.prepare_video_coords(2, *GRID, torch.device("cpu"), fps=25.0)
    audio_coords = ref.audio_rope.prepare_audio_coords(2, AUDIO_FRAMES, torch.device("cpu"), shift=3)
    assert torch.equal(ours.video_coords(2, *GRID, "cpu", fps=25.0), video_coords)
    assert torch.equal(ours.audio_coords(2, AUDIO_FRAMES, "cpu", shift=3), audio_coords)
    for cross in (False, True):
        case = {**inputs, "timestep": timestep, "audio_timestep": audio_timestep, "video_coords": video_coords,
                "audio_coords": audio_coords, "sigma": torch.tensor([0.7, 0.45]), "audio_sigma": audio_timestep / 1000,
                "use_cross_timestep": cross}
        video_diff, audio_diff = _max_diffs(ref, ours, **case)
        assert video_diff <= FP32_TOL and audio_diff <= FP32_TOL, (cross, video_diff, audio_diff)


def test_isolate_modalities_matches_diffusers() -> None:
    ref = _reference(TINY)
    ours = _ours(ref)
    video_diff, audio_diff = _max_diffs(ref, ours, **_inputs(TINY), isolate_modalities=True)
    assert video_diff <= FP32_TOL and audio_diff <= FP32_TOL, (video_diff, audio_diff)


def test_folder_written_by_save_pretrained_loads_through_our_loader(tmp_path: Path) -> None:
    """Sharded diffusers safetensors + config.json -> meta-device build -> same outputs as the reference."""
    ref = _reference(TINY)
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1  # really sharded
    ours = load_ltx2_transformer(tmp_path, dtype=torch.float32, device="cpu")
    assert not any(p.is_meta for p in ours.parameters()) and not ours.training
    video_diff, audio_diff = _max_diffs(ref, ours, **_inputs(TINY))
    assert video_diff <= FP32_TOL and audio_diff <= FP32_TOL, (video_diff, audio_diff)


@pytest.mark.parametrize("config", [TINY, VARIANT], ids=["interleaved", "split-gated-patched"])
def test_bf16_load_matches_diffusers_bf16(tmp_path: Path, config: dict[str, Any]) -> None:
    ref = _reference(config)
    ref.save_pretrained(tmp_path)
    ours = load_ltx2_transformer(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    ref = ref.to(torch.bfloat16)
    inputs = _inputs(config)
    for key in ("hidden_states", "audio_hidden_states", "encoder_hidden_states", "audio_encoder_hidden_states"):
        inputs[key] = inputs[key].to(torch.bfloat16)
    video_diff, audio_diff = _max_diffs(ref, ours, **inputs)
    assert video_diff <= BF16_TOL and audio_diff <= BF16_TOL, (video_diff, audio_diff)


def test_attention_goes_through_the_selected_backend() -> None:
    calls: list[tuple[int, ...]] = []

    def counting(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(q.shape))
        return sdpa_attention(q, k, v)

    ref = _reference(TINY)
    ours = _ours(ref, attention_backend=AttentionBackend("counting", counting, lambda *a: None))
    inputs = _inputs(TINY)
    video_diff, audio_diff = _max_diffs(ref, ours, **inputs)
    assert video_diff <= FP32_TOL and audio_diff <= FP32_TOL
    assert len(calls) == 6 * TINY["num_layers"]  # 2 self, 2 text, a2v, v2a per block
    calls.clear()
    with torch.no_grad():  # a masked text attention cannot use a mask-free backend: torch SDPA takes it
        ours(**inputs, encoder_attention_mask=torch.ones(2, TEXT_LEN))
    assert len(calls) == 5 * TINY["num_layers"]


def test_grid_rope_tables_are_cached_once_per_shape() -> None:
    ours = _ours(_reference(TINY))
    inputs = _inputs(TINY)
    with torch.no_grad():
        ours(**inputs)
        ours(**{**inputs, "timestep": torch.tensor([10.0, 20.0])})
    assert len(ours._rope_cache) == 1
    with torch.no_grad():
        ours(**{**inputs, "fps": 12.0})
    assert len(ours._rope_cache) == 2


def test_fullgraph_compile_traces_once_the_rope_cache_is_warm() -> None:
    """No graph breaks (dynamo's tracing only: backend "eager"), same outputs as the eager model."""
    ours = _ours(_reference(VARIANT))
    inputs = _inputs(VARIANT)
    with torch.no_grad():
        eager = ours(**inputs)  # warms the RoPE cache outside the graph
        compiled = torch.compile(ours, fullgraph=True, backend="eager")(**inputs)
    assert torch.equal(compiled[0], eager[0]) and torch.equal(compiled[1], eager[1])


def _write_config(folder: Path, **changes: Any) -> Path:
    ref = _reference(TINY)
    ref.save_pretrained(folder)
    import json
    data = json.loads((folder / "config.json").read_text())
    data.update(changes)
    (folder / "config.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize(("changes", "named"), [
    ({"not_a_field": 1}, "not_a_field"),
    ({"norm_elementwise_affine": True}, "norm_elementwise_affine"),
    ({"activation_fn": "gelu"}, "activation_fn"),
    ({"rope_type": "spiral"}, "rope_type"),
    ({"_class_name": "WanTransformer3DModel"}, "WanTransformer3DModel"),
])
def test_unsupported_configs_are_refused_naming_the_field(tmp_path: Path, changes: dict[str, Any],
                                                          named: str) -> None:
    folder = _write_config(tmp_path, **changes)
    with pytest.raises(ModelLoadError, match=named):
        load_ltx2_transformer(folder)


def test_weights_from_another_config_are_refused(tmp_path: Path) -> None:
    folder = _write_config(tmp_path, num_layers=3)
    with pytest.raises(ModelLoadError, match="missing"):
        load_ltx2_transformer(folder)


def test_missing_positions_are_refused_clearly() -> None:
    ours = _ours(_reference(TINY))
    inputs = _inputs(TINY)
    with pytest.raises(ValueError, match="video_coords or the latent grid"):
        ours(**{**inputs, "num_frames": None})
    with pytest.raises(ValueError, match="video tokens"):
        ours(**{**inputs, "num_frames": 2})
    with pytest.raises(ValueError, match="audio_num_frames"):
        ours(**{**inputs, "audio_num_frames": None})


def test_published_config_builds_with_diffusers_keys_and_shapes() -> None:
    """The full LTX-2 transformer (diffusers' defaults, split RoPE; ~18.9B parameters) on the meta device: every
    state-dict key and shape equals diffusers', and the config round-trips through to_dict/from_dict."""
    config = LTX2DiTConfig(rope_type="split")
    assert LTX2DiTConfig.from_dict(config.to_dict()) == config
    with torch.device("meta"):
        ours = LTX2Transformer(config)
        ref = DiffusersLTX2(**config.to_dict())
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert ours_shapes == ref_shapes
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) > 18e9


def test_bad_timestep_shapes_are_refused_clearly() -> None:
    ours = _ours(_reference(TINY))
    inputs = _inputs(TINY)
    with pytest.raises(ValueError, match=r"timestep must have shape \(2,\) or \(2, 48\)"):
        ours(**{**inputs, "timestep": torch.tensor([500.0])})  # one value for a batch of 2
    with pytest.raises(ValueError, match="audio_timestep"):
        ours(**{**inputs, "audio_timestep": torch.zeros(2, 3)})


def test_loader_checks_the_backend_against_the_audio_head_size_too(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from fastvideo.engine.models.ltx2 import loading
    from fastvideo.kernels.registry import AttentionBackendError

    picky = AttentionBackend("picky", sdpa_attention,
                             lambda dtype, head_dim, device: None if head_dim == 8 else f"head_dim {head_dim}")
    monkeypatch.setattr(loading, "select_attention_backend", lambda *a, **k: picky)
    folder = _write_config(tmp_path)  # video heads of 8, audio heads of 4
    with pytest.raises(AttentionBackendError, match="audio head size 4"):
        load_ltx2_transformer(folder, attention_backend="picky")
