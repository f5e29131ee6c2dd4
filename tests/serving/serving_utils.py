"""Serving test helpers: a real ``fastvideo serve`` subprocess, in-process uvicorn servers, polling.

``live_server`` is one real server process (built-in model, 127.0.0.1, random port, real warmup)
shared by every test that only needs defaults; while it starts, :func:`observe_startup` records
``/health``, ``/readyz`` and one early job attempt (for the readiness test). ``inproc_server(...)``
runs ``build_app`` over the session's ``tiny_generator`` under uvicorn in a thread, for configs a
test needs (small queue, API key, session cap, idle timeout, drain timeout). Shapes are tiny
(64x64, 5 frames, 2 steps). A real Redis: ``tests/redis_testing.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


try:
    import httpx
except ImportError:  # pragma: no cover - the serving extra is not installed; those tests skip
    httpx = None  # type: ignore[assignment]

SMALL = {"size": "64x64", "num_frames": 5, "num_inference_steps": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def solid_png(color: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    """A one-color RGB PNG (``size`` is width, height): the reference image the image-to-video tests send."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def wait_ready(base_url: str, timeout_s: float = 180.0, path: str = "/readyz",
               proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            r = httpx.get(base_url + path, timeout=2.0)
            if r.status_code == 200:
                return
            last = r.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{base_url}{path} not ready after {timeout_s}s (last: {last})")


def wait_job(client: httpx.Client, video_id: str, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        video = client.get(f"/v1/videos/{video_id}").json()
        if video["status"] in ("completed", "failed"):
            return video
        time.sleep(0.05)
    raise TimeoutError(video_id)


def wait_status(client: httpx.Client, video_id: str, status: str, timeout_s: float = 60.0) -> dict:
    """Poll until the job reaches ``status``; failing at once if it ends in another state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        video = client.get(f"/v1/videos/{video_id}").json()
        if video["status"] == status:
            return video
        assert video["status"] in ("queued", "in_progress"), video
        time.sleep(0.02)
    raise TimeoutError(f"{video_id} never reached {status}")


def observe_startup(base_url: str, proc: subprocess.Popen, timeout_s: float = 180.0) -> list[dict]:
    """Poll ``/health`` and ``/readyz`` (and try one job while not ready) until ``/readyz`` is 200.

    Returns what was seen, in order: ``{"health", "readyz", "phase", "create"}`` per poll, where
    ``create`` is the status of a ``POST /v1/videos`` tried once while the server was live but not ready.
    """
    seen: list[dict] = []
    tried_create = False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            health = httpx.get(base_url + "/health", timeout=2.0).status_code
            ready = httpx.get(base_url + "/readyz", timeout=2.0)
        except httpx.HTTPError:
            time.sleep(0.1)
            continue
        entry = {"health": health, "readyz": ready.status_code, "phase": ready.json().get("phase"), "create": None}
        if ready.status_code == 503 and not tried_create:
            tried_create = True
            r = httpx.post(base_url + "/v1/videos", json={"prompt": "too early", **SMALL}, timeout=10.0)
            entry["create"] = r.status_code
            entry["create_retry_after"] = r.headers.get("retry-after")
        seen.append(entry)
        if ready.status_code == 200:
            return seen
        time.sleep(0.1)
    raise TimeoutError(f"{base_url}/readyz not ready after {timeout_s}s (seen: {seen[-3:]})")


@dataclass
class LiveServer:
    base_url: str
    proc: subprocess.Popen | None
    output_dir: Path
    log_path: Path | None = None
    #: What ``observe_startup`` saw while the server started (see there).
    startup: list[dict] | None = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""


def start_server_process(cache: Path, tmp: Path, *extra: str, ready_path: str = "/readyz",
                         env_extra: dict[str, str] | None = None) -> LiveServer:
    port = free_port()
    out = tmp / "outputs"
    log_path = tmp / "server.log"
    env = {**os.environ, "FASTVIDEO_CACHE_DIR": str(cache), **(env_extra or {})}
    env.pop("FASTVIDEO_ATTENTION_BACKEND", None)
    handle = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "fastvideo", "serve", "--port", str(port), "--output-dir", str(out),
                             "--device", "cpu", "--dtype", "fp32", *extra], stdout=handle, stderr=subprocess.STDOUT,
                            env=env)
    server = LiveServer(f"http://127.0.0.1:{port}", proc, out, log_path)
    try:
        if ready_path == "/readyz":
            server.startup = observe_startup(server.base_url, proc)
        else:
            wait_ready(server.base_url, path=ready_path, proc=proc)
    except BaseException:
        stop_server_process(server)
        raise RuntimeError(f"server did not start:\n{server.log()[-4000:]}")
    return server


def stop_server_process(server: LiveServer, timeout_s: float = 60.0) -> int | None:
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


class InprocServer:
    """uvicorn + build_app in a background thread (same process, shared tiny_generator)."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.app, self.port = app, port
        self.base_url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                timeout_graceful_shutdown=30, ws_max_size=64 * 1024 * 1024)
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{port}", daemon=True)

    def start(self, ready_path: str = "/readyz") -> "InprocServer":
        self.thread.start()
        wait_ready(self.base_url, 120.0, ready_path)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


@contextlib.contextmanager
def inproc_server(generator: Any, tmp_path: Path, **sections: dict) -> Iterator[InprocServer]:
    """A server over ``generator`` with config sections overridden (``server={...}, queue={...}``)."""
    from fastvideo.api import parse_config
    from fastvideo.serving.app import build_app
    from fastvideo.serving.config import ServeConfig

    port = free_port()
    data: dict[str, Any] = {"server": {"port": port, "output_dir": str(tmp_path / f"out-{port}"), "warmup": False}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    config = parse_config(ServeConfig, data)
    server = InprocServer(build_app(config, generator), port).start()
    try:
        yield server
    finally:
        server.stop()
