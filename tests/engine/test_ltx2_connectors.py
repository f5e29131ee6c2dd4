"""Parity of our LTX-2 text connectors and prompt encoding with diffusers 0.42 (``LTX2TextConnectors``,
``LTX2Pipeline._get_gemma_prompt_embeds``).

Tiny random connectors built from the real diffusers class (every parameter re-drawn from seeded noise, registers
included); a two-layer random ``Gemma3ForConditionalGeneration`` from ``transformers`` and a word-level tokenizer
(no download). Ours load the reference state dicts strictly, and through our loaders from ``save_pretrained``
folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
from diffusers import LTX2Pipeline  # noqa: E402
from diffusers.pipelines.ltx2 import LTX2TextConnectors  # noqa: E402

from fastvideo.api.errors import ModelLoadError  # noqa: E402
from fastvideo.engine.models.ltx2 import (  # noqa: E402
    LTX2Connectors, LTX2ConnectorsConfig, LTX2TextEncoder, load_ltx2_connectors)

from ltx2_side_fixtures import reseed_parameters, tiny_gemma, tiny_tokenizer  # noqa: E402

FP32_TOL = 1e-4

BASE: dict[str, Any] = dict(
    caption_channels=16, text_proj_in_factor=3, video_connector_num_attention_heads=2,
    video_connector_attention_head_dim=8, video_connector_num_layers=2, video_connector_num_learnable_registers=4,
    audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=4, audio_connector_num_layers=1,
    audio_connector_num_learnable_registers=4, connector_rope_base_seq_len=32)
CONFIGS: dict[str, dict[str, Any]] = {
    "ltx2.0-registers": BASE,  # the published layout: registers, interleaved RoPE, shared projection
    "split-gated-no-registers": dict(BASE, rope_type="split", video_gated_attn=True, audio_gated_attn=True,
                                     rope_double_precision=False, video_connector_num_learnable_registers=None,
                                     audio_connector_num_learnable_registers=None),
    "ltx2.3-per-modality": dict(BASE, per_modality_projections=True, video_hidden_dim=16, audio_hidden_dim=12,
                                audio_connector_num_attention_heads=3, proj_bias=True, rope_theta=500.0),
}
# left padding (Gemma's), different lengths per sample; one sample with a single valid token
MASK = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 1]])


def _reference(config: dict[str, Any], seed: int = 0) -> LTX2TextConnectors:
    torch.manual_seed(seed)
    return reseed_parameters(LTX2TextConnectors(**config).eval(), seed + 1)


def _ours(ref: LTX2TextConnectors) -> LTX2Connectors:
    model = LTX2Connectors(LTX2ConnectorsConfig.from_dict(dict(ref.config))).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    return model


def _max_diffs(expected: tuple[torch.Tensor, ...], got: tuple[torch.Tensor, ...]) -> list[float]:
    assert [t.shape for t in expected] == [t.shape for t in got]
    return [(a.double() - b.double()).abs().max().item() for a, b in zip(expected, got)]


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_connectors_match_diffusers(name: str, padding_side: str) -> None:
    ref = _reference(CONFIGS[name])
    ours = _ours(ref)
    hidden = torch.randn(2, 8, 16 * 3, generator=torch.Generator().manual_seed(2)) * 3 + 1
    mask = MASK if padding_side == "left" else MASK.flip(1)
    with torch.no_grad():
        expected = ref(hidden, mask, padding_side=padding_side)
        got = ours(hidden, mask, padding_side=padding_side)
        got_4d = ours(hidden.unflatten(2, (16, 3)), mask, padding_side=padding_side)
    assert got[0].shape == (2, 8, 16) and got[1].shape[:2] == (2, 8)
    assert max(_max_diffs(expected, got)) <= FP32_TOL
    assert max(_max_diffs(expected, got_4d)) <= FP32_TOL
    assert torch.equal(got[2], expected[2]) and got[2].dtype == torch.int64


def test_connectors_load_from_save_pretrained_folder(tmp_path: Path) -> None:
    ref = _reference(CONFIGS["ltx2.0-registers"])
    ref.save_pretrained(tmp_path / "connectors", max_shard_size="20KB")
    model = load_ltx2_connectors(tmp_path / "connectors")
    assert not any(p.is_meta for p in model.parameters())
    hidden = torch.randn(2, 8, 48, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert max(_max_diffs(ref(hidden, MASK), model(hidden, MASK))) <= FP32_TOL


def test_published_size_state_dict_matches() -> None:
    """diffusers' default (LTX-2.0, Gemma-3-12B) connectors, built on the meta device: same keys and shapes."""
    with torch.device("meta"):
        ref = LTX2TextConnectors()
        ours = LTX2Connectors(LTX2ConnectorsConfig.from_dict(dict(ref.config)))
    expected = {key: tuple(value.shape) for key, value in ref.state_dict().items()}
    assert {key: tuple(value.shape) for key, value in ours.state_dict().items()} == expected


def test_unsupported_connector_configs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="video_connector_num_heads"):
        LTX2ConnectorsConfig.from_dict({"video_connector_num_heads": 4})
    with pytest.raises(ValueError, match="rope_type"):
        LTX2ConnectorsConfig(rope_type="yarn")
    with pytest.raises(ValueError, match="caption_channels"):
        LTX2ConnectorsConfig(caption_channels=12, video_connector_num_attention_heads=2,
                             video_connector_attention_head_dim=4)
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLLTX2Audio"}))
    with pytest.raises(ModelLoadError, match="not a LTX2TextConnectors"):
        load_ltx2_connectors(folder)
    ours = _ours(_reference(CONFIGS["ltx2.0-registers"]))
    with pytest.raises(ValueError, match="multiple of"):
        ours(torch.zeros(1, 6, 48), torch.ones(1, 6, dtype=torch.int64))


@pytest.fixture(scope="module")
def gemma() -> Any:
    return tiny_gemma()


PROMPTS = ["  a red fox runs through the snow ", "cat"]


def test_prompt_encoding_matches_the_pipeline(gemma: Any) -> None:
    hidden = gemma.config.text_config.hidden_size
    layers = gemma.config.text_config.num_hidden_layers + 1
    ref_connectors = _reference(dict(BASE, caption_channels=hidden, text_proj_in_factor=layers))
    ref_tokenizer = tiny_tokenizer()
    pipe_self = SimpleNamespace(tokenizer=ref_tokenizer, text_encoder=gemma)
    with torch.no_grad():
        expected_embeds, expected_mask = LTX2Pipeline._get_gemma_prompt_embeds(
            pipe_self, PROMPTS, max_sequence_length=8, device=torch.device("cpu"), dtype=torch.float32)
        expected = ref_connectors(expected_embeds, expected_mask, padding_side=ref_tokenizer.padding_side)
    encoder = LTX2TextEncoder(tiny_tokenizer(), gemma, max_sequence_length=8)
    embeds, mask = encoder.gemma_embeds(PROMPTS)
    assert embeds.shape == (2, 8, hidden * layers)
    assert torch.equal(mask, expected_mask) and mask[0].sum() == 8 and mask[1].tolist() == [0] * 6 + [1, 1]
    assert (embeds - expected_embeds).abs().max().item() <= FP32_TOL
    ours = _ours(ref_connectors)
    streams = encoder.encode(PROMPTS, ours)
    assert max(_max_diffs(expected, (streams.video, streams.audio, streams.mask))) <= FP32_TOL
    # rows do not depend on batching (the pipeline encodes [negative..., positive...] in one batch for CFG)
    alone = encoder.encode(PROMPTS[1], ours)
    assert max(_max_diffs((streams.video[1:], streams.audio[1:]), (alone.video, alone.audio))) <= FP32_TOL


def test_text_encoder_loads_from_folders(gemma: Any, tmp_path: Path) -> None:
    gemma.save_pretrained(tmp_path / "text_encoder")
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    encoder = LTX2TextEncoder.from_folder(tmp_path / "tokenizer", tmp_path / "text_encoder", dtype=torch.float32,
                                          max_sequence_length=8)
    loaded, _ = encoder.gemma_embeds(PROMPTS)
    reference, _ = LTX2TextEncoder(tiny_tokenizer(), gemma, max_sequence_length=8).gemma_embeds(PROMPTS)
    assert (loaded - reference).abs().max().item() <= FP32_TOL
    with pytest.raises(ModelLoadError, match="text encoder"):
        LTX2TextEncoder.from_folder(tmp_path / "tokenizer", tmp_path / "missing", dtype=torch.float32)
