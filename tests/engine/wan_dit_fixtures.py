"""Shared test fixtures for the Wan DiT parity tests: a diffusers ``WanTransformer3DModel`` with seeded,
perturbed random weights (so no parameter sits at its init value), and ours loaded from its state dict."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import WanTransformer3DModel as DiffusersWan

from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel


def reference_dit(cfg: dict[str, Any]) -> DiffusersWan:
    """diffusers' Wan DiT for ``cfg`` (seed 0), every parameter moved by 0.2 * N(0, 1) (seed 1234)."""
    torch.manual_seed(0)
    model = DiffusersWan(**cfg).eval()
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def ours_from(ref: DiffusersWan) -> WanTransformer3DModel:
    """Our DiT built from ``ref``'s config, loaded strictly from its state dict."""
    ours = WanTransformer3DModel(WanDiTConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours
