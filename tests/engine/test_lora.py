"""LoRA on the Wan DiT (fastvideo.engine.lora) against diffusers' ``load_lora_weights`` + ``fuse_lora``.

Tiny random DiTs (seconds on CPU): the same weights loaded into diffusers' WanTransformer3DModel (inside a
WanPipeline, for its LoRA loader) and ours; a random LoRA written in the diffusers/PEFT layout (saved with
diffusers' own ``save_lora_weights``, with PEFT metadata) and in the original Wan/ComfyUI layout. Merged
outputs must match diffusers' fused model; unmerge must restore the weights bit-exactly.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")
from diffusers import WanPipeline  # noqa: E402
from diffusers import WanTransformer3DModel as DiffusersWan  # noqa: E402
from peft import LoraConfig  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from fastvideo.api import ConfigError  # noqa: E402
from fastvideo.engine.models.wan.transformer import WanDiTConfig, WanTransformer3DModel  # noqa: E402
from fastvideo.engine.lora import load_lora, merge_lora, unmerge_lora  # noqa: E402
from wan_dit_fixtures import ours_from, reference_dit  # noqa: E402

TOL = 1e-5
TINY: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4,
    out_channels=4, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
    rope_max_seq_len=64,
)
RANK = 4
#: diffusers module names that the PEFT-layout LoRA targets
PEFT_MODULES = ("attn1.to_q", "attn1.to_v", "attn2.to_k", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return (torch.randn(2, 4, 3, 6, 10, generator=gen), torch.tensor([999.0, 421.7]),
            torch.randn(2, 7, 32, generator=gen))


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_peft_lora(folder: Path, model: torch.nn.Module, *, seed: int = 3, alpha: int = 8) -> Path:
    """A random rank-4 LoRA in the diffusers/PEFT layout, saved by diffusers (with lora_alpha metadata)."""
    weights = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    layers = {}
    for block in range(TINY["num_layers"]):
        for module in PEFT_MODULES:
            out_dim, in_dim = weights[f"blocks.{block}.{module}.weight"].shape
            layers[f"blocks.{block}.{module}.lora_A.weight"] = 0.3 * torch.randn(RANK, in_dim, generator=gen)
            layers[f"blocks.{block}.{module}.lora_B.weight"] = 0.3 * torch.randn(out_dim, RANK, generator=gen)
    out_dim, in_dim = weights["proj_out.weight"].shape
    layers["proj_out.lora_A.weight"] = 0.3 * torch.randn(RANK, in_dim, generator=gen)
    layers["proj_out.lora_B.weight"] = 0.3 * torch.randn(out_dim, RANK, generator=gen)
    config = LoraConfig(r=RANK, lora_alpha=alpha, target_modules=["to_q", "to_v", "to_k", "to_out.0", "proj",
                                                                  "net.2", "proj_out"]).to_dict()
    folder.mkdir(parents=True, exist_ok=True)
    WanPipeline.save_lora_weights(str(folder), transformer_lora_layers=layers,
                                  transformer_lora_adapter_metadata=config)
    return folder / "pytorch_lora_weights.safetensors"


def write_wan_lora(path: Path, model: torch.nn.Module, *, seed: int = 5) -> Path:
    """A random LoRA in the original Wan/ComfyUI layout: lora_down/lora_up, kohya alpha, diff_b."""
    weights = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}

    def pair(orig: str, ours: str, alpha: float | None) -> None:
        out_dim, in_dim = weights[f"{ours}.weight"].shape
        tensors[f"diffusion_model.{orig}.lora_down.weight"] = 0.3 * torch.randn(RANK, in_dim, generator=gen)
        tensors[f"diffusion_model.{orig}.lora_up.weight"] = 0.3 * torch.randn(out_dim, RANK, generator=gen)
        if alpha is not None:
            tensors[f"diffusion_model.{orig}.alpha"] = torch.tensor(alpha)
        tensors[f"diffusion_model.{orig}.diff_b"] = 0.1 * torch.randn(out_dim, generator=gen)

    for block in range(TINY["num_layers"]):
        for name, ours in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0")):
            pair(f"blocks.{block}.self_attn.{name}", f"blocks.{block}.attn1.{ours}", 2.0)
            pair(f"blocks.{block}.cross_attn.{name}", f"blocks.{block}.attn2.{ours}", None)
        pair(f"blocks.{block}.ffn.0", f"blocks.{block}.ffn.net.0.proj", 8.0)
        pair(f"blocks.{block}.ffn.2", f"blocks.{block}.ffn.net.2", 8.0)
    pair("time_projection.1", "condition_embedder.time_proj", None)
    save_file(tensors, str(path))
    return path


def _diffusers_fused(ref: DiffusersWan, lora: Path, strength: float) -> DiffusersWan:
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=ref, vae=None, scheduler=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.load_lora_weights(str(lora), adapter_name="test")
        pipe.fuse_lora(lora_scale=strength)
        pipe.unload_lora_weights()  # keeps the fused weights, drops the LoRA layers
    return ref


@pytest.mark.parametrize("layout", ["peft", "wan"])
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_merge_matches_diffusers_fuse_lora(tmp_path: Path, layout: str, strength: float) -> None:
    ref = reference_dit(TINY)
    ours = ours_from(ref)
    write = write_peft_lora if layout == "peft" else write_wan_lora
    lora = write(tmp_path / "lora" if layout == "peft" else tmp_path / "wan.safetensors", ref)
    before = ours(*_inputs())
    merge_lora(ours, load_lora(lora, ours), strength)
    fused = _diffusers_fused(ref, lora, strength)
    fused_sd = fused.state_dict()
    for name, value in ours.state_dict().items():
        assert torch.allclose(value, fused_sd[name], atol=TOL, rtol=0), name
    with torch.no_grad():
        got, want = ours(*_inputs()), fused(*_inputs(), return_dict=False)[0]
    assert (got - want).abs().max().item() <= TOL
    assert (got - before).abs().max().item() > 1e-2  # the LoRA changed the output


def test_unmerge_restores_bit_exact_and_storage_stays(tmp_path: Path) -> None:
    ours = ours_from(reference_dit(TINY))
    original = _params(ours)
    pointers = {k: p.data_ptr() for k, p in ours.named_parameters()}
    for lora in (write_peft_lora(tmp_path / "a", ours), write_wan_lora(tmp_path / "b.safetensors", ours)):
        merged = merge_lora(ours, load_lora(lora, ours), 0.7)
        assert any(not torch.equal(v, original[k]) for k, v in ours.state_dict().items())
        unmerge_lora(ours, merged)
        for name, value in ours.state_dict().items():
            assert torch.equal(value, original[name]), name
    assert pointers == {k: p.data_ptr() for k, p in ours.named_parameters()}  # updated in place


def test_bf16_merge_in_float32_then_cast(tmp_path: Path) -> None:
    ours = ours_from(reference_dit(TINY))
    lora = load_lora(write_peft_lora(tmp_path / "a", ours), ours)
    w32 = ours.blocks[0].attn1.to_q.weight.detach().clone()
    ours.to(torch.bfloat16)
    w16 = ours.blocks[0].attn1.to_q.weight.detach().clone()
    merged = merge_lora(ours, lora, 1.0)
    delta = lora.deltas(ours, 1.0)["blocks.0.attn1.to_q.weight"]
    assert torch.equal(ours.blocks[0].attn1.to_q.weight, (w16.float() + delta).to(torch.bfloat16))
    assert ours.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    unmerge_lora(ours, merged)
    assert torch.equal(ours.blocks[0].attn1.to_q.weight, w16)
    assert not torch.equal(w32, w16.float())  # the cast really rounded


def test_strength_scales_the_delta(tmp_path: Path) -> None:
    ours = ours_from(reference_dit(TINY))
    lora = load_lora(write_peft_lora(tmp_path / "a", ours, alpha=RANK), ours)
    one = lora.deltas(ours, 1.0)
    two = lora.deltas(ours, 2.0)
    assert set(one) == {f"blocks.{b}.{m}.weight" for b in range(2) for m in PEFT_MODULES} | {"proj_out.weight"}
    for name in one:
        assert torch.allclose(two[name], 2 * one[name], atol=1e-6)
    original = _params(ours)
    unmerge_lora(ours, merge_lora(ours, lora, 0.0))
    merge_lora(ours, lora, 0.0)
    assert all(torch.equal(v, original[k]) for k, v in ours.state_dict().items())


def test_alpha_metadata_scales(tmp_path: Path) -> None:
    ours = ours_from(reference_dit(TINY))
    plain = load_lora(write_peft_lora(tmp_path / "a", ours, alpha=RANK), ours)
    doubled = load_lora(write_peft_lora(tmp_path / "b", ours, alpha=2 * RANK), ours)
    name = "blocks.1.ffn.net.2.weight"
    assert torch.allclose(doubled.deltas(ours, 1.0)[name], 2 * plain.deltas(ours, 1.0)[name], atol=1e-6)


def test_wan_layout_full_diff_and_norm_keys(tmp_path: Path) -> None:
    ours = ours_from(reference_dit(TINY))
    gen = torch.Generator().manual_seed(0)
    diff = torch.randn(ours.blocks[0].attn1.to_k.weight.shape, generator=gen)
    norm_diff = torch.randn(ours.blocks[1].norm2.weight.shape, generator=gen)
    path = tmp_path / "diff.safetensors"
    save_file({"diffusion_model.blocks.0.self_attn.k.diff": diff,
               "diffusion_model.blocks.1.norm3.diff": norm_diff,  # original norm3 is our norm2 (cross-attn norm)
               "diffusion_model.head.modulation.diff": torch.ones_like(ours.scale_shift_table)}, str(path))
    deltas = load_lora(path, ours).deltas(ours, 0.5)
    assert torch.equal(deltas["blocks.0.attn1.to_k.weight"], 0.5 * diff)
    assert torch.equal(deltas["blocks.1.norm2.weight"], 0.5 * norm_diff)
    assert torch.equal(deltas["scale_shift_table"], 0.5 * torch.ones_like(ours.scale_shift_table))


def test_errors_name_the_problem(tmp_path: Path) -> None:
    ours = ours_from(reference_dit(TINY))
    with pytest.raises(ConfigError, match="does not exist"):
        load_lora(tmp_path / "missing.safetensors", ours)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(ConfigError, match="not a readable safetensors file") as info:
        load_lora(junk, ours, field_name="pipeline.components.lora_path")
    assert info.value.path == "pipeline.components.lora_path"
    bad = tmp_path / "bad.safetensors"
    save_file({"transformer.blocks.9.attn1.to_q.lora_A.weight": torch.zeros(4, 32),
               "transformer.blocks.9.attn1.to_q.lora_B.weight": torch.zeros(32, 4),
               "text_encoder.encoder.lora_A.weight": torch.zeros(4, 4)}, str(bad))
    with pytest.raises(ConfigError, match=r"3 key\(s\) map to no parameter.*blocks\.9\.attn1\.to_q"):
        load_lora(bad, ours)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 48),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4)}, str(wrong))
    with pytest.raises(ConfigError, match=r"does not fit parameter blocks\.0\.attn1\.to_q\.weight \(32, 32\)"):
        load_lora(wrong, ours)
    half = tmp_path / "half.safetensors"
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32)}, str(half))
    with pytest.raises(ConfigError, match="has no lora_B"):
        load_lora(half, ours)
    musubi = tmp_path / "musubi.safetensors"
    save_file({"lora_unet_blocks_0_self_attn_q.lora_down.weight": torch.zeros(4, 32)}, str(musubi))
    with pytest.raises(ConfigError, match="lora_unet_"):
        load_lora(musubi, ours)


def test_a_merge_failing_half_way_restores_what_it_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ours = ours_from(reference_dit(TINY))
    lora = load_lora(write_peft_lora(tmp_path / "a", ours), ours)
    original = _params(ours)
    real = lora.deltas(ours, 1.0)
    broken = dict(real)
    broken["proj_out.weight"] = torch.zeros(3)  # the last delta cannot be added
    monkeypatch.setattr(type(lora), "deltas", lambda self, model, strength: broken)
    with pytest.raises(RuntimeError):
        merge_lora(ours, lora, 1.0)
    assert all(torch.equal(v, original[k]) for k, v in ours.state_dict().items())


def test_i2v_wan_layout_matches_diffusers_fuse_lora(tmp_path: Path) -> None:
    """k_img / v_img (the added image K/V) and img_emb.proj.1/.3 (the image embedder MLP) of an I2V LoRA."""
    cfg = {**TINY, "in_channels": 36, "out_channels": 16, "image_dim": 24, "added_kv_proj_dim": 32}
    torch.manual_seed(0)
    ref = DiffusersWan(**cfg).eval()
    ours = WanTransformer3DModel(WanDiTConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    weights = dict(ref.named_parameters())
    gen = torch.Generator().manual_seed(11)
    tensors: dict[str, torch.Tensor] = {}
    pairs = [(f"blocks.{b}.cross_attn.{o}", f"blocks.{b}.attn2.{m}") for b in range(2)
             for o, m in (("k_img", "add_k_proj"), ("v_img", "add_v_proj"), ("q", "to_q"))]
    pairs += [("img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"),
              ("img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2")]
    for orig, mine in pairs:
        out_dim, in_dim = weights[f"{mine}.weight"].shape
        tensors[f"diffusion_model.{orig}.lora_down.weight"] = 0.3 * torch.randn(RANK, in_dim, generator=gen)
        tensors[f"diffusion_model.{orig}.lora_up.weight"] = 0.3 * torch.randn(out_dim, RANK, generator=gen)
        if orig.startswith("blocks"):
            tensors[f"diffusion_model.{orig}.alpha"] = torch.tensor(2.0)
    path = tmp_path / "i2v.safetensors"
    save_file(tensors, str(path))
    original = _params(ours)
    merge_lora(ours, load_lora(path, ours), 0.8)
    fused = _diffusers_fused(ref, path, 0.8).state_dict()
    changed = 0
    for name, value in ours.state_dict().items():
        assert torch.allclose(value, fused[name], atol=TOL, rtol=0), name
        changed += not torch.equal(value, original[name])
    assert changed == len(pairs)
