"""Layerwise (block-by-block) offload of a DiT: its blocks live on the CPU and visit the device one window at a time.

Contract:
- :class:`LayerwiseOffloader` takes an ``nn.ModuleList`` of blocks and a :class:`TransferBackend` (how copies to
  the device are issued and awaited). At rest every block's parameters and buffers point at their CPU copies
  (pinned by :class:`CudaTransferBackend` when ``pin_memory``), so no block weight is on the device between
  forwards. Forward pre/post hooks on each block do the rest; the model's own code is unchanged.
- Device memory for blocks is ``window`` slots of buffers, reused round-robin (block ``i`` in slot
  ``i % window``), so at most ``window`` blocks' bytes are ever allocated for them, however far the host runs
  ahead of the GPU. Before block ``i`` computes (its forward pre-hook) the wanted window is blocks
  ``i .. i + window - 1`` (``window`` >= 1; default 2: one running, one prefetching). Resident blocks outside it
  are released first (only after an irregular order or an exception inside a block), then the copy of every
  wanted block not yet resident is issued in order on the backend's copy stream, each waiting (on the device,
  not the host) until the compute stream is past the slot's previous block; so block ``i + 1``'s copy is issued
  before block ``i`` computes and overlaps it. Then the compute stream waits on block ``i``'s copy event and
  block ``i``'s tensors point at the slot's buffers. After block ``i`` ran (its forward hook) its tensors point
  back at their CPU copies and the slot is marked done at that point of the compute stream. After a forward no
  block is resident (the slots keep their buffers for the next forward; :meth:`LayerwiseOffloader.release_all`
  drops them). ``resident_bytes`` / ``peak_resident_bytes`` count the resident blocks' bytes, ``slot_bytes`` the
  buffers; the first block's copy of a forward is not overlapped.
- A block's CPU source is read when its copy is issued (the tensor's value at rest), so in-place weight edits
  between forwards (LoRA fusing, ``param.data.copy_``) and replaced ``.data`` are picked up. One forward at a
  time per offloader (the blocks of one model run in sequence on one thread).
- :func:`offload_layerwise` applies this to a model: every parameter and buffer outside ``model.<blocks_attr>``
  (embeddings, head) moves to the device and stays there; the blocks are offloaded. Nothing is duplicated: a
  block tensor's only device copy is the transient one inside the window.
- Backends: :class:`CudaTransferBackend` (a side CUDA stream, events, ``record_stream``) and
  :class:`RecordingTransferBackend`, the CPU stand-in whose slots are CPU tensors and which logs
  ``("copy", i)`` / ``("wait", i)`` / ``("free", i)`` in order, so tests assert the schedule without a GPU.
- Weights move every step, so CUDA-graph capture and ``torch.compile`` of an offloaded model are refused by the
  runtime's config checks (``engine.cuda_graphs.enabled`` / ``engine.compile.enabled``), not handled here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

logger = logging.getLogger(__name__)

__all__ = [
    "CudaTransferBackend",
    "LayerwiseOffloader",
    "RecordingTransferBackend",
    "Slot",
    "TransferBackend",
    "module_tensors",
    "offload_layerwise",
]


def module_tensors(module: nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of ``module``, each once (tied tensors are listed once)."""
    seen: set[int] = set()
    out: list[torch.Tensor] = []
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out.append(tensor)
    return out


@dataclass
class Slot:
    """One of the ``window`` device buffers sets blocks are copied into, reused round-robin (block ``i`` uses slot
    ``i % window``). ``buffers``: the device tensors (None until first used); ``done``: the backend's handle for
    "the compute stream is past the last block that read them" (None: nothing read them yet)."""

    index: int
    buffers: list[torch.Tensor] | None = None
    done: Any = None

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers) if self.buffers is not None else 0


def _same_layout(buffers: Sequence[torch.Tensor], sources: Sequence[torch.Tensor]) -> bool:
    return len(buffers) == len(sources) and all(
        b.shape == s.shape and b.dtype == s.dtype for b, s in zip(buffers, sources))


class TransferBackend(Protocol):
    """How blocks reach the device (see module contract)."""

    device: torch.device

    def host_copy(self, tensor: torch.Tensor) -> torch.Tensor:
        """The CPU copy a block tensor rests in (pinned where that makes copies asynchronous)."""
        ...

    def copy_in(self, block: int, sources: Sequence[torch.Tensor], slot: Slot) -> Any:
        """Issue the copies of block ``block``'s ``sources`` into ``slot.buffers`` (allocated, or reallocated when
        their shapes/dtypes differ) once ``slot.done`` is reached; returns a handle the block's compute waits on."""
        ...

    def wait(self, block: int, ready: Any) -> None:
        """Make the compute stream wait for ``ready`` (called right before block ``block`` runs)."""
        ...

    def done(self, block: int, slot: Slot) -> None:
        """Block ``block`` was issued on the compute stream: set ``slot.done`` to mark that point."""
        ...


class CudaTransferBackend:
    """Copies on a side CUDA stream with one event per copy; the compute stream is whichever is current."""

    def __init__(self, device: torch.device, *, pin_memory: bool = True) -> None:
        if device.type != "cuda":
            raise ValueError(f"CudaTransferBackend needs a CUDA device, got {device}")
        self.device = device
        self.pin_memory = pin_memory
        self.copy_stream = torch.cuda.Stream(device)

    def host_copy(self, tensor: torch.Tensor) -> torch.Tensor:
        cpu = tensor.detach().to("cpu")
        return cpu.pin_memory() if self.pin_memory and not cpu.is_pinned() else cpu

    def copy_in(self, block: int, sources: Sequence[torch.Tensor], slot: Slot) -> Any:
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.copy_stream):
            if slot.done is not None:  # the slot's previous block must be done computing before it is overwritten
                self.copy_stream.wait_event(slot.done)
            if slot.buffers is not None and _same_layout(slot.buffers, sources):
                for buffer, source in zip(slot.buffers, sources):
                    buffer.copy_(source, non_blocking=True)
            else:
                slot.buffers = [source.to(self.device, non_blocking=True) for source in sources]
                for buffer in slot.buffers:  # freed (on a reallocation) only once the compute stream is past it
                    buffer.record_stream(compute)
            ready = torch.cuda.Event()
            ready.record(self.copy_stream)
        return ready

    def wait(self, block: int, ready: Any) -> None:
        torch.cuda.current_stream(self.device).wait_event(ready)

    def done(self, block: int, slot: Slot) -> None:
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        slot.done = event


class RecordingTransferBackend:
    """The CPU stand-in: copies are synchronous ``copy_`` into CPU slot buffers; ``log`` records ``("copy", block)``
    / ``("wait", block)`` / ``("free", block)`` in order, ``allocations`` counts the slot (re)allocations."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.log: list[tuple[str, int]] = []
        self.allocations = 0

    def host_copy(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to("cpu")

    def copy_in(self, block: int, sources: Sequence[torch.Tensor], slot: Slot) -> Any:
        self.log.append(("copy", block))
        if slot.buffers is not None and _same_layout(slot.buffers, sources):
            for buffer, source in zip(slot.buffers, sources):
                buffer.copy_(source)
        else:
            slot.buffers = [source.to(self.device, copy=True) for source in sources]
            self.allocations += 1
        return ("ready", block)

    def wait(self, block: int, ready: Any) -> None:
        if ready != ("ready", block):
            raise AssertionError(f"block {block} waited on {ready!r}")
        self.log.append(("wait", block))

    def done(self, block: int, slot: Slot) -> None:
        self.log.append(("free", block))
        slot.done = ("done", block)


@dataclass
class _Resident:
    """A block with a device copy: its slot, the CPU sources it was copied from, the ready handle."""

    slot: Slot
    sources: list[torch.Tensor]
    ready: Any
    nbytes: int
    active: bool = False


@dataclass
class _BlockState:
    tensors: list[torch.Tensor]
    nbytes: int
    handles: list[RemovableHandle] = field(default_factory=list)


class LayerwiseOffloader:
    """Keep ``blocks`` on the CPU and stream them through a device window of ``window`` blocks (module contract)."""

    def __init__(self, blocks: nn.ModuleList, backend: TransferBackend, *, window: int = 2,
                 name: str = "dit") -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 (blocks resident at once), got {window}")
        self.blocks = blocks
        self.backend = backend
        self.window = window
        self.name = name
        self._states: list[_BlockState] = []
        with torch.no_grad():
            for block in blocks:
                tensors = module_tensors(block)
                for tensor in tensors:
                    tensor.data = backend.host_copy(tensor.data)
                self._states.append(_BlockState(tensors, sum(t.numel() * t.element_size() for t in tensors)))
        for index, block in enumerate(blocks):
            state = self._states[index]
            state.handles.append(block.register_forward_pre_hook(self._pre_hook(index)))
            state.handles.append(block.register_forward_hook(self._post_hook(index)))
        self._slots = [Slot(k) for k in range(window)]
        self._resident: dict[int, _Resident] = {}
        #: Block copies issued / waited on / released since construction.
        self.copies = 0
        self.waits = 0
        self.releases = 0
        #: Bytes of block weights on the device now (resident blocks), and the most at any time.
        self.resident_bytes = 0
        self.peak_resident_bytes = 0
        logger.info("%s: %d blocks (%.1f MiB) offloaded layerwise to the CPU, window %d on %s", name, len(blocks),
                    self.total_bytes / 2**20, window, backend.device)

    @property
    def num_blocks(self) -> int:
        return len(self._states)

    @property
    def block_bytes(self) -> list[int]:
        """Bytes of each block's parameters and buffers."""
        return [state.nbytes for state in self._states]

    @property
    def total_bytes(self) -> int:
        return sum(self.block_bytes)

    @property
    def slot_bytes(self) -> int:
        """Device bytes the slot buffers hold now (at most ``window`` blocks' worth)."""
        return sum(slot.nbytes for slot in self._slots)

    @property
    def resident(self) -> list[int]:
        """Indices of the blocks with a device copy now (issue order)."""
        return list(self._resident)

    # ------------------------------------------------------------------ hooks
    def _pre_hook(self, index: int) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            self.before_block(index)
        return hook

    def _post_hook(self, index: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.after_block(index)
        return hook

    def before_block(self, index: int) -> None:
        """Block ``index`` is about to run: window in place, its copy awaited, its tensors on the device."""
        wanted = range(index, min(index + self.window, self.num_blocks))
        for stale in [i for i in self._resident if i not in wanted]:
            self._release(stale)
        for i in wanted:
            if i not in self._resident:
                self._issue(i)
        resident = self._resident[index]
        if not resident.active:
            self.backend.wait(index, resident.ready)
            self.waits += 1
            assert resident.slot.buffers is not None
            for tensor, buffer in zip(self._states[index].tensors, resident.slot.buffers):
                tensor.data = buffer
            resident.active = True

    def after_block(self, index: int) -> None:
        """Block ``index`` ran: back to its CPU copies, its slot free for the next copy once the compute is past."""
        if index in self._resident:
            self._release(index)

    def release_all(self) -> None:
        """Every block back on the CPU and the slot buffers dropped (they are reallocated on the next forward)."""
        for index in list(self._resident):
            self._release(index)
        for slot in self._slots:
            slot.buffers = None  # CUDA: record_stream at allocation keeps the memory until the compute is past it

    def remove(self) -> None:
        """Remove the hooks and drop the slots; the blocks stay on the CPU."""
        self.release_all()
        for state in self._states:
            for handle in state.handles:
                handle.remove()
            state.handles.clear()

    def _issue(self, index: int) -> None:
        state = self._states[index]
        slot = self._slots[index % self.window]
        sources = [tensor.data for tensor in state.tensors]
        ready = self.backend.copy_in(index, sources, slot)
        self._resident[index] = _Resident(slot, sources, ready, state.nbytes)
        self.copies += 1
        self.resident_bytes += state.nbytes
        self.peak_resident_bytes = max(self.peak_resident_bytes, self.resident_bytes)

    def _release(self, index: int) -> None:
        resident = self._resident.pop(index)
        if resident.active:
            for tensor, source in zip(self._states[index].tensors, resident.sources):
                tensor.data = source
        self.backend.done(index, resident.slot)
        self.releases += 1
        self.resident_bytes -= resident.nbytes


def default_backend(device: torch.device, *, pin_memory: bool = True) -> TransferBackend:
    """The transfer backend for ``device``: CUDA streams and events; other devices are refused."""
    if device.type == "cuda":
        return CudaTransferBackend(device, pin_memory=pin_memory)
    raise ValueError(f"layerwise offload needs a CUDA device (blocks are copied on a side CUDA stream), got "
                     f"{device}; on the CPU the weights already live there")


def offload_layerwise(model: nn.Module, device: torch.device, *, blocks_attr: str = "blocks", window: int = 2,
                      pin_memory: bool = True, backend: TransferBackend | None = None,
                      name: str | None = None) -> LayerwiseOffloader:
    """Everything of ``model`` outside ``model.<blocks_attr>`` on ``device`` for good; the blocks offloaded
    layerwise (see module contract). ``backend`` None: :func:`default_backend` for ``device``."""
    blocks = getattr(model, blocks_attr, None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"{type(model).__name__}.{blocks_attr} is not an nn.ModuleList of blocks")
    backend = backend if backend is not None else default_backend(device, pin_memory=pin_memory)
    in_blocks = {id(tensor) for tensor in module_tensors(blocks)}
    with torch.no_grad():
        for tensor in module_tensors(model):
            if id(tensor) not in in_blocks:
                tensor.data = tensor.data.to(backend.device)
    return LayerwiseOffloader(blocks, backend, window=window, name=name or type(model).__name__)
