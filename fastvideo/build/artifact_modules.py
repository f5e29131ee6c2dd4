"""Plugging loaded ``fastvideo-build`` artifacts into a pipeline: the compiled DiT and VAE.

Contract
--------
- :func:`apply_artifacts(pipeline, loaded)` (``loaded`` from :func:`fastvideo.build.loading.load_artifacts`)
  hands the pipeline to the build's family adapter (:mod:`fastvideo.build.adapters`; LTX-2:
  :mod:`fastvideo.build.ltx2_export`). For Wan (:func:`apply_wan_artifacts`) it swaps ``pipeline.dit``
  for an :class:`ArtifactDiT` (an ``nn.Module`` keeping ``.config`` and the
  ``(hidden_states, timestep, encoder_hidden_states)`` call) and ``pipeline.vae`` for an
  :class:`ArtifactVAE` (same ``decode``/``encode``/``denormalize_latents``/``spatial_factor``
  surface). The runnable callables come from the backend registry
  (:attr:`fastvideo.build.backends.ArtifactBackend.runners`): AOTInductor programs share the eager
  model's weights (bound with ``user_managed`` constants, no copy; a program that does not bind to
  the model's component, other parameter names, is an :class:`ArtifactMismatchError` on
  ``component``); the inductor backend compiles and warms every (shape, batch) from a private copy
  of the verified cache; TensorRT engines run on the current CUDA stream. The eager DiT is kept
  for fallbacks when the backend shares its weights, or when ``on_miss="eager"``.
- Image-to-video builds: :class:`ArtifactDiT` takes ``encoder_hidden_states_image`` as a fourth argument,
  exactly as the eager DiT does (required for an image-conditioned build, refused for a text-to-video one);
  its shape must be the build's ``(batch, image_tokens, image_dim)``.
- Two-expert builds (components ``dit`` and ``dit_2``): ``pipeline.dit`` and ``pipeline.dit_2`` become one
  :class:`ArtifactDiT` each and ``pipeline.experts`` a new :class:`~fastvideo.engine.models.wan.experts.ExpertSet`
  of the two, so the executor's per-step expert choice runs the compiled expert. A pipeline whose experts are
  offloaded (``engine.offload.dit``: one resident at a time) is refused (compiled programs read the device
  weights in place); so is a build whose expert count differs from the pipeline's.
- Shapes: a call whose latent shape / batch / text length / dtype is not one the build covers
  raises :class:`ArtifactShapeError` listing the served profiles and the rebuild command
  (``on_miss="error"``, the default: a silent eager fallback would hide a 2-5x slower request, and
  memory planned for compiled programs). ``on_miss="eager"`` runs the eager module instead and logs
  one warning per shape.
- ``timestep`` is cast to float32 and broadcast to the batch before the compiled call (the DiT
  turns it into float32 itself, so results are identical for the int64 UniPC timesteps).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from fastvideo.build.backends import artifact_backend
from fastvideo.build.loading import (
    PRECISION_NAMES,
    ArtifactError,
    ArtifactMismatchError,
    ArtifactShapeError,
    LoadedArtifacts,
)

if TYPE_CHECKING:
    from fastvideo.engine.models.wan.transformer import WanTransformer3DModel

logger = logging.getLogger(__name__)

__all__ = ["ArtifactDiT", "ArtifactVAE", "Dispatch", "apply_artifacts", "apply_wan_artifacts"]


class Dispatch:
    """Shared miss handling: raise (default) or run eager with one warning per shape."""

    def __init__(self, loaded: LoadedArtifacts, component: str, on_miss: str) -> None:
        if on_miss not in ("error", "eager"):
            raise ValueError(f"on_miss must be 'error' or 'eager', got {on_miss!r}")
        self.loaded, self.component, self.on_miss = loaded, component, on_miss
        self.warned: set[Any] = set()
        self.calls = 0
        self.misses = 0

    def miss(self, what: str, key: Any, eager: Callable[[], torch.Tensor] | None) -> torch.Tensor:
        self.misses += 1
        message = (f"{self.component}: {what} is not covered by the loaded {self.loaded.backend} artifacts "
                   f"({self.loaded.path.name}), which serve: {self.loaded.served(self.component)}. Rebuild with: "
                   f"{self.loaded.rebuild_command()} plus a --profile for this size")
        if self.on_miss == "error" or eager is None:
            raise ArtifactShapeError(message)
        if key not in self.warned:
            self.warned.add(key)
            logger.warning("%s; running eager", message)
        return eager()


class ArtifactDiT(nn.Module):
    """The DiT served by compiled programs (see module contract)."""

    def __init__(self, dit: WanTransformer3DModel, loaded: LoadedArtifacts, runners: dict[tuple[int, int, int],
                 tuple[tuple[int, ...], Callable[..., torch.Tensor]]], on_miss: str = "error",
                 keep_eager: bool = True, component: str = "dit") -> None:
        super().__init__()
        self.config = dit.config
        self.component = component
        self.attention_backend = getattr(dit, "attention_backend", None)
        self.eager: WanTransformer3DModel | None = dit if keep_eager else None
        self._runners = runners
        self._dispatch = Dispatch(loaded, component, on_miss)
        self._text_shape = (int(loaded.manifest.model.get("text_length", 0)), dit.config.text_dim)
        model = loaded.manifest.model
        #: ``(image_tokens, image_dim)`` of an image-conditioned build; None for text-to-video.
        self._image_shape = ((int(model.get("image_tokens") or 0), int(model.get("image_dim") or 0))
                             if model.get("image_conditioned") else None)
        self._dtype = loaded.dtype

    def step_constants(self, latents: torch.Tensor) -> Any:
        """What a captured step at this shape reads besides its inputs (see
        :meth:`WanTransformer3DModel.step_constants`): the eager DiT's RoPE tables when it is kept
        (inductor programs read them from its cache); ``None`` when compiled programs own every constant."""
        return None if self.eager is None else self.eager.step_constants(latents)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_hidden_states_image: torch.Tensor | None = None) -> torch.Tensor:
        self._dispatch.calls += 1
        if (encoder_hidden_states_image is None) != (self._image_shape is None):
            raise ValueError("encoder_hidden_states_image is required by these image-to-video artifacts" if
                             self._image_shape is not None else
                             "encoder_hidden_states_image was given to text-to-video artifacts (no image input)")
        image = () if encoder_hidden_states_image is None else (encoder_hidden_states_image,)
        batch = hidden_states.shape[0]
        latent = tuple(hidden_states.shape[2:]) if hidden_states.ndim == 5 else ()
        runner = self._runners.get(latent) if len(latent) == 3 else None
        eager_dit = self.eager
        eager = None if eager_dit is None else (lambda: eager_dit(hidden_states, timestep, encoder_hidden_states,
                                                                  *image))
        if runner is None or batch not in runner[0]:
            return self._dispatch.miss(f"latent shape {tuple(hidden_states.shape)} (batch {batch})",
                                       (latent, batch), eager)
        if tuple(encoder_hidden_states.shape) != (batch, *self._text_shape) or \
                hidden_states.dtype != self._dtype or encoder_hidden_states.dtype != self._dtype:
            return self._dispatch.miss(
                f"inputs {tuple(hidden_states.shape)}/{hidden_states.dtype} with text states "
                f"{tuple(encoder_hidden_states.shape)}/{encoder_hidden_states.dtype} (expected text "
                f"{(batch, *self._text_shape)} in {self._dtype})", ("inputs", latent, batch), eager)
        tokens = encoder_hidden_states_image
        if self._image_shape is not None and tokens is not None and (
                tuple(tokens.shape) != (batch, *self._image_shape) or tokens.dtype != self._dtype):
            return self._dispatch.miss(
                f"image tokens {tuple(tokens.shape)}/{tokens.dtype} (expected {(batch, *self._image_shape)} in "
                f"{self._dtype})", ("image", latent, batch), eager)
        if timestep.ndim != 1 or timestep.shape[0] not in (1, batch):
            raise ValueError(f"timestep must have shape ({batch},) or (1,), got {tuple(timestep.shape)}")
        timestep = timestep.to(torch.float32).expand(batch).contiguous()
        return runner[1](hidden_states.contiguous(), timestep, encoder_hidden_states.contiguous(),
                         *(t.contiguous() for t in image))


class ArtifactVAE:
    """The VAE with compiled ``decode`` (and ``encode`` when built); everything else is the eager VAE's."""

    def __init__(self, vae: Any, loaded: LoadedArtifacts, decoders: dict[tuple[int, ...], Callable[..., torch.Tensor]],
                 encoders: dict[tuple[int, ...], Callable[..., torch.Tensor]], on_miss: str = "error") -> None:
        self.eager = vae
        self.config = vae.config
        self._decoders, self._encoders = decoders, encoders
        self._decode_dispatch = Dispatch(loaded, "vae_decoder", on_miss)
        self._encode_dispatch = Dispatch(loaded, "vae_encoder", on_miss)
        self._dtype = next(vae.parameters()).dtype

    @property
    def spatial_factor(self) -> int:
        return self.eager.spatial_factor

    @property
    def temporal_factor(self) -> int:
        return self.eager.temporal_factor

    def __getattr__(self, name: str) -> Any:  # everything not overridden: the eager VAE
        if name == "eager":
            raise AttributeError(name)
        return getattr(self.eager, name)

    def decode(self, z: torch.Tensor, *, chunk_size: int = 1) -> torch.Tensor:
        self._decode_dispatch.calls += 1
        runner = self._decoders.get(tuple(z.shape)) if chunk_size == 1 and z.dtype == self._dtype else None
        if runner is None:
            return self._decode_dispatch.miss(f"latents {tuple(z.shape)} {z.dtype} (chunk_size {chunk_size})",
                                              (tuple(z.shape), chunk_size),
                                              lambda: self.eager.decode(z, chunk_size=chunk_size))
        return runner(z.contiguous())

    def encode(self, video: torch.Tensor, *, chunk_size: int = 1) -> Any:
        from fastvideo.engine.models.wan.vae import DiagonalGaussian

        self._encode_dispatch.calls += 1
        runner = self._encoders.get(tuple(video.shape)) if chunk_size == 1 and video.dtype == self._dtype else None
        if runner is None:
            if not self._encoders:  # no encoder was built: encoding is simply eager
                return self.eager.encode(video, chunk_size=chunk_size)
            return self._encode_dispatch.miss(f"video {tuple(video.shape)} {video.dtype}", tuple(video.shape),
                                              lambda: self.eager.encode(video, chunk_size=chunk_size))
        return DiagonalGaussian(runner(video.contiguous()))


def apply_artifacts(pipeline: Any, loaded: LoadedArtifacts, *, on_miss: str = "error") -> None:
    """Serve ``pipeline``'s compiled components from ``loaded`` through the build's family adapter
    (:func:`fastvideo.build.adapters.adapter_for_manifest`: :func:`apply_wan_artifacts` for Wan,
    :func:`fastvideo.build.ltx2_export.apply_ltx2_artifacts` for LTX-2)."""
    from fastvideo.build.adapters import adapter_for_manifest

    adapter_for_manifest(loaded.manifest.model).apply(pipeline, loaded, on_miss)


def apply_wan_artifacts(pipeline: Any, loaded: LoadedArtifacts, on_miss: str = "error") -> None:
    """Serve a Wan ``pipeline``'s DiT and VAE from ``loaded`` (see module contract)."""
    t0 = time.perf_counter()
    if isinstance(pipeline.dit, ArtifactDiT):
        raise ArtifactError("artifacts are already applied to this pipeline")
    loaded.check_target(pipeline)
    device = torch.device(pipeline.device)
    vae_precision = PRECISION_NAMES.get(pipeline.vae_dtype)
    if any(e.case.component != "dit" for e in loaded.cases.values()) and vae_precision != \
            loaded.manifest.vae_precision:
        raise ArtifactMismatchError("vae_precision", loaded.manifest.vae_precision, vae_precision,
                                    "the pipeline's VAE precision differs from the build's",
                                    loaded.rebuild_command(vae_precision=vae_precision))
    built_attention = loaded.manifest.model.get("attention_backend")
    current_attention = getattr(getattr(pipeline.dit, "attention_backend", None), "name", None)
    if built_attention and current_attention and built_attention != current_attention:
        logger.warning("artifacts were compiled with the %s attention backend; the compiled programs keep it (the "
                       "pipeline's %s backend is used only by eager fallbacks)", built_attention, current_attention)
    dit, dit_2, vae = pipeline.dit, getattr(pipeline, "dit_2", None), pipeline.vae
    built = {entry.case.component for entry in loaded.cases.values()}
    if (dit_2 is not None) != ("dit_2" in built):
        have, want = ("dit and dit_2" if "dit_2" in built else "dit"), ("two experts" if dit_2 is not None else "one")
        raise ArtifactMismatchError("experts", sorted(c for c in built if c.startswith("dit")),
                                    "dit, dit_2" if dit_2 is not None else "dit",
                                    f"the artifacts hold {have} but the pipeline runs {want}",
                                    loaded.rebuild_command() + " --force")
    experts = getattr(pipeline, "experts", None)
    if dit_2 is not None and getattr(experts, "offloaded", False):
        raise ArtifactError("compiled experts read their weights on the device in place, so they cannot be served "
                            "with engine.offload.dit (one expert resident at a time); turn that offload off or drop "
                            "engine.artifacts_path")
    backend = artifact_backend(loaded.backend)
    runners = backend.runners(pipeline, loaded)
    dit_runners: dict[str, dict[tuple[int, int, int], tuple[tuple[int, ...], Callable[..., torch.Tensor]]]] = {
        "dit": {}, "dit_2": {}}
    decoders: dict[tuple[int, ...], Callable[..., torch.Tensor]] = {}
    encoders: dict[tuple[int, ...], Callable[..., torch.Tensor]] = {}
    for key, entry in loaded.cases.items():
        case, runner = entry.case, runners[key]
        if case.component in dit_runners:
            dit_runners[case.component][(case.latent.frames, case.latent.height, case.latent.width)] = \
                (case.batches, runner)
        else:
            shape = case.inputs[0].opt_shape
            (decoders if case.component == "vae_decoder" else encoders)[tuple(shape)] = runner
    keep_eager = backend.shares_eager_weights or on_miss == "eager"
    pipeline.dit = ArtifactDiT(dit, loaded, dit_runners["dit"], on_miss=on_miss, keep_eager=keep_eager)
    if dit_2 is not None:
        from fastvideo.engine.models.wan.experts import ExpertSet

        pipeline.dit_2 = ArtifactDiT(dit_2, loaded, dit_runners["dit_2"], on_miss=on_miss, keep_eager=keep_eager,
                                     component="dit_2")
        pipeline.experts = ExpertSet([pipeline.dit, pipeline.dit_2], device)
    if decoders or encoders:
        pipeline.vae = ArtifactVAE(vae, loaded, decoders, encoders, on_miss=on_miss)
    loaded.stats["apply_s"] = time.perf_counter() - t0
    logger.info("serving the DiT%s%s from %s artifacts (%s)", " (both experts)" if dit_2 is not None else "",
                " and VAE" if decoders else "", loaded.backend, loaded.path.name)
