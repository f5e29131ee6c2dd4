"""Small ``nn.Module`` building blocks shared by more than one DiT.

Contract
--------
- :class:`TwoLayerMLP` computes ``linear_2(act(linear_1(x)))`` with ``act`` either ``"silu"`` or
  ``"gelu_tanh"`` (GELU, tanh approximation). Its ``state_dict()`` keys are ``linear_1.{weight,bias}``
  and ``linear_2.{weight,bias}``, the names diffusers uses for its timestep embedders and caption
  projections, so the owning module decides the prefix (e.g. ``time_embedder.linear_1.weight``).
"""

from __future__ import annotations

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
