"""Two-expert DiTs (Wan2.2 A14B): which expert runs a step, and keeping one resident at a time.

Contract:
- :func:`expert_index` is diffusers 0.42 ``WanPipeline``'s (and ``WanImageToVideoPipeline``'s: Wan2.2 I2V A14B,
  whose published ``boundary_ratio`` is 0.9) rule: with ``boundary = boundary_ratio *
  num_train_timesteps``, a step whose scheduler timestep ``t >= boundary`` runs expert 0 (``transformer``, the
  high-noise expert, with ``guidance_scale``), a later one expert 1 (``transformer_2``, with ``guidance_scale_2``).
  ``boundary_ratio`` None: always expert 0.
- :class:`ExpertSet` holds the experts. :meth:`ExpertSet.activate` returns expert ``k`` ready on the device.
  With ``offload=True`` (``engine.offload_experts``, on a CUDA device only) every expert is kept on the CPU
  (pinned) by a :class:`~fastvideo.engine.offload.ComponentOffloader`, and ``activate`` moves the wanted one to the
  device and the previously active one back to the CPU (its device copy freed): one expert's weights resident at
  a time, at the cost of one host-to-device copy of an expert per switch (``switches`` counts them,
  ``switch_seconds`` sums their time, synchronized). Without offload ``activate`` only returns the module.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack

import torch

from fastvideo.engine.offload import ComponentOffloader

logger = logging.getLogger(__name__)


def expert_index(timestep: float, boundary_ratio: float | None, num_train_timesteps: int) -> int:
    """0 (``transformer``) while ``timestep >= boundary_ratio * num_train_timesteps``, else 1 (``transformer_2``)."""
    if boundary_ratio is None or timestep >= boundary_ratio * num_train_timesteps:
        return 0
    return 1


class ExpertSet:
    """The experts of one pipeline, optionally offloaded so one is resident at a time (see module contract)."""

    def __init__(self, experts: list[torch.nn.Module], device: torch.device, *, offload: bool = False,
                 pin_memory: bool = True) -> None:
        self.experts = experts
        self.device = device
        self.offloaders = ([ComponentOffloader(m, device, name=f"expert {k}", pin_memory=pin_memory)
                            for k, m in enumerate(experts)] if offload else [])
        self._stack: ExitStack | None = None
        self.active: int | None = None
        self.switches = 0
        self.switch_seconds = 0.0

    @property
    def offloaded(self) -> bool:
        return bool(self.offloaders)

    def activate(self, k: int) -> torch.nn.Module:
        """Expert ``k`` with its weights on the device (the other moved to the CPU first when offloading)."""
        if not self.offloaders or self.active == k:
            self.active = k
            return self.experts[k]
        t0 = time.perf_counter()
        if self._stack is not None:
            self._stack.close()  # the previous expert back to the CPU, its device copy freed
        self._stack = ExitStack()
        self._stack.enter_context(self.offloaders[k].on_device())
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - t0
        if self.active is not None:
            self.switches += 1
            self.switch_seconds += elapsed
        logger.debug("expert %d on %s in %.3fs", k, self.device, elapsed)
        self.active = k
        return self.experts[k]

    def release(self) -> None:
        """Every expert back on the CPU (offload only)."""
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        self.active = None
