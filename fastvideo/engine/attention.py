"""The engine's single attention entry point.

Contract: every attention in model code (self and cross) calls :func:`attention` with tensors in
``(batch, seq, heads, head_dim)`` layout and the backend the registry chose at load time. Nothing
else in ``engine/`` calls an attention implementation directly, so kernels plug in here.
"""

from __future__ import annotations

import torch

from fastvideo.kernels.registry import AttentionBackend


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: AttentionBackend) -> torch.Tensor:
    """Non-causal attention ``softmax(q k^T / sqrt(d)) v`` through the chosen backend."""
    return backend.forward(q, k, v)
