"""Test support: a tiny diffusers Wan2.2 I2V A14B folder (``WanImageToVideoPipeline`` with ``transformer_2`` and
``boundary_ratio``, no CLIP image encoder / processor), written by diffusers' own ``save_pretrained``.

- :func:`write_i2v_a14b_folder(base, target, steps)` builds it on ``base`` (the built-in tiny ``WanPipeline``
  folder: its UMT5, tokenizer and scheduler), with the Wan2.1 I2V parity test's tiny VAE (``test_wan_i2v._vae``)
  and two tiny image-to-video-by-channels transformers (``in_channels`` 36, no ``image_dim``) from
  ``wan_dit_fixtures.reference_dit``, the second with other random weights. ``boundary_ratio`` sits between the
  2nd and 3rd of ``steps`` timesteps, so steps 0-1 run ``transformer`` and the rest ``transformer_2``. Returns
  ``(folder, boundary_ratio, the diffusers pipeline that wrote it)``; the folder carries no preset tag, so the
  preset is inferred from it as for any folder.
- ``image(seed, size)`` and ``without_ftfy(monkeypatch)`` are the Wan2.1 I2V test's (re-exported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from test_wan_i2v import _image as image
from test_wan_i2v import _vae
from test_wan_i2v import _without_ftfy as without_ftfy
from wan_dit_fixtures import reference_dit

__all__ = ["image", "without_ftfy", "write_i2v_a14b_folder"]

#: The transformer config keys taken from the built-in tiny model's DiT.
_DIT_KEYS = ("patch_size", "num_attention_heads", "attention_head_dim", "text_dim", "freq_dim", "ffn_dim",
             "num_layers", "cross_attn_norm", "qk_norm", "eps", "rope_max_seq_len")


def write_i2v_a14b_folder(base: Path, target: Path, steps: int) -> tuple[Path, float, Any]:
    """``save_pretrained`` of a tiny two-expert, CLIP-free ``WanImageToVideoPipeline`` (see module docstring)."""
    import diffusers

    t2v = diffusers.WanPipeline.from_pretrained(str(base), torch_dtype=torch.float32)
    cfg = {k: dict(t2v.transformer.config)[k] for k in _DIT_KEYS}
    cfg.update(in_channels=36, out_channels=16)  # noise 16 + mask 4 + image latents 16; image_dim None
    high = reference_dit(cfg)
    low = diffusers.WanTransformer3DModel(**cfg).eval()
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in high.parameters():  # tame activations over the steps, as the Wan2.1 I2V folder does
            p.mul_(0.5)
        for p in low.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    scheduler = t2v.scheduler
    scheduler.set_timesteps(steps)
    ts = [float(t) for t in scheduler.timesteps]
    ratio = (ts[1] + ts[2]) / 2 / scheduler.config.num_train_timesteps
    pipe = diffusers.WanImageToVideoPipeline(tokenizer=t2v.tokenizer, text_encoder=t2v.text_encoder,
                                             vae=_vae(t2v.vae), scheduler=scheduler, image_processor=None,
                                             image_encoder=None, transformer=high, transformer_2=low,
                                             boundary_ratio=ratio)
    pipe.save_pretrained(str(target))
    return target, ratio, pipe
