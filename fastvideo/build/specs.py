"""Export specs: which tensors each compiled component takes, at which shapes, for a build.

Contract
--------
- A build declares video profiles ``HEIGHTxWIDTHxFRAMES`` (:class:`VideoProfile`), segment
  branches (``initial``, ``continuation``) and which DiT batch sizes to serve (CFG runs the
  conditional and unconditional branches as one batch of 2 when ``guidance_scale > 1``; without
  CFG the batch is 1). :func:`derive_specs` turns that into one :class:`ComponentSpec` per
  component (``dit``, ``vae_decoder``, ``vae_encoder``), each holding the distinct
  :class:`ShapeCase` s (one compiled program each) with their input/output :class:`TensorSpec` s.
- Latent sizes follow the engine exactly: latent frames ``= (F' - 1) // 4 + 1`` where ``F'`` is the
  frame count rounded up to ``4k + 1`` (:mod:`fastvideo.engine.validation`), latent height/width
  are ``H / 8`` and ``W / 8``. The continuation branch prepends the previous segment's tail
  (``DEFAULT_TAIL_FRAMES`` latent frames = ``1 + 4 (K - 1)`` video frames), so its DiT and VAE
  decoder see more latent frames than the initial branch at the same profile.
- Spatial and temporal sizes are static per case (RoPE tables and the VAE's causal chunk loop are
  specialized per shape); only the DiT batch axis is dynamic, ``(min, opt, max) = (min(batches),
  max(batches), max(batches))``. The VAE always runs batch 1.
- Input names (stable, used by ONNX/TensorRT and the runtime): DiT ``hidden_states``,
  ``timestep`` (float32), ``encoder_hidden_states`` (+ ``encoder_hidden_states_image`` for an
  image-to-video DiT: ``(B, L_img, image_dim)`` CLIP tokens, :attr:`ModelDims.image_tokens` of them;
  its ``hidden_states`` are the ``in_channels`` = noise + condition channels, e.g. 16 + 20 = 36)
  -> ``noise_pred``; VAE decoder ``latents``
  (raw, already denormalized) -> ``video``; VAE encoder ``video`` -> ``latent_params`` (the
  posterior's ``[mean, logvar]`` along channels).
- :meth:`ShapeCase.sample_inputs` makes deterministic inputs (seeded CPU generator) for export and
  verification. Nothing here imports torch at module import time except for typing-free helpers.
- Two experts (Wan2.2 A14B, :attr:`ModelDims.experts` = 2): the second expert (``transformer_2``) is
  the component ``dit_2``, with exactly the DiT's shape cases and inputs; it is built whenever ``dit``
  is (:func:`expand_components`), so an artifact never serves one expert compiled and the other eager.
  ``dit_2`` on a one-expert model is a :class:`SpecError`. :data:`DIT_COMPONENTS` lists both.
- This module derives Wan's cases; another family derives its own through its build adapter
  (:mod:`fastvideo.build.adapters`; LTX-2: :mod:`fastvideo.build.ltx2_export`), using
  :attr:`ShapeCase.variant` (part of the key) and :attr:`ShapeCase.params` for what its programs are specialized
  for besides the latent shape; both are omitted from Wan's manifests. :meth:`ShapeCase.sample_inputs` draws
  int64 inputs as all-ones keep-masks and every :data:`TIME_INPUTS` name at :data:`SAMPLE_TIMESTEP`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from fastvideo.api.errors import FastVideoError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "BRANCHES",
    "COMPONENTS",
    "DIT_COMPONENTS",
    "ComponentSpec",
    "LatentShape",
    "ModelDims",
    "ShapeCase",
    "SpecError",
    "TensorSpec",
    "VideoProfile",
    "batches_for_cfg",
    "derive_specs",
    "expand_components",
    "is_dit",
    "latent_frames_for",
]

BRANCHES = ("initial", "continuation")
COMPONENTS = ("dit", "dit_2", "vae_decoder", "vae_encoder")
#: The DiT components: ``dit`` (``transformer``) and, for two-expert models, ``dit_2`` (``transformer_2``).
DIT_COMPONENTS = ("dit", "dit_2")
#: The model sub-folder each DiT component is exported from.
EXPERT_FOLDERS: dict[str, str] = {"dit": "transformer", "dit_2": "transformer_2"}
#: The image-to-video DiT's extra input (after the three text-to-video ones).
IMAGE_INPUT = "encoder_hidden_states_image"
#: Inputs and outputs of every component, in call order (an image-to-video DiT adds :data:`IMAGE_INPUT`).
INPUT_NAMES: dict[str, tuple[str, ...]] = {
    "dit": ("hidden_states", "timestep", "encoder_hidden_states"),
    "dit_2": ("hidden_states", "timestep", "encoder_hidden_states"),
    "vae_decoder": ("latents",),
    "vae_encoder": ("video",),
}
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "dit": ("noise_pred",),
    "dit_2": ("noise_pred",),
    "vae_decoder": ("video",),
    "vae_encoder": ("latent_params",),
}
_PROFILE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*$")
#: The value the sample timestep takes (the middle of the 0..1000 schedule).
SAMPLE_TIMESTEP = 700.0
#: Inputs that hold timesteps / sigmas on the 0..1000 scale (sampled at :data:`SAMPLE_TIMESTEP`).
TIME_INPUTS = frozenset({"timestep", "sigma", "audio_timestep"})


class SpecError(FastVideoError, ValueError):
    """A build request whose shapes cannot be compiled (the message says why and what works)."""


@dataclass(frozen=True, order=True)
class VideoProfile:
    """A served video shape: ``height x width x frames`` in pixels / frames."""

    height: int
    width: int
    frames: int

    @classmethod
    def parse(cls, text: str) -> "VideoProfile":
        match = _PROFILE.match(text)
        if not match:
            raise SpecError(f"profile {text!r} must look like 480x832x81 (HEIGHTxWIDTHxFRAMES)")
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3)))

    @property
    def label(self) -> str:
        return f"{self.height}x{self.width}x{self.frames}"

    def check(self, multiple: int, max_side: int | None = None, max_frames: int | None = None) -> None:
        """Raise :class:`SpecError` naming the bad size and the nearest valid ones."""
        for name, side in (("height", self.height), ("width", self.width)):
            if side < multiple or side % multiple:
                lower = max(multiple, side - side % multiple)
                raise SpecError(f"profile {self.label}: {name} {side} is not a positive multiple of {multiple} "
                                f"(the VAE's 8x downsampling times the DiT's 2x2 patches); use {lower} or "
                                f"{lower + multiple}")
            if max_side is not None and side > max_side:
                raise SpecError(f"profile {self.label}: {name} {side} exceeds {max_side}, the largest side this "
                                "model allows")
        if self.frames < 1:
            raise SpecError(f"profile {self.label}: frames must be >= 1")
        if max_frames is not None and self.frames > max_frames:
            raise SpecError(f"profile {self.label}: {self.frames} frames exceed {max_frames}, the most this model "
                            "allows")


@dataclass(frozen=True, order=True)
class LatentShape:
    """Latent ``(frames, height, width)`` of one compiled shape."""

    frames: int
    height: int
    width: int

    @property
    def label(self) -> str:
        return f"f{self.frames}h{self.height}w{self.width}"


@dataclass(frozen=True)
class ModelDims:
    """The model sizes the specs depend on (read from the transformer/vae configs and the preset)."""

    in_channels: int
    out_channels: int
    text_dim: int
    text_length: int
    z_dim: int
    video_channels: int
    spatial_factor: int
    temporal_factor: int
    patch_size: tuple[int, int, int]
    max_side: int | None = None
    max_frames: int | None = None
    #: Image-to-video DiTs: the CLIP token width (``image_dim``) and count per sample; None for text-to-video.
    image_dim: int | None = None
    image_tokens: int | None = None
    #: DiT experts: 2 for Wan2.2 A14B (``transformer`` + ``transformer_2``), else 1.
    experts: int = 1

    @property
    def image_conditioned(self) -> bool:
        return self.image_dim is not None

    @property
    def spatial_multiple(self) -> int:
        return self.spatial_factor * max(self.patch_size[1], self.patch_size[2])

    @classmethod
    def from_configs(cls, dit_config: Any, vae_config: Any, preset: Any) -> "ModelDims":
        """From a :class:`WanDiTConfig`, a :class:`WanVAEConfig` and a :class:`ModelPreset`."""
        return cls(in_channels=dit_config.in_channels, out_channels=dit_config.out_channels,
                   text_dim=dit_config.text_dim, text_length=preset.text_length, z_dim=vae_config.z_dim,
                   video_channels=vae_config.video_out_channels, spatial_factor=vae_config.spatial_factor,
                   temporal_factor=vae_config.temporal_factor, patch_size=tuple(dit_config.patch_size),
                   max_side=preset.max_side, max_frames=preset.max_frames)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, dtype role and ``(min, opt, max)`` shapes."""

    name: str
    dtype: str  # "compute", "vae" or "float32"
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    #: axis -> symbolic name for the axes whose size varies (only the DiT batch).
    dynamic_axes: dict[int, str] = field(default_factory=dict)

    def shape(self, batch: int | None = None) -> tuple[int, ...]:
        """The concrete shape at ``batch`` (the opt shape when ``None`` or static)."""
        if batch is None or not self.dynamic_axes:
            return self.opt_shape
        return tuple(batch if axis in self.dynamic_axes else size for axis, size in enumerate(self.opt_shape))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "min": list(self.min_shape), "opt": list(self.opt_shape),
                "max": list(self.max_shape), "dynamic_axes": {str(k): v for k, v in self.dynamic_axes.items()}}


@dataclass(frozen=True)
class ShapeCase:
    """One compiled program: a component at one latent shape, for the given batch sizes."""

    component: str
    latent: LatentShape
    batches: tuple[int, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: The (profile, branch) pairs whose requests this case serves.
    covers: tuple[tuple[VideoProfile, str], ...]
    #: A family's own tag for cases that share a latent shape but not a signature (LTX-2: ``a6-initial``, its
    #: audio frames and branch); empty for Wan (its keys and manifests are unchanged).
    variant: str = ""
    #: Fixed scalars the program was specialized for (LTX-2: ``fps``, ``audio_frames``, ``use_cross_timestep``),
    #: as sorted ``(name, value)`` pairs; empty for Wan.
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """Stable file stem, e.g. ``dit-f21h60w104`` (``dit-f3h16w16-a6-initial`` with a variant)."""
        base = f"{self.component}-{self.latent.label}"
        return f"{base}-{self.variant}" if self.variant else base

    def param(self, name: str, default: Any = None) -> Any:
        """One of :attr:`params` (``default`` when absent)."""
        return dict(self.params).get(name, default)

    @property
    def dynamic_batch(self) -> bool:
        return len(self.batches) > 1

    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def onnx_dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export`` style ``{name: {axis: symbol}}`` for inputs and outputs."""
        return {t.name: dict(t.dynamic_axes) for t in (*self.inputs, *self.outputs) if t.dynamic_axes}

    def export_dynamic_shapes(self) -> dict[str, dict[int, Any]] | None:
        """``torch.export`` style dynamic shapes keyed by input name (``None`` when all static)."""
        if not self.dynamic_batch:
            return None
        from torch.export import Dim

        batch = Dim("batch", min=min(self.batches), max=max(self.batches))
        return {t.name: {axis: batch for axis in t.dynamic_axes} for t in self.inputs}

    def sample_inputs(self, batch: int, *, device: "torch.device | str", compute_dtype: "torch.dtype",
                      vae_dtype: "torch.dtype", seed: int = 0) -> tuple["torch.Tensor", ...]:
        """Deterministic inputs at ``batch`` (drawn in float32 on the CPU, then moved/cast)."""
        import torch

        if batch not in self.batches:
            raise SpecError(f"{self.key} is built for batches {self.batches}, not {batch}")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        dtypes = {"compute": compute_dtype, "vae": vae_dtype, "float32": torch.float32, "int64": torch.int64}
        out = []
        for spec in self.inputs:
            shape = spec.shape(batch)
            if spec.dtype == "int64":  # keep-masks (LTX-2's text mask): every token kept
                value = torch.ones(shape, dtype=torch.int64)
            elif spec.name in TIME_INPUTS:
                value = torch.full(shape, SAMPLE_TIMESTEP, dtype=torch.float32)
            elif spec.name == "video":
                value = torch.rand(shape, generator=generator) * 2 - 1  # pixels live in [-1, 1]
            else:
                value = torch.randn(shape, generator=generator)
            out.append(value.to(device=device, dtype=dtypes[spec.dtype]))
        return tuple(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShapeCase":
        """Rebuild a case from :meth:`to_dict` output (as stored in a manifest)."""
        def tensor(d: dict[str, Any]) -> TensorSpec:
            return TensorSpec(d["name"], d["dtype"], tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]),
                              {int(k): v for k, v in d.get("dynamic_axes", {}).items()})

        covers = tuple((VideoProfile.parse(c["profile"]), c["branch"]) for c in data.get("covers", []))
        params = tuple(sorted((str(k), v) for k, v in (data.get("params") or {}).items()))
        return cls(data["component"], LatentShape(*data["latent"]), tuple(data["batches"]),
                   tuple(tensor(t) for t in data["inputs"]), tuple(tensor(t) for t in data["outputs"]), covers,
                   variant=str(data.get("variant") or ""), params=params)

    def to_dict(self) -> dict[str, Any]:
        latent = [self.latent.frames, self.latent.height, self.latent.width]
        out: dict[str, Any] = {"key": self.key, "component": self.component, "latent": latent,
                               "batches": list(self.batches), "inputs": [t.to_dict() for t in self.inputs],
                               "outputs": [t.to_dict() for t in self.outputs],
                               "covers": [{"profile": p.label, "branch": b} for p, b in self.covers]}
        if self.variant:  # only families that use them: Wan's manifests stay as they were
            out["variant"] = self.variant
        if self.params:
            out["params"] = dict(self.params)
        return out


@dataclass(frozen=True)
class ComponentSpec:
    """A component's I/O names and every shape case a build compiles for it."""

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    cases: tuple[ShapeCase, ...]


def latent_frames_for(frames: int, temporal_factor: int = 4) -> int:
    """Latent frames of a request for ``frames`` video frames (rounded up to ``4k + 1``)."""
    generated = frames if (frames - 1) % temporal_factor == 0 else frames + (-(frames - 1)) % temporal_factor
    return (generated - 1) // temporal_factor + 1


def _continuation_frames(frames: int, temporal_factor: int) -> int:
    """Video frames the continuation branch generates for ``frames`` new frames (overlap included)."""
    from fastvideo.engine.state_codec import DEFAULT_TAIL_FRAMES

    overlap = 1 + temporal_factor * (DEFAULT_TAIL_FRAMES - 1)
    return overlap + frames


def batches_for_cfg(cfg: str) -> tuple[int, ...]:
    """``both`` -> (1, 2); ``on`` (guidance > 1) -> (2,); ``off`` -> (1,)."""
    table = {"both": (1, 2), "on": (2,), "off": (1,)}
    if cfg not in table:
        raise SpecError(f"cfg must be one of {sorted(table)}, got {cfg!r}")
    return table[cfg]


def is_dit(component: str) -> bool:
    """Whether ``component`` is a DiT (an expert of it): batched by CFG, run with the compute dtype."""
    return component in DIT_COMPONENTS


def default_components(branches: Iterable[str], experts: int = 1) -> tuple[str, ...]:
    """DiT (both experts of a two-expert model) and VAE decoder always; the VAE encoder too when the
    continuation branch is served."""
    dits = DIT_COMPONENTS[:experts]
    return (*dits, "vae_decoder", "vae_encoder") if "continuation" in branches else (*dits, "vae_decoder")


def expand_components(components: Iterable[str], experts: int = 1) -> tuple[str, ...]:
    """``components`` with ``dit_2`` right after ``dit`` for a two-expert model (both experts or neither);
    :class:`SpecError` for ``dit_2`` on a one-expert model."""
    out: list[str] = []
    for component in components:
        if component == "dit_2" and experts < 2:
            raise SpecError("component dit_2 (transformer_2, the second expert) exists only for two-expert models "
                            "(Wan2.2 A14B); this model has one DiT: use dit")
        if component not in out:
            out.append(component)
        if component == "dit" and experts >= 2 and "dit_2" not in out:
            out.append("dit_2")
    if experts >= 2 and "dit_2" in out and "dit" not in out:
        out.insert(out.index("dit_2"), "dit")
    return tuple(out)


def _case_tensors(component: str, dims: ModelDims, latent: LatentShape,
                  batches: tuple[int, ...]) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    f, h, w = latent.frames, latent.height, latent.width
    s, t = dims.spatial_factor, dims.temporal_factor
    if is_dit(component):
        lo, hi = min(batches), max(batches)
        axes = {0: "batch"} if len(batches) > 1 else {}

        def spec(name: str, dtype: str, rest: tuple[int, ...]) -> TensorSpec:
            return TensorSpec(name, dtype, (lo, *rest), (hi, *rest), (hi, *rest), dict(axes))

        inputs: tuple[TensorSpec, ...] = (spec("hidden_states", "compute", (dims.in_channels, f, h, w)),
                                          spec("timestep", "float32", ()),
                                          spec("encoder_hidden_states", "compute", (dims.text_length, dims.text_dim)))
        if dims.image_dim is not None:
            if not dims.image_tokens:
                raise SpecError("an image-to-video DiT needs the CLIP image token count (image_encoder/config.json "
                                "image_size and patch_size)")
            inputs += (spec(IMAGE_INPUT, "compute", (dims.image_tokens, dims.image_dim)),)
        return inputs, (spec("noise_pred", "compute", (dims.out_channels, f, h, w)),)
    video = (1, dims.video_channels, t * (f - 1) + 1, s * h, s * w)
    if component == "vae_decoder":
        z = (1, dims.z_dim, f, h, w)
        return (TensorSpec("latents", "vae", z, z, z),), (TensorSpec("video", "vae", video, video, video),)
    if component == "vae_encoder":
        params = (1, 2 * dims.z_dim, f, h, w)
        return ((TensorSpec("video", "vae", video, video, video),),
                (TensorSpec("latent_params", "vae", params, params, params),))
    raise SpecError(f"unknown component {component!r}; known: {', '.join(COMPONENTS)}")


def check_declared(profiles: Iterable[VideoProfile], branches: Iterable[str], batches: tuple[int, ...],
                   ) -> tuple[list[VideoProfile], tuple[str, ...], tuple[int, ...]]:
    """The declared profiles (sorted, unique), branches (ordered, unique) and DiT batches (sorted, unique) of any
    family's build; :class:`SpecError` for none, an unknown branch or a batch other than 1 / 2."""
    profiles = sorted(set(profiles))
    branches = tuple(dict.fromkeys(branches))
    if not profiles:
        raise SpecError("declare at least one --profile HEIGHTxWIDTHxFRAMES")
    bad = [b for b in branches if b not in BRANCHES]
    if bad or not branches:
        raise SpecError(f"branch {bad[0] if bad else ''!r} is unknown; use initial and/or continuation")
    if not batches or any(b not in (1, 2) for b in batches):
        raise SpecError(f"DiT batches must be 1 (no CFG) and/or 2 (CFG), got {batches}")
    return profiles, branches, tuple(sorted(set(batches)))


def derive_specs(dims: ModelDims, profiles: Iterable[VideoProfile], branches: Iterable[str] = ("initial",),
                 batches: tuple[int, ...] = (1, 2),
                 components: Iterable[str] | None = None) -> list[ComponentSpec]:
    """Every component's shape cases for the declared profiles (deduplicated by latent shape).

    Raises :class:`SpecError` for a bad profile, branch, component or batch set.
    """
    profiles, branches, batches = check_declared(profiles, branches, batches)
    components = tuple(dict.fromkeys(components if components is not None else
                                     default_components(branches, dims.experts)))
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown:
        raise SpecError(f"unknown component {unknown[0]!r}; known: {', '.join(COMPONENTS)}")
    components = expand_components(components, dims.experts)
    for profile in profiles:
        profile.check(dims.spatial_multiple, dims.max_side, dims.max_frames)
        continued = _continuation_frames(profile.frames, dims.temporal_factor)
        if "continuation" in branches and dims.max_frames is not None and continued > dims.max_frames:
            raise SpecError(f"profile {profile.label}: the continuation branch generates {continued} frames "
                            f"(overlap included), more than the model's {dims.max_frames}")

    specs = []
    for component in components:
        by_latent: dict[LatentShape, list[tuple[VideoProfile, str]]] = {}
        for profile in profiles:
            h, w = profile.height // dims.spatial_factor, profile.width // dims.spatial_factor
            for branch in branches:
                if component == "vae_encoder":
                    # Encodes a full segment's video (e.g. a clip to continue from): the initial-branch size.
                    frames = profile.frames
                elif branch == "continuation":
                    frames = _continuation_frames(profile.frames, dims.temporal_factor)
                else:
                    frames = profile.frames
                latent = LatentShape(latent_frames_for(frames, dims.temporal_factor), h, w)
                by_latent.setdefault(latent, []).append((profile, branch))
        cases = []
        for latent, covers in sorted(by_latent.items()):
            if is_dit(component):
                pt, ph, pw = dims.patch_size
                if latent.frames % pt or latent.height % ph or latent.width % pw:
                    raise SpecError(f"latent shape {latent} is not a multiple of the patch size {dims.patch_size}")
            case_batches = batches if is_dit(component) else (1,)
            inputs, outputs = _case_tensors(component, dims, latent, case_batches)
            cases.append(ShapeCase(component, latent, case_batches, inputs, outputs, tuple(covers)))
        names = cases[0].input_names() if cases else INPUT_NAMES[component]
        specs.append(ComponentSpec(component, names, OUTPUT_NAMES[component], tuple(cases)))
    return specs
