"""Issue 13 item 1: a huge prompt costs no more text cleaning than a bounded one, and the bound changes no
embedding of a prompt the tokenizer would truncate anyway. Also the prompt-length limit of the engine's
validation (fastvideo.api.MAX_PROMPT_CHARS), whoever built the request."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def encoder(tiny_model_dir: Path):
    from fastvideo.engine.models.wan.text_encoder import WanTextEncoder

    return WanTextEncoder.from_folder(tiny_model_dir / "tokenizer", tiny_model_dir / "text_encoder",
                                      dtype=torch.float32, device=torch.device("cpu"))


def test_a_huge_prompt_is_cut_before_cleaning(encoder, monkeypatch):
    from fastvideo.engine.models.wan import text_encoder

    bound = text_encoder.raw_prompt_bound(encoder.max_length)
    seen: list[int] = []
    real = text_encoder.clean_prompt

    def spy(text: str) -> str:
        seen.append(len(text))
        return real(text)

    monkeypatch.setattr(text_encoder, "clean_prompt", spy)
    huge = "a red fox runs through the snow &amp; " * 400_000  # ~15 MB
    embeds = encoder.encode([huge, "short"])
    assert seen == [bound, len("short")]
    # the tokenizer keeps max_length tokens of either text: cutting first changes nothing
    monkeypatch.setattr(text_encoder, "clean_prompt", real)
    cleaned_whole = real(huge[: 4 * bound])  # enough text for max_length tokens, cleaned the old way
    ids_whole = encoder.tokenizer([cleaned_whole], max_length=encoder.max_length, truncation=True).input_ids
    ids_cut = encoder.tokenizer([real(huge[:bound])], max_length=encoder.max_length, truncation=True).input_ids
    assert ids_whole == ids_cut
    assert torch.equal(embeds[:1], encoder.encode([huge[: 4 * bound]])[:1])


def test_engine_validation_bounds_prompts_whoever_built_the_request():
    from fastvideo.api import MAX_PROMPT_CHARS, GenerationRequest, RequestError
    from fastvideo.engine.presets import get_preset
    from fastvideo.engine.validation import resolve_sampling

    preset = get_preset("fastvideo-tiny")
    resolve_sampling(GenerationRequest(prompt="p" * MAX_PROMPT_CHARS), preset)
    for request, field in ((GenerationRequest(prompt="p" * (MAX_PROMPT_CHARS + 1)), "prompt"),
                           (GenerationRequest(prompt="p", negative_prompt="n" * (MAX_PROMPT_CHARS + 1)),
                            "negative_prompt")):
        with pytest.raises(RequestError) as exc:
            resolve_sampling(request, preset)
        assert exc.value.field == field and str(MAX_PROMPT_CHARS) in str(exc.value)
