"""FP8 (e4m3) weights for the DiT's linear layers: quantize once at load, matmul through ``torch._scaled_mm``.

Contract
--------
- Scheme: weights are ``torch.float8_e4m3fn`` (``FP8_MAX`` = 448) with float32 scales, either one per
  tensor (``granularity="tensor"``) or one per output channel (``"row"``, the default: the
  ``QuantizationConfig`` of FastVideo has no granularity field, so ``transformer_quant="FP8"`` means per-row).
  ``scale = max(amax, tiny) / 448`` (amax of the tensor or of the row) and ``q = round_to_e4m3(w / scale)``
  (round-to-nearest-even, never saturating since ``|w / scale| <= 448``). Activations are quantized the same
  way dynamically at each call: per tensor with per-tensor weights, per row (one scale per token) with
  per-row weights, so ``torch._scaled_mm``'s tensor-wise and row-wise modes apply.
- Numerics contract of :class:`FP8Linear`, one for both paths::

      y = ((x_q @ w_q^T) in float32) * (s_x * s_w^T)  ->  cast to the compute dtype  ->  + bias

  The CUDA path (Ada sm_89 and newer; row-wise needs Hopper sm_90 and a bf16 output, and ``_scaled_mm``
  needs ``K`` and ``N`` multiples of 16) calls ``torch._scaled_mm`` which accumulates the e4m3 products in
  float32 and applies the scales in float32. The reference path (every other device, shape or dtype)
  emulates it: it casts the e4m3 codes to float32 (exact: e4m3 values are float32 values), multiplies in
  float32 and applies the same scales, so the two paths differ only in float32 summation order.
  :func:`fp8_path` says which path a layer takes.
- Error bound (derived in :func:`dot_error_bound`): e4m3 keeps 3 mantissa bits, so one rounding has a
  relative error ``<= u = 2**-4`` for normal values, and an absolute error ``<= 2**-10 * scale`` below the
  normal range (``|v / scale| < 2**-6``). For one output ``y = sum_k x_k w_k``, writing each quantized
  factor as ``v (1 + d)``, ``|y_fp8 - y| <= sum_k (|dx_k| |w_k| + |x_k + dx_k| |dw_k|)`` plus float32
  accumulation (``K * 2**-24 * sum_k |x_k w_k|``) and the final rounding to the compute dtype
  (``2**-8 |y|`` for bf16). That is the worst case, ``~2u * sum_k |x_k w_k|`` (12.5 % of the absolute sum).
  The expected error is much smaller: rounding errors are independent with a standard deviation of
  ``sigma ~= 0.49 u ~= 0.031`` (uniform error on the mantissa grid, mantissas spread over [1, 2)), so
  ``E|y_fp8 - y|^2 ~= 2 sigma^2 sum_k (x_k w_k)^2``, and for the usual incoherent sums (``|y|^2 ~= sum_k
  (x_k w_k)^2``) the relative error of a K-length dot product is ``sqrt(2) sigma ~= 4.4 %``, independent of
  ``K`` (:data:`EXPECTED_RELATIVE_ERROR`; measured 3-4 % on Gaussian data, tests/engine/test_fp8.py).
- Whole DiT (:data:`DIT_RELATIVE_ERROR_BOUND` = 2 x 4.4 % = 8.7 %, relative L2 error of the output against the
  same DiT unquantized): each residual branch has two FP8 matmuls in series (q/k/v then ``to_out``; FFN up then
  down), ``sqrt(2) * 4.4 % ~= 6.2 %`` of the branch, plus what the q/k errors move through the softmax; the
  residual stream adds unquantized terms, so the relative error of the output is at most the branch's. The
  tiny model measures 0.7-0.8 % (its gated branches are small next to the residual); the quality gate
  measures the real cost (README).
- :func:`quantize_dit` replaces, in place, the attention projections (``attn1``/``attn2`` ``to_q``,
  ``to_k``, ``to_v``, ``to_out.0``) and the FFN (``ffn.net.0.proj``, ``ffn.net.2``) of every block: ~99 %
  of the DiT's linear FLOPs. It keeps in the compute dtype: the patch embedding (a Conv3d on raw latents),
  the condition embedders (time and text MLPs; they run once per step on one token or the short text),
  the modulation projection ``time_proj`` and the ``scale_shift_table`` s (the AdaLN scales multiply every
  activation, so their error would not average out), the norms (already float32), and the final
  projection ``proj_out`` (its output is the velocity itself, with no later residual to dilute its error).
  Returns the :class:`FP8Spec` to record (e.g. in an artifact manifest).
- Torch only; no state outside the modules. Quantizing a meta-device model is refused (load weights first).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_GRANULARITY",
    "DIT_RELATIVE_ERROR_BOUND",
    "E4M3",
    "EXPECTED_RELATIVE_ERROR",
    "FP8Linear",
    "FP8Spec",
    "FP8_MAX",
    "Granularity",
    "QUANT_TARGETS",
    "U_E4M3",
    "dequantize",
    "dot_error_bound",
    "fp8_path",
    "parse_transformer_quant",
    "quantize",
    "quantize_dit",
    "scales_for",
    "transformer_quant_name",
]

E4M3 = torch.float8_e4m3fn
FP8_MAX = 448.0
#: Unit roundoff of e4m3 (3 mantissa bits, round to nearest): relative error of one rounding of a normal value.
U_E4M3 = 2.0 ** -4
#: Smallest normal e4m3 magnitude and the largest absolute rounding error below it (half the subnormal step).
_MIN_NORMAL = 2.0 ** -6
_SUBNORMAL_ERR = 2.0 ** -10
#: Expected relative error of an incoherent K-length dot product with both factors in e4m3 (module doc).
EXPECTED_RELATIVE_ERROR = math.sqrt(2.0) * 0.49 * U_E4M3
#: Bound on the relative L2 error of the whole DiT output, FP8 against the same DiT unquantized (module doc).
DIT_RELATIVE_ERROR_BOUND = 2.0 * EXPECTED_RELATIVE_ERROR
Granularity = Literal["tensor", "row"]
DEFAULT_GRANULARITY: Granularity = "row"
#: Linear layers of each block that take FP8 weights (module doc says why the others stay).
QUANT_TARGETS: tuple[str, ...] = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q",
                                  "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")
_TINY = 1e-12


@dataclass(frozen=True)
class FP8Spec:
    """What was quantized: the format, the scale granularity and how many layers."""

    scheme: str = "fp8_e4m3"
    granularity: Granularity = DEFAULT_GRANULARITY
    layers: int = 0

    def manifest_value(self) -> dict[str, str]:
        """The identity an artifact records (layer count excluded: it follows from the model config)."""
        return {"transformer": self.scheme, "granularity": self.granularity}


def parse_transformer_quant(value: str | None) -> Granularity | None:
    """``QuantizationConfig.transformer_quant`` -> the granularity to use, None for no quantization.

    ``"FP8"`` (FastVideo's spelling, any case) is per-row; ``"FP8_PER_TENSOR"`` / ``"FP8_PER_ROW"`` pick one.
    Anything else raises ValueError (the config check turns it into a ConfigError naming the field)."""
    if value is None:
        return None
    key = str(value).strip().upper().replace("-", "_")
    table: dict[str, Granularity] = {"FP8": DEFAULT_GRANULARITY, "FP8_PER_ROW": "row", "FP8_PER_TENSOR": "tensor"}
    if key not in table:
        raise ValueError(f"{value!r} is not a supported scheme; use 'FP8' (e4m3 weights, per-row scales), "
                         f"'FP8_PER_TENSOR', or null")
    return table[key]


def transformer_quant_name(granularity: Granularity) -> str:
    """The ``transformer_quant`` value (and ``fastvideo-build --transformer-quant``) that selects ``granularity``."""
    return "FP8" if granularity == DEFAULT_GRANULARITY else "FP8_PER_TENSOR"


def scales_for(t: torch.Tensor, granularity: Granularity) -> torch.Tensor:
    """Float32 scales mapping ``t``'s amax (of the tensor, or of each row over the last dim) onto 448:
    shape ``()`` for ``"tensor"``, ``t.shape[:-1] + (1,)`` for ``"row"``."""
    a = t.detach().abs().float()
    amax = a.amax() if granularity == "tensor" else a.amax(dim=-1, keepdim=True)
    return amax.clamp(min=_TINY) / FP8_MAX


def quantize(t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``t / scale`` rounded to e4m3 (clamped to +-448 first, so rounding never overflows)."""
    return (t.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(E4M3)


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``q * scale`` in float32, then cast to ``dtype``."""
    return (q.float() * scale).to(dtype)


def dot_error_bound(x: torch.Tensor, w: torch.Tensor, *, granularity: Granularity,
                    out_dtype: torch.dtype = torch.float32, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The worst-case bound of ``|FP8Linear(x) - x @ w^T|`` per output element (module doc), ``(M, N)``.

    Per factor: ``|dv| <= max(u |v|, 2**-10 * scale)``; per product ``|dx| |w| + (|x| + |dx|) |dw|``; plus float32
    accumulation ``K * 2**-24 * sum |x_q w_q|`` and the output rounding (``eps(out_dtype) / 2 * |y|``)."""
    x = x.reshape(-1, x.shape[-1]).double()
    w = w.double()
    sx = scales_for(x, granularity).double()
    sw = scales_for(w, granularity).double()
    dx = torch.maximum(U_E4M3 * x.abs(), _SUBNORMAL_ERR * sx.expand_as(x))
    dw = torch.maximum(U_E4M3 * w.abs(), _SUBNORMAL_ERR * sw.expand_as(w))
    quant = dx @ w.abs().T + (x.abs() + dx) @ dw.T
    k = x.shape[-1]
    magnitude = (x.abs() + dx) @ (w.abs() + dw).T
    accumulate = k * 2.0 ** -24 * magnitude
    y = (x @ w.T).abs() + (0.0 if bias is None else bias.double().abs())
    rounding = torch.finfo(out_dtype).eps / 2 * (y + quant + accumulate)
    return quant + accumulate + rounding


def _capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device) if device.type == "cuda" else (0, 0)


def fp8_path(device: torch.device, dtype: torch.dtype, granularity: Granularity, in_features: int,
             out_features: int) -> Literal["scaled_mm", "reference"]:
    """Which path an :class:`FP8Linear` takes for these (module doc)."""
    if device.type != "cuda" or in_features % 16 or out_features % 16:
        return "reference"
    cap = _capability(device)
    if granularity == "row":
        return "scaled_mm" if cap >= (9, 0) and dtype == torch.bfloat16 else "reference"
    return "scaled_mm" if cap >= (8, 9) and dtype in (torch.bfloat16, torch.float16, torch.float32) else "reference"


class FP8Linear(nn.Module):
    """A linear layer with an e4m3 weight ``(N, K)`` and float32 scales; the bias stays in the compute dtype.

    ``forward(x)`` takes ``x`` in the compute dtype (``bias`` dtype, or ``compute_dtype``) and returns it in
    that dtype; the activation is quantized per call (module doc)."""

    weight: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None,
                 granularity: Granularity, compute_dtype: torch.dtype) -> None:
        super().__init__()
        if weight_q.dtype != E4M3:
            raise TypeError(f"FP8Linear needs an e4m3 weight, got {weight_q.dtype}")
        self.in_features = weight_q.shape[1]
        self.out_features = weight_q.shape[0]
        self.granularity: Granularity = granularity
        self.compute_dtype = compute_dtype
        self.register_buffer("weight", weight_q)
        self.register_buffer("weight_scale", weight_scale.float().reshape(-1, 1) if granularity == "row"
                             else weight_scale.float().reshape(()))
        self.register_buffer("bias", None if bias is None else bias.detach().to(compute_dtype))
        self.path = fp8_path(weight_q.device, compute_dtype, granularity, self.in_features, self.out_features)

    @classmethod
    def from_linear(cls, linear: nn.Linear, granularity: Granularity = DEFAULT_GRANULARITY) -> "FP8Linear":
        """Quantize ``linear``'s weight once (its dtype becomes the compute dtype)."""
        w = linear.weight.detach()
        if w.is_meta:
            raise ValueError("cannot quantize a weight on the meta device: load the weights first")
        scale = scales_for(w, granularity)
        return cls(quantize(w, scale), scale, linear.bias, granularity, w.dtype)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.weight, self.weight_scale, dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, e4m3 {self.granularity}-wise, "
                f"compute {self.compute_dtype}, path={self.path}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        x_scale = scales_for(x2, self.granularity)
        x_q = quantize(x2, x_scale)
        if self.path == "scaled_mm":
            y = self._scaled_mm(x_q, x_scale)
        else:
            y = self.reference(x_q, x_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def reference(self, x_q: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        """The emulation: e4m3 codes as float32, float32 matmul, float32 scales, cast to the compute dtype."""
        acc = x_q.float() @ self.weight.float().T
        return (acc * (x_scale * self.weight_scale.reshape(1, -1) if self.granularity == "row"
                       else x_scale * self.weight_scale)).to(self.compute_dtype)

    def _scaled_mm(self, x_q: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        if self.granularity == "row":
            return torch._scaled_mm(x_q, self.weight.T, scale_a=x_scale.float().contiguous(),
                                    scale_b=self.weight_scale.reshape(1, -1).contiguous(),
                                    out_dtype=self.compute_dtype)
        return torch._scaled_mm(x_q, self.weight.T, scale_a=x_scale.float().reshape(()),
                                scale_b=self.weight_scale, out_dtype=self.compute_dtype)


def quantize_dit(dit: nn.Module, granularity: Granularity = DEFAULT_GRANULARITY) -> FP8Spec:
    """Replace the :data:`QUANT_TARGETS` linears of every block of ``dit`` with :class:`FP8Linear` (module doc).

    Idempotent per layer (an FP8Linear is left as is). Returns the spec with the number of layers quantized."""
    blocks = getattr(dit, "blocks", None)
    if blocks is None:
        raise TypeError(f"{type(dit).__name__} has no .blocks: FP8 weights apply to the Wan DiT")
    count = 0
    paths: set[str] = set()
    with torch.no_grad():
        for block in blocks:
            for target in QUANT_TARGETS:
                *parents, leaf = target.split(".")
                owner = block
                for part in parents:
                    owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
                current = owner[int(leaf)] if leaf.isdigit() else getattr(owner, leaf)
                if isinstance(current, FP8Linear):
                    continue
                if not isinstance(current, nn.Linear):
                    raise TypeError(f"block.{target} is a {type(current).__name__}, not a Linear")
                layer = FP8Linear.from_linear(current, granularity)
                paths.add(layer.path)
                if leaf.isdigit():
                    owner[int(leaf)] = layer
                else:
                    setattr(owner, leaf, layer)
                count += 1
    logger.info("FP8 (e4m3, %s-wise scales) weights for %d DiT linear layers; matmul path: %s", granularity, count,
                ", ".join(sorted(paths)) or "-")
    return FP8Spec(granularity=granularity, layers=count)
