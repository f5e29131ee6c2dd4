"""The offline builder: a validated :class:`BuildRequest` in, one verified artifact folder out.

Contract
--------
- :func:`run_build` validates everything it can before touching the disk (model folder, profiles,
  branches, precision on the device, backend availability) and raises :class:`BuildError` with
  ``exit_code`` :data:`EXIT_USAGE` (2) and a message saying what to change. The folder must be one
  of the engine's families (:func:`fastvideo.engine.families.match_family`); a folder whose
  ``model_index.json`` sets ``expand_timesteps`` (Wan2.2 TI2V-5B, per-token timesteps) is refused
  whatever the registry says of it: its step is not exported yet (exit 2, nothing written).
- Families: a Wan2.1 image-to-video DiT is exported with its CLIP image tokens as a fourth input
  (token count from ``image_encoder/config.json``: ``(image_size / patch_size)^2 + 1``, or the
  transformer's ``pos_embed_seq_len`` for first-last-frame) and its ``in_channels`` (noise +
  condition) latent input; the manifest's ``model.image_conditioned`` (and the identity) record it.
  A two-expert folder (Wan2.2 A14B) exports both experts into the one folder, components ``dit``
  (``transformer``) and ``dit_2`` (``transformer_2``), same shape cases, one manifest and one weights
  digest over both (``model.experts`` maps component -> sub-folder): the pair is built, verified and
  loaded together, never one expert compiled and the other from another build. With ``aoti`` two experts
  of one config share one compiled graph per shape (packages hold no weights): it is compiled once and
  copied (``graph_of`` in the case's record), each copy verified against its own expert.
- The artifact folder ``<out>/<backend>-<precision>-<hash12>`` is content-addressed (see
  :mod:`fastvideo.build.manifest`). If it already exists and verifies, nothing is rebuilt
  (``status="up-to-date"``) unless ``force``.
- Everything is built in ``<out>/.<name>.<random>.partial`` and renamed into place only after every
  program was verified against eager PyTorch and ``manifest.json`` (written last) lists the sha256
  of every file. Any failure or interrupt removes the partial folder (and ``out`` itself when this
  build created it and left it empty): nothing half-written remains. Build failures raise
  :class:`BuildError` with exit code :data:`EXIT_FAILED` (1).
- Families: the folder's family picks its build adapter (:mod:`fastvideo.build.adapters`, keyed by the family's
  runtime binding): the dims, shape cases, eager models, export wrappers and refusals below are Wan's; an LTX-2
  folder (``LTX2Pipeline``) exports its audio+video DiT per (profile, branch) (:mod:`fastvideo.build.ltx2_export`)
  with ``aoti`` or ``inductor``; the manifest records ``model.runtime`` (``ltx2``) and the identity ``runtime``.
- Backends: ``aoti`` (one weight-free ``.pt2`` per shape case), ``inductor`` (a warm
  ``torch.compile`` cache for every case and batch), ``tensorrt`` (dynamo-exported ONNX checked
  with onnxruntime, then one engine per case). When TensorRT or a CUDA GPU is missing the
  tensorrt build keeps the verified ONNX stage as a complete folder with ``stage="onnx"`` and
  returns exit code :data:`EXIT_ONNX_ONLY` (3) with a message (0 with ``onnx_only=True``).
- ``progress`` (optional) is told the number of steps, then each step's label as it starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from fastvideo.api.errors import FastVideoError
from fastvideo.build import manifest as mf
from fastvideo.build.adapters import adapter_for_folder
from fastvideo.build.backends import artifact_backend_names
from fastvideo.build.specs import (
    ComponentSpec,
    ModelDims,
    EXPERT_FOLDERS,
    ShapeCase,
    SpecError,
    VideoProfile,
    batches_for_cfg,
    is_dit,
)

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "BuildError", "BuildRequest", "BuildResult", "EXIT_FAILED", "EXIT_ONNX_ONLY", "EXIT_OK",
           "EXIT_USAGE", "Progress", "run_build"]

BACKENDS = artifact_backend_names()  # inductor, aoti, tensorrt (fastvideo.build.backends)
PRECISIONS = ("bf16", "fp16", "fp32")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ONNX_ONLY = 0, 1, 2, 3


class BuildError(FastVideoError):
    """A build that cannot run or failed; ``exit_code`` is the CLI's status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Progress(Protocol):
    def begin(self, total: int) -> None: ...

    def step(self, label: str) -> None: ...


class _NoProgress:
    def begin(self, total: int) -> None:
        pass

    def step(self, label: str) -> None:
        pass


@dataclass
class BuildRequest:
    """What to build (the CLI's options, typed)."""

    backend: str
    profiles: list[VideoProfile]
    out: Path
    model_path: Path | None = None
    branches: tuple[str, ...] = ("initial",)
    #: DiT precision; "auto": what the runtime's engine.dtype "auto" picks on the build device (bf16 on
    #: sm_80+ GPUs, fp16 on older ones, fp32 on the CPU).
    precision: str = "auto"
    vae_precision: str = "fp32"
    cfg: str = "both"
    components: tuple[str, ...] | None = None
    device: str = "auto"
    force: bool = False
    onnx_only: bool = False
    keep_onnx: bool = False
    onnx_check: str = "ort"
    workspace_gib: float = 8.0
    #: ``QuantizationConfig.transformer_quant`` of the runtime that will load the artifact (``"FP8"``: e4m3 DiT
    #: weights with per-row scales, ``"FP8_PER_TENSOR"``); None: weights in ``precision``.
    transformer_quant: str | None = None
    #: A LoRA ``.safetensors`` fused into the DiT before compiling (the manifest records it), at ``lora_strength``.
    lora_path: str | None = None
    lora_strength: float = 1.0


@dataclass
class BuildResult:
    """Where the artifact is, what it holds and how long each step took."""

    path: Path
    manifest: mf.Manifest
    status: str  # "built", "up-to-date" or "onnx-only"
    exit_code: int
    message: str
    seconds: float
    steps: list[tuple[str, float]] = field(default_factory=list)


class _Steps:
    """Times each step and forwards its label to the progress display."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.records: list[tuple[str, float]] = []
        self._label: str | None = None
        self._t0 = 0.0

    def __call__(self, label: str) -> None:
        self.finish()
        self._label, self._t0 = label, time.perf_counter()
        self.progress.step(label)

    def finish(self) -> None:
        if self._label is not None:
            self.records.append((self._label, time.perf_counter() - self._t0))
            self._label = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise BuildError(f"--device {name!r} is not a torch device ({exc})", EXIT_USAGE) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BuildError(f"--device {name} requested but CUDA is not available; use cpu", EXIT_USAGE)
    return device


def _check_precision(name: str, what: str, device: torch.device) -> torch.dtype:
    from fastvideo.build.exportable import DTYPES

    if name not in DTYPES:
        raise BuildError(f"{what} {name!r} is unknown; use one of {', '.join(PRECISIONS)}", EXIT_USAGE)
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        major, minor = torch.cuda.get_device_capability(device)
        raise BuildError(f"{what} bf16 needs an sm_80 (Ampere) or newer GPU; {device} is sm_{major}{minor}: use fp16 "
                         "or fp32", EXIT_USAGE)
    return DTYPES[name]


def _probe_precision(models: Any, components: tuple[str, ...]) -> None:
    """Run each component once at a tiny shape so an unsupported dtype fails here, clearly."""
    device = models.device
    try:
        with torch.no_grad():
            for component in [c for c in components if is_dit(c)]:
                dit = models.expert(component)
                cfg = dit.config
                x = torch.zeros(1, cfg.in_channels, cfg.patch_size[0], 2 * cfg.patch_size[1], 2 * cfg.patch_size[2],
                                device=device, dtype=models.dtype)
                image = ((torch.zeros(1, cfg.pos_embed_seq_len or 1, cfg.image_dim, device=device,
                                      dtype=models.dtype),) if cfg.is_image_conditioned else ())
                dit(x, torch.zeros(1, device=device), torch.zeros(1, 4, cfg.text_dim, device=device,
                                                                  dtype=models.dtype), *image)
            if "vae_decoder" in components or "vae_encoder" in components:
                models.vae.decode(torch.zeros(1, models.vae.config.z_dim, 1, 2, 2, device=device,
                                              dtype=models.vae_dtype))
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        raise BuildError(f"this torch cannot run the model in the requested precision on {device} "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0]}); pick another --precision / "
                         "--vae-precision or another --device", EXIT_USAGE) from None


@dataclass
class _Plan:
    """Everything validated, before any file is written."""

    request: BuildRequest
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    folder: Any
    dims: ModelDims
    preset: Any
    specs: list[ComponentSpec]
    batches: tuple[int, ...]
    components: tuple[str, ...]
    stage: str
    engines_reason: str | None = None
    #: The family's build hooks (:mod:`fastvideo.build.adapters`), chosen by the folder's runtime binding.
    adapter: Any = None

    def cases(self) -> list[ShapeCase]:
        return [case for spec in self.specs for case in spec.cases]

    def case_dtype(self, case: ShapeCase) -> torch.dtype:
        return self.dtype if is_dit(case.component) else self.vae_dtype


def _model_dims(folder: Any) -> tuple[ModelDims, Any]:
    """The export dimensions and preset of a checked folder of one of the engine's families (ModelLoadError /
    ValueError: a folder fastvideo-build cannot export, saying why)."""
    from fastvideo.api.errors import ModelLoadError
    from fastvideo.engine.families import match_family
    from fastvideo.engine.models.wan.image_conditioning import check_image_conditioning
    from fastvideo.engine.models.wan.transformer import WanDiTConfig
    from fastvideo.engine.models.wan.vae import WanVAEConfig
    from fastvideo.engine.presets import infer_preset

    if folder.model_index.get("expand_timesteps"):  # checked first: whatever the family registry says of it
        raise ModelLoadError(f"{folder.root / 'model_index.json'} sets expand_timesteps (Wan2.2 TI2V-5B: per-token "
                             "timesteps); fastvideo-build does not export that DiT step yet: serve this model without "
                             "artifacts")
    configs = {name: folder.read_config(name) for name in ("transformer", "vae")}
    for name, file in (("text_encoder", "config.json"), ("tokenizer", "tokenizer_config.json"),
                       ("scheduler", "scheduler_config.json"), ("image_encoder", "config.json"),
                       ("image_processor", "preprocessor_config.json"), ("transformer_2", "config.json")):
        if (folder.component(name) / file).exists():
            configs[name] = folder.read_config(name, file)
    family = match_family(folder.model_index, configs, {name: str(folder.component(name)) for name in configs},
                          index_path=str(folder.root / "model_index.json"))
    dit_config = WanDiTConfig.from_dict(configs["transformer"])
    check_image_conditioning(family, dit_config, folder)
    preset = infer_preset(folder.model_index, configs["transformer"])
    dims = ModelDims.from_configs(dit_config, WanVAEConfig.from_dict(configs["vae"]), preset)
    image_dim = image_count = None
    if dit_config.is_image_conditioned:
        image_dim = dit_config.image_dim
        clip = configs.get("image_encoder") or {}
        size, patch = clip.get("image_size"), clip.get("patch_size")
        if dit_config.pos_embed_seq_len:  # first-last-frame: both images' tokens, one sequence
            image_count = int(dit_config.pos_embed_seq_len)
        elif isinstance(size, int) and isinstance(patch, int) and patch > 0:
            image_count = (size // patch) ** 2 + 1  # CLIP's patches and its class token
        else:
            raise ModelLoadError(f"{folder.component('image_encoder')}/config.json gives no image_size / patch_size: "
                                 "the image-to-video DiT's CLIP token count cannot be derived")
    experts = 1
    if family.two_experts:
        if "transformer_2" not in configs:
            raise ModelLoadError(f"{folder.component('transformer_2')}/config.json is missing; "
                                 f"{family.description} needs both experts")
        second = WanDiTConfig.from_dict(configs["transformer_2"])
        differ = [name for name in ("in_channels", "out_channels", "text_dim", "patch_size", "image_dim")
                  if getattr(second, name) != getattr(dit_config, name)]
        if differ:
            raise ModelLoadError(f"{folder.component('transformer_2')}/config.json differs from transformer/ in "
                                 f"{', '.join(differ)}: the two experts must take the same inputs")
        experts = 2
    return replace(dims, image_dim=image_dim, image_tokens=image_count, experts=experts), preset


def _plan(request: BuildRequest) -> _Plan:
    from fastvideo.api.errors import ModelLoadError
    from fastvideo.engine.loader import inspect_model_folder
    from fastvideo.envs import read_env

    if request.backend not in BACKENDS:
        raise BuildError(f"backend {request.backend!r} is unknown; use one of {', '.join(BACKENDS)}", EXIT_USAGE)
    if request.onnx_check not in ("ort", "checker"):
        raise BuildError(f"onnx_check must be 'ort' or 'checker', got {request.onnx_check!r}", EXIT_USAGE)
    if request.transformer_quant is not None:
        from fastvideo.engine.fp8 import parse_transformer_quant

        try:
            parse_transformer_quant(request.transformer_quant)
        except ValueError as exc:
            raise BuildError(f"--transformer-quant {exc}", EXIT_USAGE) from None
        if request.backend == "tensorrt":
            raise BuildError("--transformer-quant FP8 is not supported by the tensorrt backend (the ONNX export has no "
                             "e4m3 linear); use --backend aoti or inductor, or drop --transformer-quant", EXIT_USAGE)
    device = resolve_device(request.device)
    dtype = _check_precision(request.precision, "--precision", device)
    vae_dtype = _check_precision(request.vae_precision, "--vae-precision", device)
    out = Path(request.out).expanduser()
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} exists and is not a folder", EXIT_USAGE)
    try:
        if request.model_path is None:
            from fastvideo.engine.builtin_model import ensure_builtin_model

            root = ensure_builtin_model(read_env().cache_dir)
        else:
            root = Path(request.model_path).expanduser()
        folder = inspect_model_folder(root)
        adapter = adapter_for_folder(folder)
        dims, preset = adapter.model_dims(folder)
    except (ModelLoadError, ValueError, NotImplementedError, TypeError) as exc:
        raise BuildError(f"cannot use the model: {exc}", EXIT_USAGE) from None
    refusal = adapter.refuse(request)
    if refusal:
        raise BuildError(refusal, EXIT_USAGE)
    try:
        batches = batches_for_cfg(request.cfg)
        specs = adapter.derive_specs(dims, request.profiles, request.branches, batches, request.components)
    except SpecError as exc:
        raise BuildError(str(exc), EXIT_USAGE) from None
    components = tuple(spec.name for spec in specs)

    stage, engines_reason = _BUILD_SIDES[request.backend].check(request, device, specs)
    return _Plan(request=request, device=device, dtype=dtype, vae_dtype=vae_dtype, folder=folder, dims=dims,
                 preset=preset, specs=specs, batches=batches, components=components, stage=stage,
                 engines_reason=engines_reason, adapter=adapter)


def _count_steps(plan: _Plan) -> int:
    return 3 + _BUILD_SIDES[plan.request.backend].count_steps(plan.cases(), plan.stage)  # hash, load, ..., manifest


def _verify(label: str, program: Callable[..., torch.Tensor], module: Any, inputs: tuple[torch.Tensor, ...],
            dtype: torch.dtype) -> float:
    from fastvideo.build.exportable import compare_outputs

    with torch.no_grad():
        ref = module(*inputs)
        out = program(*inputs)
    diff, allowed, ok = compare_outputs(out, ref, dtype)
    if not ok:
        raise BuildError(f"{label}: the compiled output differs from eager PyTorch by {diff:.3g} (allowed "
                         f"{allowed:.3g}); the artifact was not written")
    return diff


def _build_aoti(plan: _Plan, models: Any, tmp: Path, step: _Steps) -> dict[str, dict[str, Any]]:
    from fastvideo.build.aoti import AOTIProgram, build_aoti_case

    export_module = plan.adapter.export_module
    records: dict[str, dict[str, Any]] = {}
    # Packages hold no weights: experts with the same config at the same shape are one graph, compiled once
    # (the copy is verified against its own expert's eager forward like any program).
    same_experts = models.dit_2 is not None and models.dit_2.config == models.dit.config
    compiled: dict[tuple[Any, ...], tuple[Path, str]] = {}
    for case in plan.cases():
        module = export_module(case, models)
        dtype = plan.case_dtype(case)
        sample = {b: case.sample_inputs(b, device=plan.device, compute_dtype=plan.dtype, vae_dtype=plan.vae_dtype)
                  for b in case.batches}
        graph = ("dit" if same_experts and is_dit(case.component) else case.component, case.latent, case.batches,
                 case.variant)
        record: dict[str, Any] = {}
        step(f"aoti {case.key}")
        if graph in compiled:
            source, source_key = compiled[graph]
            path = source.with_name(f"{case.key}.pt2")
            shutil.copyfile(source, path)
            record["graph_of"] = source_key
        else:
            path = build_aoti_case(module, case, sample[max(case.batches)], tmp)
            compiled[graph] = (path, case.key)
        step(f"verify {case.key}")
        program = AOTIProgram(path, plan.device)
        program.bind(module)
        diffs = {b: _verify(f"{case.key} batch {b}", program, module, sample[b], dtype) for b in case.batches}
        records[case.key] = {"file": path.relative_to(tmp).as_posix(), "max_abs_diff": diffs, **record}
    return records


def _build_inductor(plan: _Plan, models: Any, tmp: Path, step: _Steps) -> dict[str, dict[str, Any]]:
    from fastvideo.build.inductor import CACHE_SUBDIR, compile_component, inductor_cache_env

    cases = plan.cases()
    records: dict[str, dict[str, Any]] = {}
    shapes = sum(len(c.batches) for c in cases)
    with inductor_cache_env(tmp / CACHE_SUBDIR, shapes=shapes):
        targets = plan.adapter.inductor_targets(models, cases)  # the same at load (inductor._compiled_runners)
        compiled: dict[str, Callable[..., torch.Tensor]] = {}
        for case in cases:
            group, eager = targets[case.key]
            if group not in compiled:
                compiled[group] = compile_component(case.component, eager)
            diffs = {}
            for batch in case.batches:
                step(f"compile {case.key} batch {batch}")
                inputs = case.sample_inputs(batch, device=plan.device, compute_dtype=plan.dtype,
                                            vae_dtype=plan.vae_dtype)
                diffs[batch] = _verify(f"{case.key} batch {batch}", compiled[group], eager, inputs,
                                       plan.case_dtype(case))
            records[case.key] = {"file": CACHE_SUBDIR, "max_abs_diff": diffs}
    return records


def _build_tensorrt(plan: _Plan, models: Any, tmp: Path, step: _Steps) -> dict[str, dict[str, Any]]:
    from fastvideo.build.onnx_export import OnnxCheckError, check_onnx, export_onnx

    export_module, load_build_models = plan.adapter.export_module, plan.adapter.load_models
    request = plan.request
    engines = plan.stage == "complete"
    onnx_dir = tmp / "onnx"
    twin: Any = None
    records: dict[str, dict[str, Any]] = {}
    for case in plan.cases():
        module = export_module(case, models)
        dtype = plan.case_dtype(case)
        inputs = case.sample_inputs(max(case.batches), device=plan.device, compute_dtype=plan.dtype,
                                    vae_dtype=plan.vae_dtype)
        step(f"onnx {case.key}")
        path = export_onnx(module, case, inputs, onnx_dir)
        step(f"check {case.key}")
        record: dict[str, Any] = {"onnx": path.relative_to(tmp).as_posix()}
        try:
            if request.onnx_check == "checker":
                import onnx

                onnx.checker.check_model(str(path))
                record["onnx_check"] = {"kind": "onnx.checker"}
            elif dtype == torch.float32 and plan.device.type == "cpu":
                cpu_inputs = {b: case.sample_inputs(b, device="cpu", compute_dtype=plan.dtype,
                                                    vae_dtype=plan.vae_dtype) for b in case.batches}
                result = check_onnx(path, module, case, cpu_inputs, dtype)
                record["onnx_check"] = {"kind": "onnxruntime", "file": result.checked_file,
                                        "max_abs_diff": result.max_abs_diff}
            else:
                import onnx

                onnx.checker.check_model(str(path))
                if twin is None:  # fp32 copies on the CPU, for onnxruntime
                    twin = load_build_models(plan.folder, device=torch.device("cpu"), dtype=torch.float32,
                                             vae_dtype=torch.float32)
                twin_module = export_module(case, twin)
                cpu_inputs = {b: case.sample_inputs(b, device="cpu", compute_dtype=torch.float32,
                                                    vae_dtype=torch.float32) for b in case.batches}
                scratch = Path(tempfile.mkdtemp(prefix=".twin-", dir=tmp))
                try:
                    twin_path = export_onnx(twin_module, case, cpu_inputs[max(case.batches)], scratch)
                    result = check_onnx(twin_path, twin_module, case, cpu_inputs, torch.float32)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
                record["onnx_check"] = {"kind": "onnxruntime (fp32 twin of this graph)",
                                        "max_abs_diff": result.max_abs_diff}
        except OnnxCheckError as exc:
            raise BuildError(f"{case.key}: {exc}") from None
        if engines:
            from fastvideo.build.tensorrt import TensorRTProgram, build_engine

            step(f"engine {case.key}")
            engine = build_engine(path, case, tmp / "tensorrt" / f"{case.key}.engine", precision=request.precision,
                                  workspace_gib=request.workspace_gib)
            step(f"verify {case.key}")
            program = TensorRTProgram(engine, plan.device, case.input_names())
            record["file"] = engine.relative_to(tmp).as_posix()
            record["max_abs_diff"] = {b: _verify(f"{case.key} batch {b}", program, module, case.sample_inputs(
                b, device=plan.device, compute_dtype=plan.dtype, vae_dtype=plan.vae_dtype), dtype)
                for b in case.batches}
        else:
            record["file"] = None
        records[case.key] = record
    if engines and not request.keep_onnx:
        shutil.rmtree(onnx_dir, ignore_errors=True)
        for record in records.values():
            record["onnx"] = None
    return records



def _check_compiled(request: BuildRequest, device: torch.device, specs: list[Any]) -> tuple[str, str | None]:
    from fastvideo.build.aoti import aoti_unavailable_reason

    reason = aoti_unavailable_reason(device)
    if reason:
        raise BuildError(f"backend {request.backend} cannot build for {device}: {reason}", EXIT_USAGE)
    return "complete", None


def _check_inductor(request: BuildRequest, device: torch.device, specs: list[Any]) -> tuple[str, str | None]:
    from fastvideo.engine.models.wan.transformer import ROPE_CACHE_SIZE

    checked = _check_compiled(request, device, specs)
    dit_cases = [c for s in specs if s.name == "dit" for c in s.cases]
    if len(dit_cases) > ROPE_CACHE_SIZE:
        raise BuildError(f"the inductor backend serves at most {ROPE_CACHE_SIZE} DiT latent shapes per build; this "
                         f"request has {len(dit_cases)}: split it into several builds", EXIT_USAGE)
    return checked


def _check_tensorrt(request: BuildRequest, device: torch.device, specs: list[Any]) -> tuple[str, str | None]:
    from fastvideo.build.onnx_export import onnx_unavailable_reason
    from fastvideo.build.tensorrt import tensorrt_unavailable_reason

    reason = onnx_unavailable_reason()
    if reason:
        raise BuildError(f"backend tensorrt: {reason}", EXIT_USAGE)
    engines_reason = "--onnx-only was given" if request.onnx_only else tensorrt_unavailable_reason(device)
    return ("onnx" if engines_reason else "complete"), engines_reason


@dataclass(frozen=True)
class _BuildSide:
    """How fastvideo-build makes one backend's artifacts (how they load: :mod:`fastvideo.build.backends`)."""

    #: Refuse what this backend cannot build here (BuildError); returns (stage, why engines are not built).
    check: Callable[[BuildRequest, torch.device, list[Any]], tuple[str, str | None]]
    #: Progress steps of the backend's own work for these shape cases and stage.
    count_steps: Callable[[list[Any], str], int]
    build: Callable[[_Plan, Any, Path, _Steps], dict[str, dict[str, Any]]]


#: The build side of every registered artifact backend, by name (a test keeps it in step with the registry).
_BUILD_SIDES: dict[str, _BuildSide] = {
    "aoti": _BuildSide(_check_compiled, lambda cases, stage: 2 * len(cases), _build_aoti),
    "inductor": _BuildSide(_check_inductor, lambda cases, stage: sum(len(c.batches) for c in cases), _build_inductor),
    "tensorrt": _BuildSide(_check_tensorrt, lambda cases, stage: (4 if stage == "complete" else 2) * len(cases),
                           _build_tensorrt),
}

def _rebuild_command(plan: _Plan) -> str:
    request = plan.request
    extra = ["--device", request.device] if request.device != "auto" else []
    if request.onnx_only:
        extra.append("--onnx-only")
    return mf.rebuild_command(
        model_path=request.model_path, backend=request.backend, profiles=[p.label for p in sorted(request.profiles)],
        branches=request.branches, precision=request.precision, vae_precision=request.vae_precision,
        batches=plan.batches, components=request.components, out=request.out, extra=extra,
        transformer_quant=request.transformer_quant, lora=_lora(request))


def _lora(request: BuildRequest) -> dict[str, Any] | None:
    """The manifest's ``lora`` of a request (None: no adapter fused)."""
    if request.lora_path is None:
        return None
    from fastvideo.api import ConfigError
    from fastvideo.engine.lora import lora_manifest_value

    try:
        return lora_manifest_value(request.lora_path, request.lora_strength, field_name="--lora")
    except ConfigError as exc:
        raise BuildError(str(exc)) from None


def _quantization(request: BuildRequest) -> dict[str, Any] | None:
    """The manifest's ``quantization`` of a request (None: unquantized)."""
    if request.transformer_quant is None:
        return None
    from fastvideo.engine.fp8 import FP8Spec, parse_transformer_quant

    granularity = parse_transformer_quant(request.transformer_quant)
    return None if granularity is None else FP8Spec(granularity=granularity).manifest_value()


def _existing_ok(final: Path) -> mf.Manifest | None:
    try:
        existing = mf.read_manifest(final)
    except mf.ManifestError as exc:
        logger.warning("rebuilding %s: %s", final, exc)
        return None
    problems = mf.verify_files(final, existing.files)
    if problems:
        logger.warning("rebuilding %s: %s", final, "; ".join(problems))
        return None
    return existing


def run_build(request: BuildRequest, progress: Progress | None = None) -> BuildResult:
    """Build one artifact folder (see module contract)."""
    from fastvideo.envs import read_env

    started = time.perf_counter()
    if request.precision == "auto":  # what the runtime's engine.dtype "auto" computes in on that device
        from fastvideo.build.exportable import DTYPES
        from fastvideo.engine.models.wan.pipeline import model_dtype

        auto = model_dtype("auto", resolve_device(request.device))
        request = replace(request, precision=next(name for name, dtype in DTYPES.items() if dtype == auto))
    plan = _plan(request)
    out = Path(request.out).expanduser()
    step = _Steps(progress or _NoProgress())
    step.progress.begin(_count_steps(plan))

    step("hash weights")
    weights = mf.compute_weights_digest(plan.folder.root, read_env().cache_dir)
    env = mf.environment_info(plan.device, request.backend, with_tensorrt=plan.stage == "complete")
    profiles = [p.label for p in sorted(set(request.profiles))]
    quantization = _quantization(request)
    lora = _lora(request)
    if lora is not None and quantization is not None:
        raise BuildError("--lora cannot be fused into FP8 DiT weights; drop --lora or --transformer-quant")
    identity = mf.identity_fields(weights=weights, backend=request.backend, stage=plan.stage,
                                  precision=request.precision, vae_precision=request.vae_precision, profiles=profiles,
                                  branches=request.branches, batches=plan.batches, components=plan.components,
                                  environment=env, quantization=quantization, lora=lora,
                                  image_conditioned=plan.dims.image_conditioned, experts=plan.dims.experts,
                                  runtime=plan.adapter.runtime)
    short = mf.identity_hash(identity)
    name = mf.folder_name(request.backend, request.precision, short)
    final = out / name
    status, code, message = "built", EXIT_OK, ""
    if plan.stage == "onnx":
        status = "onnx-only"
        if not request.onnx_only:
            code = EXIT_ONNX_ONLY
            message = (f"the ONNX stage was exported and verified, but the TensorRT engine stage needs TensorRT and "
                       f"a CUDA GPU: {plan.engines_reason}. Re-run this command on a GPU machine with TensorRT "
                       "installed (pip install tensorrt) to build the engines.")
    if final.exists() and not request.force:
        existing = _existing_ok(final)
        if existing is not None:
            step.finish()
            return BuildResult(final, existing, "up-to-date", code, message or "already built (use --force to rebuild)",
                               time.perf_counter() - started, step.records)

    step("load models")
    models = plan.adapter.load_models(plan.folder, device=plan.device, dtype=plan.dtype, vae_dtype=plan.vae_dtype,
                                      fp8_granularity=None if quantization is None else quantization["granularity"])
    plan.adapter.probe(models, plan.components)
    if lora is not None:  # fused before export: the compiled programs (and the eager reference) carry it
        from fastvideo.api import ConfigError
        from fastvideo.engine.lora import load_lora, merge_lora

        try:
            merge_lora(models.dit, load_lora(str(lora["path"]), models.dit, field_name="--lora"),
                       request.lora_strength)
        except ConfigError as exc:
            raise BuildError(str(exc)) from None

    created_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=out))
    try:
        records = _BUILD_SIDES[request.backend].build(plan, models, tmp, step)
        step("write manifest")
        components = []
        for spec in plan.specs:
            cases = []
            for case in spec.cases:
                entry = case.to_dict()
                entry.update({k: ({str(b): v for b, v in val.items()} if isinstance(val, dict) and k == "max_abs_diff"
                                  else val) for k, val in records.get(case.key, {}).items()})
                cases.append(entry)
            components.append({"name": spec.name, "input_names": list(spec.input_names),
                               "output_names": list(spec.output_names), "cases": cases})
        step.finish()
        manifest = mf.Manifest(
            name=name, identity=identity, identity_hash=short, backend=request.backend, stage=plan.stage,
            precision=request.precision, vae_precision=request.vae_precision, profiles=profiles,
            branches=list(request.branches), batches=list(plan.batches), components=components,
            model={"path": str(plan.folder.root), "preset": plan.preset.name, "weights_digest": weights.digest,
                   "config_digest": weights.config_digest, "weight_files": weights.files,
                   "text_length": plan.dims.text_length, "spatial_factor": plan.dims.spatial_factor,
                   "temporal_factor": plan.dims.temporal_factor,
                   "attention_backend": models.dit.attention_backend.name,
                   "image_conditioned": plan.dims.image_conditioned, "image_dim": plan.dims.image_dim,
                   "image_tokens": plan.dims.image_tokens,
                   "experts": {c: EXPERT_FOLDERS[c] for c in ("dit", "dit_2")[:plan.dims.experts]},
                   **_runtime_fields(plan)},
            environment=env.to_dict(), files=mf.hash_files(tmp), quantization=quantization, lora=lora,
            build={"command": _rebuild_command(plan), "device": str(plan.device),
                   "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "seconds": round(time.perf_counter() - started, 3),
                   "steps": [{"label": label, "seconds": round(sec, 3)} for label, sec in step.records]})
        mf.write_manifest(tmp, manifest)
        _install(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_out:
            try:
                out.rmdir()  # only succeeds when nothing else is in it
            except OSError:
                pass
        if isinstance(exc, (BuildError, KeyboardInterrupt, SystemExit)):
            raise
        logger.debug("build failed", exc_info=True)
        raise BuildError(f"building {request.backend} artifacts failed: {type(exc).__name__}: {exc}") from exc
    return BuildResult(final, manifest, status, code, message, time.perf_counter() - started, step.records)


def _runtime_fields(plan: _Plan) -> dict[str, Any]:
    """``manifest.model`` fields of a non-Wan family: its runtime binding and its adapter's own fields (none for Wan,
    whose manifests keep their shape)."""
    if plan.adapter.runtime == "wan":
        return {}
    return {"runtime": plan.adapter.runtime, **plan.adapter.manifest_model(plan.dims)}


def _install(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` folder to ``final`` (replacing an old build atomically per rename)."""
    if not final.exists():
        os.replace(tmp, final)
        return
    trash = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.replace(final, trash)
    try:
        os.replace(tmp, final)
    except OSError:
        os.replace(trash, final)
        raise
    shutil.rmtree(trash, ignore_errors=True)
