"""Wan2.1 image-to-video against diffusers 0.42 on tiny random-weight configs built from the real classes.

- The DiT with the image branch (``image_dim`` / ``added_kv_proj_dim``: the image embedder and the added
  K/V cross-attention; ``pos_embed_seq_len`` for first-last-frame) against diffusers'
  ``WanTransformer3DModel``, fp32 within 1e-4. diffusers splits its concatenated context 512 text tokens
  from the end, so the reference gets 512 text tokens; ours takes the image context as its own tensor.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import WanTransformer3DModel as DiffusersWan  # noqa: E402

from fastvideo.engine.dit import WanDiTConfig, WanTransformer3DModel  # noqa: E402

FP32_TOL = 1e-4
TEXT_TOKENS = 512  # diffusers' WanAttnProcessor hard-codes the text context length for I2V

TINY_I2V: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=36,
    out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
    rope_max_seq_len=64, image_dim=24, added_kv_proj_dim=32,
)


def _reference(cfg: dict[str, Any]) -> DiffusersWan:
    torch.manual_seed(0)
    model = DiffusersWan(**cfg).eval()
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def _ours_from(ref: DiffusersWan) -> WanTransformer3DModel:
    ours = WanTransformer3DModel(WanDiTConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours


@pytest.mark.parametrize("flf2v", [False, True], ids=["i2v", "flf2v"])
def test_i2v_dit_matches_diffusers(flf2v: bool) -> None:
    cfg = {**TINY_I2V, "pos_embed_seq_len": 2 * 5} if flf2v else TINY_I2V
    ref = _reference(cfg)
    ours = _ours_from(ref)
    assert set(ours.state_dict()) == set(ref.state_dict())
    assert any("add_k_proj" in k for k in ours.state_dict()) and any("image_embedder" in k for k in ours.state_dict())
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 36, 3, 6, 10, generator=gen)
    t = torch.tensor([999.0, 421.7])
    text = torch.randn(2, TEXT_TOKENS, 32, generator=gen)
    images = 2 if flf2v else 1
    clip = torch.randn(2 * images, 5, 24, generator=gen)  # diffusers: (B * images, tokens, image_dim)
    with torch.no_grad():
        expected = ref(x, t, text, encoder_hidden_states_image=clip, return_dict=False)[0]
        got = ours(x, t, text, clip.reshape(2, images * 5, 24))
        without_image = ours(x, t, text, torch.zeros(2, images * 5, 24))
    err = (got - expected).abs().max().item()
    assert err <= FP32_TOL, f"I2V DiT max abs diff {err:.2e}"
    assert (got - without_image).abs().max().item() > 1e-2  # the image branch changes the output


def test_i2v_dit_inputs_checked() -> None:
    ours = WanTransformer3DModel(WanDiTConfig.from_dict(TINY_I2V))
    x, t, text = torch.randn(1, 36, 1, 2, 2), torch.tensor([1.0]), torch.randn(1, 4, 32)
    with pytest.raises(ValueError, match="encoder_hidden_states_image"):
        ours(x, t, text)
    t2v = WanTransformer3DModel(WanDiTConfig.from_dict({**TINY_I2V, "in_channels": 16, "image_dim": None,
                                                        "added_kv_proj_dim": None}))
    with pytest.raises(ValueError, match="text-to-video"):
        t2v(torch.randn(1, 16, 1, 2, 2), t, text, torch.randn(1, 5, 24))
    with pytest.raises(NotImplementedError, match="added_kv_proj_dim=None"):
        WanTransformer3DModel(WanDiTConfig.from_dict({**TINY_I2V, "added_kv_proj_dim": None}))
