"""Tiny random LTX-2 side components built from the real diffusers / transformers classes, for the parity tests.

Shared by ``test_ltx2_audio.py`` and ``test_ltx2_connectors.py``: a word-level tokenizer (no download) that behaves
like Gemma's (BOS prepended, EOS as pad token), a two-layer ``Gemma3ForConditionalGeneration``, and a complete
``LTX2Pipeline`` assembled from tiny components (sizes as diffusers' own fast tests use them), and that pipeline with
a video VAE our loader accepts and the published scheduler settings (``tiny_pipeline_with_video_vae``, for the
whole-pipeline and conditioning parity tests).
"""

from __future__ import annotations

from typing import Any

import torch

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
