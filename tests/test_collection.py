"""The suite collects every test file under tests/, and a run that would silently drop one fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _collect(*extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_tests_build_is_collected() -> None:
    proc = _collect("tests/build")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sum(line.startswith("tests/build/") for line in proc.stdout.splitlines()) >= 50


def test_a_dropped_folder_fails_the_whole_suite_run() -> None:
    """pytest's default norecursedirs (which skips 'build') must make the whole-suite run fail, naming the files."""
    proc = _collect("-o", "norecursedirs=build .* __pycache__")
    assert proc.returncode == 4, proc.stdout[-2000:]
    assert "not collected" in proc.stdout + proc.stderr
    assert "tests/build/test_build_cli.py" in proc.stdout + proc.stderr
