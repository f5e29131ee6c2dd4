"""Shared fixtures: one built-in tiny model per test session, in a private cache folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    """A real ``redis-server`` on 127.0.0.1 for the module (skips without one: see tests/redis_testing.py)."""
    from redis_testing import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def tiny_generator(tiny_model_dir: Path):
    """A CPU fp32 VideoGenerator on the built-in model, shared by tests that only read from it."""
    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")
    yield generator
    generator.shutdown()


def _builtin_generator(name: str):
    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained(name, device="cpu", dtype="fp32")
    yield generator
    generator.shutdown()


@pytest.fixture(scope="module")
def i2v_generator(fastvideo_cache: Path):
    """A CPU fp32 VideoGenerator on the built-in tiny Wan2.1 I2V model (``fastvideo-tiny-i2v``), per module."""
    yield from _builtin_generator("fastvideo-tiny-i2v")


@pytest.fixture(scope="module")
def ltx2_generator(fastvideo_cache: Path):
    """A CPU fp32 VideoGenerator on the built-in tiny LTX-2 model (``fastvideo-tiny-ltx2``), per module."""
    yield from _builtin_generator("fastvideo-tiny-ltx2")


@pytest.fixture(scope="session")
def ltx2_diffusers_folders(tmp_path_factory: pytest.TempPathFactory):
    """Tiny random diffusers ``LTX2Pipeline`` folders (``save_pretrained``), one per video VAE kind, built and
    written once per session (tests/engine/ltx2_side_fixtures.py): ``ltx2_diffusers_folders(timestep_vae=False)
    -> (pipeline, folder)``. Each call hands out its own deep copy of the built pipeline (about 0.1 s; building
    one is ~4.5 s), so a test that changes it (``pipe.to(torch.bfloat16)``, a scheduler config, a component
    shared into an image-to-video pipeline) cannot change what another test or module gets. Tests only read the
    folder."""
    import copy
    import sys

    sys.path.insert(0, str(TESTS_DIR / "engine"))
    from ltx2_side_fixtures import TinyLTX2Folders

    built = TinyLTX2Folders(tmp_path_factory)

    def folders(timestep_vae: bool = False) -> tuple[Any, Path]:
        pipe, folder = built(timestep_vae)
        return copy.deepcopy(pipe), folder

    return folders


# ----------------------------------------------------------------------------- collection guard
# A whole-suite run (README's `python -m pytest -q`) must collect every test file under tests/: a
# folder that pytest skips silently (its default norecursedirs drops any folder named "build") would
# otherwise lose its tests without a trace. Modules that skip at import (importorskip) still count:
# they show up in the report as skipped, with their reason.
TESTS_DIR = Path(__file__).resolve().parent
_collected_files: set[Path] = set()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".py"):
        _collected_files.add((TESTS_DIR.parent / path).resolve())


def uncollected_test_files(config: pytest.Config, collected: set[Path]) -> list[Path]:
    """Test files under tests/ (by the ``python_files`` patterns) that were not collected."""
    import fnmatch

    patterns = config.getini("python_files")
    files = {p.resolve() for p in TESTS_DIR.rglob("*.py")
             if any(fnmatch.fnmatch(p.name, pat) for pat in patterns) and "__pycache__" not in p.parts}
    return sorted(files - collected)


def _whole_suite(config: pytest.Config) -> bool:
    roots = {TESTS_DIR, TESTS_DIR.parent}
    return all(Path(str(arg).split("::", 1)[0]).resolve() in roots for arg in config.args)


def pytest_collection_finish(session: pytest.Session) -> None:
    if not _whole_suite(session.config) or session.testsfailed:  # collection errors fail the run with their cause
        return
    missing = uncollected_test_files(session.config, _collected_files)
    if missing:
        names = ", ".join(str(p.relative_to(TESTS_DIR.parent)) for p in missing)
        pytest.exit(f"these test files were not collected: {names}. Check norecursedirs/testpaths in "
                    "pyproject.toml (pytest skips folders named 'build' by default)", returncode=4)
