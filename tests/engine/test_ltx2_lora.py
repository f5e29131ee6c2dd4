"""LoRA on the LTX-2 DiT (fastvideo.engine.lora) against diffusers' ``LTX2Pipeline.load_lora_weights`` + ``fuse_lora``.

Tiny random DiTs (seconds on CPU): diffusers' ``LTX2VideoTransformer3DModel`` (every parameter re-drawn from seeded
noise) inside an ``LTX2Pipeline`` (for its LoRA loader, which converts the original layout), and ours with the same
weights. Random LoRAs in the diffusers/PEFT layout (saved by diffusers' ``save_lora_weights`` with PEFT metadata:
``lora_alpha`` and an ``alpha_pattern``) and in the original Lightricks layout (``diffusion_model.`` with
``patchify_proj``, ``adaln_single`` ...; diffusers converts it) target both streams, the a2v/v2a attention, the
feed-forwards, the time/AV modulation, the caption projection and the in/out projections. Merged weights and outputs
must match diffusers' fused model; strength scales the delta; unmerge restores the weights bit-exactly; a LoRA of
another size, for the text connectors or for another model is refused naming the field.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")
from diffusers import LTX2Pipeline  # noqa: E402
from diffusers import LTX2VideoTransformer3DModel as DiffusersLTX2  # noqa: E402
from peft import LoraConfig  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from fastvideo.api import ConfigError  # noqa: E402
from fastvideo.engine.lora import load_lora, lora_key_map, merge_lora, unmerge_lora  # noqa: E402
from fastvideo.engine.models.ltx2 import LTX2DiTConfig, LTX2Transformer  # noqa: E402
from fastvideo.engine.models.ltx2.lora_keys import LTX2_LORA_KEYS  # noqa: E402
from fastvideo.engine.models.wan.lora_keys import WAN_LORA_KEYS  # noqa: E402

TOL = 1e-5
TINY: dict[str, Any] = dict(
    in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
    audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=4,
    audio_cross_attention_dim=8, num_layers=2, caption_channels=12,
)
RANK = 4
#: block modules (diffusers' = ours) the PEFT-layout LoRA targets
BLOCK_MODULES = ("attn1.to_q", "attn1.to_out.0", "audio_attn1.to_k", "attn2.to_v", "audio_attn2.to_q",
                 "audio_to_video_attn.to_q", "video_to_audio_attn.to_out.0", "ff.net.0.proj", "ff.net.2",
                 "audio_ff.net.2")
TOP_MODULES = ("proj_in", "audio_proj_in", "proj_out", "time_embed.linear", "caption_projection.linear_1",
               "av_cross_attn_video_scale_shift.linear")
#: original Lightricks module names -> ours (diffusers' conversion), for the original-layout LoRA
ORIGINAL = {
    "patchify_proj": "proj_in",
    "audio_patchify_proj": "audio_proj_in",
    "adaln_single.linear": "time_embed.linear",
    "audio_adaln_single.emb.timestep_embedder.linear_1": "audio_time_embed.emb.timestep_embedder.linear_1",
    "av_ca_video_scale_shift_adaln_single.linear": "av_cross_attn_video_scale_shift.linear",
    "av_ca_v2a_gate_adaln_single.linear": "av_cross_attn_audio_v2a_gate.linear",
    "caption_projection.linear_2": "caption_projection.linear_2",
    "transformer_blocks.0.attn1.to_k": "transformer_blocks.0.attn1.to_k",
    "transformer_blocks.1.audio_to_video_attn.to_v": "transformer_blocks.1.audio_to_video_attn.to_v",
    "transformer_blocks.1.ff.net.2": "transformer_blocks.1.ff.net.2",
    "audio_proj_out": "audio_proj_out",
}
GRID = (3, 4, 4)
AUDIO_FRAMES = 5


def _reference(seed: int = 0) -> DiffusersLTX2:
    torch.manual_seed(seed)
    ref = DiffusersLTX2(**TINY).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in ref.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return ref


def _ours(ref: DiffusersLTX2) -> LTX2Transformer:
    model = LTX2Transformer(LTX2DiTConfig.from_dict(dict(ref.config))).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    return model


def _inputs() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(3)
    f, h, w = GRID
    return dict(
        hidden_states=torch.randn(2, f * h * w, TINY["in_channels"], generator=gen),
        audio_hidden_states=torch.randn(2, AUDIO_FRAMES, TINY["audio_in_channels"], generator=gen),
        encoder_hidden_states=torch.randn(2, 7, TINY["caption_channels"], generator=gen),
        audio_encoder_hidden_states=torch.randn(2, 7, TINY["caption_channels"], generator=gen),
        timestep=torch.tensor([300.0, 850.0]), num_frames=f, height=h, width=w, fps=24.0,
        audio_num_frames=AUDIO_FRAMES,
    )


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _pair(weights: dict[str, torch.Tensor], module: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    out_dim, in_dim = weights[f"{module}.weight"].shape
    return 0.3 * torch.randn(RANK, in_dim, generator=gen), 0.3 * torch.randn(out_dim, RANK, generator=gen)


def peft_modules() -> list[str]:
    return [f"transformer_blocks.{b}.{m}" for b in range(TINY["num_layers"]) for m in BLOCK_MODULES] + list(
        TOP_MODULES)


def write_peft_lora(folder: Path, model: torch.nn.Module, *, seed: int = 3, alpha: int = 8) -> Path:
    """A random rank-4 LoRA in the diffusers/PEFT layout, saved by diffusers (lora_alpha + an alpha_pattern)."""
    weights = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    layers = {}
    for module in peft_modules():
        layers[f"{module}.lora_A.weight"], layers[f"{module}.lora_B.weight"] = _pair(weights, module, gen)
    config = LoraConfig(r=RANK, lora_alpha=alpha, target_modules=peft_modules(),
                        alpha_pattern={"proj_out": 2 * alpha}).to_dict()
    folder.mkdir(parents=True, exist_ok=True)
    LTX2Pipeline.save_lora_weights(str(folder), transformer_lora_layers=layers,
                                   transformer_lora_adapter_metadata=config)
    return folder / "pytorch_lora_weights.safetensors"


def write_original_lora(path: Path, model: torch.nn.Module, *, seed: int = 5) -> Path:
    """A random LoRA in the original Lightricks layout (``diffusion_model.`` + original module names)."""
    weights = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for original, ours in ORIGINAL.items():
        a, b = _pair(weights, ours, gen)
        tensors[f"diffusion_model.{original}.lora_A.weight"] = a
        tensors[f"diffusion_model.{original}.lora_B.weight"] = b
    save_file(tensors, str(path))
    return path


def _diffusers_fused(ref: DiffusersLTX2, lora: Path, strength: float) -> DiffusersLTX2:
    pipe = LTX2Pipeline(scheduler=None, vae=None, audio_vae=None, text_encoder=None, tokenizer=None,
                        connectors=None, transformer=ref, vocoder=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.load_lora_weights(str(lora), adapter_name="test")
        pipe.fuse_lora(lora_scale=strength)
        pipe.unload_lora_weights()  # keeps the fused weights, drops the LoRA layers
    return ref


@pytest.mark.parametrize("layout", ["peft", "original"])
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_merge_matches_diffusers_fuse_lora(tmp_path: Path, layout: str, strength: float) -> None:
    ref = _reference()
    ours = _ours(ref)
    original = _params(ours)
    if layout == "peft":
        lora, targets = write_peft_lora(tmp_path / "lora", ref), peft_modules()
    else:
        lora, targets = write_original_lora(tmp_path / "ltx2.safetensors", ref), list(ORIGINAL.values())
    with torch.no_grad():
        before = ours(**_inputs())
    merge_lora(ours, load_lora(lora, ours), strength)
    fused = _diffusers_fused(ref, lora, strength)
    fused_sd = fused.state_dict()
    changed = set()
    for name, value in ours.state_dict().items():
        assert torch.allclose(value, fused_sd[name], atol=TOL, rtol=0), name
        if not torch.equal(value, original[name]):
            changed.add(name)
    assert changed == {f"{m}.weight" for m in targets}  # every target merged, nothing else touched
    oracle = _ours(fused)  # our forward on diffusers' fused weights: the merge is the only difference
    with torch.no_grad():
        got, want = ours(**_inputs()), oracle(**_inputs())
        ref_out = fused(**_inputs(), return_dict=False)
    for g, w, r, b in zip(got, want, ref_out, before):
        assert (g - w).abs().max().item() <= TOL
        assert (g - r).abs().max().item() <= TOL  # diffusers' own fused forward (observed 0.0 on CPU)
        assert (g - b).abs().max().item() > 1e-2  # the LoRA changed both streams' outputs


def test_unmerge_restores_bit_exact_and_storage_stays(tmp_path: Path) -> None:
    ours = _ours(_reference())
    original = _params(ours)
    pointers = {k: p.data_ptr() for k, p in ours.named_parameters()}
    for lora in (write_peft_lora(tmp_path / "a", ours), write_original_lora(tmp_path / "b.safetensors", ours)):
        merged = merge_lora(ours, load_lora(lora, ours), 0.7)
        assert any(not torch.equal(v, original[k]) for k, v in ours.state_dict().items())
        unmerge_lora(ours, merged)
        for name, value in ours.state_dict().items():
            assert torch.equal(value, original[name]), name
    assert pointers == {k: p.data_ptr() for k, p in ours.named_parameters()}  # updated in place


def test_strength_and_alpha_scale_the_delta(tmp_path: Path) -> None:
    ours = _ours(_reference())
    lora = load_lora(write_peft_lora(tmp_path / "a", ours, alpha=RANK), ours)
    one, two = lora.deltas(ours, 1.0), lora.deltas(ours, 2.0)
    assert set(one) == {f"{m}.weight" for m in peft_modules()}
    for name in one:
        assert torch.allclose(two[name], 2 * one[name], atol=1e-6)
    target = lora.targets["transformer_blocks.1.ff.net.2"]
    assert target.scale == 1.0  # lora_alpha / r
    assert torch.equal(one["transformer_blocks.1.ff.net.2.weight"], 1.0 * (target.B @ target.A))
    assert lora.targets["proj_out"].scale == 2.0  # alpha_pattern {"proj_out": 2 * alpha}
    doubled = load_lora(write_peft_lora(tmp_path / "b", ours, alpha=2 * RANK), ours)
    name = "transformer_blocks.0.audio_to_video_attn.to_q.weight"
    assert torch.allclose(doubled.deltas(ours, 1.0)[name], 2 * one[name], atol=1e-6)
    original = _params(ours)
    merge_lora(ours, lora, 0.0)  # strength 0: the weights stay
    assert all(torch.equal(v, original[k]) for k, v in ours.state_dict().items())


def test_key_maps_come_from_the_registry() -> None:
    from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel

    ltx2 = _ours(_reference())
    assert lora_key_map(ltx2) is LTX2_LORA_KEYS

    class Subclass(LTX2Transformer):
        pass

    assert lora_key_map(Subclass(ltx2.config)) is LTX2_LORA_KEYS  # through the MRO
    wan = WanTransformer3DModel(WanDiTConfig(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                             out_channels=4, text_dim=8, freq_dim=8, ffn_dim=16, num_layers=1))
    assert lora_key_map(wan) is WAN_LORA_KEYS
    other = lora_key_map(torch.nn.Linear(2, 2))  # unregistered: the diffusers layout only
    assert other.is_original is None and other.rename is None


def test_errors_name_the_field(tmp_path: Path) -> None:
    ours = _ours(_reference())
    field = "pipeline.components.lora_path"
    wrong = tmp_path / "wrong.safetensors"  # a LoRA for another model size
    save_file({"transformer.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(RANK, 24),
               "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(16, RANK)}, str(wrong))
    with pytest.raises(ConfigError, match=r"does not fit parameter transformer_blocks\.0\.attn1\.to_q\.weight "
                                          r"\(16, 16\)") as info:
        load_lora(wrong, ours, field_name=field)
    assert info.value.path == field
    connectors = tmp_path / "connectors.safetensors"  # original layout with text-connector keys
    save_file({"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(RANK, 16),
               "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(16, RANK),
               "text_embedding_projection.aggregate_embed.lora_A.weight": torch.zeros(RANK, 36)}, str(connectors))
    with pytest.raises(ConfigError, match=r"1 key\(s\) adapt the text connectors.*aggregate_embed") as info:
        load_lora(connectors, ours, field_name=field)
    assert info.value.path == field
    wan = tmp_path / "wan.safetensors"  # a Wan LoRA: nothing maps onto the LTX-2 DiT
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(RANK, 16),
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(16, RANK)}, str(wan))
    with pytest.raises(ConfigError, match=r"2 key\(s\) map to no parameter of the LTX-2 DiT.*blocks\.0\.self_attn"):
        load_lora(wan, ours, field_name=field)
