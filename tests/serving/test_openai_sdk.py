"""The official ``openai`` SDK, 3.x (the venv's) and 2.x (a side folder), against a real ``fastvideo serve``.

The 3.x SDK sends multipart bodies (extras as string form fields), 2.x sends JSON; both run the same
scenario (``openai_sdk_scenario.py``): create, poll, raw poll headers, download + decode the MP4
(PyAV), thumbnail, list, typed errors (bad size, unknown model, input_reference upload), delete.
The 2.x release lives beside the venv so it does not replace 3.x: ``bash scripts/install.sh dev`` runs
``python -m pip install --target .openai2 "openai>=2,<3"``; ``<sys.prefix>/openai2`` is looked at too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCENARIO = HERE / "openai_sdk_scenario.py"


def openai2_folder() -> Path | None:
    for folder in (REPO / ".openai2", Path(sys.prefix) / "openai2"):
        if (folder / "openai" / "__init__.py").is_file():
            return folder
    return None


def test_openai_sdk_3x_in_process(live_server):
    from openai_sdk_scenario import run

    assert int(openai.__version__.split(".")[0]) >= 3, f"the venv should hold openai 3.x, has {openai.__version__}"
    out = run(live_server.base_url)
    assert out["major"] >= 3 and out["statuses"][-1] == "completed"


def test_openai_sdk_2x_subprocess(live_server):
    folder = openai2_folder()
    if folder is None:
        pytest.skip("openai 2.x is not installed beside the venv; install it with: python -m pip install "
                    "--target .openai2 \"openai>=2,<3\" (part of bash scripts/install.sh dev)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(HERE)])}
    proc = subprocess.run([sys.executable, str(SCENARIO), live_server.base_url], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["major"] == 2, f"the subprocess imported openai {out['openai']} instead of a 2.x release"
    assert out["statuses"][-1] == "completed"
