"""Tiny random LTX-2 models built from the real diffusers / transformers classes, for the parity tests: the one
place that builds them, writes them as diffusers folders, calls diffusers on them and compares.

- Components: a word-level tokenizer (no download) that behaves like Gemma's (BOS prepended, EOS as pad token), a
  two-layer ``Gemma3ForConditionalGeneration`` (``tiny_gemma``), and a complete ``LTX2Pipeline`` assembled from tiny
  components (``tiny_pipeline``, sizes as diffusers' own fast tests use them; ``test_ltx2_audio.py``,
  ``test_ltx2_connectors.py``).
- ``tiny_pipeline_with_video_vae(timestep_vae)``: that pipeline with a video VAE our loader accepts and the
  published scheduler settings; ``TinyLTX2Folders`` writes it with ``save_pretrained`` once per VAE kind (the
  session fixture ``ltx2_diffusers_folders`` of tests/conftest.py: whole-pipeline, conditioning and bf16 tests).
  Tests only read the pipeline and the folder.
- ``reference_kwargs(req)`` / ``run_reference(pipe, req)``: the ``LTX2Pipeline.__call__`` arguments of one
  :class:`~fastvideo.engine.models.ltx2.pipeline.LTX2Request` and that call (``output_type="np"``, the request's
  seed on a CPU generator): ``(video (T, H, W, 3) float32 in [0, 1], waveform (channels, samples) float32)``.
- ``max_errors(out, video, waveform)`` / ``assert_matches(out, video, waveform, tol)``: our
  :class:`~fastvideo.engine.models.ltx2.pipeline.LTX2Output` against such a reference (same shapes, max abs
  error within ``tol``, a reference that is not trivially constant).
- ``FULL_GUIDANCE`` (CFG, STG and modality isolation with rescale: ``LTX2Pipeline.__call__``'s defaults but a block
  index the tiny DiT has) and ``CFG_ONLY``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fastvideo.engine.models.ltx2.pipeline import LTX2Guidance, LTX2Request

MAX_SEQ = 16  #: the text length the tiny pipelines are run with
FULL_GUIDANCE = LTX2Guidance(guidance_scale=3.0, stg_scale=1.0, modality_scale=3.0, guidance_rescale=0.7,
                             audio_guidance_scale=7.0, audio_stg_scale=1.0, audio_modality_scale=3.0,
                             audio_guidance_rescale=0.7, stg_blocks=(0,), use_cross_timestep=True)
CFG_ONLY = LTX2Guidance(guidance_scale=4.0, stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0,
                        audio_guidance_scale=None, audio_stg_scale=0.0, audio_modality_scale=1.0,
                        audio_guidance_rescale=0.0, stg_blocks=None, use_cross_timestep=False)

WORDS = ("<pad> <eos> <bos> <unk> a red fox runs through the snow two people walk on beach robot dancing cat in "
         "rain").split()


def reseed_parameters(module: torch.nn.Module, seed: int, scale: float = 0.3) -> torch.nn.Module:
    """Every parameter re-drawn from seeded noise: zero/one inits would hide swapped or missing weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return module


def tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


def tiny_gemma(seed: int = 0) -> Any:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    config = Gemma3Config(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=8, vocab_size=len(WORDS), sliding_window=8,
                         query_pre_attn_scalar=8, max_position_embeddings=64),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4)
    torch.manual_seed(seed)
    return Gemma3ForConditionalGeneration(config).eval()


def tiny_pipeline() -> Any:
    """A complete diffusers ``LTX2Pipeline`` of tiny random components (CPU, float32)."""
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2Pipeline, LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    text_encoder = tiny_gemma()
    hidden = text_encoder.config.text_config.hidden_size
    torch.manual_seed(0)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=4,
        audio_cross_attention_dim=8, num_layers=1, caption_channels=hidden, rope_double_precision=False,
        rope_type="split")
    connectors = reseed_parameters(LTX2TextConnectors(
        caption_channels=hidden, text_proj_in_factor=text_encoder.config.text_config.num_hidden_layers + 1,
        video_connector_num_attention_heads=2, video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=4, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=4, audio_connector_num_layers=1, audio_connector_num_learnable_registers=4,
        connector_rope_base_seq_len=32, rope_type="split"), seed=3)
    torch.manual_seed(0)
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,),
        layers_per_block=(1,), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False), downsample_type=("spatial",),
        upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False)
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    audio_vae = reseed_parameters(AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1, 2), num_res_blocks=1, in_channels=2, resolution=32,
        latent_channels=2, mel_bins=8), seed=4, scale=0.2)
    with torch.no_grad():  # non-trivial latent statistics, so (de)normalization order matters
        audio_vae.latents_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.05]))
        audio_vae.latents_std.copy_(torch.tensor([0.5, 1.5, 0.8, 1.2]))
    vocoder = reseed_parameters(LTX2Vocoder(
        in_channels=16, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2],
        resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]], output_sampling_rate=16000), seed=5, scale=0.1)
    return LTX2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, audio_vae=audio_vae,
                        text_encoder=text_encoder, tokenizer=tiny_tokenizer(), connectors=connectors,
                        transformer=transformer, vocoder=vocoder)


# the published LTX-2 scheduler_config.json settings
PUBLISHED_SCHEDULER = dict(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                           max_image_seq_len=4096, shift_terminal=0.1, time_shift_type="exponential")


def tiny_pipeline_with_video_vae(timestep_vae: bool = False) -> Any:
    """The tiny pipeline with a video VAE our config accepts (one down/up block, x2 in space and time)."""
    from diffusers import AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler

    pipe = tiny_pipeline()
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(**PUBLISHED_SCHEDULER)
    torch.manual_seed(1)
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, patch_size=1, patch_size_t=1, block_out_channels=(8,),
        down_block_types=("LTX2VideoDownBlock3D",), layers_per_block=(1, 1), decoder_block_out_channels=(8,),
        decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,), decoder_spatio_temporal_scaling=(True,),
        decoder_inject_noise=(False, False), downsample_type=("spatiotemporal",), upsample_type=("spatiotemporal",),
        upsample_residual=(False,), upsample_factor=(1,), spatial_compression_ratio=2, temporal_compression_ratio=2,
        decoder_causal=False, timestep_conditioning=timestep_vae).eval()
    reseed_parameters(vae, seed=6, scale=0.2)
    with torch.no_grad():  # non-trivial video latent statistics
        vae.latents_mean.copy_(torch.tensor([0.1, -0.3, 0.2, 0.0]))
        vae.latents_std.copy_(torch.tensor([0.7, 1.3, 0.9, 1.1]))
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    pipe.vae = vae
    pipe.vae_spatial_compression_ratio = vae.spatial_compression_ratio
    pipe.vae_temporal_compression_ratio = vae.temporal_compression_ratio
    return pipe


class TinyLTX2Folders:
    """``save_pretrained`` folders of ``tiny_pipeline_with_video_vae``, written on first use per VAE kind."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._factory = tmp_path_factory
        self._made: dict[bool, tuple[Any, Path]] = {}

    def __call__(self, timestep_vae: bool = False) -> tuple[Any, Path]:
        """``(the diffusers pipeline, its folder)``."""
        if timestep_vae not in self._made:
            pipe = tiny_pipeline_with_video_vae(timestep_vae)
            folder = self._factory.mktemp("ltx2-timestep-vae" if timestep_vae else "ltx2-plain")
            pipe.save_pretrained(str(folder))
            self._made[timestep_vae] = (pipe, folder)
        return self._made[timestep_vae]


def reference_kwargs(req: LTX2Request, max_sequence_length: int = MAX_SEQ) -> dict[str, Any]:
    """The ``LTX2Pipeline.__call__`` (and its image / condition siblings') arguments of ``req``."""
    g = req.guidance
    return dict(prompt=req.prompt, negative_prompt=req.negative_prompt, height=req.height, width=req.width,
                num_frames=req.num_frames, frame_rate=req.fps, num_inference_steps=req.steps,
                guidance_scale=g.guidance_scale, stg_scale=g.stg_scale, modality_scale=g.modality_scale,
                guidance_rescale=g.guidance_rescale, audio_guidance_scale=g.audio_guidance_scale,
                audio_stg_scale=g.audio_stg_scale, audio_modality_scale=g.audio_modality_scale,
                audio_guidance_rescale=g.audio_guidance_rescale,
                spatio_temporal_guidance_blocks=list(g.stg_blocks) if g.stg_blocks else None,
                use_cross_timestep=g.use_cross_timestep, decode_timestep=req.decode_timestep,
                decode_noise_scale=req.decode_noise_scale, max_sequence_length=max_sequence_length,
                output_type="np", return_dict=False, generator=torch.Generator().manual_seed(req.seed))


def run_reference(pipe: Any, req: LTX2Request, max_sequence_length: int = MAX_SEQ,
                  **extra: Any) -> tuple[np.ndarray, np.ndarray]:
    """``pipe(**reference_kwargs(req), **extra)``: ``(video float32 (T, H, W, 3), waveform float32 (C, S))``."""
    with torch.no_grad():
        video, audio = pipe(**reference_kwargs(req, max_sequence_length), **extra)
    return np.asarray(video[0], dtype=np.float32), audio[0].float().numpy()


def max_errors(out: Any, video: np.ndarray, waveform: np.ndarray) -> tuple[float, float]:
    """Max abs error of our output's float video and waveform against a reference (shapes must match)."""
    assert out.video.shape == video.shape and tuple(out.waveform.shape) == waveform.shape
    return (float(np.abs(out.video - video).max()), float(np.abs(out.waveform.float().numpy() - waveform).max()))


def assert_matches(out: Any, video: np.ndarray, waveform: np.ndarray, tol: float) -> tuple[float, float]:
    """Our output equals the reference within ``tol`` (max abs), and the reference is not trivially constant."""
    video_err, audio_err = max_errors(out, video, waveform)
    print(f"max abs: video {video_err:.3g}, waveform {audio_err:.3g}; video std {video.std():.3g}, "
          f"waveform std {waveform.std():.3g}")
    assert video_err <= tol and audio_err <= tol
    assert video.std() > 1e-3 and waveform.std() > 1e-4
    return video_err, audio_err
