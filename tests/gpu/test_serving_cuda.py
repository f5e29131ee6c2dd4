"""End to end on the GPU: VideoGenerator with the defaults a GPU user gets, and the server answering a request.

- ``VideoGenerator`` on the built-in model with ``device``/``dtype`` auto (CUDA, bf16 on sm_80+) and the
  Triton attention and fused-ops backends: a video of the asked shape, finite and not constant, the same
  for the same seed (within 1 uint8 level: a GPU convolution algorithm may sum in another order), and
  ``generate_async`` streams one event per step then the final MP4.
- ``fastvideo serve --device cuda`` in a real process: ready after warmup, ``POST /v1/videos`` completes
  and its MP4 decodes to the asked frames (needs the serving extra; the GPU check carries its wheels).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REQUEST = {"prompt": "a red fox running through snow",
           "sampling": {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 4, "seed": 5},
           "output": {"save_video": False, "return_frames": True}}


def test_video_generator_end_to_end_with_gpu_defaults(gpu, tiny_model_dir: Path) -> None:
    from fastvideo import VideoGenerator
    from fastvideo.api import VideoFinalEvent, VideoProgressEvent

    generator = VideoGenerator.from_pretrained(str(tiny_model_dir), attention_backend="triton", ops_backend="triton",
                                               **({"dtype": "bf16"} if gpu.rehearsal else {}))
    try:
        assert generator.pipeline.device.type == gpu.device.type
        first, again = generator.generate(REQUEST), generator.generate(REQUEST)
        frames = np.asarray(first.frames)
        assert frames.shape == (9, 64, 64, 3) and frames.dtype == np.uint8 and frames.std() > 0
        assert np.abs(frames.astype(np.int16) - np.asarray(again.frames).astype(np.int16)).max() <= 1

        async def collect():
            return [e async for e in generator.generate_async({**REQUEST, "output": {"save_video": False}})]

        events = asyncio.run(collect())
        steps = [e for e in events if isinstance(e, VideoProgressEvent)]
        assert [e.step for e in steps] == [1, 2, 3, 4] and isinstance(events[-1], VideoFinalEvent)
        assert events[-1].video_bytes[4:8] == b"ftyp"
    finally:
        generator.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_answers_a_request_on_the_gpu(gpu, fastvideo_cache: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from fastvideo.runtime.media import decode_mp4

    port = _free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "FASTVIDEO_CACHE_DIR": str(fastvideo_cache)}
    dtype = ["--dtype", "bf16"] if gpu.rehearsal else []
    with open(log, "w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "fastvideo", "serve", "--port", str(port), "--device",
                                 gpu.device.type, *dtype, "--output-dir", str(tmp_path / "out")],
                                stdout=handle, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60.0) as client:
            deadline = time.monotonic() + 180
            while True:
                assert proc.poll() is None, f"server exited:\n{log.read_text()[-3000:]}"
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"not ready in 180 s:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
            video = client.post("/v1/videos", json={"prompt": "a red fox", "size": "64x64", "num_frames": 5,
                                                    "num_inference_steps": 2, "seed": 3, "fps": 8}).json()
            while video["status"] not in ("completed", "failed"):
                assert time.monotonic() < deadline + 120, video
                time.sleep(0.2)
                video = client.get(f"/v1/videos/{video['id']}").json()
            assert video["status"] == "completed", video
            content = client.get(f"/v1/videos/{video['id']}/content")
            frames, fps = decode_mp4(content.content)
            assert frames.shape == (5, 64, 64, 3) and fps == 8
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
    assert code == 0, log.read_text()[-3000:]
