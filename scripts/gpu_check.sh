#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): one command a GPU window runs as is.
#
#   bash scripts/gpu_check.sh prepare     # on a machine WITH a package registry (this CPU box): download
#                                         # the wheels the GPU image lacks into .gpu-wheels/ (ignored by git)
#   bash scripts/gpu_check.sh [ARGS...]   # on the GPU machine (no registry): install .gpu-wheels/ offline into
#                                         # a private folder, then run benchmarks/gpu_check.py ARGS; the report
#                                         # (report.json, report.md, logs.txt) goes to $OUT (or ./gpu-report)
#   bash scripts/gpu_check.sh --dry-run   # the same orchestration on a CPU at tiny shapes (what CI runs)
#
# The GPU image has python 3.12, torch, triton, transformers, safetensors, tokenizers, numpy, pytest, httpx,
# pillow...; it lacks diffusers (the benchmarks' and tests' reference), pydantic, fastapi, starlette, uvicorn,
# python-multipart, websockets (the server) and PyAV (MP4). `prepare` fetches those and their missing
# dependencies as cp312 manylinux wheels, at the versions installed here (what CI tests), about 45 MiB:
# carry .gpu-wheels with the working tree (device tool: carry [".gpu-wheels"]).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels

if [ "${1:-}" = prepare ]; then
    exec python3 benchmarks/gpu_check.py --prepare-wheels "$WHEELS"
fi

DRY=0
for arg in "$@"; do [ "$arg" = --dry-run ] && DRY=1; done
if [ "$DRY" = 0 ] && compgen -G "$WHEELS/*.whl" >/dev/null; then  # a dry run uses this machine's own packages
    SITE="${TMPDIR:-/tmp}/fastvideo-gpu-site"
    python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$WHEELS"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 benchmarks/gpu_check.py "$@"
