"""Attention backend registry: the only path from model code to an attention implementation.

Contract:
- A backend is an :class:`AttentionBackend`: a name, a ``forward(q, k, v) -> out`` callable on
  tensors laid out ``(batch, seq, heads, head_dim)`` (q and kv lengths may differ; non-causal,
  no mask), and a ``check(dtype, head_dim, device) -> reason | None`` that says why it cannot
  run a given configuration.
- :func:`select_attention_backend` is called once, when a model is loaded. It takes the name from
  the caller's config, else from ``FASTVIDEO_ATTENTION_BACKEND`` (read by the caller through
  :mod:`fastvideo.envs`), else ``sdpa``. A backend that is unknown, not installed, or that rejects
  the configuration raises :class:`AttentionBackendError` saying why; we never fall back silently.
- ``sdpa`` (torch's ``scaled_dot_product_attention``) is the reference and is always present.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from fastvideo.api.errors import FastVideoError

logger = logging.getLogger(__name__)

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
CheckFn = Callable[[torch.dtype, int, torch.device], "str | None"]


class AttentionBackendError(FastVideoError, ValueError):
    """Raised when a requested attention backend cannot be used."""


@dataclass(frozen=True)
class AttentionBackend:
    """A named attention implementation with its capability check."""

    name: str
    forward: AttentionFn
    check: CheckFn

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.forward(q, k, v)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reference attention: ``(B, L, H, D)`` in, ``(B, Lq, H, D)`` out, via torch SDPA."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _sdpa_check(dtype: torch.dtype, head_dim: int, device: torch.device) -> str | None:
    return None


_FACTORIES: dict[str, Callable[[], AttentionBackend]] = {}


def register_attention_backend(name: str, factory: Callable[[], AttentionBackend]) -> None:
    """Register a backend factory. Factories import their heavy deps lazily and may raise
    :class:`AttentionBackendError` (e.g. package not installed)."""
    _FACTORIES[name] = factory


register_attention_backend("sdpa", lambda: AttentionBackend("sdpa", sdpa_attention, _sdpa_check))


def available_backends() -> list[str]:
    """Names of every registered backend (installed or not)."""
    _load_optional_backends()
    return sorted(_FACTORIES)


def _load_optional_backends() -> None:
    """Import kernel modules that register themselves (ignored when absent)."""
    try:  # the Triton attention kernels register "triton", "triton_fp8" and "flash_attn" when importable
        import fastvideo.kernels.attention  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        logger.debug("optional attention backends not loaded: %s", exc)


def select_attention_backend(
    name: str | None,
    *,
    dtype: torch.dtype,
    head_dim: int,
    device: torch.device | str,
) -> AttentionBackend:
    """Pick the attention backend once, at model load; raise with the reason if it cannot run."""
    _load_optional_backends()
    chosen = (name or "sdpa").strip().lower()
    if chosen not in _FACTORIES:
        raise AttentionBackendError(
            f"unknown attention backend {chosen!r}; choose one of {sorted(_FACTORIES)} "
            "(engine.attention_backend or FASTVIDEO_ATTENTION_BACKEND)")
    backend = _FACTORIES[chosen]()
    reason = backend.check(dtype, head_dim, torch.device(device))
    if reason is not None:
        raise AttentionBackendError(f"attention backend {chosen!r} rejected: {reason}")
    logger.info("attention backend: %s", chosen)
    return backend
