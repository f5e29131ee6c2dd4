"""Cost of switching experts with ``engine.offload.dit`` on a two-expert model (Wan2.2 A14B).

Contract: builds two DiTs of a config (``tiny``: the built-in model's; ``a14b``: one Wan2.2 T2V A14B expert,
optionally only ``--layers`` of its 40 blocks so it fits in memory, the result scaled to 40 blocks) with
uninitialised weights in ``--dtype``, and reports the bytes one expert holds and the time of one switch:
- on CUDA: :meth:`fastvideo.engine.models.wan.experts.ExpertSet.activate` with offload (pinned CPU copies; the incoming
  expert copied host-to-device, the outgoing one's device copy dropped), median of ``--iters`` switches;
- on the CPU (no device to move to): one copy of every weight of an expert into fresh memory, the lower bound
  of any move (memory bandwidth), median of ``--iters`` copies. This is not a host-to-device figure.
Prints one JSON line.

    python benchmarks/bench_expert_switch.py --config a14b --layers 2 --device cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel
from fastvideo.engine.models.wan.experts import ExpertSet

#: One expert of Wan2.2 T2V A14B (Wan-AI/Wan2.2-T2V-A14B-Diffusers transformer/ and transformer_2/ configs).
A14B_EXPERT = {"patch_size": [1, 2, 2], "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 16,
               "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
               "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024}
TINY = {"patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 16,
        "out_channels": 16, "text_dim": 32, "freq_dim": 32, "ffn_dim": 64, "num_layers": 2, "cross_attn_norm": True,
        "rope_max_seq_len": 64}


def build(config: dict, layers: int | None, dtype: torch.dtype) -> WanTransformer3DModel:
    cfg = dict(config, num_layers=layers or config["num_layers"])
    with torch.device("meta"):
        model = WanTransformer3DModel(WanDiTConfig.from_dict(cfg))
    return model.to_empty(device="cpu").to(dtype).eval().requires_grad_(False)


def nbytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=("tiny", "a14b"), default="tiny")
    ap.add_argument("--layers", type=int, default=None, help="blocks to build (result scaled to the full count)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    config = A14B_EXPERT if args.config == "a14b" else TINY
    full_layers, layers = config["num_layers"], args.layers or config["num_layers"]
    device = torch.device(args.device)
    times = []
    if device.type == "cuda":
        experts = ExpertSet([build(config, layers, dtype), build(config, layers, dtype)], device, offload=True)
        size = nbytes(experts.experts[0])
        experts.activate(0)
        for i in range(args.iters):
            t0 = time.perf_counter()
            experts.activate((i + 1) % 2)  # synchronised inside
            times.append(time.perf_counter() - t0)
        experts.release()
        what = "ExpertSet.activate host-to-device switch (pinned)"
    else:
        expert = build(config, layers, dtype)
        size = nbytes(expert)
        tensors = [*expert.parameters(), *expert.buffers()]
        for _ in range(args.iters):
            t0 = time.perf_counter()
            copies = [t.clone() for t in tensors]
            times.append(time.perf_counter() - t0)
            del copies
        what = "CPU copy of one expert's weights (memory-bandwidth lower bound, not host-to-device)"
    median = statistics.median(times)
    block_bytes = nbytes(build(config, 1, dtype).blocks[0]) if layers != full_layers else 0
    scale_bytes = size + block_bytes * (full_layers - layers)
    print(json.dumps({"config": args.config, "device": str(device), "dtype": args.dtype, "layers_built": layers,
                      "what": what, "expert_bytes_built": size, "switch_s_median": round(median, 4),
                      "gb_per_s": round(size / median / 1e9, 2), "full_expert_bytes": scale_bytes,
                      "full_expert_switch_s_estimate": round(median * scale_bytes / size, 3)}))


if __name__ == "__main__":
    main()
