"""Parity of our LTX-2 audio VAE and vocoder with diffusers 0.42 (``AutoencoderKLLTX2Audio``, ``LTX2Vocoder``).

Tiny random models built from the real diffusers classes, every parameter re-drawn from seeded noise; ours load
their state dicts strictly, and also through our meta-device loader from folders ``save_pretrained`` wrote
(sharded too). The audio-latent length rule and the pipeline's audio tail (denormalize, unpack, decode, vocode)
are checked against a real tiny ``LTX2Pipeline``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
from diffusers import AutoencoderKLLTX2Audio  # noqa: E402
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder as DiffusersVocoder  # noqa: E402
from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE  # noqa: E402

from fastvideo.api.errors import ModelLoadError  # noqa: E402
from fastvideo.engine.models.ltx2 import (  # noqa: E402
    LTX2AudioVAE, LTX2AudioVAEConfig, LTX2Vocoder, LTX2VocoderBWE, LTX2VocoderBWEConfig, LTX2VocoderConfig,
    audio_latent_length, load_ltx2_audio_vae,
    load_ltx2_vocoder, mel_to_waveform, normalize_audio_latents, pack_audio_latents, unpack_audio_latents)

from ltx2_side_fixtures import reseed_parameters, tiny_pipeline  # noqa: E402

FP32_TOL = 1e-4

VAE_CONFIGS: dict[str, dict[str, Any]] = {
    # the published layout (pixel norm, causal in time), small
    "causal-height": dict(base_channels=8, ch_mult=(1, 2), num_res_blocks=1, latent_channels=4, mel_bins=16,
                          resolution=16),
    # attention in the levels and the middle, three levels, causal along the mel axis
    "attn-width": dict(base_channels=8, ch_mult=(1, 2, 2), num_res_blocks=1, latent_channels=2, mel_bins=16,
                       attn_resolutions=(16, 8), resolution=16, mid_block_add_attention=True, causality_axis="width"),
    # GroupNorm (32 groups), non-causal, no double_z
    "group-none": dict(base_channels=32, ch_mult=(1, 1), num_res_blocks=2, latent_channels=4, mel_bins=12,
                       norm_type="group", causality_axis="none", double_z=False, output_channels=1, in_channels=1),
}
VOCODER_BASE: dict[str, Any] = dict(
    in_channels=32, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[6, 5, 4], upsample_factors=[3, 5, 2],
    resnet_kernel_sizes=[3, 5], resnet_dilations=[[1, 3], [1, 2]], output_sampling_rate=2400)
VOCODER_CONFIGS: dict[str, dict[str, Any]] = {
    "leaky-tanh": VOCODER_BASE,  # LTX-2.0's vocoder
    "snakebeta-antialias": dict(VOCODER_BASE, act_fn="snakebeta", antialias=True, final_act_fn=None,
                                final_bias=False),
    "snake-clamp": dict(VOCODER_BASE, act_fn="snake", final_act_fn="clamp"),
}


def _ref_vae(config: dict[str, Any], seed: int = 0) -> AutoencoderKLLTX2Audio:
    torch.manual_seed(seed)
    ref = reseed_parameters(AutoencoderKLLTX2Audio(**config).eval(), seed + 1, scale=0.2)
    with torch.no_grad():
        ref.latents_mean.normal_()
        ref.latents_std.uniform_(0.5, 2.0)
    return ref


def _ref_vocoder(config: dict[str, Any], seed: int = 0) -> DiffusersVocoder:
    torch.manual_seed(seed)
    return reseed_parameters(DiffusersVocoder(**config).eval(), seed + 1, scale=0.1)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", sorted(VAE_CONFIGS))
def test_audio_vae_decode_and_encode_match_diffusers(name: str) -> None:
    ref = _ref_vae(VAE_CONFIGS[name])
    ours = LTX2AudioVAE(LTX2AudioVAEConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    cfg = ours.config
    z = torch.randn(2, cfg.latent_channels, 5, cfg.latent_mel_bins, generator=torch.Generator().manual_seed(7))
    mel = torch.randn(2, cfg.in_channels, 17, cfg.mel_bins or 16, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected_mel = ref.decode(z).sample
        expected_mean = ref.encode(mel).latent_dist.mode()
        expected_draw = ref.encode(mel).latent_dist.sample(generator=torch.Generator().manual_seed(9))
    decoded = ours.decode(z)
    assert decoded.shape == (2, cfg.output_channels, 4 * 5 - 3, cfg.mel_bins)
    assert expected_mel.abs().max() > 0.1  # not a degenerate output
    assert _max_diff(decoded, expected_mel) <= FP32_TOL
    assert _max_diff(ours.encode(mel), expected_mean) <= FP32_TOL
    draw = ours.encode(mel, sample=True, generator=torch.Generator().manual_seed(9))
    assert _max_diff(draw, expected_draw) <= FP32_TOL


@pytest.mark.parametrize("name", sorted(VOCODER_CONFIGS))
def test_vocoder_matches_diffusers(name: str) -> None:
    ref = _ref_vocoder(VOCODER_CONFIGS[name])
    ours = LTX2Vocoder(LTX2VocoderConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    mel = torch.randn(2, 2, 9, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = ref(mel)
        expected_time_last = ref(mel.transpose(2, 3), time_last=True)
        wave = ours(mel)
    assert wave.shape == expected.shape and wave.shape[:2] == (2, 2)
    assert 0.05 < expected.abs().max() < 0.99  # neither silent nor saturated: the comparison means something
    assert _max_diff(wave, expected) <= FP32_TOL
    with torch.no_grad():
        assert _max_diff(ours(mel.transpose(2, 3), time_last=True), expected_time_last) <= FP32_TOL


# LTX-2.3's vocoder: stage-1 generator, causal log-mel, BWE generator, Hann resampler (hop * BWE factor = 2 * 6 = 12
# = resample ratio 3 * stage-1 samples per hop ... sizes chosen so the two paths line up, as in the real model)
BWE_CONFIG: dict[str, Any] = dict(
    in_channels=16, hidden_channels=16, out_channels=2, upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2],
    resnet_kernel_sizes=[3], resnet_dilations=[[1, 3]], bwe_in_channels=16, bwe_hidden_channels=16,
    bwe_out_channels=2, bwe_upsample_kernel_sizes=[5, 4], bwe_upsample_factors=[3, 2], bwe_resnet_kernel_sizes=[3],
    bwe_resnet_dilations=[[1, 2]], filter_length=16, hop_length=2, window_length=16, num_mel_channels=8,
    input_sampling_rate=800, output_sampling_rate=2400)


def test_bwe_vocoder_matches_diffusers_and_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = reseed_parameters(LTX2VocoderWithBWE(**BWE_CONFIG).eval(), 1, scale=0.1)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # diffusers zero-inits the STFT / mel bases (they come from the checkpoint)
        for name, buf in ref.named_buffers():
            if "basis" in name:
                buf.copy_(torch.rand(buf.shape, generator=gen) * (1.0 if "mel" in name else 0.5))
    ours = LTX2VocoderBWE(LTX2VocoderBWEConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    mel = torch.randn(2, 2, 9, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = ref(mel)
        assert expected.shape == (2, 2, 9 * 4 * 3)
        assert 0.05 < expected.abs().max() < 0.99
        assert _max_diff(ours(mel), expected) <= FP32_TOL
    ref.save_pretrained(tmp_path / "vocoder")
    loaded = load_ltx2_vocoder(tmp_path / "vocoder")  # by _class_name; the Hann kernel is rebuilt off meta
    assert isinstance(loaded, LTX2VocoderBWE)
    with torch.no_grad():
        assert _max_diff(loaded(mel), expected) <= FP32_TOL


def test_loaders_read_save_pretrained_folders(tmp_path: Path) -> None:
    ref_vae = _ref_vae(VAE_CONFIGS["attn-width"])
    ref_vae.save_pretrained(tmp_path / "audio_vae", max_shard_size="20KB")  # sharded, with an index
    assert (tmp_path / "audio_vae" / "diffusion_pytorch_model.safetensors.index.json").exists()
    ref_voc = _ref_vocoder(VOCODER_CONFIGS["snakebeta-antialias"])
    ref_voc.save_pretrained(tmp_path / "vocoder")
    vae = load_ltx2_audio_vae(tmp_path / "audio_vae")
    vocoder = load_ltx2_vocoder(tmp_path / "vocoder")
    assert not any(t.is_meta for t in [*vae.parameters(), *vae.buffers(), *vocoder.parameters(), *vocoder.buffers()])
    z = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    mel = torch.randn(1, 2, 7, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert _max_diff(vae.decode(z), ref_vae.decode(z).sample) <= FP32_TOL
        assert torch.equal(vae.latents_std, ref_vae.latents_std)
        assert _max_diff(vocoder(mel), ref_voc(mel)) <= FP32_TOL


@pytest.mark.parametrize("kind", ["audio_vae", "vocoder", "vocoder_bwe"])
def test_published_size_state_dicts_match(kind: str) -> None:
    """diffusers' default (published) configs, built on the meta device: same keys and shapes as ours."""
    ref_cls, ours_cls, config_cls = {
        "audio_vae": (AutoencoderKLLTX2Audio, LTX2AudioVAE, LTX2AudioVAEConfig),
        "vocoder": (DiffusersVocoder, LTX2Vocoder, LTX2VocoderConfig),
        "vocoder_bwe": (LTX2VocoderWithBWE, LTX2VocoderBWE, LTX2VocoderBWEConfig),
    }[kind]
    with torch.device("meta"):
        ref = ref_cls()
        ours = ours_cls(config_cls.from_dict(dict(ref.config)))
    expected = {key: tuple(value.shape) for key, value in ref.state_dict().items()}
    assert {key: tuple(value.shape) for key, value in ours.state_dict().items()} == expected


def _write_config(folder: Path, data: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(data))
    return folder


def test_unsupported_configs_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mel_scale"):
        LTX2AudioVAEConfig.from_dict({"mel_scale": 2})
    with pytest.raises(ValueError, match="causality_axis"):
        LTX2AudioVAEConfig(causality_axis="depth")
    with pytest.raises(ValueError, match="norm_type='group'"):
        LTX2AudioVAEConfig(norm_type="group", causality_axis="height")
    with pytest.raises(NotImplementedError, match="antialias"):
        LTX2VocoderConfig(antialias=True)
    with pytest.raises(ValueError, match="upsample_factors"):
        LTX2VocoderConfig(upsample_factors=(2, 2))
    folder = _write_config(tmp_path / "bwe", {"_class_name": "LTX2VocoderWithBWE", "bwe_act_fn": "relu"})
    with pytest.raises(ModelLoadError, match="bwe_"):
        load_ltx2_vocoder(folder)
    folder = _write_config(tmp_path / "other", {"_class_name": "LTX2TextConnectors"})
    with pytest.raises(ModelLoadError, match="not a LTX2Vocoder"):
        load_ltx2_vocoder(folder)
    folder = _write_config(tmp_path / "odd", {"_class_name": "AutoencoderKLLTX2Audio", "sample_rte": 16000})
    with pytest.raises(ModelLoadError, match="sample_rte"):
        load_ltx2_audio_vae(folder)


@pytest.fixture(scope="module")
def pipeline() -> Any:
    return tiny_pipeline()


_CALL: dict[str, Any] = dict(
    prompt="a red fox", negative_prompt="", num_inference_steps=1, guidance_scale=1.0, stg_scale=0.0,
    modality_scale=1.0, guidance_rescale=0.0, audio_guidance_scale=1.0, audio_stg_scale=0.0, audio_modality_scale=1.0,
    audio_guidance_rescale=0.0, spatio_temporal_guidance_blocks=None, use_cross_timestep=False, height=32, width=32,
    max_sequence_length=16)


class _Stop(Exception):
    pass


# (num_frames, fps, sample_rate, hop_length): the published 121 @ 24, ties that round half to even, other rates.
LENGTH_CASES = [(121, 24.0, 16000, 160), (5, 25.0, 16000, 160), (1, 10.0, 16000, 160), (3, 10.0, 16000, 160),
                (97, 30.0, 24000, 240), (9, 8.0, 44100, 512), (49, 23.976, 16000, 160)]


@pytest.mark.parametrize("num_frames,fps,sample_rate,hop", LENGTH_CASES)
def test_audio_latent_length_follows_the_pipeline(pipeline: Any, monkeypatch: pytest.MonkeyPatch, num_frames: int,
                                                  fps: float, sample_rate: int, hop: int) -> None:
    seen: dict[str, int] = {}

    def capture(*args: Any, **kwargs: Any) -> Any:
        seen["length"] = kwargs["audio_latent_length"]
        raise _Stop

    monkeypatch.setattr(pipeline, "prepare_audio_latents", capture)
    monkeypatch.setattr(pipeline, "audio_sampling_rate", sample_rate)
    monkeypatch.setattr(pipeline, "audio_hop_length", hop)
    with pytest.raises(_Stop):
        pipeline(**_CALL, num_frames=num_frames, frame_rate=fps, output_type="latent")
    assert audio_latent_length(num_frames, fps, sample_rate, hop) == seen["length"]


def test_audio_tail_matches_the_pipeline_waveform(pipeline: Any) -> None:
    """The pipeline's final audio latents, re-normalized and packed, through our VAE + vocoder give its waveform."""
    latents = pipeline(**_CALL, num_frames=5, frame_rate=25.0, generator=torch.Generator().manual_seed(0),
                       output_type="latent").audio  # denormalized, unpacked (B, C, L, M)
    waveform = pipeline(**_CALL, num_frames=5, frame_rate=25.0, generator=torch.Generator().manual_seed(0),
                        output_type="pt").audio
    vae = LTX2AudioVAE(LTX2AudioVAEConfig.from_dict(dict(pipeline.audio_vae.config))).eval()
    vae.load_state_dict(pipeline.audio_vae.state_dict(), strict=True)
    vocoder = LTX2Vocoder(LTX2VocoderConfig.from_dict(dict(pipeline.vocoder.config))).eval()
    vocoder.load_state_dict(pipeline.vocoder.state_dict(), strict=True)
    tokens = normalize_audio_latents(pack_audio_latents(latents), vae.latents_mean, vae.latents_std)
    assert torch.equal(unpack_audio_latents(pack_audio_latents(latents), vae.config.latent_mel_bins), latents)
    ours = mel_to_waveform(vae, vocoder, tokens)
    assert waveform.abs().max() > 0.01
    assert _max_diff(ours, waveform) <= FP32_TOL
