"""Test support: the clean latents of the engine core's one denoising loop for a request.

``core_latents(generator, request)`` resolves the request, then runs the batch executor's stages
(``prepare``, ``denoise``) for a batch of one, exactly as ``generate`` does, and returns the final clean
latents (before the VAE) with the resolved sampling. Parity tests compare those latents with diffusers'.
"""

from __future__ import annotations

from typing import Any

import torch


def core_latents(generator: Any, request: Any) -> tuple[torch.Tensor, Any]:
    from fastvideo.runtime.executor import WanBatchExecutor

    executor = WanBatchExecutor(generator)
    req, resolved = generator.resolve(request)
    item = executor.make_item(req, resolved)
    executor.prepare(item)
    dropped = executor.denoise([item], lambda *_: None)
    assert dropped == [], dropped
    return item.ctx.latents, resolved
