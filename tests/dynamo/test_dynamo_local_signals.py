"""``python -m fastvideo.serving.dynamo.local`` (the README's one-command cluster) under SIGTERM, as a container
runtime stops it: the launcher stops Dynamo's frontend and every worker (each in its own session) and waits
for them, so no process it started survives it. Skipped when ``dynamo`` is not importable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("dynamo.llm", reason="NVIDIA Dynamo is not installed: pip install --no-deps "
                                         "ai-dynamo==1.6.1 ai-dynamo-runtime==1.6.1 "
                                         "(see README, Scale out with Dynamo)")

from fastvideo.serving.dynamo.local import free_port, http_json  # noqa: E402

pytestmark = [pytest.mark.dynamo, pytest.mark.timeout(180)]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a live, non-zombie process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[3])


def _children(pid: int) -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit() and (_stat(int(p)) or (0, 0))[0] == pid}


def _in_sessions(sessions: set[int]) -> set[int]:
    """Every live process whose session leader is one of ``sessions`` (the children and what they started)."""
    return {int(p) for p in os.listdir("/proc") if p.isdigit() and (_stat(int(p)) or (0, 0))[1] in sessions}


def test_sigterm_to_launcher_stops_frontend_and_workers(tiny_model_dir: Path, fastvideo_cache: Path, tmp_path):
    port = free_port()
    env = {**os.environ, "FASTVIDEO_CACHE_DIR": str(fastvideo_cache), "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "launcher.log", "wb")
    launcher = subprocess.Popen([sys.executable, "-m", "fastvideo.serving.dynamo.local", "--workers", "1",
                                 "--http-port", str(port), "--", "--device", "cpu"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    sessions: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        ready = False
        while time.monotonic() < deadline and launcher.poll() is None:
            sessions |= _children(launcher.pid)
            try:
                status, body = http_json("GET", f"http://127.0.0.1:{port}", "/v1/models", timeout=2)
                ready = status == 200 and any(m.get("id") == "fastvideo-tiny" for m in body.get("data", []))
            except (OSError, ValueError):
                pass
            if ready:
                break
            time.sleep(0.3)
        assert launcher.poll() is None, (tmp_path / "launcher.log").read_text()[-3000:]
        assert ready and len(sessions) == 2, sessions  # the frontend and one worker, serving
        assert _in_sessions(sessions)
        launcher.send_signal(signal.SIGTERM)
        code = launcher.wait(60)
        survivors = _in_sessions(sessions)
        assert survivors == set(), f"still running after the launcher exited: {survivors}"
        assert code == 0, (tmp_path / "launcher.log").read_text()[-3000:]
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(10)
        for pid in sessions:  # never leave the children behind, whatever happened
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        log.close()
