#!/usr/bin/env bash
# Install FastVideo Engine into the active Python environment.
#   bash scripts/install.sh            # runtime only
#   bash scripts/install.sh dev        # + test/parity/serving/build extras (what CI uses)
# torch is installed first and explicitly: on CPU machines `pip install torch==2.13.0` takes the local
# CPU wheel; on GPU machines keep the torch your CUDA image ships (any torch >= 2.9 works).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install --quiet "torch==2.13.0"
fi
if [ "$EXTRAS" = "dev" ]; then
    python -m pip install --quiet -e ".[dev,kernels]"
else
    python -m pip install --quiet -e .
fi
python -c "import torch, fastvideo; print(f'fastvideo {fastvideo.__version__} with torch {torch.__version__}')"
