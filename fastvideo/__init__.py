"""FastVideo Engine: compiled-graph inference and serving for video diffusion transformers.

Contract: ``from fastvideo import VideoGenerator`` is the public entry point. It is resolved
lazily, so ``import fastvideo`` (and ``fastvideo.api``) never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["VideoGenerator", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from fastvideo.runtime.generator import VideoGenerator


def __getattr__(name: str) -> Any:
    if name == "VideoGenerator":
        from fastvideo.runtime.generator import VideoGenerator

        return VideoGenerator
    raise AttributeError(f"module 'fastvideo' has no attribute {name!r}")
