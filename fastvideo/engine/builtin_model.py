"""The built-in default model: a tiny Wan2.1-architecture checkpoint synthesized on first use.

Contract: :func:`ensure_builtin_model(cache_dir)` returns the path of a real diffusers-format
folder (``model_index.json``, ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``) holding a tiny random-weight model of the real architectures (our DiT and VAE
configs, transformers' UMT5 encoder, a byte-level tokenizer that needs no download). Weights are a
pure function of :data:`BUILTIN_SEED` and the configs below, so every machine synthesizes the same
bytes. The folder is built in a temporary sibling and renamed into place, so a crash never leaves
a half-written model behind; concurrent callers race benignly. ``ensure_builtin_model(cache_dir,
"fastvideo-tiny-i2v")`` gives the image-to-video one instead (:func:`write_builtin_i2v_model`: a
``WanImageToVideoPipeline`` folder with a tiny I2V transformer, CLIP vision encoder and image processor);
``"fastvideo-tiny-ti2v"`` a tiny Wan2.2 TI2V-5B-architecture one (:func:`write_builtin_ti2v_model`: a
``WanPipeline`` folder with ``expand_timesteps: true``, a 48-channel transformer and a tiny Wan2.2 VAE:
residual blocks, 2x2 pixel patches, 16x spatial compression, 48 latent channels);
``"fastvideo-tiny-ltx2"`` gives a tiny LTX-2 (video + audio) one (:func:`write_builtin_ltx2_model`: an
``LTX2Pipeline`` folder written from our own ``fastvideo.engine.models.ltx2`` classes, whose state-dict keys and
config keys are diffusers', plus a two-layer Gemma-3 from ``transformers`` and a Gemma-like byte tokenizer; no
diffusers at run time; the runtime core serves it like any LTX-2 folder).
:data:`BUILTIN_MODELS` maps the names a model path may give to them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

BUILTIN_NAME = "fastvideo-tiny-wan-v1"
BUILTIN_SEED = 20261123
TEXT_DIM = 64

TRANSFORMER_CONFIG: dict[str, Any] = {
    "_class_name": "WanTransformer3DModel",
    "patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 32, "in_channels": 16,
    "out_channels": 16, "text_dim": TEXT_DIM, "freq_dim": 64, "ffn_dim": 128, "num_layers": 2,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": None,
    "added_kv_proj_dim": None, "rope_max_seq_len": 1024, "pos_embed_seq_len": None,
}

VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKLWan",
    "base_dim": 4, "z_dim": 16, "dim_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_scales": [],
    "temperal_downsample": [False, True, True], "dropout": 0.0,
}

SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "UniPCMultistepScheduler", "beta_end": 0.02, "beta_schedule": "linear",
    "beta_start": 0.0001, "disable_corrector": [], "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero", "flow_shift": 3.0, "lower_order_final": True, "num_train_timesteps": 1000,
    "predict_x0": True, "prediction_type": "flow_prediction", "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0, "solver_order": 2, "solver_p": None, "solver_type": "bh2", "steps_offset": 0,
    "thresholding": False, "timestep_spacing": "linspace", "trained_betas": None, "use_beta_sigmas": False,
    "use_exponential_sigmas": False, "use_flow_sigmas": True, "use_karras_sigmas": False,
}

TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": 259, "d_model": TEXT_DIM, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "dropout_rate": 0.0,
    "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-6, "pad_token_id": 0, "eos_token_id": 1,
    "decoder_start_token_id": 0, "tie_word_embeddings": False, "scalable_attention": True,
}


BUILTIN_I2V_NAME = "fastvideo-tiny-i2v-v1"
BUILTIN_I2V_PRESET = "fastvideo-tiny-i2v"
DIT_WEIGHTS = "diffusion_pytorch_model.safetensors"

#: A tiny CLIP vision tower (32x32 images, 8x8 patches: 17 tokens of width 32).
CLIP_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    "image_size": 32, "patch_size": 8, "projection_dim": 16,
}

I2V_TRANSFORMER_CONFIG: dict[str, Any] = {
    **TRANSFORMER_CONFIG, "in_channels": 36, "image_dim": CLIP_VISION_CONFIG["hidden_size"],
    "added_kv_proj_dim": TRANSFORMER_CONFIG["num_attention_heads"] * TRANSFORMER_CONFIG["attention_head_dim"],
}


def _fill(name: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Deterministic, activation-preserving values for a parameter named ``name``."""
    if len(shape) <= 1:
        if name.endswith("bias"):
            return torch.randn(shape, generator=generator) * 0.02
        if "norm" in name or name.endswith("gamma") or name.endswith(".weight") and len(shape) == 1:
            return 1.0 + 0.05 * torch.randn(shape, generator=generator)
        return torch.randn(shape, generator=generator) * 0.5
    if "scale_shift_table" in name:
        return torch.randn(shape, generator=generator) / shape[-1] ** 0.5
    if "embed_tokens" in name or name.endswith("shared.weight"):
        return torch.randn(shape, generator=generator)
    fan_in = 1
    for d in shape[1:]:
        fan_in *= int(d)
    return torch.randn(shape, generator=generator) / max(fan_in, 1) ** 0.5


def synthesize_state_dict(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic weights for every entry of ``module.state_dict()`` (built on meta is fine)."""
    generator = torch.Generator().manual_seed(seed)
    return {name: _fill(name, tensor.shape, generator).to(torch.float32).contiguous()
            for name, tensor in sorted(module.state_dict().items())}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_byte_bpe_tokenizer(folder: Path, max_length: int, specials: dict[str, str], single: str, pair: str,
                               added: str) -> None:
    """Save a ``PreTrainedTokenizerFast`` whose vocabulary is ``specials`` (role -> token, ids in that order)
    followed by the 256 byte-level symbols, with no merges; ``single`` / ``pair`` is the post-processor template
    and ``added`` the special token it inserts. ``tokenizer_config.json`` names the portable class."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(specials.values())}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=specials["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                       special_tokens=[(added, vocab[added])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **{f"{role}_token": token for role, token in specials.items()},
                                   model_max_length=max_length)
    fast.save_pretrained(str(folder))
    # Name the portable class (transformers 4.x and 5.x both resolve it) rather than a 5.x-only alias.
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    _write_json(config_path, config)


def write_byte_tokenizer(folder: Path, max_length: int) -> None:
    """A byte-level tokenizer (pad=0, eos=1, unk=2, then 256 byte symbols) that appends ``</s>``."""
    _write_byte_bpe_tokenizer(folder, max_length, {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"},
                              single="$A </s>", pair="$A </s> $B </s>", added="</s>")


def write_builtin_model(target: Path, seed: int = BUILTIN_SEED) -> Path:
    """Write the tiny model folder to ``target`` (which must not exist yet)."""
    from transformers import UMT5Config, UMT5EncoderModel

    from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel
    from fastvideo.engine.presets import get_preset
    from fastvideo.engine.models.wan.vae import WanVAE, WanVAEConfig

    preset = get_preset("fastvideo-tiny")
    generator = torch.Generator().manual_seed(seed)
    vae_config = dict(VAE_CONFIG)
    vae_config["latents_mean"] = [round(float(v), 4) for v in torch.randn(16, generator=generator) * 0.3]
    vae_config["latents_std"] = [round(float(v), 4) for v in 1.0 + 2.0 * torch.rand(16, generator=generator)]

    with torch.device("meta"):
        dit = WanTransformer3DModel(WanDiTConfig.from_dict(TRANSFORMER_CONFIG))
        vae = WanVAE(WanVAEConfig.from_dict(vae_config))
        encoder = UMT5EncoderModel(UMT5Config(**TEXT_ENCODER_CONFIG))
    parts = {"transformer": (dit, TRANSFORMER_CONFIG, seed + 1), "vae": (vae, vae_config, seed + 2)}
    for name, (module, config, part_seed) in parts.items():
        _write_json(target / name / "config.json", config)
        save_file(synthesize_state_dict(module, part_seed), str(target / name / "diffusion_pytorch_model.safetensors"),
                  metadata={"format": "pt"})

    encoder_state = synthesize_state_dict(encoder, seed + 3)
    encoder_state.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight
    (target / "text_encoder").mkdir(parents=True, exist_ok=True)
    text_config = UMT5Config(**TEXT_ENCODER_CONFIG)
    text_config.architectures = ["UMT5EncoderModel"]
    text_config.save_pretrained(str(target / "text_encoder"))
    save_file(encoder_state, str(target / "text_encoder" / "model.safetensors"), metadata={"format": "pt"})

    write_byte_tokenizer(target / "tokenizer", preset.text_length)
    _write_json(target / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)
    _write_json(target / "model_index.json", {
        "_class_name": "WanPipeline", "_diffusers_version": "0.42.1", "_fastvideo_preset": preset.name,
        "scheduler": ["diffusers", "UniPCMultistepScheduler"], "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"], "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    })
    return target


def write_builtin_i2v_model(target: Path, seed: int = BUILTIN_SEED) -> Path:
    """Write the tiny image-to-video folder (``WanImageToVideoPipeline``) to ``target``: the T2V model's VAE,
    text encoder and scheduler, an I2V transformer, a tiny CLIP vision encoder and its image processor."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel
    from fastvideo.engine.presets import get_preset

    write_builtin_model(target, seed)
    preset = get_preset(BUILTIN_I2V_PRESET)
    shutil.rmtree(target / "tokenizer")
    write_byte_tokenizer(target / "tokenizer", preset.text_length)
    with torch.device("meta"):
        dit = WanTransformer3DModel(WanDiTConfig.from_dict(I2V_TRANSFORMER_CONFIG))
        encoder = CLIPVisionModel(CLIPVisionConfig(**CLIP_VISION_CONFIG))
    _write_json(target / "transformer" / "config.json", I2V_TRANSFORMER_CONFIG)
    save_file(synthesize_state_dict(dit, seed + 4), str(target / "transformer" / DIT_WEIGHTS),
              metadata={"format": "pt"})
    clip_config = CLIPVisionConfig(**CLIP_VISION_CONFIG)
    clip_config.architectures = ["CLIPVisionModel"]
    clip_config.save_pretrained(str(target / "image_encoder"))
    save_file(synthesize_state_dict(encoder, seed + 5), str(target / "image_encoder" / "model.safetensors"),
              metadata={"format": "pt"})
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        str(target / "image_processor"))
    index = json.loads((target / "model_index.json").read_text(encoding="utf-8"))
    index.update({"_class_name": "WanImageToVideoPipeline", "_fastvideo_preset": preset.name,
                  "image_encoder": ["transformers", "CLIPVisionModel"],
                  "image_processor": ["transformers", "CLIPImageProcessor"]})
    _write_json(target / "model_index.json", index)
    return target


# ------------------------------------------------------------------------------------------------ tiny TI2V
BUILTIN_TI2V_NAME = "fastvideo-tiny-ti2v-v1"
BUILTIN_TI2V_PRESET = "fastvideo-tiny-ti2v"
TI2V_LATENT_CHANNELS = 48

TI2V_TRANSFORMER_CONFIG: dict[str, Any] = {
    **TRANSFORMER_CONFIG, "in_channels": TI2V_LATENT_CHANNELS, "out_channels": TI2V_LATENT_CHANNELS,
}

#: The Wan2.2 VAE's architecture at a tiny width (TI2V-5B's is base_dim 160, decoder_base_dim 256).
TI2V_VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKLWan",
    "base_dim": 8, "decoder_base_dim": 12, "z_dim": TI2V_LATENT_CHANNELS, "dim_mult": [1, 2, 2, 2],
    "num_res_blocks": 1, "attn_scales": [], "temperal_downsample": [False, True, True], "dropout": 0.0,
    "is_residual": True, "patch_size": 2, "in_channels": 12, "out_channels": 12, "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
}


def write_builtin_ti2v_model(target: Path, seed: int = BUILTIN_SEED) -> Path:
    """Write the tiny text-image-to-video folder (a Wan2.2 TI2V ``WanPipeline`` with ``expand_timesteps``) to
    ``target``: the T2V model's text encoder, tokenizer and scheduler, a 48-channel transformer, a Wan2.2 VAE."""
    from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel
    from fastvideo.engine.models.wan.vae import WanVAE, WanVAEConfig

    write_builtin_model(target, seed)
    generator = torch.Generator().manual_seed(seed + 6)
    vae_config = dict(TI2V_VAE_CONFIG)
    vae_config["latents_mean"] = [round(float(v), 4) for v in torch.randn(TI2V_LATENT_CHANNELS,
                                                                          generator=generator) * 0.3]
    vae_config["latents_std"] = [round(float(v), 4) for v in 1.0 + 2.0 * torch.rand(TI2V_LATENT_CHANNELS,
                                                                                   generator=generator)]
    with torch.device("meta"):
        dit = WanTransformer3DModel(WanDiTConfig.from_dict(TI2V_TRANSFORMER_CONFIG))
        vae = WanVAE(WanVAEConfig.from_dict(vae_config))
    for name, module, config, part_seed in (("transformer", dit, TI2V_TRANSFORMER_CONFIG, seed + 7),
                                            ("vae", vae, vae_config, seed + 8)):
        _write_json(target / name / "config.json", config)
        save_file(synthesize_state_dict(module, part_seed), str(target / name / DIT_WEIGHTS), metadata={"format": "pt"})
    _write_json(target / "scheduler" / "scheduler_config.json", {**SCHEDULER_CONFIG, "flow_shift": 5.0})
    index = json.loads((target / "model_index.json").read_text(encoding="utf-8"))
    index.update({"_fastvideo_preset": BUILTIN_TI2V_PRESET, "boundary_ratio": None, "expand_timesteps": True,
                  "transformer_2": [None, None]})
    _write_json(target / "model_index.json", index)
    return target


# ------------------------------------------------------------------------------------------------ tiny LTX-2
BUILTIN_LTX2_NAME = "fastvideo-tiny-ltx2-v1"
BUILTIN_LTX2_PRESET = "fastvideo-tiny-ltx2"
LTX2_TEXT_DIM = 16  # the tiny Gemma-3's hidden size = the DiT's caption_channels

#: The tiny LTX-2 components (diffusers 0.42 class names and config keys; the sizes of its own fast tests).
LTX2_TRANSFORMER_CONFIG: dict[str, Any] = {
    "_class_name": "LTX2VideoTransformer3DModel", "in_channels": 4, "out_channels": 4, "num_attention_heads": 2,
    "attention_head_dim": 8, "cross_attention_dim": 16, "audio_in_channels": 4, "audio_out_channels": 4,
    "audio_num_attention_heads": 2, "audio_attention_head_dim": 4, "audio_cross_attention_dim": 8, "num_layers": 1,
    "caption_channels": LTX2_TEXT_DIM, "rope_double_precision": False, "rope_type": "split",
}
LTX2_VAE_CONFIG: dict[str, Any] = {  # one block, x2 in space and time
    "_class_name": "AutoencoderKLLTX2Video", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "patch_size": 1, "patch_size_t": 1, "block_out_channels": [8], "down_block_types": ["LTX2VideoDownBlock3D"],
    "layers_per_block": [1, 1], "decoder_block_out_channels": [8], "decoder_layers_per_block": [1, 1],
    "spatio_temporal_scaling": [True], "decoder_spatio_temporal_scaling": [True],
    "decoder_inject_noise": [False, False], "downsample_type": ["spatiotemporal"],
    "upsample_type": ["spatiotemporal"], "upsample_residual": [False], "upsample_factor": [1],
    "spatial_compression_ratio": 2, "temporal_compression_ratio": 2, "decoder_causal": False,
    "timestep_conditioning": False,
}
LTX2_AUDIO_VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKLLTX2Audio", "base_channels": 4, "output_channels": 2, "ch_mult": [1, 2],
    "num_res_blocks": 1, "in_channels": 2, "resolution": 32, "latent_channels": 2, "mel_bins": 8,
}
LTX2_VOCODER_CONFIG: dict[str, Any] = {
    "_class_name": "LTX2Vocoder", "in_channels": 16, "hidden_channels": 32, "out_channels": 2,
    "upsample_kernel_sizes": [16, 10, 8], "upsample_factors": [8, 5, 4], "resnet_kernel_sizes": [3],
    "resnet_dilations": [[1, 3, 5]], "output_sampling_rate": 16000,
}
LTX2_CONNECTORS_CONFIG: dict[str, Any] = {
    "_class_name": "LTX2TextConnectors", "caption_channels": LTX2_TEXT_DIM, "text_proj_in_factor": 3,
    "video_connector_num_attention_heads": 2, "video_connector_attention_head_dim": 8,
    "video_connector_num_layers": 1, "video_connector_num_learnable_registers": 4,
    "audio_connector_num_attention_heads": 4, "audio_connector_attention_head_dim": 4,
    "audio_connector_num_layers": 1, "audio_connector_num_learnable_registers": 4,
    "connector_rope_base_seq_len": 32, "rope_type": "split",
}
#: The published LTX-2 ``scheduler/scheduler_config.json`` settings (dynamic shift, exponential, terminal 0.1).
LTX2_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True, "base_shift": 0.95,
    "max_shift": 2.05, "base_image_seq_len": 1024, "max_image_seq_len": 4096, "shift_terminal": 0.1,
    "time_shift_type": "exponential", "num_train_timesteps": 1000, "shift": 1.0,
}
#: A two-layer Gemma-3 (text) with a one-layer vision tower (``Gemma3ForConditionalGeneration`` needs one);
#: ``text_proj_in_factor`` above is its layers + 1 (the embeddings).
LTX2_GEMMA_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": LTX2_TEXT_DIM, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 1, "head_dim": 8, "vocab_size": 260, "sliding_window": 8, "query_pre_attn_scalar": 8,
    "max_position_embeddings": 256, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
}
LTX2_GEMMA_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 28,
    "patch_size": 14,
}


def write_gemma_byte_tokenizer(folder: Path, max_length: int) -> None:
    """A Gemma-like byte-level tokenizer (pad=0, eos=1, bos=2, unk=3, then 256 byte symbols) that prepends
    ``<bos>``, as Gemma's does; it needs no download."""
    _write_byte_bpe_tokenizer(folder, max_length, {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "unk": "<unk>"},
                              single="<bos> $A", pair="<bos> $A $B", added="<bos>")


def _ltx2_latent_stats(state: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    """Non-trivial, positive-std latent statistics (the (de)normalization order must matter)."""
    for name in sorted(state):
        if name.endswith("latents_mean"):
            state[name] = (torch.randn(state[name].shape, generator=generator) * 0.2).contiguous()
        elif name.endswith("latents_std"):
            state[name] = (0.6 + 0.8 * torch.rand(state[name].shape, generator=generator)).contiguous()


def write_builtin_ltx2_model(target: Path, seed: int = BUILTIN_SEED) -> Path:
    """Write the tiny LTX-2 folder (a diffusers ``LTX2Pipeline`` folder) to ``target`` (which must not exist):
    every component built on the meta device from our own classes (same state-dict keys as diffusers'), Gemma-3
    from ``transformers``; no diffusers needed."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from fastvideo.api.presets import get_preset
    from fastvideo.engine.models.ltx2 import (LTX2AudioVAE, LTX2AudioVAEConfig, LTX2Connectors, LTX2ConnectorsConfig,
                                              LTX2DiTConfig, LTX2Transformer, LTX2VideoVAE, LTX2VideoVAEConfig,
                                              LTX2Vocoder, LTX2VocoderConfig)

    preset = get_preset(BUILTIN_LTX2_PRESET)
    parts: dict[str, tuple[Any, dict[str, Any]]] = {
        "transformer": (lambda: LTX2Transformer(LTX2DiTConfig.from_dict(LTX2_TRANSFORMER_CONFIG)),
                        LTX2_TRANSFORMER_CONFIG),
        "vae": (lambda: LTX2VideoVAE(LTX2VideoVAEConfig.from_dict(LTX2_VAE_CONFIG)), LTX2_VAE_CONFIG),
        "audio_vae": (lambda: LTX2AudioVAE(LTX2AudioVAEConfig.from_dict(LTX2_AUDIO_VAE_CONFIG)),
                      LTX2_AUDIO_VAE_CONFIG),
        "vocoder": (lambda: LTX2Vocoder(LTX2VocoderConfig.from_dict(LTX2_VOCODER_CONFIG)), LTX2_VOCODER_CONFIG),
        "connectors": (lambda: LTX2Connectors(LTX2ConnectorsConfig.from_dict(LTX2_CONNECTORS_CONFIG)),
                       LTX2_CONNECTORS_CONFIG),
    }
    for offset, (name, (build, config)) in enumerate(parts.items()):
        with torch.device("meta"):
            module = build()
        state = synthesize_state_dict(module, seed + 10 + offset)
        _ltx2_latent_stats(state, torch.Generator().manual_seed(seed + 20 + offset))
        _write_json(target / name / "config.json", config)
        save_file(state, str(target / name / DIT_WEIGHTS), metadata={"format": "pt"})

    gemma_config = Gemma3Config(text_config=dict(LTX2_GEMMA_TEXT_CONFIG), vision_config=dict(LTX2_GEMMA_VISION_CONFIG),
                                mm_tokens_per_image=4)
    gemma_config.architectures = ["Gemma3ForConditionalGeneration"]
    with torch.device("meta"):
        gemma = Gemma3ForConditionalGeneration(gemma_config)
    tied = {name for name in gemma.state_dict() if name.endswith("lm_head.weight")}
    gemma_state = {k: v for k, v in synthesize_state_dict(gemma, seed + 30).items() if k not in tied}
    (target / "text_encoder").mkdir(parents=True, exist_ok=True)
    gemma_config.save_pretrained(str(target / "text_encoder"))
    save_file(gemma_state, str(target / "text_encoder" / "model.safetensors"), metadata={"format": "pt"})

    write_gemma_byte_tokenizer(target / "tokenizer", int(preset.model_defaults["text_length"]))
    _write_json(target / "scheduler" / "scheduler_config.json", LTX2_SCHEDULER_CONFIG)
    _write_json(target / "model_index.json", {
        "_class_name": "LTX2Pipeline", "_diffusers_version": "0.42.1", "_fastvideo_preset": preset.name,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Gemma3ForConditionalGeneration"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "transformer": ["diffusers", "LTX2VideoTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLLTX2Video"],
        "audio_vae": ["diffusers", "AutoencoderKLLTX2Audio"], "vocoder": ["ltx2", "LTX2Vocoder"],
        "connectors": ["ltx2", "LTX2TextConnectors"],  # diffusers names pipeline-local modules by pipeline
    })
    return target


#: Built-in model names a model path may give instead of a folder -> (folder name, writer).
BUILTIN_MODELS = {"fastvideo-tiny": (BUILTIN_NAME, write_builtin_model),
                  BUILTIN_I2V_PRESET: (BUILTIN_I2V_NAME, write_builtin_i2v_model),
                  BUILTIN_TI2V_PRESET: (BUILTIN_TI2V_NAME, write_builtin_ti2v_model),
                  BUILTIN_LTX2_PRESET: (BUILTIN_LTX2_NAME, write_builtin_ltx2_model)}


def ensure_builtin_model(cache_dir: Path, name: str = "fastvideo-tiny") -> Path:
    """Return the built-in model folder ``name`` (a key of :data:`BUILTIN_MODELS`) under ``cache_dir``,
    synthesizing it on first use."""
    folder_name, writer = BUILTIN_MODELS[name]
    final = Path(cache_dir) / "models" / folder_name
    if (final / "model_index.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    logger.info("synthesizing the built-in model %s at %s (first use)", name, final)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder_name}-", dir=final.parent))
    try:
        writer(staging / "model")
        try:
            os.replace(staging / "model", final)
        except OSError:
            if not (final / "model_index.json").exists():  # not a benign race with another writer
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
