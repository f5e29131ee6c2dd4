"""ONNX export of shape cases and their onnxruntime check against eager PyTorch.

Contract
--------
- :func:`export_onnx` writes ``<dir>/<case.key>.onnx`` (+ ``<case.key>.onnx.data``, weights always
  stored as external data so >2 GB models work) with the **dynamo** exporter
  (``torch.onnx.export(..., dynamo=True)``, i.e. ``torch.export`` underneath): the legacy
  TorchScript exporter cannot export this DiT (``aten::rms_norm``) nor the VAE decoder
  (``aten::_upsample_nearest_exact2d``) at opset 18. Input/output names are the spec's; the DiT
  batch axis is dynamic (named ``batch``) when the case serves both CFG batch sizes.
- :func:`check_onnx` runs ``onnx.checker`` on the file and, with onnxruntime on the CPU, compares
  its outputs at every batch size of the case with the eager module's, using the verification
  rule of :func:`fastvideo.build.exportable.compare_outputs`. onnxruntime's CPU provider has no
  bfloat16 kernels, so a bf16/fp16 build is checked through an fp32 *twin* export of the same
  graph (same code path, fp32 weights) that is discarded afterwards; the checked file itself is
  verified structurally.
- Raises :class:`OnnxCheckError` with the case, batch and error when a check fails.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fastvideo.api.errors import FastVideoError
from fastvideo.build.exportable import compare_outputs
from fastvideo.build.specs import ShapeCase

logger = logging.getLogger(__name__)

__all__ = ["OnnxCheck", "OnnxCheckError", "check_onnx", "export_onnx", "onnx_unavailable_reason"]


class OnnxCheckError(FastVideoError, RuntimeError):
    """An exported ONNX file that is invalid or disagrees with eager PyTorch."""


@dataclass
class OnnxCheck:
    """What was checked and how far onnxruntime was from eager (per batch)."""

    checked_file: str
    max_abs_diff: dict[int, float]
    allowed: dict[int, float]


def onnx_unavailable_reason() -> str | None:
    """Why ONNX export/checking cannot run here (``None`` when it can)."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        return f"ONNX export needs {', '.join(missing)} (pip install onnx onnxscript onnxruntime)"
    return None


def export_onnx(module: nn.Module, case: ShapeCase, inputs: tuple[torch.Tensor, ...], out_dir: Path) -> Path:
    """Export the case's wrapper module to ``out_dir/<key>.onnx`` (see module contract)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{case.key}.onnx"
    dynamic = case.export_dynamic_shapes()
    if dynamic is not None:
        dynamic = {name: dynamic.get(name, {}) for name in case.input_names()}
    chatter = io.StringIO()  # the exporter prints its progress; keep it out of the CLI's output
    with torch.no_grad(), module.tracing(), contextlib.redirect_stdout(chatter):  # type: ignore[operator]
        program = torch.onnx.export(module, inputs, dynamo=True, input_names=list(case.input_names()),
                                    output_names=list(case.output_names()), dynamic_shapes=dynamic,
                                    optimize=True, verbose=False, external_data=True)
        if program is None:  # pragma: no cover - the dynamo exporter always returns a program
            raise OnnxCheckError(f"{case.key}: torch.onnx.export returned no program")
        program.save(str(target), external_data=True)
    logger.debug("onnx exporter output for %s:\n%s", case.key, chatter.getvalue())
    return target


def _ort_session(path: Path):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def check_onnx(path: Path, module: nn.Module, case: ShapeCase, inputs_at: dict[int, tuple[torch.Tensor, ...]],
               dtype: torch.dtype) -> OnnxCheck:
    """Structural check of ``path`` and an onnxruntime-vs-eager comparison at every batch.

    ``inputs_at[batch]`` are the inputs for each batch size; ``module`` is the eager wrapper the
    file was exported from, in ``dtype`` (float32 or float16: onnxruntime runs them on the CPU).
    """
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        raise OnnxCheckError(f"{path.name} fails onnx.checker: {exc}") from exc
    if dtype == torch.bfloat16:
        raise OnnxCheckError("onnxruntime's CPU provider cannot run bfloat16 graphs; check an fp32 twin")
    session = _ort_session(path)
    names = [i.name for i in session.get_inputs()]
    if tuple(names) != case.input_names():
        raise OnnxCheckError(f"{path.name} has inputs {names}, expected {list(case.input_names())}")
    diffs: dict[int, float] = {}
    allowed: dict[int, float] = {}
    for batch, inputs in sorted(inputs_at.items()):
        with torch.no_grad():
            ref = module(*inputs)
        feeds = {name: t.detach().to("cpu").numpy() for name, t in zip(names, inputs)}
        try:
            out = torch.from_numpy(session.run(None, feeds)[0])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise OnnxCheckError(f"{path.name}: onnxruntime failed at batch {batch}: {exc}") from exc
        diff, limit, ok = compare_outputs(out, ref.to("cpu"), dtype)
        diffs[batch], allowed[batch] = diff, limit
        if not ok:
            raise OnnxCheckError(f"{path.name}: onnxruntime differs from eager PyTorch by {diff:.3g} at batch {batch} "
                                 f"(allowed {limit:.3g})")
    return OnnxCheck(checked_file=path.name, max_abs_diff=diffs, allowed=allowed)
