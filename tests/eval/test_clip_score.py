"""clip.clip_score with a tiny random CLIP model saved to a temporary folder (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fastvideo.api import ModelLoadError
from fastvideo.eval import EvalError, EvalOptions, evaluate
from fastvideo.eval.clip_score import ClipScore
from fastvideo.eval.readers import load_video
from fastvideo.eval.registry import Sample

WORDS = ["a", "red", "fox", "running", "through", "snow", "blue", "car"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-clip")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": 16, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0, "pad_token_id": 1,
                     "eos_token_id": 2},  # eos 2: pool at the highest token id (transformers' legacy CLIP rule)
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16)
    CLIPModel(config).eval().save_pretrained(folder)
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32},
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    return folder


def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)


def test_clip_score_matches_the_model_cosine(tiny_clip):
    from transformers import AutoTokenizer, CLIPModel

    options = EvalOptions(clip_model=str(tiny_clip), clip_batch_size=2)  # 2 batches for 3 frames
    report = evaluate(frames(), "clip.clip_score", prompts="a red fox running through snow", options=options)
    result = report.videos[0].metrics["clip.clip_score"]
    assert len(result.details["per_frame"]) == 3 and 0.0 <= result.score <= 100.0
    assert result.score == pytest.approx(np.mean(result.details["per_frame"]))

    # the same numbers from the model's own forward: logits_per_image = exp(logit_scale) * cosine
    metric = ClipScore(options)
    pixels = metric.preprocess(load_video(frames()).as_float())
    assert pixels.shape == (3, 3, 32, 32)  # short side 40 -> 32, center crop 32x32
    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    tokens = AutoTokenizer.from_pretrained(str(tiny_clip))(["a red fox running through snow"], return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels)
        cosine = (out.logits_per_image[:, 0] / model.logit_scale.exp()).numpy()
    assert result.details["per_frame"] == pytest.approx((100 * np.maximum(cosine, 0)).tolist(), abs=1e-3)


def test_another_prompt_gives_another_score(tiny_clip):
    options = EvalOptions(clip_model=str(tiny_clip))
    video = frames()
    report = evaluate([video, video], "clip_score", prompts=["a red fox", "blue car"], options=options)
    first, second = (v.score("clip.clip_score") for v in report.videos)
    assert first != pytest.approx(second)


def test_without_a_model_path_it_says_how_to_enable_itself():
    with pytest.raises(EvalError, match="--clip-model /path/to/model") as info:
        evaluate(frames(), "clip.clip_score", prompts="a fox")
    assert "nothing is downloaded" in str(info.value)


def test_a_folder_that_is_not_a_clip_model_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        evaluate(frames(), "clip.clip_score", prompts="x", options=EvalOptions(clip_model=str(tmp_path)))


def test_it_needs_a_prompt(tiny_clip):
    with pytest.raises(EvalError, match="--prompt"):
        evaluate(frames(), "clip.clip_score", options=EvalOptions(clip_model=str(tiny_clip)))
    metric = ClipScore(EvalOptions(clip_model=str(tiny_clip)))
    assert metric.compute(Sample(video=load_video(frames()), prompt="fox")).score >= 0


def test_a_non_clip_or_truncated_folder_is_refused_never_scored_with_random_weights(tiny_clip, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    other = tmp_path / "t5"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "umt5", "d_model": 8}))
    with pytest.raises(ModelLoadError, match="describes a 'umt5' model, not CLIP"):
        ClipScore(EvalOptions(clip_model=str(other)))
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_clip, truncated)
    weights = load_file(truncated / "model.safetensors")
    dropped = sorted(weights)[0]
    del weights[dropped]
    save_file(weights, truncated / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=f"lack 1 tensors \\(e.g. {dropped}"):
        ClipScore(EvalOptions(clip_model=str(truncated)))
