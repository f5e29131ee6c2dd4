"""CPU offload between uses: a component's weights live on the CPU and visit the device for each use.

Contract: :class:`ComponentOffloader` takes a module whose weights are on the CPU (pinned when
``pin_memory`` and CUDA is available, so the copies to the device are asynchronous). ``with
offloader.on_device():`` copies every parameter and buffer to ``device`` on first entry and, when the
last concurrent user leaves, points them back at their CPU copies (the device copies are freed; no copy
back is needed because inference never writes weights). Entries nest and may come from several threads
(e.g. the preview decode on the denoise thread and the final decode on the decode thread): the
weights stay on the device while anyone uses them. ``moves_to_device`` / ``moves_to_cpu`` count the
transfers (tests and logs read them). Tied parameters are moved once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

logger = logging.getLogger(__name__)


class ComponentOffloader:
    """Keep ``module`` on the CPU; move it to ``device`` only inside :meth:`on_device` (see module contract)."""

    def __init__(self, module: torch.nn.Module, device: torch.device, *, name: str, pin_memory: bool = True) -> None:
        self.module = module
        self.device = device
        self.name = name
        pin = pin_memory and torch.cuda.is_available()
        self._tensors: list[tuple[torch.Tensor, torch.Tensor]] = []
        seen: set[int] = set()
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            cpu = tensor.data.to("cpu")
            if pin:
                cpu = cpu.pin_memory()
            tensor.data = cpu
            self._tensors.append((tensor, cpu))
        self.pinned = pin
        self._lock = threading.Lock()
        self._users = 0
        self.moves_to_device = 0
        self.moves_to_cpu = 0

    def _to_device(self, cpu: torch.Tensor) -> torch.Tensor:
        """The device copy of one CPU tensor (asynchronous from pinned memory)."""
        return cpu.to(self.device, non_blocking=self.pinned)

    @contextmanager
    def on_device(self) -> Iterator[torch.nn.Module]:
        """The module with its weights on the device for the duration of the block."""
        with self._lock:
            if self._users == 0:
                for tensor, cpu in self._tensors:
                    tensor.data = self._to_device(cpu)
                self.moves_to_device += 1
                logger.debug("%s moved to %s", self.name, self.device)
            self._users += 1
        try:
            yield self.module
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    for tensor, cpu in self._tensors:
                        tensor.data = cpu
                    self.moves_to_cpu += 1
                    logger.debug("%s back on the CPU", self.name)


def on_device_of(offloaders: "Mapping[str, ComponentOffloader]", name: str) -> "contextlib.AbstractContextManager":
    """``offloaders[name].on_device()``, or a no-op context when component ``name`` is not offloaded."""
    offloader = offloaders.get(name)
    return contextlib.nullcontext() if offloader is None else offloader.on_device()
