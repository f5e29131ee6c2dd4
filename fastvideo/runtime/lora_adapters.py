"""LoRA adapters of one ``VideoGenerator``: registered by nickname, one merged at a time, changed only when idle.

Contract (FastVideo's ``VideoGenerator`` LoRA semantics, on :mod:`fastvideo.engine.lora`):
- The adapters go into the served pipeline's ``dit`` (Wan's DiT; LTX-2's ``components.transformer``), whatever the
  family, for the families whose registry entry says ``lora`` (the generator refuses the others); the file's key
  layout is the DiT's (:func:`fastvideo.engine.lora.lora_key_map`).
- ``set_adapter(nickname, path=None, strength=1.0)`` loads ``path`` (a LoRA ``.safetensors`` file or a folder
  holding one) and registers it as ``nickname`` (a registered nickname needs no path), then merges it into the
  DiT at ``strength``, unmerging the adapter merged before (switching adapters never stacks them; FastVideo's
  ``accumulate=True`` is refused). Setting the adapter that is already merged at the same strength does nothing.
- ``merge()`` merges the current adapter again after ``unmerge()``; ``unmerge()`` restores the original DiT
  weights bit-exactly. ``merge()`` without an adapter set is a ConfigError; ``unmerge()`` with nothing merged
  does nothing.
- Changes never race with generations: :meth:`gate` is held (briefly) by every direct submission to the
  generator's engine core, and a change first closes the gate, then waits until that core has nothing queued
  or running, changes the weights, and opens it again. Requests submitted meanwhile wait, then run on the
  new weights. Engine cores the generator does not own (a ``VideoService``, a GPU pool worker) are not
  drained: set adapters before serving starts.
- Weights change in place (``param.data``), so CUDA graphs captured over the old weights and torch.compile'd
  code stay valid and see the new weights. Refused (ConfigError) on a DiT served by compiled artifacts
  (``engine.artifacts_path``: the programs hold their own weights; an artifact built with ``fastvideo-build
  --lora`` serves the adapter ``pipeline.components.lora_path`` names, checked against its manifest) or
  quantized to FP8, and on a two-expert model (Wan2.2 A14B: a merge would change one expert only).
- Per request, ``extensions.lora`` (a nickname) is checked by :meth:`check_request`: a name other than the
  merged adapter's (or any name while none is merged) is a RequestError on ``extensions.lora`` that says to
  call ``set_lora_adapter``; requests never switch adapters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fastvideo.api import ConfigError, GenerationRequest, RequestError
from fastvideo.engine.lora import LoraAdapter, MergedLora, load_lora, merge_lora, unmerge_lora

logger = logging.getLogger(__name__)

#: The request field that names the adapter a request expects.
REQUEST_FIELD = "extensions.lora"


def fuse_at_load(pipeline: Any, components: Any) -> MergedLora | None:
    """Merge ``pipeline.components.lora_path`` into a freshly loaded pipeline's DiT (None: no path); a bad file
    closes the pipeline and raises a ConfigError on that field."""
    if components.lora_path is None:
        return None
    field = "pipeline.components.lora_path"
    try:
        adapter = load_lora(components.lora_path, pipeline.dit, field_name=field)
    except ConfigError:
        pipeline.close()
        raise
    return merge_lora(pipeline.dit, adapter, float(components.lora_strength))


def requested_adapter(request: Any) -> Any:
    """The adapter nickname a request (typed or a mapping) names in ``extensions.lora``; None when it names none."""
    if isinstance(request, GenerationRequest):
        return request.extensions.get("lora")
    if isinstance(request, Mapping):
        extensions = request.get("extensions")
        return extensions.get("lora") if isinstance(extensions, Mapping) else None
    return None


class LoraAdapters:
    """The adapters of one generator (see module contract)."""

    def __init__(self, generator: Any) -> None:
        self._generator = generator
        self.adapters: dict[str, LoraAdapter] = {}
        #: nickname of the current adapter (merged or not), and its strength
        self.current: str | None = None
        self.strength = 1.0
        self._merged: MergedLora | None = None
        self._cond = threading.Condition()
        self._changing = False

    @property
    def merged(self) -> str | None:
        """Nickname of the adapter merged into the DiT now, or None."""
        return self.current if self._merged is not None else None

    # ------------------------------------------------------------------ gate
    @contextmanager
    def gate(self, *, wait: bool = True) -> Iterator[bool]:
        """Held while submitting to the engine core: yields False (``wait=False``) while a change is running."""
        with self._cond:
            if self._changing and not wait:
                yield False
                return
            while self._changing:
                self._cond.wait()
            yield True

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._changing:
                self._cond.wait()
            self._changing = True
        try:
            core = getattr(self._generator, "_core", None)
            while core is not None and (core.queue_depth or core.running):
                time.sleep(0.01)
            yield
        finally:
            with self._cond:
                self._changing = False
                self._cond.notify_all()

    # ------------------------------------------------------------------ changes
    def adopt(self, nickname: str, merged: MergedLora) -> None:
        """Record an adapter the generator merged while loading (``pipeline.components.lora_path``)."""
        self.adapters[nickname] = merged.adapter
        self.current, self.strength, self._merged = nickname, merged.strength, merged

    def _check_mergeable(self, field: str) -> None:
        if getattr(self._generator, "artifacts", None) is not None:
            raise ConfigError(field, "the DiT is served by the compiled programs of engine.artifacts_path, which "
                                     "hold their own weights; drop engine.artifacts_path to use LoRA adapters")
        if getattr(self._generator.pipeline, "dit_2", None) is not None:
            raise ConfigError(field, "LoRA adapters are not supported on two-expert models (Wan2.2 A14B) yet: a "
                                     "merge would change the first expert only")
        if getattr(self._generator.pipeline, "quantization", None) is not None:
            raise ConfigError(field, "LoRA adapters cannot be merged into FP8-quantized DiT weights; drop "
                                     "engine.quantization.transformer_quant to use them")

    def set_adapter(self, nickname: str, path: str | None = None, strength: float = 1.0, *,
                    accumulate: bool = False, field: str = "lora_path") -> None:
        if accumulate:
            raise ConfigError("accumulate", "stacking LoRA adapters is not supported yet: one adapter is merged at a "
                                            "time; set accumulate=False (setting an adapter replaces the previous)")
        if not isinstance(nickname, str) or not nickname:
            raise ConfigError("lora_nickname", f"{nickname!r} must be a non-empty name for the adapter")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)):
            raise ConfigError("strength", f"{strength!r} must be a number (the LoRA scale; 1.0 as trained)")
        self._check_mergeable(field)
        dit = self._generator.pipeline.dit
        if path is not None:
            adapter = load_lora(path, dit, field_name=field)  # read before draining: nothing waits on the disk
        elif nickname in self.adapters:
            adapter = self.adapters[nickname]
        else:
            raise ConfigError("lora_nickname", f"no adapter is registered as {nickname!r} (registered: "
                                               f"{sorted(self.adapters)}); pass lora_path to load it")
        if path is None and self.merged == nickname and self.strength == float(strength):
            return
        with self._exclusive():
            if self._merged is not None:
                unmerge_lora(dit, self._merged)
                self._merged = None
            self.adapters[nickname] = adapter
            self._merged = merge_lora(dit, adapter, float(strength))
            self.current, self.strength = nickname, float(strength)
        logger.info("LoRA adapter %r (%s) merged at strength %s", nickname, adapter.path, strength)

    def merge(self) -> None:
        if self.current is None:
            raise ConfigError("lora_nickname", "no LoRA adapter is set; call set_lora_adapter(nickname, lora_path) "
                                               "first")
        if self._merged is not None:
            return
        self._check_mergeable("lora_path")
        with self._exclusive():
            self._merged = merge_lora(self._generator.pipeline.dit, self.adapters[self.current], self.strength)

    def unmerge(self) -> None:
        if self._merged is None:
            return
        with self._exclusive():
            unmerge_lora(self._generator.pipeline.dit, self._merged)
            self._merged = None

    # ------------------------------------------------------------------ requests
    def check_request(self, extensions: dict[str, Any]) -> dict[str, Any]:
        """Check ``extensions.lora`` against the merged adapter; returns the extensions without it."""
        if "lora" not in extensions:
            return extensions
        wanted = extensions["lora"]
        self.check_name(wanted)
        return {k: v for k, v in extensions.items() if k != "lora"}

    def check_name(self, wanted: Any) -> None:
        if wanted is None:
            return
        merged = self.merged
        if wanted != merged:
            now = f"the merged adapter is {merged!r}" if merged else "no adapter is merged"
            raise RequestError(REQUEST_FIELD, f"{wanted!r} is not the merged LoRA adapter ({now}); requests do not "
                                              "switch adapters: call VideoGenerator.set_lora_adapter("
                                              f"{wanted!r}, lora_path) first, or drop the field")

    def submit(self, submit: Callable[[], Any], wanted: Any = None) -> Any:
        """Run ``submit`` with the gate held, re-checking the request's adapter against the merged one."""
        with self.gate():
            self.check_name(wanted)
            return submit()
