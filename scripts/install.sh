#!/usr/bin/env bash
# Install FastVideo Engine into the active Python environment.
#   bash scripts/install.sh            # runtime only (fastvideo generate)
#   bash scripts/install.sh serve      # + HTTP/WebSocket server, builder, Redis stores
#   bash scripts/install.sh dynamo     # + the NVIDIA Dynamo 1.6.1 worker (python -m fastvideo.serving.dynamo)
#   bash scripts/install.sh dev        # everything the tests use (what CI runs)
# torch is installed first and explicitly: on CPU machines `pip install torch==2.13.0` takes the local
# CPU wheel; on GPU machines keep the torch your CUDA image ships (any torch >= 2.9 works).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-}"
PIP=(python -m pip install --quiet)

if ! python -c "import torch" 2>/dev/null; then
    "${PIP[@]}" "torch==2.13.0"
fi

install_dynamo() {
    # Dynamo's wheels declare an extra dependency that is not installable from PyPI: install them
    # without dependencies, plus what they really import (the project's [dynamo] extra).
    "${PIP[@]}" --no-deps "ai-dynamo==1.6.1" "ai-dynamo-runtime==1.6.1"
}

install_system_packages() {
    # Test-only system programs: redis-server (Redis store tests) and Debian's chromium (browser test).
    # A failure here is reported loudly but does not stop the install: those tests then skip, naming
    # the missing program.
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v chromium >/dev/null || missing+=(chromium)
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "WARNING: cannot install ${missing[*]} (not root, no sudo)" >&2; return 0; }
        sudo=(sudo)
    fi
    echo "installing system packages: ${missing[*]}"
    if ! { "${sudo[@]}" apt-get update -qq &&
           DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; }; then
        echo "WARNING: apt-get could not install ${missing[*]}; the tests that need them will skip" >&2
    fi
}

case "$MODE" in
    "") "${PIP[@]}" -e . ;;
    serve) "${PIP[@]}" -e ".[kernels,serving,build,stores]" ;;
    dynamo) "${PIP[@]}" -e ".[serving,dynamo]"; install_dynamo ;;
    dev)
        "${PIP[@]}" -e ".[dev,kernels,serving,build,stores,dynamo]"
        install_dynamo
        # The serving tests drive the server with both openai SDK majors: 3.x from [dev], 2.x here.
        "${PIP[@]}" --target .openai2 "openai>=2,<3"
        # The ahead-of-time kernel compile test also compiles with the GPU image's triton (3.6), beside the newest.
        "${PIP[@]}" --no-deps --target .triton36 "triton==3.6.0"
        install_system_packages
        ;;
    *) echo "usage: bash scripts/install.sh [serve|dynamo|dev]" >&2; exit 2 ;;
esac
python -c "import torch, fastvideo; print(f'fastvideo {fastvideo.__version__} with torch {torch.__version__}')"
