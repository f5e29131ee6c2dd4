"""Exportable modules: the DiT and VAE wrapped with fixed signatures for export and compilation.

Contract
--------
- :func:`load_build_models` loads the DiT (compute precision, diffusers' fp32-kept parameters) and
  the VAE (its own precision) of a checked model folder onto a device, exactly as
  :meth:`WanT2VPipeline.from_folder` does, without the text encoder; a two-expert folder (Wan2.2
  A14B: ``model_index.json`` declares ``transformer_2``) loads the second expert as ``dit_2`` the same
  way. :meth:`BuildModels.expert` maps a DiT component (``dit`` / ``dit_2``) to its module.
- :class:`DiTExport` wraps the DiT for one latent shape; :class:`ImageDiTExport` is the same for an
  image-to-video DiT, whose call takes the CLIP tokens ``encoder_hidden_states_image`` as a fourth
  input (:func:`dit_export` picks the class from the DiT's config). Its RoPE tables are its own named
  buffers (``rope_cos``/``rope_sin``, recomputed deterministically from the config), so an
  exported program's constants are all named: ``dit.<param>`` plus those two. While tracing
  (``with module.tracing():``) the DiT's public ``rope_tables`` method is overridden on the
  instance to return these buffers, and restored afterwards; eager calls are untouched.
- :class:`VAEDecodeExport` maps raw latents ``(1, z, T, h, w)`` to video with
  ``WanVAE.decode`` (chunk size 1, the pipeline's schedule); :class:`VAEEncodeExport` maps video
  to the posterior parameters ``cat([mean, logvar], dim=1)`` (rebuild the posterior with
  ``DiagonalGaussian(params)``).
- :func:`constants_map` gives every parameter and buffer by its fully qualified name: what an
  AOTInductor package built without packaged weights needs (``load_constants``), so compiled
  programs share the eager model's memory instead of holding their own copies.
- :func:`compare_outputs` is the one verification rule: ``max|a - b| <= tol * max(1, max|b|)``
  with the tolerance of :data:`TOLERANCES` for the precision.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from fastvideo.build.specs import LatentShape, ShapeCase, is_dit

logger = logging.getLogger(__name__)

__all__ = [
    "BuildModels",
    "DTYPES",
    "DiTExport",
    "ImageDiTExport",
    "TOLERANCES",
    "VAEDecodeExport",
    "VAEEncodeExport",
    "compare_outputs",
    "constants_map",
    "dit_export",
    "export_module",
    "load_build_models",
    "wan_inductor_targets",
    "wan_pipeline_models",
]

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: Relative tolerance (to ``max(1, max|reference|)``) of compiled vs eager outputs, per precision.
TOLERANCES: dict[torch.dtype, float] = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}


@dataclass
class BuildModels:
    """The eager DiT(s) and VAE a build compiles (and verifies against)."""

    dit: Any
    vae: Any
    dtype: torch.dtype
    vae_dtype: torch.dtype
    device: torch.device
    #: The second expert (``transformer_2``) of a two-expert model; None otherwise.
    dit_2: Any = None

    def expert(self, component: str) -> Any:
        """The eager module of a DiT component (``dit`` or ``dit_2``)."""
        module = self.dit_2 if component == "dit_2" else self.dit
        if module is None:
            raise ValueError(f"this model has no {component} (transformer_2): it is a one-expert model")
        return module


def load_build_models(folder: Any, *, device: torch.device, dtype: torch.dtype,
                      vae_dtype: torch.dtype, fp8_granularity: str | None = None) -> BuildModels:
    """Load the DiT and VAE of a checked :class:`ModelFolder` like the pipeline does (``fp8_granularity``:
    FP8 DiT weights, :func:`fastvideo.engine.fp8.quantize_dit`, as ``transformer_quant`` does at load)."""
    from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel, inference_param_dtype
    from fastvideo.engine.loader import load_module_weights
    from fastvideo.engine.families import declares_two_experts
    from fastvideo.engine.models.wan.vae import WanVAE, WanVAEConfig

    names = ("transformer", "transformer_2") if declares_two_experts(folder.model_index) else ("transformer",)
    dits = []
    for name in names:
        with torch.device("meta"):
            dit = WanTransformer3DModel(WanDiTConfig.from_dict(folder.read_config(name)))
        load_module_weights(dit, folder.component(name), dtype=dtype, device=device, dtype_for=inference_param_dtype)
        if fp8_granularity is not None:
            from fastvideo.engine.fp8 import quantize_dit

            quantize_dit(dit, fp8_granularity)  # type: ignore[arg-type]
        dits.append(dit)
    with torch.device("meta"):
        vae = WanVAE(WanVAEConfig.from_dict(folder.read_config("vae")))
    load_module_weights(vae, folder.component("vae"), dtype=vae_dtype, device=device)
    return BuildModels(dit=dits[0], vae=vae, dtype=dtype, vae_dtype=vae_dtype, device=device,
                       dit_2=dits[1] if len(dits) > 1 else None)


def dit_grid(dit: Any, latent: LatentShape) -> tuple[int, int, int]:
    """The DiT patch grid ``(F', H', W')`` of a latent shape."""
    pt, ph, pw = dit.config.patch_size
    return latent.frames // pt, latent.height // ph, latent.width // pw


class DiTExport(nn.Module):
    """The DiT at one latent shape, with its RoPE tables as named buffers (see module contract)."""

    rope_cos: torch.Tensor  # registered buffers (register_buffer below)
    rope_sin: torch.Tensor

    def __init__(self, dit: Any, latent: LatentShape, device: torch.device | str) -> None:
        super().__init__()
        from fastvideo.engine.models.wan.transformer import build_rope_tables

        self.dit = dit
        self.latent = latent
        cos, sin = build_rope_tables(dit.config, dit_grid(dit, latent), device)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @contextlib.contextmanager
    def tracing(self) -> Iterator["DiTExport"]:
        """Route the DiT's RoPE lookup to this module's buffers while an exporter traces it."""
        def fixed_tables(grid: tuple[int, int, int], device: torch.device | str) -> tuple[torch.Tensor, ...]:
            # Read the attributes at call time: exporters swap buffers for traced stand-ins.
            return self.rope_cos, self.rope_sin

        self.dit.__dict__["rope_tables"] = fixed_tables
        try:
            yield self
        finally:
            self.dit.__dict__.pop("rope_tables", None)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dit(hidden_states, timestep, encoder_hidden_states)


class ImageDiTExport(DiTExport):
    """An image-to-video DiT at one latent shape: the CLIP image tokens are its fourth input."""

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor,  # type: ignore[override]
                encoder_hidden_states: torch.Tensor, encoder_hidden_states_image: torch.Tensor) -> torch.Tensor:
        return self.dit(hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image)


def dit_export(dit: Any, latent: LatentShape, device: torch.device | str) -> DiTExport:
    """The export wrapper of ``dit`` at ``latent``: :class:`ImageDiTExport` for an image-to-video DiT."""
    cls = ImageDiTExport if dit.config.is_image_conditioned else DiTExport
    return cls(dit, latent, device)


class VAEDecodeExport(nn.Module):
    """Raw latents -> video through ``WanVAE.decode`` (chunk size 1)."""

    def __init__(self, vae: Any) -> None:
        super().__init__()
        self.vae = vae

    @contextlib.contextmanager
    def tracing(self) -> Iterator["VAEDecodeExport"]:
        yield self

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents)


class VAEEncodeExport(nn.Module):
    """Video -> posterior parameters ``cat([mean, logvar], dim=1)`` through ``WanVAE.encode``."""

    def __init__(self, vae: Any) -> None:
        super().__init__()
        self.vae = vae

    @contextlib.contextmanager
    def tracing(self) -> Iterator["VAEEncodeExport"]:
        yield self

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        posterior = self.vae.encode(video)
        return torch.cat([posterior.mean, posterior.logvar], dim=1)


def export_module(case: ShapeCase, models: BuildModels) -> nn.Module:
    """The wrapper module a shape case is exported/compiled from (eval mode)."""
    if is_dit(case.component):
        module: nn.Module = dit_export(models.expert(case.component), case.latent, models.device)
    elif case.component == "vae_decoder":
        module = VAEDecodeExport(models.vae)
    elif case.component == "vae_encoder":
        module = VAEEncodeExport(models.vae)
    else:  # pragma: no cover - specs reject unknown components
        raise ValueError(f"unknown component {case.component!r}")
    return module.eval()


def wan_pipeline_models(pipeline: Any) -> BuildModels:
    """A loaded Wan pipeline's eager DiT(s) and VAE as :class:`BuildModels` (what programs bind to at load)."""
    vae = pipeline.vae
    return BuildModels(dit=pipeline.dit, vae=vae, dtype=pipeline.dtype, vae_dtype=next(vae.parameters()).dtype,
                       device=torch.device(pipeline.device), dit_2=getattr(pipeline, "dit_2", None))


def wan_inductor_targets(models: BuildModels, cases: list[ShapeCase]) -> dict[str, tuple[str, nn.Module]]:
    """What the inductor backend compiles for Wan: the DiT (each expert) itself, its RoPE cache warmed for every
    case's grid first, and one VAE wrapper per VAE component; one compile per component."""
    from fastvideo.build.inductor import warm_rope

    for component in dict.fromkeys(c.component for c in cases if is_dit(c.component)):
        dit = models.expert(component)
        warm_rope(dit, [dit_grid(dit, c.latent) for c in cases if c.component == component], models.device)
    targets: dict[str, tuple[str, nn.Module]] = {}
    first: dict[str, nn.Module] = {}
    for case in cases:
        if case.component not in first:
            first[case.component] = (models.expert(case.component) if is_dit(case.component)
                                     else export_module(case, models))
        targets[case.key] = (case.component, first[case.component])
    return targets


def constants_map(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``module`` by fully qualified name (no copies)."""
    out = {name: p.detach() for name, p in module.named_parameters(remove_duplicate=False)}
    out.update({name: b for name, b in module.named_buffers(remove_duplicate=False)})
    return out


def compare_outputs(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> tuple[float, float, bool]:
    """``(max_abs_diff, allowed, ok)`` of a compiled output against the eager reference."""
    if tuple(out.shape) != tuple(ref.shape):
        return float("inf"), 0.0, False
    diff = (out.float() - ref.float()).abs().max().item() if out.numel() else 0.0
    scale = max(1.0, ref.float().abs().max().item() if ref.numel() else 0.0)
    allowed = TOLERANCES.get(dtype, 5e-2) * scale
    return diff, allowed, bool(diff <= allowed)
