"""FastVideo Engine: compiled-graph inference and serving for video diffusion transformers.

Contract: ``from fastvideo import VideoGenerator`` is the public entry point; ``DevicePool`` (one
worker per device behind the same ``generate_async``, what ``--devices`` runs) and its
``PoolConfig`` are public too, and FastVideo's ``SamplingParam`` / ``PipelineConfig`` (typed views over
our request and generator configs: :mod:`fastvideo.api.sampling_param`, :mod:`fastvideo.api.pipeline_config`).
They are resolved lazily, so ``import fastvideo`` (and ``fastvideo.api``, ``PoolConfig``, ``SamplingParam``,
``PipelineConfig``) never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["DevicePool", "PipelineConfig", "PoolConfig", "SamplingParam", "VideoGenerator", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from fastvideo.api.pipeline_config import PipelineConfig
    from fastvideo.api.sampling_param import SamplingParam
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
    if name == "SamplingParam":
        from fastvideo.api.sampling_param import SamplingParam

        return SamplingParam
    if name == "PipelineConfig":
        from fastvideo.api.pipeline_config import PipelineConfig

        return PipelineConfig
    raise AttributeError(f"module 'fastvideo' has no attribute {name!r}")
