"""Lint and type checks run with the tests (CI runs README's test command only): ruff over the package, tests and
benchmarks; mypy over the package.

Folders named ``build`` (``fastvideo/build``, ``tests/build``) must be linted too: some tools skip that
name by default, so the test checks that ruff really sees their files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["fastvideo", "tests", "benchmarks", "scripts"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_ruff_is_clean() -> None:
    proc = _ruff("check", *PATHS)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_sees_the_build_folders() -> None:
    seen = {Path(line.strip()).resolve() for line in _ruff("check", "--show-files", *PATHS).stdout.splitlines()}
    for folder in ("fastvideo/build", "tests/build"):
        files = {p.resolve() for p in (ROOT / folder).glob("*.py")}
        assert files and files <= seen, f"ruff skips {folder}: {sorted(p.name for p in files - seen)}"


def test_mypy_is_clean(tmp_path: Path) -> None:
    """The package type-checks (``[tool.mypy]`` in pyproject: ``files = ["fastvideo"]``, build/ included)."""
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "fastvideo/build" not in proc.stdout  # no error there either (and it is checked: files = fastvideo)
