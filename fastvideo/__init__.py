"""FastVideo Engine: compiled-graph inference and serving for video diffusion transformers.

Contract: ``from fastvideo import VideoGenerator`` is the public entry point; ``DevicePool`` (one
worker per device behind the same ``generate_async``, what ``--devices`` runs) and its
``PoolConfig`` are public too. They are resolved lazily, so ``import fastvideo`` (and
``fastvideo.api``, and ``PoolConfig``) never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["DevicePool", "PoolConfig", "VideoGenerator", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from fastvideo.runtime.device_pool import DevicePool
    from fastvideo.runtime.generator import VideoGenerator
    from fastvideo.runtime.pool import PoolConfig


def __getattr__(name: str) -> Any:
    if name == "VideoGenerator":
        from fastvideo.runtime.generator import VideoGenerator

        return VideoGenerator
    if name == "DevicePool":
        from fastvideo.runtime.device_pool import DevicePool

        return DevicePool
    if name == "PoolConfig":
        from fastvideo.runtime.pool import PoolConfig

        return PoolConfig
    raise AttributeError(f"module 'fastvideo' has no attribute {name!r}")
