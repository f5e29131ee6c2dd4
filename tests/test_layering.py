"""Package layering: dependencies point one way, serving -> runtime -> build/engine/kernels/eval -> api.

Every module under the lower layers is parsed (never imported or run) and each ``import`` /
``from ... import`` in it, at any depth (functions, ``TYPE_CHECKING`` blocks, lazy imports included),
is resolved to an absolute module name and checked:

- ``fastvideo/build``, ``fastvideo/engine``, ``fastvideo/kernels``, ``fastvideo/eval`` (the metrics) and
  ``fastvideo/api`` import neither ``fastvideo.runtime`` nor ``fastvideo.serving``;
- ``fastvideo/api`` imports no torch (integrators and the HTTP layer use it without a GPU stack).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fastvideo"
LOWER_LAYERS = ("build", "engine", "kernels", "eval", "api")
UPPER_LAYERS = ("fastvideo.runtime", "fastvideo.serving")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """``(line, absolute module)`` for every import in ``path`` (``from x import y`` yields ``x`` and ``x.y``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def _is_within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violations(files: list[Path], forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    problems = []
    for path in files:
        for line, module in imported_modules(path, root):
            if any(_is_within(module, prefix) for prefix in forbidden):
                problems.append(f"{path.relative_to(root)}:{line} imports {module}")
    return sorted(set(problems))


def _files(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", LOWER_LAYERS)
def test_lower_layers_do_not_import_runtime_or_serving(layer: str) -> None:
    files = _files(layer)
    assert files, f"fastvideo/{layer} has no modules to check"
    problems = layer_violations(files, UPPER_LAYERS)
    assert not problems, (f"fastvideo/{layer} must not depend on {' or '.join(UPPER_LAYERS)} (dependencies point "
                          "serving -> runtime -> build/engine/kernels -> api):\n" + "\n".join(problems))


def test_api_imports_no_torch() -> None:
    problems = layer_violations(_files("api"), ("torch",))
    assert not problems, "fastvideo/api must not import torch:\n" + "\n".join(problems)


def test_the_scan_sees_every_import_form(tmp_path: Path) -> None:
    """The scanner itself: lazy, relative, aliased and TYPE_CHECKING imports are all seen."""
    pkg = tmp_path / "fastvideo" / "build"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    source = pkg / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from fastvideo.runtime.generator import VideoGenerator\n"
                      "def f():\n    from .. import serving\n    import torch.nn as nn\n"
                      "from ..runtime import executor\n")
    problems = layer_violations([source], UPPER_LAYERS, root=tmp_path)
    torch_problems = layer_violations([source], ("torch",), root=tmp_path)
    assert problems == sorted({"fastvideo/build/mod.py:3 imports fastvideo.runtime.generator",
                               "fastvideo/build/mod.py:3 imports fastvideo.runtime.generator.VideoGenerator",
                               "fastvideo/build/mod.py:5 imports fastvideo.serving",
                               "fastvideo/build/mod.py:7 imports fastvideo.runtime",
                               "fastvideo/build/mod.py:7 imports fastvideo.runtime.executor"})
    assert torch_problems == ["fastvideo/build/mod.py:6 imports torch.nn"]
