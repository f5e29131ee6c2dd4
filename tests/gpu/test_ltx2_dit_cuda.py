"""The LTX-2 audio+video DiT on the GPU, against diffusers' ``LTX2VideoTransformer3DModel`` on the same device.

Two blocks of the published LTX-2 geometry (video 32 x 128, audio 32 x 64, text 3840, split RoPE), seeded random
weights, 512x768x25 (1,536 video tokens) with 25 audio latent frames, text 256, CFG batch 2 with different
timesteps and a text mask on one sample. Against the same weights in float32 (diffusers, SDPA), our bf16 model
must be at most 2x as far off as diffusers' bf16 (the engine's rule for a faster path), fp32 ours within 1e-4
(relative to the output's scale) of fp32 diffusers, and, where the Triton attention backend loads, ours with it
(unmasked) again within 2x of diffusers' bf16 error. Skipped without CUDA unless rehearsed on the CPU at tiny shapes.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from benchmarks.ltx2_dit_bench import LTX2_DIT, TINY_LTX2

diffusers = pytest.importorskip("diffusers")


def _setup(gpu: Any) -> tuple[Any, Any, dict[str, Any]]:
    from diffusers import LTX2VideoTransformer3DModel as Ref

    from fastvideo.engine.models.ltx2 import LTX2DiTConfig, LTX2Transformer

    config = gpu.pick(dict(LTX2_DIT, num_layers=2), dict(TINY_LTX2, num_layers=2))
    grid = gpu.pick((4, 16, 24), (2, 4, 4))
    audio_frames, text_len = gpu.pick((25, 256), (6, 9))
    torch.manual_seed(0)
    with torch.device(gpu.device):
        ref = Ref(**config).eval()
        ours = LTX2Transformer(LTX2DiTConfig.from_dict(config)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # a copy: each model is cast separately below
    g = torch.Generator().manual_seed(4)
    tokens = grid[0] * grid[1] * grid[2]
    mask = torch.ones(2, text_len)
    mask[1, text_len // 2:] = 0
    inputs = dict(hidden_states=torch.randn(2, tokens, config["in_channels"], generator=g),
                  audio_hidden_states=torch.randn(2, audio_frames, config["audio_in_channels"], generator=g),
                  encoder_hidden_states=torch.randn(2, text_len, config["caption_channels"], generator=g),
                  audio_encoder_hidden_states=torch.randn(2, text_len, config["caption_channels"], generator=g),
                  timestep=torch.tensor([900.0, 250.0]), encoder_attention_mask=mask,
                  audio_encoder_attention_mask=mask)
    inputs = {k: v.to(gpu.device) for k, v in inputs.items()}
    inputs.update(num_frames=grid[0], height=grid[1], width=grid[2], fps=24.0, audio_num_frames=audio_frames)
    return ref, ours, inputs


def _cast(inputs: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    floats = ("hidden_states", "audio_hidden_states", "encoder_hidden_states", "audio_encoder_hidden_states")
    return {k: (v.to(dtype) if k in floats else v) for k, v in inputs.items()}


def _err(got: tuple[torch.Tensor, ...], ref: tuple[torch.Tensor, ...]) -> tuple[float, float]:
    return tuple((g.double() - r.double()).abs().max().item() for g, r in zip(got, ref))  # type: ignore[return-value]


def test_ltx2_dit_matches_diffusers_on_device(gpu: Any) -> None:
    ref, ours, inputs = _setup(gpu)
    with torch.no_grad():
        ref32 = ref(**inputs, return_dict=False)
        ours32 = ours(**inputs)
        scale = max(1.0, max(t.abs().max().item() for t in ref32))
        assert max(_err(ours32, ref32)) <= 1e-4 * scale, _err(ours32, ref32)

        ref16 = ref.to(torch.bfloat16)(**_cast(inputs, torch.bfloat16), return_dict=False)
        ours.to_inference_dtype(torch.bfloat16)
        ours16 = ours(**_cast(inputs, torch.bfloat16))
    for stream, (mine, theirs) in enumerate(zip(_err(ours16, ref32), _err(ref16, ref32))):
        assert torch.isfinite(ours16[stream]).all()
        assert mine <= 2 * theirs + 1e-6, f"stream {stream}: ours bf16 {mine:.3e} vs diffusers bf16 {theirs:.3e}"


def test_ltx2_dit_triton_attention_within_diffusers_bf16_error(gpu: Any) -> None:
    from fastvideo.kernels.registry import AttentionBackendError, select_attention_backend

    ref, ours, inputs = _setup(gpu)
    inputs = {k: v for k, v in inputs.items() if not k.endswith("attention_mask")}  # the backend path: no mask
    dtype = torch.bfloat16
    try:
        backend = select_attention_backend("triton", dtype=dtype, head_dim=ours.config.attention_head_dim,
                                           device=gpu.device)
    except AttentionBackendError as exc:
        pytest.skip(f"triton attention backend unavailable: {exc}")
    with torch.no_grad():
        ref32 = ref(**inputs, return_dict=False)
        ref16 = ref.to(dtype)(**_cast(inputs, dtype), return_dict=False)
        ours.to_inference_dtype(dtype).set_attention_backend(backend)
        fast = ours(**_cast(inputs, dtype))
    for stream, (mine, theirs) in enumerate(zip(_err(fast, ref32), _err(ref16, ref32))):
        assert torch.isfinite(fast[stream]).all()
        assert mine <= 2 * theirs + 1e-6, f"stream {stream}: ours triton {mine:.3e} vs diffusers bf16 {theirs:.3e}"
