"""The prompt safety filter with a fastText classifier trained here on a tiny labelled file: BLOCK for the
positive class, ALLOW for the other, UNAVAILABLE (allowed, logged once) when it cannot run; and the
session entry point refusing a blocked prompt (the client's or the enhancer's) before any generation."""

from __future__ import annotations

import asyncio
import logging
import random
import sys

import pytest
from chat_stub import ChatStub

from fastvideo.api import ConfigError, ServeConfig, parse_config
from fastvideo.serving.prompting import (
    PromptBlocked,
    PromptSafetyFilter,
    SafetyDecision,
    SessionPrompting,
    check_prompt_config,
    first_blocked,
)

fasttext = pytest.importorskip("fasttext", reason="the fasttext package ([dev] / [safety] extra) is not installed")

UNSAFE_WORDS = ["gore", "blood", "corpse", "wound", "severed", "dismembered", "mutilated", "bloody"]
SAFE_WORDS = ["kitten", "meadow", "sunny", "beach", "kite", "flowers", "fox", "snow", "lake", "boat", "sunrise"]
FILLER = ["a", "the", "with", "in", "on", "and", "scene", "close", "up", "shot", "slow", "camera", "of", "at"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> str:
    """A two-label fastText model trained on 200 generated lines (0.1 s): two class words and four fillers each."""
    rng = random.Random(0)
    lines = [f"__label__{label} " + " ".join(rng.sample(words, 2) + rng.sample(FILLER, 4))
             for label, words in (("unsafe", UNSAFE_WORDS), ("safe", SAFE_WORDS)) for _ in range(100)]
    rng.shuffle(lines)
    folder = tmp_path_factory.mktemp("safety")
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    model = fasttext.train_supervised(input=str(folder / "train.txt"), epoch=25, lr=0.5, thread=1, seed=7,
                                      verbose=0)
    path = folder / "safety.bin"
    model.save_model(str(path))
    return str(path)


def test_the_positive_class_is_blocked_and_the_other_allowed(classifier):
    f = PromptSafetyFilter(classifier_path=classifier, block_threshold=0.5)
    blocked = f.classify("a gore scene with blood and a wound")
    allowed = f.classify("a kitten playing in a sunny meadow")
    assert blocked.decision is SafetyDecision.BLOCK and not blocked.allowed and blocked.score >= 0.5
    assert blocked.label == "unsafe"
    assert allowed.decision is SafetyDecision.ALLOW and allowed.allowed and allowed.score < 0.5
    assert allowed.label == "safe"
    # the threshold decides on the unsafe probability, whichever label is on top
    lenient = PromptSafetyFilter(classifier_path=classifier, block_threshold=0.999999)
    assert lenient.classify("a gore scene with blood and a wound").score == pytest.approx(blocked.score)
    strict = PromptSafetyFilter(classifier_path=classifier, block_threshold=0.0)
    assert strict.classify("a kitten playing in a sunny meadow").decision is SafetyDecision.BLOCK
    assert first_blocked(f, ["a fox in snow", "corpse and gore", "gore wound"]).prompt == "corpse and gore"
    assert first_blocked(f, ["a fox in snow"]) is None


def test_the_classifier_is_loaded_lazily_once(classifier, monkeypatch):
    calls = []
    real = fasttext.load_model
    monkeypatch.setattr(fasttext, "load_model", lambda p: calls.append(p) or real(p))
    f = PromptSafetyFilter(classifier_path=classifier)
    assert calls == []  # building costs nothing
    f.classify("a")
    f.classify("b")
    assert calls == [classifier]


@pytest.mark.parametrize("case", ["missing-file", "not-a-model", "no-package", "no-path", "disabled"])
def test_an_unavailable_filter_allows_and_logs_it_once(tmp_path, monkeypatch, caplog, case):
    path: str | None = str(tmp_path / "nope.bin")
    enabled = True
    if case == "not-a-model":
        (tmp_path / "nope.bin").write_bytes(b"not a fasttext model")
    elif case == "no-package":
        (tmp_path / "nope.bin").write_bytes(b"x")
        monkeypatch.setitem(sys.modules, "fasttext", None)  # import fasttext -> ImportError
    elif case == "no-path":
        path = None
    elif case == "disabled":
        enabled = False
    f = PromptSafetyFilter(classifier_path=path, enabled=enabled)
    with caplog.at_level(logging.WARNING, logger="fastvideo.serving.prompting.safety"):
        results = [f.classify("gore blood wound corpse") for _ in range(3)]
    assert all(r.decision is SafetyDecision.UNAVAILABLE and r.allowed for r in results)
    assert results[0].reason and f.unavailable_reason == results[0].reason
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == (0 if case in ("no-path", "disabled") else 1)
    if case == "no-package":
        assert "fasttext package is not installed" in results[0].reason
    if case == "missing-file":
        assert "no classifier file" in results[0].reason


def test_a_bad_threshold_is_refused():
    with pytest.raises(ConfigError) as info:
        PromptSafetyFilter(classifier_path=None, block_threshold=1.5)
    assert info.value.path == "block_threshold"
    with pytest.raises(ConfigError) as info:
        parse_config(ServeConfig, {"streaming": {"safety": {"block_threshold": -0.1}}})
    assert info.value.path == "streaming.safety.block_threshold"


def test_safety_enabled_without_a_classifier_path_is_refused():
    config = parse_config(ServeConfig, {"streaming": {"safety": {"enabled": True}}})
    with pytest.raises(ConfigError) as info:
        check_prompt_config(config.streaming)
    assert info.value.path == "streaming.safety.classifier_path"
    # a path that does not exist is not refused: the filter is unavailable at run time and allows
    config = parse_config(ServeConfig, {"streaming": {"safety": {"enabled": True, "classifier_path": "/no/such.bin"}}})
    check_prompt_config(config.streaming)


def test_the_session_entry_point_blocks_before_anything_runs(classifier):
    config = parse_config(ServeConfig, {"streaming": {"safety": {"enabled": True, "classifier_path": classifier}}})
    prompting = SessionPrompting.from_config(config.streaming)
    with pytest.raises(PromptBlocked) as info:
        asyncio.run(prompting.prepare("blood and gore everywhere", request_id="s1"))
    assert info.value.code == "prompt_blocked" and info.value.stage == "prompt" and info.value.score >= 0.5
    assert "blocked by the safety filter" in str(info.value)
    prepared = asyncio.run(prompting.prepare("a fox running through snow"))
    assert prepared.prompt == "a fox running through snow" and prepared.safety is SafetyDecision.ALLOW


def test_an_enhanced_or_extended_prompt_is_checked_too(classifier):
    with ChatStub([("ok", "a fox covered in blood and gore"), ("ok", "a corpse with a gore wound"),
                   ("ok", "a safe meadow take\na gore blood corpse take")]) as stub:
        config = parse_config(ServeConfig, {"streaming": {
            "prompt": {"enabled": True, "provider": "openai_compatible", "base_url": stub.base_url},
            "safety": {"enabled": True, "classifier_path": classifier}}})
        prompting = SessionPrompting.from_config(config.streaming)
        with pytest.raises(PromptBlocked) as info:
            asyncio.run(prompting.prepare("a fox in snow"))
        assert info.value.stage == "enhanced"
        with pytest.raises(PromptBlocked) as info:
            asyncio.run(prompting.extend(["a fox in snow"]))
        assert info.value.stage == "extended"
        rewrite = asyncio.run(prompting.rewrite("a meadow", count=2))
    assert rewrite.alternatives == ["a safe meadow take"]  # the blocked alternative is dropped
    # a blocked client prompt never reaches the LLM
    before = len(stub.requests)
    with pytest.raises(PromptBlocked):
        asyncio.run(prompting.prepare("gore blood wound corpse"))
    assert len(stub.requests) == before


def test_the_stream_prompt_source_adapter(classifier):
    """What a /v1/stream session calls: enhance/rewrite/extend(session=) with the session id as request id, and
    check(prompt) before a segment is queued."""
    from types import SimpleNamespace

    from fastvideo.serving.prompting import LLMProviderError, StreamPromptSource

    session = SimpleNamespace(id="sess-42")
    with ChatStub([("ok", "a fox at dawn in deep snow"), ("ok", "a fox in blood and gore"),
                   ("ok", "alt one\nalt two"), ("ok", "the fox reaches the ridge"), ("status", 400)]) as stub:
        config = parse_config(ServeConfig, {"streaming": {
            "prompt": {"enabled": True, "provider": "openai_compatible", "base_url": stub.base_url},
            "safety": {"enabled": True, "classifier_path": classifier}}})
        source = StreamPromptSource(SessionPrompting.from_config(config.streaming))
        assert asyncio.run(source.enhance("a fox", session=session)) == "a fox at dawn in deep snow"
        with pytest.raises(PromptBlocked) as info:
            asyncio.run(source.enhance("a fox", session=session))
        assert info.value.stage == "enhanced"
        assert asyncio.run(source.rewrite("a fox", 2, session=session)) == ["alt one", "alt two"]
        assert asyncio.run(source.extend("a fox at dawn", session=session)) == "the fox reaches the ridge"
        with pytest.raises(LLMProviderError):  # the session reports it and runs the prompt as given
            asyncio.run(source.enhance("a fox", session=session))
        asyncio.run(source.check("a fox in snow", session=session))
        with pytest.raises(PromptBlocked):
            asyncio.run(source.check("gore blood corpse", session=session))
    assert len(stub.requests) == 5
    with pytest.raises(ConfigError):
        StreamPromptSource(SessionPrompting())


def test_the_prompting_benchmark_runs_short(capsys):
    """benchmarks/bench_prompting.py (enhancer overhead direct and with a fallback, safety check cost) runs."""
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_prompting.py"
    spec = importlib.util.spec_from_file_location("bench_prompting", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--n", "3"])
    assert set(out) == {"enhance_direct_ms", "enhance_fallback_ms", "safety_first_ms", "safety_us"}
    assert all(v > 0 for v in out.values())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]).keys() == out.keys()
