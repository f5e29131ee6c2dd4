"""Parity of fastvideo.engine.models.wan.vae.WanVAE with diffusers' AutoencoderKLWan (Wan2.1) on a tiny config."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLWan  # noqa: E402

from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution  # noqa: E402

from fastvideo.engine.models.wan.vae import DiagonalGaussian, WanVAE, WanVAEConfig  # noqa: E402

TINY = dict(
    base_dim=8,
    z_dim=4,
    dim_mult=[1, 2, 2, 2],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    dropout=0.0,
    latents_mean=[0.3, -0.5, 1.2, -0.1],
    latents_std=[2.0, 0.7, 1.5, 3.1],
)
ATOL = 1e-4


@pytest.fixture(scope="module")
def models() -> tuple[AutoencoderKLWan, WanVAE]:
    torch.manual_seed(0)
    ref = AutoencoderKLWan(**TINY).eval()
    with torch.no_grad():  # non-trivial norm gains so a misplaced gamma cannot go unnoticed
        for name, p in ref.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    ours = WanVAE(WanVAEConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_state_dict_keys_and_shapes_identical(models) -> None:
    ref, ours = models
    assert _shapes(ours) == _shapes(ref)


@pytest.mark.parametrize("kwargs", [
    {},  # the real Wan2.1 VAE (built on the meta device: no memory, no init cost)
    dict(TINY, attn_scales=[1.0, 0.5], dim_mult=[1, 2, 4], temperal_downsample=[True, False]),
])
def test_state_dict_matches_for_other_configs(kwargs) -> None:
    with torch.device("meta"):
        ref = AutoencoderKLWan(**kwargs)
        ours = WanVAE(WanVAEConfig.from_dict(dict(ref.config)))
    assert _shapes(ours) == _shapes(ref)


@pytest.mark.parametrize("t,h,w,b", [(1, 4, 4, 1), (2, 3, 5, 2), (3, 3, 5, 1), (3, 4, 6, 1)])
def test_decode_matches_diffusers(models, t: int, h: int, w: int, b: int) -> None:
    ref, ours = models
    z = torch.randn(b, 4, t, h, w, generator=torch.Generator().manual_seed(t * 100 + h * 10 + w))
    with torch.no_grad():
        expected = ref.decode(z).sample
    got = ours.decode(z)
    assert got.shape == (b, 3, 4 * (t - 1) + 1, 8 * h, 8 * w) == expected.shape
    assert got.dtype == torch.float32
    # the comparison is meaningful only if most values are not sitting on the clamp
    assert (got.abs() < 0.999).float().mean() > 0.5
    assert (got - expected).abs().max().item() <= ATOL


def test_decode_chunk_size_is_equivalent(models) -> None:
    """Causal cache correctness: decoding several latent frames per chunk equals one at a time."""
    _, ours = models
    z = torch.randn(1, 4, 4, 3, 5, generator=torch.Generator().manual_seed(7))
    one = ours.decode(z)
    for chunk in (2, 3):
        assert (ours.decode(z, chunk_size=chunk) - one).abs().max().item() <= ATOL


@pytest.mark.parametrize("frames,h,w", [(5, 16, 16), (9, 24, 40), (1, 16, 8)])
def test_encode_matches_diffusers(models, frames: int, h: int, w: int) -> None:
    ref, ours = models
    video = torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(frames)) * 2 - 1
    with torch.no_grad():
        expected = ref.encode(video).latent_dist
    post = ours.encode(video)
    assert post.mode().shape == (1, 4, (frames - 1) // 4 + 1, h // 8, w // 8) == expected.mean.shape
    assert (post.mode() - expected.mean).abs().max().item() <= ATOL
    assert (post.logvar - expected.logvar).abs().max().item() <= ATOL
    got_sample = post.sample(torch.Generator().manual_seed(3))
    exp_sample = expected.sample(torch.Generator().manual_seed(3))
    assert (got_sample - exp_sample).abs().max().item() <= ATOL


def test_posterior_matches_diffusers_including_logvar_clamp() -> None:
    params = 40.0 * torch.randn(2, 8, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    ours, ref = DiagonalGaussian(params), DiagonalGaussianDistribution(params)
    assert ref.logvar.min() == -30.0 and ref.logvar.max() == 20.0  # the clamp is exercised
    assert torch.equal(ours.mode(), ref.mode()) and torch.equal(ours.logvar, ref.logvar)
    assert torch.equal(ours.std, ref.std)
    g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    assert torch.equal(ours.sample(g1), ref.sample(g2))


def test_encode_chunk_size_and_frame_validation(models) -> None:
    _, ours = models
    video = torch.rand(1, 3, 9, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a, b = ours.encode(video).mode(), ours.encode(video, chunk_size=2).mode()
    assert (a - b).abs().max().item() <= ATOL
    with pytest.raises(ValueError, match="4\\*k\\+1"):
        ours.encode(video[:, :, :6])


def test_bf16_decode_finite(models) -> None:
    _, ours = models
    bf16 = WanVAE(ours.config).to(torch.bfloat16).eval()
    bf16.load_state_dict(ours.state_dict())
    z = torch.randn(1, 4, 2, 3, 5, generator=torch.Generator().manual_seed(5))
    out = bf16.decode(z.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 5, 24, 40)
    assert torch.isfinite(out).all()
    assert (out.float() - ours.decode(z)).abs().max().item() < 0.25


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_latent_normalization_matches_pipelines(models, dtype: torch.dtype) -> None:
    _, ours = models
    cfg = ours.config
    x = torch.randn(2, 4, 3, 2, 2, generator=torch.Generator().manual_seed(0)).to(dtype)
    # diffusers pipeline_wan.py (before vae.decode) and pipeline_wan_i2v.py (after vae.encode)
    mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(x.device, x.dtype)
    inv_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(x.device, x.dtype)
    raw = ours.denormalize_latents(x)
    assert torch.equal(raw, x / inv_std + mean)
    assert torch.equal(ours.normalize_latents(raw), (raw - mean) * inv_std)
    # and in plain math: raw = x * std + mean
    std32 = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    mean32 = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    assert torch.allclose(raw.float(), x.float() * std32 + mean32, atol=tol, rtol=tol)
    assert torch.allclose(ours.normalize_latents(raw).float(), x.float(), atol=tol, rtol=tol)


def test_config_dict_handling() -> None:
    cfg = WanVAEConfig.from_dict({"_class_name": "AutoencoderKLWan", "_diffusers_version": "0.33", **TINY})
    assert cfg.spatial_factor == 8 and cfg.temporal_factor == 4
    assert WanVAEConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.latent_num_frames(81) == 21 and cfg.video_num_frames(21) == 81
    with pytest.raises(ValueError, match="'not_a_field'"):
        WanVAEConfig.from_dict({**TINY, "not_a_field": 1})
    with pytest.raises(ValueError, match="latents_mean"):
        WanVAEConfig.from_dict({**TINY, "latents_mean": [0.0]})


def test_default_config_matches_diffusers_defaults() -> None:
    with torch.device("meta"):
        defaults = {k: v for k, v in dict(AutoencoderKLWan().config).items() if not k.startswith("_")}
    assert WanVAEConfig().to_dict() == defaults
