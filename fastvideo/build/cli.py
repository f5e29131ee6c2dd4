"""``fastvideo-build``: the offline builder's command line.

Contract: parses the build request (model, backend, shape profiles, branches, precision, output
folder) and validates it with clear errors. Backends are added by the builder package; a backend
that is not available in this installation exits with status 2 saying so (and what is), never
writing a partial artifact folder.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Sequence

BACKENDS = ("inductor", "aoti", "tensorrt")
_PROFILE = re.compile(r"^(\d+)x(\d+)x(\d+)$")


def parse_profile(text: str) -> tuple[int, int, int]:
    """``HEIGHTxWIDTHxFRAMES`` -> ints (argparse type)."""
    match = _PROFILE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"profile {text!r} must look like 480x832x81 (height x width x frames)")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastvideo-build",
        description="Build compiled artifacts (AOTInductor packages, torch.compile caches or TensorRT engines) "
                    "of a model's DiT and VAE for declared shape profiles, into a self-describing folder that "
                    "`fastvideo serve --artifacts` loads.")
    p.add_argument("--model-path", default=None, help="diffusers-format model folder (default: built-in tiny model)")
    p.add_argument("--backend", required=True, choices=BACKENDS, help="what to build")
    p.add_argument("--profile", action="append", type=parse_profile, required=True,
                   help="a served shape HEIGHTxWIDTHxFRAMES, e.g. 480x832x81; repeat for several")
    p.add_argument("--branch", default="initial", help="comma list of segment branches: initial,continuation")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"], help="compute precision")
    p.add_argument("--out", required=True, help="artifact output folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    branches = [b.strip() for b in args.branch.split(",") if b.strip()]
    bad = [b for b in branches if b not in ("initial", "continuation")]
    if bad:
        print(f"fastvideo-build: --branch {bad[0]!r} is unknown; use initial and/or continuation", file=sys.stderr)
        return 2
    print(f"fastvideo-build: backend {args.backend!r} is not available in this installation yet; "
          "no artifacts were written", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
