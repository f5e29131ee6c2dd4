"""Small ``nn.Module`` building blocks shared by more than one DiT.

Contract
--------
- :class:`TwoLayerMLP` computes ``linear_2(act(linear_1(x)))`` with ``act`` either ``"silu"`` or
  ``"gelu_tanh"`` (GELU, tanh approximation). Its ``state_dict()`` keys are ``linear_1.{weight,bias}``
  and ``linear_2.{weight,bias}``, the names diffusers uses for its timestep embedders and caption
  projections, so the owning module decides the prefix (e.g. ``time_embedder.linear_1.weight``).
- :func:`timestep_sinusoid` is the ``[cos, sin]`` timestep embedding (max period 10000) Wan and LTX-2 share.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class TwoLayerMLP(nn.Module):
    """``linear_2(act(linear_1(x)))``: time embedders (``"silu"``) and text/caption projections (``"gelu_tanh"``)."""

    def __init__(self, in_dim: int, out_dim: int, activation: str) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear_1(x)
        h = F.silu(h) if self.activation == "silu" else F.gelu(h, approximate="tanh")
        return self.linear_2(h)


_TIMESTEP_MAX_PERIOD = 10000


def timestep_sinusoid(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """``(B,)`` timesteps -> ``(B, dim)`` float32 ``[cos, sin]`` embedding (zero-padded if ``dim`` is odd)."""
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=timestep.device)
    freqs = torch.exp(-math.log(_TIMESTEP_MAX_PERIOD) * steps / half)
    args = timestep[:, None].float() * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb
