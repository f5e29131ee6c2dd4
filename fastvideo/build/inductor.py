"""Inductor backend: ``torch.compile`` with a persistent cache prepared at build time.

Contract
--------
- Build: inside :func:`inductor_cache_env` pointed at ``<build>/inductor_cache``, every shape case
  is compiled (``dynamic=False``; the DiT with ``fullgraph=True``) and run once per batch size, so
  the FX-graph, AOTAutograd and generated-kernel caches for exactly the declared shapes land in
  the artifact folder.
- Load: the verified cache is copied to a private temporary directory (so the artifact folder is
  never written to: a cache hit still writes generated modules into the cache directory), the
  same compile + one warm call per (case, batch) runs inside :func:`inductor_cache_env` pointed
  at that copy, and :class:`CacheStats` reports FX-graph cache hits and misses. Misses mean the
  runtime compiled something the build did not (a different torch/inductor config); they are
  logged as a warning and exposed for tests.
- :func:`inductor_cache_env` is the **only** place that sets ``TORCHINDUCTOR_CACHE_DIR`` and
  ``TRITON_CACHE_DIR``; it restores both on exit (also on error), forces the local FX-graph and
  AOTAutograd caches on and remote caches off for its duration, and raises dynamo's recompile
  limit to at least the number of shapes compiled (a process-wide setting, never lowered).
- What is compiled per case is the family's choice (:attr:`fastvideo.build.adapters.BuildAdapter.inductor_targets`,
  the same at build and at load): Wan's DiT is compiled directly (its RoPE lookup is a cache hit: :func:`warm_rope`
  fills the DiT's RoPE cache for every grid before anything is compiled, at build and at load, so guards see the
  same cache; at most ``ROPE_CACHE_SIZE`` DiT latent shapes per build); LTX-2 compiles one export wrapper per case.
- :data:`ARTIFACT_BACKEND` is the ``inductor`` entry of :mod:`fastvideo.build.backends`: no
  per-case program files; the private cache copy is made at load, the compile + warm-up runs at
  apply time; the compiled modules share the eager weights; the environment adds triton (CUDA) or
  the CPU vector ISA (CPU).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import torch
from torch import nn

from fastvideo.build.backends import ArtifactBackend, Runner
from fastvideo.build.specs import is_dit

if TYPE_CHECKING:  # pragma: no cover
    from fastvideo.build.loading import LoadedArtifacts

logger = logging.getLogger(__name__)

__all__ = ["ARTIFACT_BACKEND", "CACHE_SUBDIR", "CacheStats", "compile_component", "inductor_cache_env",
           "read_cache_counters", "warm_rope"]

CACHE_SUBDIR = "inductor_cache"
_ENV_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


@dataclass
class CacheStats:
    """FX-graph cache hits and misses observed while compiling."""

    hits: int = 0
    misses: int = 0


def read_cache_counters() -> CacheStats:
    """Current process-wide FX-graph cache counters (from ``torch._dynamo.utils.counters``)."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return CacheStats(hits=int(inductor.get("fxgraph_cache_hit", 0)), misses=int(inductor.get("fxgraph_cache_miss", 0)))


@contextlib.contextmanager
def inductor_cache_env(cache_dir: Path, shapes: int = 8) -> Iterator[Path]:
    """Point Inductor's and Triton's caches at ``cache_dir`` for the duration (see module contract)."""
    import torch._dynamo.config as dynamo_config
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    saved = {name: os.environ.get(name) for name in _ENV_VARS}
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    os.environ["TRITON_CACHE_DIR"] = str(cache_dir / "triton")
    limit_name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    if getattr(dynamo_config, limit_name) < shapes + 2:
        setattr(dynamo_config, limit_name, shapes + 2)
    patches: list[Any] = [inductor_config.patch(fx_graph_cache=True, fx_graph_remote_cache=False)]
    if hasattr(functorch_config, "enable_autograd_cache"):
        patches.append(functorch_config.patch(enable_autograd_cache=True))
    try:
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            yield cache_dir
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def warm_rope(dit: Any, grids: Iterable[tuple[int, int, int]], device: torch.device) -> None:
    """Fill the DiT's RoPE cache for ``grids`` (eagerly, outside any graph)."""
    from fastvideo.engine.models.wan.transformer import ROPE_CACHE_SIZE

    grids = list(dict.fromkeys(grids))
    if len(grids) > ROPE_CACHE_SIZE:
        raise ValueError(f"the inductor backend serves at most {ROPE_CACHE_SIZE} DiT latent shapes per build "
                         f"(the DiT's RoPE cache size); {len(grids)} were declared")
    for grid in grids:
        dit.rope_tables(grid, device)


def compile_component(component: str, module: nn.Module) -> Callable[..., torch.Tensor]:
    """``torch.compile`` a component's callable: the DiT itself (fullgraph) or a VAE wrapper."""
    if is_dit(component):
        return torch.compile(module, backend="inductor", dynamic=False, fullgraph=True)
    return torch.compile(module, backend="inductor", dynamic=False)


def _private_copy(folder: Path) -> Path:
    """Copy the verified cache to a temporary directory: a cache hit still writes into the cache directory."""
    private = Path(tempfile.mkdtemp(prefix="fastvideo-inductor-"))
    shutil.copytree(Path(folder) / CACHE_SUBDIR, private / CACHE_SUBDIR)
    return private


def _compiled_runners(pipeline: Any, loaded: LoadedArtifacts) -> dict[str, Runner]:
    """Compile every case's target (the family's :attr:`BuildAdapter.inductor_targets`) from the private cache
    copy and warm each (case, batch) once."""
    from fastvideo.build.adapters import adapter_for_manifest

    assert loaded.private_dir is not None
    adapter = adapter_for_manifest(loaded.manifest.model)
    entries = list(loaded.cases.values())
    models = adapter.pipeline_models(pipeline)
    compiled: dict[str, Runner] = {}
    with inductor_cache_env(loaded.private_dir / CACHE_SUBDIR, shapes=sum(len(e.case.batches) for e in entries)):
        before = read_cache_counters()
        targets = adapter.inductor_targets(models, [e.case for e in entries])
        with torch.no_grad():
            for entry in entries:
                group, module = targets[entry.case.key]
                if group not in compiled:
                    compiled[group] = compile_component(entry.case.component, module)
                for batch in entry.case.batches:
                    compiled[group](*entry.case.sample_inputs(batch, device=loaded.device, compute_dtype=loaded.dtype,
                                                              vae_dtype=models.vae_dtype))
        after = read_cache_counters()
    loaded.stats["inductor_cache_hits"] = after.hits - before.hits
    loaded.stats["inductor_cache_misses"] = after.misses - before.misses
    if after.misses > before.misses:
        logger.warning("inductor compiled %d graph(s) that were not in the artifact cache (a different torch or "
                       "inductor configuration?); startup was slower than it should be", after.misses - before.misses)
    return {key: compiled[targets[key][0]] for key in loaded.cases}


#: The ``inductor`` entry of the artifact backend registry (see module contract).
ARTIFACT_BACKEND = ArtifactBackend(name="inductor", environment=frozenset({"triton", "cpu_isa"}),
                                   shares_eager_weights=True, runners=_compiled_runners, private_copy=_private_copy)
