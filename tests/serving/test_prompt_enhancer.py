"""The prompt enhancer against real chat-completions servers on 127.0.0.1 (tests/serving/chat_stub.py):
fallback on each retryable failure and not on a 4xx, the wire format and API key, enhance / rewrite /
auto_extend, system prompts from files and their reload, stats and Prometheus counters, and the session
entry point built from ``ServeConfig.streaming.prompt``."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from chat_stub import ChatStub, closed_port_url
from prometheus_client import CollectorRegistry

from fastvideo.api import ConfigError, ServeConfig, parse_config
from fastvideo.serving.prompting import (
    CerebrasProvider,
    GroqProvider,
    LLMProviderError,
    LLMTimeoutError,
    OpenAICompatibleProvider,
    PromptEnhancer,
    PromptMetrics,
    RewriteOptions,
    SessionPrompting,
    build_rewrite,
    check_prompt_config,
    load_system_prompts,
    parse_alternatives,
)
from fastvideo.serving.prompting.providers import (
    CEREBRAS_BASE_URL,
    CEREBRAS_DEFAULT_MODEL,
    GROQ_BASE_URL,
    GROQ_DEFAULT_MODEL,
)

TIMEOUT_MS = 300


def run(coro):
    return asyncio.run(coro)


def enhancer(*urls: str, **kwargs) -> PromptEnhancer:
    providers = [OpenAICompatibleProvider(base_url=url, name=f"p{i}") for i, url in enumerate(urls)]
    kwargs.setdefault("timeout_ms", TIMEOUT_MS)
    return PromptEnhancer(providers=providers, model="m", **kwargs)


RETRYABLE = {
    "timeout": ("sleep", 1.5),
    "429": ("status", 429),
    "500": ("status", 500),
    "503": ("status", 503),
    "not-json": ("raw", "<html>bad gateway</html>"),
    "no-choices": ("raw", '{"choices": []}'),
    "no-content": ("raw", '{"choices": [{"message": {"role": "assistant", "content": null}}]}'),
    "blank-content": ("ok", "   "),
}


@pytest.mark.parametrize("step", list(RETRYABLE.values()), ids=list(RETRYABLE))
def test_a_retryable_failure_falls_back_to_the_next_provider(step):
    with ChatStub([step]) as first, ChatStub(default=("ok", "a fox in deep snow, low sun")) as second:
        e = enhancer(first.base_url, second.base_url)
        t0 = time.perf_counter()
        response = run(e.enhance("a fox", request_id="req-1"))
        elapsed = time.perf_counter() - t0
    assert (response.content, response.provider, response.fallback_used) == ("a fox in deep snow, low sun", "p1", True)
    assert len(first.requests) == 1 and len(second.requests) == 1
    assert len(response.failures) == 1 and response.failures[0].startswith("p0: ")
    assert e.stats.fallbacks == 1 and e.stats.succeeded == 1 and e.stats.by_provider["p0"].retryable_failures == 1
    if step[0] == "sleep":  # bounded by timeout_ms, not by the server
        assert elapsed < 1.2


def test_connection_refused_falls_back():
    with ChatStub(default=("ok", "answer")) as second:
        response = run(enhancer(closed_port_url(), second.base_url).enhance("x"))
    assert response.provider == "p1" and response.fallback_used and "ConnectError" in response.failures[0]


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_a_client_error_is_not_retried_and_surfaces_clearly(status):
    with ChatStub([("status", status)]) as first, ChatStub() as second:
        e = enhancer(first.base_url, second.base_url)
        with pytest.raises(LLMProviderError) as info:
            run(e.enhance("x", request_id="req-4xx"))
    assert info.value.retryable is False and info.value.status == status and info.value.provider == "p0"
    assert f"HTTP {status}" in str(info.value) and f"scripted {status}" in str(info.value)
    assert "req-4xx" in str(info.value)
    assert second.requests == []  # no fallback
    assert e.stats.failed == 1 and e.stats.by_provider["p0"].failures == 1 and "p1" not in e.stats.by_provider


def test_every_provider_failing_raises_one_error_listing_them():
    with ChatStub([("status", 500)]) as first, ChatStub([("sleep", 1.0)]) as second:
        e = enhancer(first.base_url, second.base_url)
        with pytest.raises(LLMProviderError) as info:
            run(e.enhance("x"))
    message = str(info.value)
    assert "p0: p0: HTTP 500" in message and "p1: p1: no answer within 0.3 s" in message
    assert info.value.retryable and isinstance(info.value.__cause__, LLMTimeoutError)
    assert e.stats.failed == 1 and e.stats.calls == 1


def test_the_wire_format_model_and_key(monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-test-123")
    with ChatStub([("ok", "answer")]) as stub:
        provider = OpenAICompatibleProvider(base_url=stub.base_url + "/", name="local", api_key_env="MY_LLM_KEY",
                                            model="local-model")
        e = PromptEnhancer(providers=[provider], model="enhancer-model", timeout_ms=2000, temperature=0.3,
                           max_tokens=64)
        response = run(e.enhance("  a red kite  "))
    body, headers = stub.requests[0], stub.headers[0]
    assert headers["authorization"] == "Bearer sk-test-123" and headers["content-type"] == "application/json"
    assert body["model"] == "local-model" and response.model == "local-model"  # the provider's model wins
    assert (body["max_tokens"], body["temperature"]) == (64, 0.3)
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][0]["content"] == load_system_prompts(None).enhance
    assert body["messages"][1]["content"] == "a red kite"


def test_a_local_server_needs_no_key_and_the_key_never_shows_in_errors(monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-secret-999")
    with ChatStub([("ok", "answer")]) as stub:
        run(enhancer(stub.base_url).enhance("x"))
    assert "authorization" not in stub.headers[0]
    with ChatStub([("status", 401)]) as stub:
        stub.default = ("status", 401)
        e = PromptEnhancer(providers=[OpenAICompatibleProvider(base_url=stub.base_url, api_key_env="MY_LLM_KEY")],
                           model="m", timeout_ms=2000)
        with pytest.raises(LLMProviderError) as info:
            run(e.enhance("x"))
    assert "sk-secret-999" not in str(info.value)


def test_cerebras_and_groq_are_preconfigured(monkeypatch):
    monkeypatch.delenv("CEREBRAS_API_KEY", raising=False)
    monkeypatch.setenv("GROQ_API_KEY", "gsk-1")
    cerebras, groq = CerebrasProvider(), GroqProvider()
    assert (cerebras.name, cerebras.base_url, cerebras.api_key_env, cerebras.api_key) == (
        "cerebras", CEREBRAS_BASE_URL, "CEREBRAS_API_KEY", None)
    assert (groq.name, groq.base_url, groq.api_key_env, groq.api_key) == ("groq", GROQ_BASE_URL, "GROQ_API_KEY",
                                                                          "gsk-1")
    assert CEREBRAS_BASE_URL == "https://api.cerebras.ai/v1" and GROQ_BASE_URL == "https://api.groq.com/openai/v1"
    assert (CEREBRAS_DEFAULT_MODEL, GROQ_DEFAULT_MODEL) == ("gpt-oss-120b", "openai/gpt-oss-120b")
    # a hosted provider without its key does not call out and is not retried
    with pytest.raises(LLMProviderError) as info:
        run(PromptEnhancer(providers=[cerebras, groq], model="m").enhance("x"))
    assert not info.value.retryable and "CEREBRAS_API_KEY" in str(info.value)
    # same wire format: Groq's adapter pointed at a local server sends its key
    with ChatStub([("ok", "answer")]) as stub:
        response = run(PromptEnhancer(providers=[GroqProvider(base_url=stub.base_url)], model="m").enhance("x"))
    assert response.provider == "groq" and stub.headers[0]["authorization"] == "Bearer gsk-1"


def test_a_provider_needs_an_http_base_url():
    with pytest.raises(ConfigError) as info:
        OpenAICompatibleProvider(base_url="localhost:8000")
    assert info.value.path == "base_url"
    with pytest.raises(ConfigError):
        PromptEnhancer(providers=[], model="m")


def test_enhance_cleans_the_reply():
    with ChatStub([("ok", '```\nPrompt: "a fox leaping over a frozen creek"\n```')]) as stub:
        response = run(enhancer(stub.base_url).enhance("a fox"))
    assert response.content == "a fox leaping over a frozen creek"


def test_rewrite_returns_count_alternatives_parsed_from_the_reply():
    numbered = ("Here are 5 alternative prompts:\n\n1. A fox at dawn on a ridge\n2) **A fox in a neon city**\n"
                "- \"A fox under the northern lights\"\n4. A fox at dawn on a ridge\n5. A paper-cut fox in wind\n")
    with ChatStub([("ok", numbered), ("ok", '```json\n["one take", "two take"]\n```')]) as stub:
        e = enhancer(stub.base_url)
        result = run(build_rewrite(e, "a fox", options=RewriteOptions(count=3, temperature=1.1)))
        second = run(build_rewrite(e, "a fox", options=RewriteOptions(count=4)))
    assert result.alternatives == ["A fox at dawn on a ridge", "A fox in a neon city",
                                   "A fox under the northern lights"]
    assert (result.seed_prompt, result.provider, result.fallback_used) == ("a fox", "p0", False)
    assert "Write 3 alternative prompts" in stub.requests[0]["messages"][1]["content"]
    assert stub.requests[0]["temperature"] == 1.1 and stub.requests[1]["temperature"] == 0.7
    assert stub.requests[0]["messages"][0]["content"] == load_system_prompts(None).rewrite
    assert second.alternatives == ["one take", "two take"]  # fewer than asked: what the reply holds
    with pytest.raises(ConfigError):
        RewriteOptions(count=0)
    with pytest.raises(ConfigError):
        run(build_rewrite(e, "   "))


def test_a_rewrite_reply_with_no_alternative_falls_back():
    with ChatStub([("ok", "Here are your alternatives:")]) as first, ChatStub([("ok", "x one\nx two")]) as second:
        result = run(build_rewrite(enhancer(first.base_url, second.base_url), "x", options=RewriteOptions(count=2)))
    assert result.alternatives == ["x one", "x two"] and result.fallback_used and result.provider == "p1"


@pytest.mark.parametrize("content,expected", [
    ("a\nb\nc", ["a", "b"]),
    ('{"prompts": ["p one", "p two"]}', ["p one", "p two"]),
    ("Option 1: first one\nOption 2: second one", ["first one", "second one"]),
    ("(1) first\n(2) first\n(3) third", ["first", "third"]),
    ("\u2022 \u201cquoted\u201d\n#2 plain", ["quoted", "plain"]),
])
def test_parse_alternatives_is_forgiving(content, expected):
    assert parse_alternatives(content, limit=2) == expected


def test_auto_extend_writes_the_next_prompt_from_the_last_ones():
    with ChatStub([("ok", "the fox reaches the treeline as snow begins to fall")]) as stub:
        prompts = [f"segment prompt {i}" for i in range(12)]
        response = run(enhancer(stub.base_url).auto_extend(prompts, request_id="req-ext"))
    assert response.content == "the fox reaches the treeline as snow begins to fall"
    user = stub.requests[0]["messages"][1]["content"]
    assert "Segment 8: segment prompt 11" in user and "segment prompt 3" not in user  # the last 8 only
    assert user.endswith("Write the prompt of segment 9.")
    assert stub.requests[0]["messages"][0]["content"] == load_system_prompts(None).auto_extend
    with pytest.raises(ConfigError):
        run(enhancer(stub.base_url).auto_extend([" "]))


def test_system_prompts_come_from_files_and_reload(tmp_path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "enhance.txt").write_text("ENHANCE v1\n")
    (folder / "rewrite.txt").write_text("   \n")  # blank: the packaged one
    with ChatStub(default=("ok", "answer")) as stub:
        e = enhancer(stub.base_url, system_prompt_dir=str(folder))
        run(e.enhance("x"))
        (folder / "enhance.txt").write_text("ENHANCE v2")
        (folder / "auto_extend.txt").write_text("EXTEND v2")
        run(e.enhance("x"))  # not reloaded yet
        e.reload_system_prompts()
        run(e.enhance("x"))
        run(e.auto_extend(["x"]))
        run(e.rewrite("x"))
    systems = [r["messages"][0]["content"] for r in stub.requests]
    assert systems == ["ENHANCE v1", "ENHANCE v1", "ENHANCE v2", "EXTEND v2", load_system_prompts(None).rewrite]
    # a folder that vanished: ConfigError on reload, the prompts in use are kept
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    with pytest.raises(ConfigError) as info:
        e.reload_system_prompts()
    assert info.value.path == "system_prompt_dir" and e.system_prompts.enhance == "ENHANCE v2"


def test_the_packaged_system_prompts_are_package_data():
    import tomllib
    from pathlib import Path

    import fastvideo.serving.prompting.enhancer as mod

    names = sorted(p.name for p in mod.PACKAGED_SYSTEM_PROMPTS.glob("*.txt"))
    assert names == ["auto_extend.txt", "enhance.txt", "rewrite.txt"]
    data = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "serving/prompting/system_prompts/*.txt" in data["tool"]["setuptools"]["package-data"]["fastvideo"]


def test_latency_fallbacks_and_prometheus_counters_are_recorded(caplog):
    registry = CollectorRegistry()
    with ChatStub([("status", 503), ("status", 503)]) as first, ChatStub(default=("ok", "answer")) as second:
        e = enhancer(first.base_url, second.base_url, metrics=PromptMetrics(registry))
        with caplog.at_level(logging.INFO, logger="fastvideo.serving.prompting"):
            run(e.enhance("x", request_id="req-a"))
            run(e.auto_extend(["x"], request_id="req-b"))
            first.default = ("ok", "primary answer")
            run(e.enhance("y", request_id="req-c"))
    stats = e.stats.as_dict()
    assert (stats["calls"], stats["succeeded"], stats["failed"], stats["fallbacks"]) == (3, 3, 0, 2)
    p0, p1 = stats["by_provider"]["p0"], stats["by_provider"]["p1"]
    assert (p0["attempts"], p0["answers"], p0["retryable_failures"]) == (3, 1, 2)
    assert (p1["attempts"], p1["answers"]) == (2, 2) and p1["mean_latency_ms"] > 0 and p1["last_latency_ms"] > 0

    def value(name, **labels):
        return registry.get_sample_value(name, labels)

    assert value("fastvideo_prompt_llm_requests_total", operation="enhance", provider="p0",
                 outcome="retryable_error") == 1
    assert value("fastvideo_prompt_llm_requests_total", operation="enhance", provider="p0", outcome="ok") == 1
    assert value("fastvideo_prompt_llm_requests_total", operation="auto_extend", provider="p1", outcome="ok") == 1
    assert value("fastvideo_prompt_fallbacks_total", operation="enhance") == 1
    assert value("fastvideo_prompt_fallbacks_total", operation="auto_extend") == 1
    assert value("fastvideo_prompt_llm_latency_seconds_count", operation="enhance", provider="p1") == 1
    lines = [r.getMessage() for r in caplog.records]
    assert any("[request req-a]" in line and "p0 failed" in line and "HTTP 503" in line for line in lines)
    assert any("[request req-a]" in line and "p1 answered" in line and "fallback" in line for line in lines)
    assert any("[request req-c]" in line and "p0 answered" in line for line in lines)


# ------------------------------------------------------------------------------ config and session entry
def serve_config(streaming: dict) -> ServeConfig:
    return parse_config(ServeConfig, {"streaming": streaming})


def test_streaming_prompt_config_builds_the_chain_and_the_session_entry_point_enhances():
    with ChatStub([("status", 500)]) as first, ChatStub(default=("ok", "an enhanced fox")) as second:
        config = serve_config({"prompt": {"enabled": True, "provider": "openai_compatible", "model": "local-a",
                                          "base_url": first.base_url, "timeout_ms": 2000,
                                          "fallbacks": [{"base_url": second.base_url, "model": "local-b"}]}})
        check_prompt_config(config.streaming)
        prompting = SessionPrompting.from_config(config.streaming, registry=CollectorRegistry())
        prepared = run(prompting.prepare("a fox", request_id="s1"))
        plain = run(prompting.prepare("a fox", enhance=False))
    assert (prepared.original, prepared.prompt, prepared.enhanced, prepared.fallback_used) == (
        "a fox", "an enhanced fox", True, True)
    assert prepared.provider == "openai_compatible" and prepared.safety is None and prepared.enhance_error is None
    assert [r["model"] for r in first.requests + second.requests] == ["local-a", "local-b"]
    assert (plain.prompt, plain.enhanced) == ("a fox", False)


def test_an_enhancer_that_fails_leaves_the_prompt_as_written():
    with ChatStub(default=("status", 400)) as stub:
        config = serve_config({"prompt": {"enabled": True, "provider": "openai_compatible",
                                          "base_url": stub.base_url}})
        prepared = run(SessionPrompting.from_config(config.streaming).prepare("a fox"))
    assert (prepared.prompt, prepared.enhanced) == ("a fox", False) and "HTTP 400" in prepared.enhance_error


def test_extend_and_rewrite_through_the_session_entry_point():
    with ChatStub([("ok", "next segment prompt"), ("ok", "alt one\nalt two\nalt three")]) as stub:
        config = serve_config({"prompt": {"enabled": True, "provider": "openai_compatible",
                                          "base_url": stub.base_url}})
        prompting = SessionPrompting.from_config(config.streaming)
        extended = run(prompting.extend(["first prompt"]))
        rewrite = run(prompting.rewrite("seed", count=2))
    assert extended.prompt == "next segment prompt" and extended.original == "first prompt"
    assert rewrite.alternatives == ["alt one", "alt two"]
    off = SessionPrompting.from_config(serve_config({}).streaming)
    assert off.enhancer is None and off.safety is None
    with pytest.raises(ConfigError) as info:
        run(off.extend(["x"]))
    assert info.value.path == "streaming.prompt.enabled"


@pytest.mark.parametrize("prompt,path,words", [
    ({"provider": "openai_compatible"}, "streaming.prompt.base_url", "base URL"),
    ({"provider": "openai_compatible", "base_url": "127.0.0.1:8000"}, "streaming.prompt.base_url", "http(s) URL"),
    ({"provider": "cerebras"}, "streaming.prompt.api_key_env", "CEREBRAS_API_KEY is not set"),
    ({"provider": "groq", "api_key_env": "NO_SUCH_KEY_VAR"}, "streaming.prompt.api_key_env", "NO_SUCH_KEY_VAR"),
    ({"provider": "openai_compatible", "base_url": "http://127.0.0.1:1/v1", "fallbacks": [{"provider": "groq"}]},
     "streaming.prompt.fallbacks[0].api_key_env", "GROQ_API_KEY"),
    ({"provider": "openai_compatible", "base_url": "http://127.0.0.1:1/v1", "system_prompt_dir": "/no/such/dir"},
     "streaming.prompt.system_prompt_dir", "not a folder"),
])
def test_a_prompt_config_that_cannot_work_is_refused_by_name(monkeypatch, prompt, path, words):
    monkeypatch.delenv("CEREBRAS_API_KEY", raising=False)
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    config = serve_config({"prompt": {"enabled": True, **prompt}})
    with pytest.raises(ConfigError) as info:
        check_prompt_config(config.streaming)
    assert info.value.path == path and words in str(info.value), str(info.value)


def test_a_preconfigured_provider_with_its_key_passes(monkeypatch):
    monkeypatch.setenv("CEREBRAS_API_KEY", "csk-1")
    monkeypatch.setenv("GROQ_API_KEY", "gsk-1")
    config = serve_config({"prompt": {"enabled": True, "fallbacks": [{"provider": "groq"}]}})
    check_prompt_config(config.streaming)
    chain = SessionPrompting.from_config(config.streaming).enhancer.providers
    assert [(p.name, p.model) for p in chain] == [("cerebras", "gpt-oss-120b"), ("groq", "openai/gpt-oss-120b")]


@pytest.mark.parametrize("prompt,path", [
    ({"timeout_ms": 0}, "streaming.prompt.timeout_ms"),
    ({"temperature": 3.0}, "streaming.prompt.temperature"),
    ({"max_tokens": 0}, "streaming.prompt.max_tokens"),
    ({"fallbacks": [{"timeout_ms": -1}]}, "streaming.prompt.fallbacks[0].timeout_ms"),
    ({"fallbacks": [{"provider": "x"}]}, "streaming.prompt.fallbacks[0].provider"),
])
def test_bad_prompt_values_are_refused_when_parsed(prompt, path):
    with pytest.raises(ConfigError) as info:
        serve_config({"prompt": prompt})
    assert info.value.path == path
