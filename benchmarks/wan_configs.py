"""Model configs the benchmarks (and the GPU tests) share: the real Wan2.1-T2V-1.3B, Wan2.1-I2V-14B and Wan2.2-TI2V-5B
DiTs and the Wan VAE.

Contract: plain dicts of diffusers constructor arguments (``WanTransformer3DModel(**WAN_1_3B_DIT)``,
``WanDiTConfig.from_dict(WAN_1_3B_DIT)``); random weights with these shapes time exactly like the
trained checkpoint.
"""

WAN_1_3B_DIT = {"patch_size": [1, 2, 2], "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
                "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 8960, "num_layers": 30,
                "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024}

#: Wan2.1-I2V-14B (480P and 720P share it): 36 input channels (noise + mask + image latents), the CLIP
#: ViT-H image branch (1280-wide tokens, 257 per image) and the added K/V cross-attention.
WAN_I2V_14B_DIT = {"patch_size": [1, 2, 2], "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 36,
                   "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
                   "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024,
                   "image_dim": 1280, "added_kv_proj_dim": 5120}

#: Wan2.2-TI2V-5B (``Wan-AI/Wan2.2-TI2V-5B-Diffusers`` transformer/config.json): 3072 wide (24 heads x 128), 30 layers,
#: 48 latent channels in and out (the Wan2.2 VAE, 16x spatial compression), no image branch.
WAN_TI2V_5B_DIT = {"patch_size": [1, 2, 2], "num_attention_heads": 24, "attention_head_dim": 128, "in_channels": 48,
                   "out_channels": 48, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 14336, "num_layers": 30,
                   "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024}

WAN_VAE = {"_class_name": "AutoencoderKLWan", "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4],
           "num_res_blocks": 2, "attn_scales": [], "temperal_downsample": [False, True, True], "dropout": 0.0}
