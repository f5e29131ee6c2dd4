"""Parity of our Wan VAE (engine/models/wan/vae.py) with diffusers' AutoencoderKLWan as the Wan2.2 (TI2V-5B) VAE.

A tiny config keeps what makes the Wan2.2 VAE different (``is_residual=True``, ``patch_size=2`` with 12
pixel channels, ``decoder_base_dim != base_dim``, 48 latent channels with the real latent stats, 4x temporal
and 16x spatial compression); weights are random (with non-trivial norm gains). Loaded both from the
diffusers state dict and, through our meta-device loader, from a ``save_pretrained`` folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLWan  # noqa: E402
from diffusers.models.autoencoders import autoencoder_kl_wan as ref_module  # noqa: E402

from fastvideo.engine.loader import load_module_weights, read_json  # noqa: E402
from fastvideo.engine.models.wan.vae import WanVAE, WanVAEConfig, patchify, unpatchify  # noqa: E402

REAL = WanVAEConfig.wan22_ti2v_5b()
TINY = dict(
    base_dim=8,
    decoder_base_dim=12,
    z_dim=48,
    dim_mult=[1, 2, 2, 2],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    is_residual=True,
    patch_size=2,
    in_channels=12,
    out_channels=12,
    scale_factor_spatial=16,
    latents_mean=REAL.latents_mean,
    latents_std=REAL.latents_std,
)
ATOL = 1e-4
CPU = torch.device("cpu")


def _reference() -> AutoencoderKLWan:
    torch.manual_seed(0)
    ref = AutoencoderKLWan(**TINY).eval()
    with torch.no_grad():  # non-trivial norm gains so a misplaced gamma cannot go unnoticed
        for name, p in ref.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    return ref


@pytest.fixture(scope="module")
def ref() -> AutoencoderKLWan:
    return _reference()


@pytest.fixture(scope="module")
def ours(ref: AutoencoderKLWan) -> WanVAE:
    model = WanVAE(WanVAEConfig.from_dict(dict(ref.config))).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    return model


@pytest.fixture(scope="module")
def loaded(ref: AutoencoderKLWan, tmp_path_factory: pytest.TempPathFactory) -> WanVAE:
    """Ours, built on the meta device from the saved config.json and filled by our loader."""
    folder = tmp_path_factory.mktemp("wan22_vae")
    ref.save_pretrained(folder)
    with torch.device("meta"):
        model = WanVAE(WanVAEConfig.from_dict(read_json(folder / "config.json")))
    return load_module_weights(model, folder, dtype=torch.float32, device=CPU)


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _video(b: int, n: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(b, 3, n, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_geometry_and_state_dict_match(ref: AutoencoderKLWan, ours: WanVAE) -> None:
    assert _shapes(ours) == _shapes(ref)
    assert ours.spatial_factor == 16 == ref.config.scale_factor_spatial
    assert ours.temporal_factor == 4
    assert ours.config.video_in_channels == ours.config.video_out_channels == 3


def test_real_ti2v_5b_config_matches_diffusers() -> None:
    """The full TI2V-5B VAE (meta device: no memory) has diffusers' exact keys and shapes."""
    saved = {"_class_name": "AutoencoderKLWan", "_diffusers_version": "0.35.0.dev0", "clip_output": False,
             **REAL.to_dict()}
    cfg = WanVAEConfig.from_dict(saved)  # clip_output, in the real file, is ignored as diffusers does
    assert cfg == REAL and cfg.spatial_factor == 16 and cfg.latent_num_frames(121) == 31
    assert len(cfg.latents_mean) == len(cfg.latents_std) == 48
    assert (cfg.latents_mean[0], cfg.latents_std[0], cfg.latents_std[-1]) == (-0.2289, 0.4765, 0.7744)
    with torch.device("meta"):
        theirs = AutoencoderKLWan(**REAL.to_dict())
        mine = WanVAE(cfg)
    assert _shapes(mine) == _shapes(theirs)
    assert {k: v for k, v in dict(theirs.config).items() if not k.startswith("_")} == REAL.to_dict()


@pytest.mark.parametrize("t,h,w", [(1, 2, 3), (3, 2, 3)])
def test_decode_matches_diffusers(ref: AutoencoderKLWan, ours: WanVAE, loaded: WanVAE,
                                  t: int, h: int, w: int) -> None:
    z = torch.randn(2, 48, t, h, w, generator=torch.Generator().manual_seed(10 * t + h))
    with torch.no_grad():
        expected = ref.decode(z).sample
    assert expected.shape == (2, 3, 4 * (t - 1) + 1, 16 * h, 16 * w)
    for model in (ours, loaded):
        got = model.decode(z)
        assert got.shape == expected.shape and got.dtype == torch.float32
        assert (got.abs() < 0.999).float().mean() > 0.5  # not sitting on the clamp
        assert (got - expected).abs().max().item() <= ATOL


@pytest.mark.parametrize("n", [1, 9])
def test_encode_matches_diffusers(ref: AutoencoderKLWan, ours: WanVAE, loaded: WanVAE, n: int) -> None:
    video = _video(2, n, 32, 48, seed=n)
    with torch.no_grad():
        expected = ref.encode(video).latent_dist
    for model in (ours, loaded):
        got = model.encode(video)
        assert got.mode().shape == expected.mode().shape == (2, 48, (n - 1) // 4 + 1, 2, 3)
        assert (got.mode() - expected.mode()).abs().max().item() <= ATOL
        assert (got.logvar - expected.logvar).abs().max().item() <= ATOL


def test_chunk_size_is_equivalent(ours: WanVAE) -> None:
    """The residual shortcuts' first-chunk handling also holds when later chunks carry several frames."""
    z = torch.randn(1, 48, 4, 2, 3, generator=torch.Generator().manual_seed(3))
    assert (ours.decode(z, chunk_size=3) - ours.decode(z)).abs().max().item() <= 1e-5
    video = _video(1, 9, 32, 32, seed=4)
    assert (ours.encode(video, chunk_size=2).mode() - ours.encode(video).mode()).abs().max().item() <= 1e-5


def test_patchify_matches_diffusers() -> None:
    x = torch.randn(2, 3, 5, 4, 6)
    packed = patchify(x, 2)
    assert torch.equal(packed, ref_module.patchify(x, 2))
    assert torch.equal(unpatchify(packed, 2), ref_module.unpatchify(packed, 2))
    assert torch.equal(unpatchify(packed, 2), x)


def test_bad_inputs_are_refused(ours: WanVAE) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, N, H, W\)"):
        ours.encode(torch.zeros(1, 12, 1, 32, 32))  # already patchified
    with pytest.raises(ValueError, match="multiples of patch_size=2"):
        ours.encode(torch.zeros(1, 3, 1, 32, 33))
    with pytest.raises(ValueError, match="4\\*k\\+1"):
        ours.encode(torch.zeros(1, 3, 4, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 48, T, h, w\)"):
        ours.decode(torch.zeros(1, 16, 1, 2, 2))


@pytest.mark.parametrize("change,field", [
    ({"attn_scales": [1.0]}, "attn_scales"),  # no attention in residual stages: diffusers would ignore it
    ({"in_channels": 10}, "in_channels"),
    ({"out_channels": 6}, "out_channels"),
    ({"patch_size": 0}, "patch_size"),
    ({"patch_size": True}, "patch_size"),
    ({"base_dim": 3, "dim_mult": [1, 3, 3, 3]}, "residual down block"),  # 3 -> 9 channels cannot fold evenly
    ({"latents_std": [1.0] * 16}, "latents_std"),
    ({"clip_outputs": False}, "'clip_outputs'"),  # unknown keys are still refused
])
def test_invalid_wan22_configs_refused(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        with torch.device("meta"):
            WanVAE(WanVAEConfig.from_dict({**TINY, **change}))


def test_saved_config_is_what_we_read(ref: AutoencoderKLWan, tmp_path: Path) -> None:
    ref.save_config(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    cfg = WanVAEConfig.from_dict(saved)
    assert cfg.is_residual and cfg.patch_size == 2 and cfg.decoder_base_dim == 12 and cfg.z_dim == 48


def test_bf16_runs_and_stays_close(ours: WanVAE) -> None:
    """bf16 weights (as the pipeline loads them): finite, near the fp32 result, in the latents' dtype."""
    bf16 = WanVAE(ours.config).eval().to(torch.bfloat16)
    bf16.load_state_dict(ours.state_dict())
    z = torch.randn(1, 48, 2, 2, 2, generator=torch.Generator().manual_seed(5))
    got = bf16.decode(z.bfloat16())
    assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
    assert (got.float() - ours.decode(z)).abs().max().item() < 0.1
    mode = bf16.encode(_video(1, 5, 32, 32, seed=6).bfloat16()).mode()
    assert mode.dtype == torch.bfloat16 and torch.isfinite(mode).all()
