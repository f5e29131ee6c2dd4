"""Block-size configs for the Triton attention kernel, kept as JSON per GPU (no pickles).

Contract:
- Config files live in ``fastvideo/kernels/attention/configs/*.json`` (package data)::

      {"gpu": "NVIDIA H100", "match": ["h100", "h800"], "capabilities": [90], "tuned": false, "note": "...",
       "attention": {"default": {"block_m": 64, "block_n": 64, "num_warps": 4, "num_stages": 3},
                     "128": {...}}}

  ``match`` lists substrings of the normalized GPU name (``torch.cuda.get_device_name`` lowercased,
  non-alphanumerics -> ``-``); the file with the longest matching substring wins, else
  ``default.json``. Inside a file the entry for the head dim wins, else its ``"default"``.
  ``"interpreter"`` is the name used under ``TRITON_INTERPRET=1``. ``capabilities`` lists the
  compute capabilities (``90`` = sm_90) the file's GPUs have: :mod:`fastvideo.kernels.aot` compiles
  every entry for each of them in CI (no spills, fits shared memory); ``[]`` only for the interpreter.
- :func:`load_attention_config` never guesses silently past a broken file: a malformed file raises
  :class:`ValueError` naming it. Block sizes must be powers of two >= 16 (``tl.dot`` minimum).
- Files are written by ``benchmarks/kernels/bench_attention.py --tune``; :func:`config_to_json`
  is the writer's format.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).with_name("configs")
_DEFAULT_FILE = "default.json"
_FIELDS = ("block_m", "block_n", "num_warps", "num_stages")


@dataclass(frozen=True)
class AttentionConfig:
    """Launch parameters of the attention kernel for one (GPU, head_dim)."""

    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2
    source: str = "builtin"

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two >= 16, got {value} ({self.source})")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"num_warps must be 1, 2, 4, 8 or 16, got {self.num_warps} ({self.source})")
        if self.num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {self.num_stages} ({self.source})")


def _parse_entry(entry: Any, source: str) -> AttentionConfig:
    if not isinstance(entry, dict) or not {"block_m", "block_n"} <= set(entry):
        raise ValueError(f"{source}: each attention entry needs block_m and block_n, got {entry!r}")
    unknown = set(entry) - set(_FIELDS)
    if unknown:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)} (allowed: {list(_FIELDS)})")
    return AttentionConfig(**{k: int(v) for k, v in entry.items()}, source=source)


@functools.lru_cache(maxsize=None)
def _read_file(path: Path) -> tuple[tuple[str, ...], dict[str, AttentionConfig]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read attention config {path}: {exc}") from exc
    match = data.get("match", [])
    table = data.get("attention")
    if not isinstance(match, list) or not isinstance(table, dict) or "default" not in table:
        raise ValueError(f"{path}: needs a 'match' list and an 'attention' table with a 'default' entry")
    entries = {str(key): _parse_entry(value, f"{path.name}[{key}]") for key, value in table.items()}
    return tuple(str(m).lower() for m in match), entries


def config_file_for(gpu_name: str, config_dir: Path = CONFIG_DIR) -> Path:
    """The JSON file that applies to ``gpu_name`` (normalized name, see module doc)."""
    best: tuple[int, Path] | None = None
    for path in sorted(config_dir.glob("*.json")):
        if path.name == _DEFAULT_FILE:
            continue
        match, _ = _read_file(path)
        for token in match:
            if token and token in gpu_name and (best is None or len(token) > best[0]):
                best = (len(token), path)
    return best[1] if best is not None else config_dir / _DEFAULT_FILE


def config_entries(path: Path) -> dict[str, AttentionConfig]:
    """Every entry of one config file, by key (head dim or ``"default"``)."""
    return dict(_read_file(path)[1])


def config_capabilities(path: Path) -> tuple[int, ...]:
    """The compute capabilities a config file serves (``capabilities``; see module doc)."""
    try:
        values = json.loads(path.read_text()).get("capabilities", [])
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read attention config {path}: {exc}") from exc
    if not isinstance(values, list) or not all(isinstance(v, int) and v >= 70 for v in values):
        raise ValueError(f"{path}: 'capabilities' must be a list of compute capabilities such as [80, 90]")
    return tuple(values)


def load_attention_config(head_dim: int, gpu_name: str, config_dir: Path = CONFIG_DIR) -> AttentionConfig:
    """Block sizes for ``head_dim`` on ``gpu_name``: the GPU's file (or ``default.json``), the
    head-dim entry (or the file's ``"default"``)."""
    path = config_file_for(gpu_name, config_dir)
    _, entries = _read_file(path)
    config = entries.get(str(head_dim), entries["default"])
    logger.debug("attention config for %s head_dim=%d: %s", gpu_name, head_dim, config)
    return config


def config_to_json(gpu: str, match: list[str], entries: dict[str, AttentionConfig], note: str,
                   capabilities: tuple[int, ...] = ()) -> str:
    """Serialize tuned entries in the file format :func:`load_attention_config` reads."""
    table = {key: {k: v for k, v in asdict(cfg).items() if k in _FIELDS} for key, cfg in entries.items()}
    if "default" not in table:
        table["default"] = next(iter(table.values()))
    return json.dumps({"gpu": gpu, "match": match, "capabilities": list(capabilities), "tuned": True, "note": note,
                       "attention": table}, indent=2)
