"""TensorRT backend: engines built from the checked ONNX files, and their CUDA-stream runtime.

Contract
--------
- :func:`tensorrt_unavailable_reason` says why engines cannot be built/run here (TensorRT not
  importable, no CUDA GPU, a CPU device); the builder then stops after the ONNX stage with exit
  status 3 and a message, never a traceback.
- :func:`build_engine` parses ``<key>.onnx`` (external data next to it) into a **strongly typed**
  network when the TensorRT version supports it (the ONNX graph already carries the precision
  plan: bf16/fp16 matmuls, fp32 norms), else sets the BF16/FP16 builder flag; adds one
  optimization profile per input with the case's ``(min, opt, max)`` shapes (the declared
  profile's latent shape; batch 1..2 under CFG) and serializes ``<key>.engine``.
- :class:`TensorRTProgram` deserializes an engine on a CUDA device, and on each call, under the
  device guard of that device (:func:`fastvideo.kernels.device.device_guard`), sets the input
  shapes, refusing with :class:`EngineShapeError` (naming the input, its shape and the engine's
  min/opt/max profile) any shape ``set_input_shape`` rejects, before touching the inputs; then
  sets the tensor addresses (inputs made contiguous, in the engine's dtypes), allocates the output
  with torch and enqueues ``execute_async_v3`` on that device's current CUDA stream, so it orders
  with surrounding torch work without host syncs. The engine is checked to hold exactly the
  case's input names.
- :data:`ARTIFACT_BACKEND` is the ``tensorrt`` entry of :mod:`fastvideo.build.backends`: one
  engine per shape case, called as is; engines own their weights (the eager DiT is dropped unless
  eager fallbacks are asked for); the environment adds the TensorRT, onnx and onnxruntime versions.
- This module imports ``tensorrt`` lazily; nothing here runs without it. Not exercised on the
  CPU-only development machine (see the build report).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fastvideo.api.errors import FastVideoError
from fastvideo.build.backends import ArtifactBackend, Runner
from fastvideo.build.specs import ShapeCase
from fastvideo.kernels.device import device_guard

if TYPE_CHECKING:  # pragma: no cover
    from fastvideo.build.loading import LoadedArtifacts

logger = logging.getLogger(__name__)

__all__ = ["ARTIFACT_BACKEND", "EngineShapeError", "TensorRTProgram", "build_engine", "tensorrt_unavailable_reason"]

SUBDIR = "tensorrt"
DEFAULT_WORKSPACE_GIB = 8.0


class EngineShapeError(FastVideoError, ValueError):
    """An input shape outside the TensorRT engine's optimization profile."""


def tensorrt_unavailable_reason(device: torch.device) -> str | None:
    """Why TensorRT engines cannot be built or run here (``None`` when they can)."""
    try:
        import tensorrt  # type: ignore[import-not-found]  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken CUDA runtime
        return f"TensorRT cannot be imported ({type(exc).__name__}: {exc})"
    if device.type != "cuda":
        return f"TensorRT engines run on CUDA GPUs; the build device is {device}"
    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA GPU and none is available"
    return None


def _trt() -> Any:
    import tensorrt as trt  # type: ignore[import-not-found]

    return trt


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
             trt.DataType.BOOL: torch.bool, trt.DataType.INT8: torch.int8}
    for name, value in (("BF16", torch.bfloat16), ("INT64", torch.int64)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = value
    if dtype not in table:
        raise TypeError(f"TensorRT data type {dtype} has no torch equivalent")
    return table[dtype]


def build_engine(onnx_path: Path, case: ShapeCase, engine_path: Path, *, precision: str,
                 workspace_gib: float = DEFAULT_WORKSPACE_GIB) -> Path:
    """Build and serialize a TensorRT engine for ``case`` from its ONNX file."""
    trt = _trt()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    flags = 0
    strongly_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT 8.x
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {Path(onnx_path).name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if not strongly_typed:
        if precision == "bf16" and hasattr(trt.BuilderFlag, "BF16"):
            config.set_flag(trt.BuilderFlag.BF16)
        elif precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    specs = {spec.name: spec for spec in case.inputs}
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        spec = specs.get(tensor.name)
        if spec is None:
            raise RuntimeError(f"{Path(onnx_path).name} has an unexpected input {tensor.name!r}")
        profile.set_shape(tensor.name, spec.min_shape, spec.opt_shape, spec.max_shape)
    config.add_optimization_profile(profile)
    logger.info("TensorRT: building %s (%s, profile %s)", case.key, precision,
                {s.name: (s.min_shape, s.opt_shape, s.max_shape) for s in case.inputs})
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {case.key} (see the TensorRT log above)")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    return engine_path


class TensorRTProgram:
    """A deserialized engine called like the exported module (see module contract)."""

    def __init__(self, engine_path: Path, device: torch.device, input_names: tuple[str, ...]) -> None:
        trt = _trt()
        self.path = Path(engine_path)
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise RuntimeError(f"TensorRT engines run on CUDA devices, not {self.device}")
        self._trt = trt
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with device_guard(self.device):
            self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self._engine is None:
                raise RuntimeError(f"TensorRT cannot deserialize {self.path} (built by another TensorRT version "
                                   "or for another GPU?)")
            self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self._engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self._engine.get_tensor_mode(n) != mode]
        if tuple(self.inputs) != tuple(input_names) or len(self.outputs) != 1:
            raise RuntimeError(f"{self.path.name} has inputs {self.inputs} / outputs {self.outputs}; expected "
                               f"{list(input_names)} and one output")
        self._dtypes = {n: _torch_dtype(trt, self._engine.get_tensor_dtype(n)) for n in names}
        self._lock = threading.Lock()
        self._last_done: torch.cuda.Event | None = None

    def profile(self, name: str) -> tuple[tuple[int, ...], ...]:
        """``(min, opt, max)`` shapes of input ``name`` in the engine's (only) optimization profile."""
        return tuple(tuple(int(d) for d in shape) for shape in self._engine.get_tensor_profile_shape(name, 0))

    def _set_shapes(self, inputs: tuple[torch.Tensor, ...]) -> None:
        if len(inputs) != len(self.inputs):
            raise EngineShapeError(f"{self.path.name} takes {len(self.inputs)} inputs ({', '.join(self.inputs)}), "
                                   f"got {len(inputs)}")
        for name, tensor in zip(self.inputs, inputs):
            shape = tuple(tensor.shape)
            if not self._context.set_input_shape(name, shape):
                low, opt, high = self.profile(name)
                raise EngineShapeError(
                    f"{self.path.name}: input {name!r} has shape {shape}, outside the engine's profile (min {low}, "
                    f"opt {opt}, max {high}); rebuild with fastvideo-build and a --profile that covers this size")

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        # One execution context holds one set of shapes and addresses and one activation workspace: callers
        # on different threads (the decode stage and a preview on the denoise stage share the VAE engine) take
        # turns setting them, and the GPU work of a call waits for the previous call's (their streams differ).
        with self._lock:
            return self._call_locked(inputs)

    def _call_locked(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        context = self._context
        self._set_shapes(inputs)
        with device_guard(self.device):
            keep = []
            for name, tensor in zip(self.inputs, inputs):
                tensor = tensor.to(device=self.device, dtype=self._dtypes[name]).contiguous()
                keep.append(tensor)
                context.set_tensor_address(name, tensor.data_ptr())
            name = self.outputs[0]
            shape = tuple(context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            context.set_tensor_address(name, out.data_ptr())
            stream = torch.cuda.current_stream(self.device)
            capturing = torch.cuda.is_current_stream_capturing()
            if self._last_done is not None and not capturing:
                stream.wait_event(self._last_done)
            if not context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution of {self.path.name} failed for shapes "
                                   f"{[tuple(t.shape) for t in keep]}")
            for tensor in keep:  # inputs made here must outlive the enqueued work
                tensor.record_stream(stream)
            if not capturing:  # an event recorded inside a graph capture cannot be waited on outside it
                done = torch.cuda.Event()
                done.record(stream)
                self._last_done = done
        return out


def _load_program(path: Path, device: torch.device, case: ShapeCase) -> TensorRTProgram:
    return TensorRTProgram(path, device, case.input_names())


def _engine_runners(pipeline: Any, loaded: LoadedArtifacts) -> dict[str, Runner]:
    """Engines run as loaded: nothing to bind."""
    return {key: entry.program for key, entry in loaded.cases.items()}


#: The ``tensorrt`` entry of the artifact backend registry (see module contract).
ARTIFACT_BACKEND = ArtifactBackend(name="tensorrt", environment=frozenset({"tensorrt", "onnx", "onnxruntime"}),
                                   shares_eager_weights=False, runners=_engine_runners, load_program=_load_program)
