"""The engine's single attention entry point.

Contract: every attention in model code (self and cross) calls :func:`attention` with tensors in
``(batch, seq, heads, head_dim)`` layout and the backend the registry chose at load time. Nothing
else in ``engine/`` calls an attention implementation directly, so kernels plug in here.

With ``sp`` (a :class:`fastvideo.engine.sequence_parallel.SequenceShard`, self-attention only) q/k/v are this
rank's slice of the token sequence: the call runs Ulysses sequence parallelism (all-to-all to a slice of the
heads over the whole sequence, the same backend, all-to-all back) and returns this rank's slice of the output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fastvideo.kernels.registry import AttentionBackend

if TYPE_CHECKING:
    from fastvideo.engine.sequence_parallel import SequenceShard


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: AttentionBackend,
              sp: "SequenceShard | None" = None) -> torch.Tensor:
    """Non-causal attention ``softmax(q k^T / sqrt(d)) v`` through the chosen backend (with ``sp``: over the
    sequence sharded across the ranks, see the module doc)."""
    if sp is None:
        return backend.forward(q, k, v)
    return sp.attention(q, k, v, backend.forward)
