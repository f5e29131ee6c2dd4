"""Parity of fastvideo.engine.models.ltx2.LTX2VideoVAE with diffusers 0.42's AutoencoderKLLTX2Video, and of the
LTX-2 latent helpers with LTX2Pipeline's static methods.

Tiny random models built from the real diffusers class (patch 2, 8 latent channels, one resnet per block: a second
or two per call on CPU). Every reference parameter is re-drawn from seeded noise first (diffusers' resnets have no
norm weights and its scale/shift tables are small), so a swapped shift/scale, a mis-ordered patch or a wrong
padding side shows up as a large error. Inputs have 17 = 1 + 8*2 frames (two temporal downsamplings past the lone
first frame, so the causal and the symmetric edge padding both matter) and batch 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLLTX2Video, LTX2Pipeline  # noqa: E402

from fastvideo.api.errors import ModelLoadError  # noqa: E402
from fastvideo.engine.models.ltx2 import (LTX2VideoVAE, LTX2VideoVAEConfig, denormalize_latents,  # noqa: E402
                                          load_ltx2_video_vae, normalize_latents, pack_latents, unpack_latents)

TOL = 1e-4  # fp32; observed 0.0 (same ops in the same order)
# bf16 against diffusers in bf16 on the same weights: observed 0.0 on CPU too; the bound is one bf16 ulp at the
# outputs' magnitude (|y| ~ 10, ulp 2**-4), far below the bf16-vs-fp32 gap.
BF16_TOL = 0.0625

# LTX-2.0's block structure (spatial, temporal, spatiotemporal x2 down; three residual x2 up; non-causal decoder
# with reflect padding), scaled down.
BASE: dict[str, Any] = dict(
    latent_channels=8, patch_size=2, block_out_channels=(16, 32, 64, 64), decoder_block_out_channels=(16, 32, 64),
    layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1), spatial_compression_ratio=16,
    temporal_compression_ratio=8, decoder_causal=False,
)
# Four up blocks with temporal-only and spatial-only upsamplers, an upsample_factor of 1 behind a width-changing
# resnet (conv_in), residual and non-residual upsamplers, zero padding.
VARIANT: dict[str, Any] = dict(
    BASE, decoder_block_out_channels=(32, 16, 32, 64), decoder_layers_per_block=(1, 1, 1, 1, 1),
    decoder_spatio_temporal_scaling=(True,) * 4, decoder_inject_noise=(False,) * 5,
    upsample_type=("spatiotemporal", "spatiotemporal", "temporal", "spatial"),
    upsample_residual=(True, True, False, True), upsample_factor=(1, 2, 2, 2), decoder_spatial_padding_mode="zeros",
)
# A timestep-conditioned causal decoder; a strided-conv encoder block; reflect padding in the encoder.
CONDITIONED: dict[str, Any] = dict(
    BASE, timestep_conditioning=True, decoder_causal=True, block_out_channels=(8, 16, 32, 32),
    downsample_type=("conv", "spatial", "temporal", "spatiotemporal"), encoder_spatial_padding_mode="reflect",
)
CONFIGS = {"base": BASE, "variant": VARIANT, "conditioned": CONDITIONED}
# The published Lightricks/LTX-2 vae/config.json values (diffusers' conversion script, version 2.0).
LTX2_PUBLISHED: dict[str, Any] = dict(
    block_out_channels=(256, 512, 1024, 2048), decoder_block_out_channels=(256, 512, 1024),
    layers_per_block=(4, 6, 6, 2, 2), decoder_layers_per_block=(5, 5, 5, 5), decoder_causal=False,
    timestep_conditioning=False, spatial_compression_ratio=32, temporal_compression_ratio=8,
)
FRAMES, SIZE = 17, 32  # -> latents (3, 2, 2)


def _reference(config: dict[str, Any], seed: int = 0) -> AutoencoderKLLTX2Video:
    torch.manual_seed(seed)
    ref = AutoencoderKLLTX2Video(**config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in ref.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * (0.2 if param.ndim > 1 else 0.5))
        if ref.decoder.timestep_scale_multiplier is not None:
            ref.decoder.timestep_scale_multiplier.fill_(1000.0)
        ref.latents_mean.copy_(torch.randn(ref.latents_mean.shape, generator=gen))
        ref.latents_std.copy_(torch.rand(ref.latents_std.shape, generator=gen) + 0.5)
    return ref


def _ours(ref: AutoencoderKLLTX2Video) -> LTX2VideoVAE:
    model = LTX2VideoVAE(LTX2VideoVAEConfig.from_dict(dict(ref.config))).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    return model


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request: pytest.FixtureRequest) -> tuple[str, AutoencoderKLLTX2Video, LTX2VideoVAE]:
    ref = _reference(CONFIGS[request.param])
    return request.param, ref, _ours(ref)


def _video(seed: int = 3, batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, FRAMES, SIZE, SIZE, generator=gen) * 2 - 1


def _latents(seed: int = 4, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 8, 3, 2, 2, generator=torch.Generator().manual_seed(seed))


def _timestep(ref: AutoencoderKLLTX2Video) -> torch.Tensor | None:
    return torch.tensor([0.05, 0.4]) if ref.config.timestep_conditioning else None


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# ------------------------------------------------------------------ structure


def test_state_dict_identical(pair) -> None:
    _, ref, ours = pair
    assert _shapes(ours) == _shapes(ref)


def test_published_ltx2_config_state_dict_matches() -> None:
    with torch.device("meta"):
        ref = AutoencoderKLLTX2Video(**LTX2_PUBLISHED)
        ours = LTX2VideoVAE(LTX2VideoVAEConfig.from_dict(dict(ref.config)))
    assert _shapes(ours) == _shapes(ref)
    assert (ours.spatial_compression_ratio, ours.temporal_compression_ratio) == (32, 8)


def test_variant_exercises_width_changing_up_block() -> None:
    ours = _ours(_reference(VARIANT))
    assert any(block.conv_in is not None for block in ours.decoder.up_blocks)
    assert any(not block.upsamplers[0].residual for block in ours.decoder.up_blocks)


# ------------------------------------------------------------------ parity


def test_encode_matches_diffusers(pair) -> None:
    name, ref, ours = pair
    video = _video()
    with torch.no_grad():
        expected = ref.encode(video).latent_dist
    got = ours.encode(video)
    assert got.mean.shape == (2, 8, 3, 2, 2)
    assert _max_diff(got.mode(), expected.mode()) <= TOL, name
    assert _max_diff(got.logvar, expected.logvar) <= TOL, name
    assert _max_diff(got.std, expected.std) <= TOL, name
    drawn = got.sample(torch.Generator().manual_seed(7))  # the "sample" mode of retrieve_latents, same noise
    assert _max_diff(drawn, expected.sample(torch.Generator().manual_seed(7))) <= TOL, name


@pytest.mark.parametrize("causal", [None, True, False])
def test_decode_matches_diffusers(pair, causal: bool | None) -> None:
    name, ref, ours = pair
    z, timestep = _latents(), _timestep(ref)
    with torch.no_grad():
        expected = ref.decode(z, timestep, causal=causal).sample
    got = ours.decode(z, timestep, causal=causal)
    assert got.shape == (2, 3, FRAMES, SIZE, SIZE)
    assert _max_diff(got, expected) <= TOL, (name, causal)


@pytest.mark.parametrize("name", ["base", "conditioned"])
def test_bf16_matches_diffusers(name: str) -> None:
    ref = _reference(CONFIGS[name])
    ours = _ours(ref).to(torch.bfloat16)
    ref = ref.to(torch.bfloat16)
    video, z = _video().to(torch.bfloat16), _latents().to(torch.bfloat16)
    timestep = _timestep(ref)
    timestep = None if timestep is None else timestep.to(torch.bfloat16)
    with torch.no_grad():
        enc = ref.encode(video).latent_dist.mode()
        dec = ref.decode(z, timestep).sample
    got_enc, got_dec = ours.encode(video).mode(), ours.decode(z, timestep)
    assert got_enc.dtype == got_dec.dtype == torch.bfloat16
    assert _max_diff(got_enc.float(), enc.float()) <= BF16_TOL
    assert _max_diff(got_dec.float(), dec.float()) <= BF16_TOL


def test_decode_causality_changes_the_output() -> None:
    """The non-causal decoder really pads both sides: causal=True gives another video (so the test above can fail)."""
    ours = _ours(_reference(BASE))
    z = _latents(batch=1)
    assert _max_diff(ours.decode(z, causal=True), ours.decode(z)) > 1e-2


def test_decode_timestep_matters_and_is_required() -> None:
    ours = _ours(_reference(CONDITIONED))
    z = _latents(batch=1)
    assert _max_diff(ours.decode(z, 0.05), ours.decode(z, torch.tensor([0.5]))) > 1e-3
    with pytest.raises(ValueError, match="decode_timestep"):
        ours.decode(z)


def test_single_frame_and_batch_one(pair) -> None:
    name, ref, ours = pair
    image = _video(batch=1)[:, :, :1]
    with torch.no_grad():
        expected = ref.encode(image).latent_dist.mode()
    assert _max_diff(ours.encode(image).mode(), expected) <= TOL, name


def test_bad_shapes_are_refused() -> None:
    ours = _ours(_reference(BASE))
    with pytest.raises(ValueError, match="8\\*k\\+1"):
        ours.encode(_video(batch=1)[:, :, :16])
    with pytest.raises(ValueError, match="multiples of 16"):
        ours.encode(_video(batch=1)[..., :24])
    with pytest.raises(ValueError, match="latents"):
        ours.decode(torch.zeros(1, 4, 3, 2, 2))
    with pytest.raises(ValueError, match="reflect padding; use at least 32x32 pixels"):
        ours.decode(torch.zeros(1, 8, 3, 1, 2))


# ------------------------------------------------------------------ loading


def test_load_from_save_pretrained_folder(tmp_path: Path) -> None:
    ref = _reference(CONDITIONED)
    ref.save_pretrained(tmp_path / "vae", max_shard_size="200KB")  # sharded safetensors + index
    assert list((tmp_path / "vae").glob("*.safetensors.index.json"))
    ours = load_ltx2_video_vae(tmp_path / "vae")
    assert not any(p.requires_grad for p in ours.parameters())
    torch.testing.assert_close(ours.latents_std, ref.latents_std, rtol=0, atol=0)
    video, z, timestep = _video(), _latents(), _timestep(ref)
    with torch.no_grad():
        enc = ref.encode(video).latent_dist.mode()
        dec = ref.decode(z, timestep).sample
    assert _max_diff(ours.encode(video).mode(), enc) <= TOL
    assert _max_diff(ours.decode(z, timestep), dec) <= TOL


def test_load_refuses_other_class_and_bad_weights(tmp_path: Path) -> None:
    ref = _reference(BASE)
    ref.save_pretrained(tmp_path / "vae")
    config = (tmp_path / "vae" / "config.json")
    text = config.read_text()
    config.write_text(text.replace('"AutoencoderKLLTX2Video"', '"AutoencoderKLWan"'))
    with pytest.raises(ModelLoadError, match="AutoencoderKLWan"):
        load_ltx2_video_vae(tmp_path / "vae")
    config.write_text(text.replace('"latent_channels": 8', '"latent_channels": 16'))
    with pytest.raises(ModelLoadError, match="different models"):
        load_ltx2_video_vae(tmp_path / "vae")
    config.write_text(text.replace('"patch_size_t": 1', '"patch_size_t": 2'))
    with pytest.raises(ModelLoadError, match="patch_size_t"):
        load_ltx2_video_vae(tmp_path / "vae")


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("change, error, field", [
    ({"not_a_field": 1}, ValueError, "not_a_field"),
    ({"decoder_inject_noise": True}, NotImplementedError, "decoder_inject_noise"),
    ({"downsample_type": ("spatial", "temporal", "spatiotemporal", "diagonal")}, ValueError, "downsample_type"),
    ({"upsample_factor": (2, 2)}, ValueError, "upsample_factor"),
    ({"decoder_spatial_padding_mode": "mirror"}, ValueError, "decoder_spatial_padding_mode"),
    ({"spatial_compression_ratio": 32}, ValueError, "spatial_compression_ratio: 16"),
    ({"spatial_compression_ratio": None}, ValueError, "diffusers' default formula"),
    ({"decoder_block_out_channels": (16, 32, 48)}, ValueError, "decoder block"),
])
def test_config_refusals_name_the_field(change: dict[str, Any], error: type[Exception], field: str) -> None:
    with pytest.raises(error, match=field):
        LTX2VideoVAEConfig.from_dict({**BASE, **change, "_class_name": "AutoencoderKLLTX2Video"})


def test_config_refuses_a_decoder_diffusers_cannot_run() -> None:
    """A width-changing up block after a x2 one (LTX-2.3's layout in later converters): diffusers 0.42 builds it
    and then fails at decode; we refuse it up front."""
    bad = dict(VARIANT, decoder_block_out_channels=(16, 32, 32, 64), upsample_factor=(2, 1, 2, 2))
    with pytest.raises(RuntimeError):
        with torch.no_grad():
            _reference(bad).decode(_latents(batch=1))
    with pytest.raises(ValueError, match="decoder block 3"):
        LTX2VideoVAEConfig.from_dict(bad)


def test_config_round_trips_diffusers_json() -> None:
    ref = _reference(VARIANT)
    cfg = LTX2VideoVAEConfig.from_dict(dict(ref.config))
    assert LTX2VideoVAEConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.video_num_frames(cfg.latent_num_frames(FRAMES)) == FRAMES


# ------------------------------------------------------------------ latents helpers


@pytest.mark.parametrize("patch_size, patch_size_t", [(1, 1), (2, 1), (2, 2)])
def test_pack_unpack_match_pipeline(patch_size: int, patch_size_t: int) -> None:
    latents = torch.randn(2, 6, 4, 4, 6, generator=torch.Generator().manual_seed(5))
    packed = pack_latents(latents, patch_size, patch_size_t)
    expected = LTX2Pipeline._pack_latents(latents, patch_size, patch_size_t)
    assert torch.equal(packed, expected)
    grid = (4 // patch_size_t, 4 // patch_size, 6 // patch_size)
    unpacked = unpack_latents(packed, *grid, patch_size, patch_size_t)
    assert torch.equal(unpacked, LTX2Pipeline._unpack_latents(expected, *grid, patch_size, patch_size_t))
    assert torch.equal(unpacked, latents)
    with pytest.raises(ValueError, match="latent grid"):
        unpack_latents(packed, grid[0] + 1, grid[1], grid[2], patch_size, patch_size_t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_normalization_matches_pipeline(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(6)
    latents = torch.randn(2, 8, 3, 2, 2, generator=gen).to(dtype)
    mean, std = torch.randn(8, generator=gen), torch.rand(8, generator=gen) + 0.5
    for scaling in (1.0, 0.7):
        assert torch.equal(normalize_latents(latents, mean, std, scaling),
                           LTX2Pipeline._normalize_latents(latents, mean, std, scaling))
        assert torch.equal(denormalize_latents(latents, mean, std, scaling),
                           LTX2Pipeline._denormalize_latents(latents, mean, std, scaling))
    ref = _reference(BASE)
    ours = _ours(ref)
    assert torch.equal(ours.normalize_latents(latents),
                       LTX2Pipeline._normalize_latents(latents, ref.latents_mean, ref.latents_std,
                                                       ref.config.scaling_factor))
    assert torch.equal(ours.denormalize_latents(latents),
                       LTX2Pipeline._denormalize_latents(latents, ref.latents_mean, ref.latents_std,
                                                         ref.config.scaling_factor))


# ------------------------------------------------------------------ benchmark script


def test_bench_vae_smoke(tmp_path: Path) -> None:
    """``benchmarks/bench_vae.py --family ltx2`` runs the tiny config and reports exact parity."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_vae.py"
    spec = importlib.util.spec_from_file_location("_bench_vae", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "vae.json"
    assert module.main(["--family", "ltx2", "--device", "cpu", "--size", "64x64x9", "--iters", "1",
                        "--warmup", "0", "--timestep-conditioning", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["workload"]["latent_grid"] == [2, 2, 2]
    assert result["decode"]["max_abs_diff"] <= TOL


@pytest.mark.parametrize("timestep, scale, generators", [
    (0.05, None, 1), ([0.05, 0.5], None, 2), (0.05, 0.025, 1), ([0.1, 0.2], [0.3, 0.0], 0)])
def test_mix_decode_noise_matches_pipeline(timestep: Any, scale: Any, generators: int) -> None:
    """LTX2Pipeline's timestep-conditioned decode preamble, written out from its source with diffusers'
    randn_tensor: the same noise from the same generator(s), the same per-row mix, the same timestep tensor."""
    from diffusers.utils.torch_utils import randn_tensor

    from fastvideo.engine.models.ltx2.latents import mix_decode_noise

    latents = torch.randn(2, 8, 3, 2, 2, generator=torch.Generator().manual_seed(8))

    def gens() -> Any:
        seeded = [torch.Generator().manual_seed(20 + i) for i in range(max(generators, 1))]
        return None if generators == 0 else seeded[0] if generators == 1 else seeded

    torch.manual_seed(9)
    got, got_t = mix_decode_noise(latents, timestep, scale, gens())
    torch.manual_seed(9)
    noise = randn_tensor(latents.shape, generator=gens(), device=latents.device, dtype=latents.dtype)
    ts = timestep if isinstance(timestep, list) else [timestep] * 2
    sc = ts if scale is None else scale if isinstance(scale, list) else [scale] * 2
    expected_t = torch.tensor(ts, dtype=latents.dtype)
    sc_t = torch.tensor(sc, dtype=latents.dtype)[:, None, None, None, None]
    assert torch.equal(got_t, expected_t)
    assert torch.equal(got, (1 - sc_t) * latents + sc_t * noise)
    assert _max_diff(got, latents) > 1e-3  # noise really went in
    with pytest.raises(ValueError, match="decode_timestep"):
        mix_decode_noise(latents, [0.1, 0.2, 0.3])


# ------------------------------------------------------------------ tiling


@pytest.mark.parametrize("name", ["base", "conditioned"])
@pytest.mark.parametrize("spatial, temporal", [(True, False), (False, True), (True, True)])
def test_tiled_matches_diffusers_tiling(name: str, spatial: bool, temporal: bool) -> None:
    """diffusers' enable_tiling (spatial) and use_framewise_decoding (temporal; it also governs encoding) against
    LTX2VAETiling on the same knobs: 64x64 pixels in 48-pixel tiles every 32 (4x4 latents: two tiles a side,
    none thinner than the 2 pixels reflect padding needs), 25 frames in 16-frame tiles every 8."""
    from fastvideo.engine.models.ltx2.vae import LTX2VAETiling

    ref = _reference(CONFIGS[name])
    ours = _ours(ref)
    tiling = LTX2VAETiling(spatial=spatial, temporal=temporal, min_height=48, min_width=48, stride_height=32,
                           stride_width=32, min_num_frames=16, stride_num_frames=8)
    ref.use_tiling = spatial
    ref.use_framewise_decoding = temporal
    ref.tile_sample_min_height = ref.tile_sample_min_width = 48
    ref.tile_sample_stride_height = ref.tile_sample_stride_width = 32
    ref.tile_sample_min_num_frames, ref.tile_sample_stride_num_frames = 16, 8
    z = torch.randn(2, 8, 4, 4, 4, generator=torch.Generator().manual_seed(11))
    video = torch.rand(2, 3, 25, 64, 64, generator=torch.Generator().manual_seed(12)) * 2 - 1
    timestep = _timestep(ref)
    with torch.no_grad():
        dec = ref.decode(z, timestep).sample
        enc = ref.encode(video).latent_dist
    got_dec = ours.decode(z, timestep, tiling=tiling)
    got_enc = ours.encode(video, tiling=tiling)
    assert _max_diff(got_dec, dec) <= TOL
    assert _max_diff(got_enc.mode(), enc.mode()) <= TOL
    assert _max_diff(got_enc.logvar, enc.logvar) <= TOL
    # the tiled path really ran: near the seams it differs from the untiled result
    assert _max_diff(got_dec, ours.decode(z, timestep)) > 1e-3
    assert _max_diff(got_enc.mode(), ours.encode(video).mode()) > 1e-3


def test_tiling_config_refusals() -> None:
    from fastvideo.engine.models.ltx2.vae import LTX2VAETiling

    with pytest.raises(ValueError, match="stride_width"):
        LTX2VAETiling(min_width=32, stride_width=64)
    with pytest.raises(ValueError, match="min_num_frames"):
        LTX2VAETiling(min_num_frames=0)
