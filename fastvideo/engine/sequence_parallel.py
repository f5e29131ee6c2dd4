"""Ulysses sequence parallelism for the DiT token sequence, over ``torch.distributed``.

Contract:

- :class:`SequenceParallel` names a process group of ``world_size`` ranks that together run *one* DiT forward
  (every rank holds the same weights and the same inputs). ``SequenceParallel.from_process_group()`` reads the
  group from an initialised ``torch.distributed``; it raises :class:`SequenceParallelError` (a
  ``FastVideoError``) when ``torch.distributed`` is unavailable or not initialised.
- Per forward, :meth:`SequenceParallel.plan` gives a :class:`SequenceShard` for ``length`` tokens. Token
  sequences are padded at the end to ``padded_length`` (the next multiple of ``world_size``) and split into
  ``world_size`` equal contiguous shards; rank ``r`` owns tokens ``[r * shard_length, (r + 1) * shard_length)``.
  :meth:`SequenceShard.scatter` takes a rank's shard of a replicated tensor (no communication);
  :meth:`SequenceShard.gather` all-gathers the shards and trims the padding, so every rank ends with the full
  ``length`` tokens.
- Self-attention (:meth:`SequenceShard.attention`, reached through :func:`fastvideo.engine.attention.attention`
  with ``sp=``): q/k/v ``(B, shard_length, H, D)`` go through an all-to-all to ``(B, padded_length, H / P, D)``
  (the full sequence, a slice of the heads), are trimmed to the ``length`` real tokens, attend through the
  registry's backend, are zero-padded back and go through the inverse all-to-all. Padded tokens are never
  keys or values of a real token, so padding changes no real token's result (exact, not masked); the padded
  rows carry finite junk that :meth:`SequenceShard.gather` drops.
- Everything else in a block is per token (norms, modulation, FFN, cross-attention to the replicated text), so
  it runs on the local shard unchanged. Results equal the single-process forward up to float reordering.
- Heads must be divisible by ``world_size`` (:meth:`SequenceParallel.check_heads` refuses otherwise, naming
  both numbers), unless ``kv_gather_fallback=True``: then a model whose heads do not split attends with its
  local queries over all-gathered (and trimmed) keys/values, all heads on every rank. Exact as well, through
  the same backend, but each rank holds the full K/V (more memory and traffic than Ulysses). Ring attention is
  not implemented.
- Collectives are plain ``torch.distributed`` calls (``all_to_all_single``, ``all_gather``); they work on gloo
  (CPU) and NCCL (GPU). Inference only: no autograd through the collectives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastvideo.api.errors import FastVideoError

logger = logging.getLogger(__name__)

__all__ = ["SequenceParallel", "SequenceParallelError", "SequenceShard"]


class SequenceParallelError(FastVideoError, ValueError):
    """Sequence parallelism cannot run as configured (no process group, heads not divisible by ranks)."""


@dataclass(frozen=True)
class SequenceParallel:
    """A process group that shares one DiT forward along the token sequence (see the module doc)."""

    world_size: int
    rank: int
    group: object | None = None  # a torch.distributed ProcessGroup; None: the default (world) group
    kv_gather_fallback: bool = False  # heads % world_size != 0: all-gather K/V instead of refusing

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise SequenceParallelError(f"invalid sequence-parallel rank {self.rank} of world size {self.world_size}")

    @classmethod
    def from_process_group(cls, group: object | None = None, *,
                           kv_gather_fallback: bool = False) -> "SequenceParallel":
        """The ranks of ``group`` (default: the world) of an initialised ``torch.distributed``."""
        import torch.distributed as dist

        if not dist.is_available():
            raise SequenceParallelError("sequence parallelism needs torch.distributed, which this torch build lacks")
        if not dist.is_initialized():
            raise SequenceParallelError("sequence parallelism needs an initialised torch.distributed process group "
                                        "(call torch.distributed.init_process_group in every rank first)")
        return cls(dist.get_world_size(group), dist.get_rank(group), group,  # type: ignore[arg-type]
                   kv_gather_fallback)

    def check_heads(self, heads: int) -> None:
        """Refuse a model whose attention heads cannot be split evenly over the ranks (unless
        ``kv_gather_fallback``)."""
        if heads % self.world_size and not self.kv_gather_fallback:
            raise SequenceParallelError(
                f"Ulysses sequence parallelism splits attention heads over ranks: {heads} heads are not divisible "
                f"by sp_size={self.world_size}; use an sp_size that divides {heads}, or kv_gather_fallback=True")

    def plan(self, length: int) -> "SequenceShard":
        """The shard layout of a ``length``-token sequence on this rank."""
        if length < 1:
            raise SequenceParallelError(f"cannot shard an empty token sequence (length {length})")
        shard = -(-length // self.world_size)
        return SequenceShard(self, length, shard)


@dataclass(frozen=True)
class SequenceShard:
    """One forward's token layout: ``length`` real tokens, ``shard_length`` per rank (see the module doc)."""

    sp: SequenceParallel
    length: int
    shard_length: int

    @property
    def padded_length(self) -> int:
        return self.shard_length * self.sp.world_size

    # ---------------------------------------------------------------- tokens
    def scatter(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This rank's shard of the replicated ``x`` along ``dim`` (``length`` long), padded with zeros."""
        if x.shape[dim] != self.length:
            raise ValueError(f"expected {self.length} tokens along dim {dim}, got {tuple(x.shape)}")
        dim = dim % x.ndim
        pad = self.padded_length - self.length
        if pad:
            widths = [0, 0] * (x.ndim - 1 - dim) + [0, pad]
            x = F.pad(x, widths)
        return x.narrow(dim, self.sp.rank * self.shard_length, self.shard_length).contiguous()

    def gather(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """All ranks' shards along ``dim`` concatenated, padding dropped: the full ``length`` tokens."""
        import torch.distributed as dist

        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.sp.world_size)]
        dist.all_gather(parts, x, group=self.sp.group)  # type: ignore[arg-type]
        return torch.cat(parts, dim=dim).narrow(dim, 0, self.length)

    # ---------------------------------------------------------------- all-to-all
    def _all_to_all(self, x: torch.Tensor) -> torch.Tensor:
        """Exchange chunk ``j`` of ``x``'s first dim with rank ``j`` (``x`` is ``(P, ...)``)."""
        import torch.distributed as dist

        x = x.contiguous()
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=self.sp.group)  # type: ignore[arg-type]
        return out

    def seq_to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, shard_length, H, D)`` sequence-sharded -> ``(B, padded_length, H / P, D)`` head-sharded."""
        p = self.sp.world_size
        b, s, h, d = x.shape
        if h % p:
            raise SequenceParallelError(f"the all-to-all splits heads over ranks: {h} heads are not divisible by "
                                        f"sp_size={p}")
        chunks = x.reshape(b, s, p, h // p, d).permute(2, 0, 1, 3, 4)  # (P, B, s, H/P, D): chunk j -> rank j
        out = self._all_to_all(chunks)  # out[i]: rank i's tokens, my heads
        return out.permute(1, 0, 2, 3, 4).reshape(b, p * s, h // p, d)

    def heads_to_seq(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`seq_to_heads`: ``(B, padded_length, H / P, D)`` -> ``(B, shard_length, H, D)``."""
        p = self.sp.world_size
        b, length, h, d = x.shape
        s = length // p
        chunks = x.reshape(b, p, s, h, d).permute(1, 0, 2, 3, 4)  # (P, B, s, H/P, D): rank j's tokens -> rank j
        out = self._all_to_all(chunks)  # out[i]: my tokens, rank i's heads
        return out.permute(1, 2, 0, 3, 4).reshape(b, s, p * h, d)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Self-attention of sequence-sharded q/k/v over the full (unpadded) sequence, per head slice."""
        if q.shape[1] != self.shard_length or k.shape[1] != self.shard_length or v.shape[1] != self.shard_length:
            raise ValueError(f"sequence-parallel self-attention expects {self.shard_length} local tokens in q/k/v, "
                             f"got {q.shape[1]}/{k.shape[1]}/{v.shape[1]}")
        if q.shape[2] % self.sp.world_size:
            self.sp.check_heads(q.shape[2])  # raises unless kv_gather_fallback
            return fn(q, self.gather(k), self.gather(v))  # local queries over the full (trimmed) keys/values
        q, k, v = (self.seq_to_heads(t).narrow(1, 0, self.length) for t in (q, k, v))
        out = fn(q, k, v)
        pad = self.padded_length - self.length
        if pad:
            out = F.pad(out, (0, 0, 0, 0, 0, pad))
        return self.heads_to_seq(out)
