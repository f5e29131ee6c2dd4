"""Shared fixtures: one built-in tiny model per test session, in a private cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fastvideo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fastvideo-cache")


@pytest.fixture(scope="session")
def tiny_model_dir(fastvideo_cache: Path) -> Path:
    """The built-in model folder, synthesized once for the session."""
    from fastvideo.engine.builtin_model import ensure_builtin_model

    return ensure_builtin_model(fastvideo_cache)


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch: pytest.MonkeyPatch, fastvideo_cache: Path) -> None:
    """Every test sees the session cache (never the user's ~/.cache)."""
    monkeypatch.setenv("FASTVIDEO_CACHE_DIR", str(fastvideo_cache))
    monkeypatch.delenv("FASTVIDEO_ATTENTION_BACKEND", raising=False)


@pytest.fixture(scope="session")
def tiny_generator(tiny_model_dir: Path):
    """A CPU fp32 VideoGenerator on the built-in model, shared by tests that only read from it."""
    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")
    yield generator
    generator.shutdown()
