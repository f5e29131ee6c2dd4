"""Files, drain and restart: downloads that race a DELETE, unique temp files, disk errors answered without
paths, an unwritable output folder refused at startup, reads served while draining, job records that
survive a restart, and a reaper that cleans orphans and leftover temp files."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastvideo.serving import openai_routes, video_store  # noqa: E402
from fastvideo.serving.video_store import VideoRecord, VideoStore  # noqa: E402

from serving_utils import SMALL, inproc_server, start_server_process, stop_server_process, wait_job  # noqa: E402


def _collect(response: Any, method: str = "GET") -> tuple[int, bytes]:
    """Run an ASGI response object by hand (what uvicorn does after the route returned)."""
    sent: list[dict] = []

    async def receive() -> dict:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "headers": [], "path": "/", "query_string": b""}
    asyncio.run(response(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


class _FullDisk:
    """A file whose writes fail half-way with ENOSPC (what a full disk does)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, data: bytes) -> int:
        self._inner.write(bytes(data)[: max(1, len(data) // 2)])
        self._inner.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self) -> "_FullDisk":
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _patch_disk(monkeypatch: pytest.MonkeyPatch, folder: Path, mode: str) -> None:
    """Writes under ``folder`` fail: ``full`` (ENOSPC half-way) or ``readonly`` (EACCES naming the path)."""
    real_open = io.open

    def fake_open(file: Any, flags: str = "r", *args: Any, **kwargs: Any) -> Any:
        name = os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else os.fspath(file)
        inside = str(name).startswith(str(folder)) and any(c in flags for c in "wax+")
        if inside and mode == "readonly":
            if isinstance(file, int):
                os.close(file)
            raise PermissionError(errno.EACCES, "Permission denied", str(name))
        handle = real_open(file, flags, *args, **kwargs)
        return _FullDisk(handle) if inside else handle

    monkeypatch.setattr(io, "open", fake_open)


def _ours(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("ref_", ".ref_", "img_", ".img_")))


# ---------------------------------------------------------------------- item 4: download races
def test_download_started_before_delete_is_complete(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
        state = srv.app.state.server
        vid = c.post("/v1/videos", json={"prompt": "keep me", **SMALL}).json()["id"]
        assert wait_job(c, vid)["status"] == "completed"
        mp4 = c.get(f"/v1/videos/{vid}/content").content
        record = state.store.get(vid)
        # The route returns; before its response body is sent, the video is deleted.
        video = asyncio.run(openai_routes.video_content(vid, state))
        thumb = asyncio.run(openai_routes.video_content(vid, state, variant="thumbnail"))
        assert c.delete(f"/v1/videos/{vid}").status_code == 200
        assert not (state.store.output_dir / f"{vid}.mp4").exists()
        status, body = _collect(video)
        assert status == 200 and body == mp4
        status, png = _collect(thumb)
        assert status == 200 and png.startswith(b"\x89PNG")
        gone = c.get(f"/v1/videos/{vid}/content")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "video_not_found"
        assert record.job is None  # the finished record held no MP4 bytes (item 8)


def test_concurrent_first_thumbnails_do_not_collide(tiny_generator, tmp_path, monkeypatch):
    with inproc_server(tiny_generator, tmp_path) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
        state = srv.app.state.server
        vid = c.post("/v1/videos", json={"prompt": "thumb race", **SMALL}).json()["id"]
        assert wait_job(c, vid)["status"] == "completed"
        record = state.store.get(vid)
        barrier = threading.Barrier(2, timeout=10)
        real_replace = os.replace

        def replace_together(src: Any, dst: Any) -> None:  # both writers reach the rename before either does it
            barrier.wait()
            real_replace(src, dst)

        monkeypatch.setattr(video_store.os, "replace", replace_together)
        results: list[Any] = []

        def make() -> None:
            try:
                results.append(state.store.thumbnail(record))
            except Exception as exc:  # noqa: BLE001 - the assertion below shows it
                results.append(exc)

        threads = [threading.Thread(target=make) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        monkeypatch.setattr(video_store.os, "replace", real_replace)
        assert all(isinstance(r, Path) for r in results), results
        assert results[0].read_bytes().startswith(b"\x89PNG")
        assert not [p for p in state.store.output_dir.iterdir() if p.name.endswith(".part")]


# ---------------------------------------------------------------------- item 7: disk errors
def test_upload_on_full_disk_leaves_nothing(tiny_generator, tmp_path, monkeypatch):
    png = (b"\x89PNG\r\n\x1a\n" + b"\x00" * 4096)
    with inproc_server(tiny_generator, tmp_path) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
        out = srv.app.state.server.store.output_dir
        _patch_disk(monkeypatch, out, "full")
        r = c.post("/v1/videos", data={"prompt": "x", "size": "64x64"},
                   files={"input_reference": ("a.png", png, "image/png")})
        # the text-to-video model refuses the image: a 400 naming the field, and nothing was written
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "input_reference"
        assert _ours(out) == []
        # a model that accepts it would store it atomically: a full disk leaves no partial file either
        with pytest.raises(OSError) as info:
            srv.app.state.server.store.save_input("video_x", "png", png)
        assert info.value.errno == errno.ENOSPC and _ours(out) == []
        err = openai_routes._storage_error(info.value)
        assert err.status == 507 and err.code == "insufficient_storage" and str(out) not in err.message


@pytest.mark.parametrize("mode,status,code", [("full", 507, "insufficient_storage"),
                                              ("readonly", 500, "output_write_failed")])
def test_image_job_on_bad_disk_is_clear_and_pathless(tiny_generator, tmp_path, monkeypatch, mode, status, code):
    with inproc_server(tiny_generator, tmp_path) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
        out = srv.app.state.server.store.output_dir
        _patch_disk(monkeypatch, out, mode)
        r = c.post("/v1/images/generations", json={"prompt": "disk", "size": "64x64", "num_inference_steps": 2})
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["code"] == code and str(tmp_path) not in r.text and "Errno" not in r.text
        assert _ours(out) == []


def test_unwritable_output_dir_refused_at_startup(fastvideo_cache, tmp_path, tiny_model_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {**os.environ, "FASTVIDEO_CACHE_DIR": str(fastvideo_cache)}
    proc = subprocess.run([sys.executable, "-m", "fastvideo", "serve", "--port", "1", "--device", "cpu",
                           "--output-dir", str(blocker / "out")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "server.output_dir" in proc.stderr and "not a writable folder" in proc.stderr


# ---------------------------------------------------------------------- item 5: restart and reaper
class _NoService:
    def delete(self, job_id: str) -> bool:
        return False


def _record(rid: str, **fields: Any) -> VideoRecord:
    return VideoRecord(id=rid, kind="video", model="m", prompt="p", width=64, height=64, seconds="1",
                       num_frames=5, fps=8, job=None, **fields)


def test_restart_restores_records_and_fails_unfinished(tmp_path):
    out = tmp_path / "out"
    first = VideoStore(_NoService(), None, out, ttl_s=3600)  # type: ignore[arg-type]
    first.open()
    done = _record("video_done")
    done.file_path = out / "video_done.mp4"
    done.file_path.write_bytes(b"mp4")
    first.records[done.id] = done
    done.status, done.progress, done.completed_at, done.expires_at = "completed", 100, time.time(), time.time() + 60
    done.metadata = {"seed": 7}
    first._persist(done)
    running = first.track(_record("video_running", status="in_progress"))
    expired = _record("video_old", status="completed", expires_at=time.time() - 1, file_path=out / "video_old.mp4")
    expired.file_path.write_bytes(b"old")
    first.track(expired)
    first.close_index()

    second = VideoStore(_NoService(), None, out, ttl_s=3600)  # type: ignore[arg-type]
    assert second.open() == 2
    back = second.get("video_done")
    assert back is not None and back.status == "completed" and back.file_path == done.file_path
    assert back.metadata == {"seed": 7} and back.to_openai()["expires_at"] == int(done.expires_at)
    failed = second.get(running.id)
    assert failed is not None and failed.status == "failed" and failed.error_code == "server_restarted"
    assert second.get("video_old") is None and not (out / "video_old.mp4").exists()
    second.close_index()


def test_reaper_cleans_orphans_and_temp_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    store = VideoStore(_NoService(), None, out, ttl_s=3600)  # type: ignore[arg-type]
    store.orphan_grace_s = 60.0
    owned = _record("video_kept", status="completed", file_path=out / "video_kept.mp4")
    owned.done.set()
    store.records[owned.id] = owned
    old = time.time() - 600
    for name in ("video_kept.mp4", "video_orphan.mp4", ".video_x.mp4.abc123.part", "video_new_orphan.mp4",
                 "notes.txt"):
        (out / name).write_bytes(b"x")
        if name != "video_new_orphan.mp4":
            os.utime(out / name, (old, old))

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(store.run_reaper(stop, interval_s=0.05))
        await asyncio.sleep(0.5)
        stop.set()
        await task

    asyncio.run(run())
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "video_kept.mp4", "video_new_orphan.mp4"]


# ---------------------------------------------------------------------- item 5: drain, then restart
def test_sigterm_keeps_reads_during_drain_and_restart_keeps_jobs(fastvideo_cache, tmp_path, tiny_model_dir):
    server = start_server_process(fastvideo_cache, tmp_path, "--no-warmup", env_extra={"OMP_NUM_THREADS": "1"})
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            quick = c.post("/v1/videos", json={"prompt": "finished before", **SMALL}).json()["id"]
            assert wait_job(c, quick)["status"] == "completed"
            # ~35 ms a step at 256x256 on one thread: the drain lasts seconds, long enough for the reads below
            slow = c.post("/v1/videos", json={"prompt": "drain me", "size": "256x256", "num_frames": 9,
                                              "num_inference_steps": 150}).json()["id"]
            deadline = time.monotonic() + 60
            while c.get(f"/v1/videos/{slow}").json()["status"] != "in_progress":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            seen: dict[str, Any] = {}
            deadline = time.monotonic() + 60
            try:
                while time.monotonic() < deadline:
                    ready = c.get("/readyz")
                    if ready.json().get("phase") == "draining":
                        seen["readyz"] = (ready.status_code, ready.json()["phase"])
                        seen["health"] = c.get("/health").status_code
                        seen["status"] = c.get(f"/v1/videos/{slow}").json()["status"]
                        seen["content"] = c.get(f"/v1/videos/{quick}/content").status_code
                        refused = c.post("/v1/videos", json={"prompt": "too late", **SMALL})
                        seen["create"] = (refused.status_code, refused.json()["error"]["code"])
                        seen["still_running"] = c.get(f"/v1/videos/{slow}").json()["status"] == "in_progress"
                        break
                    time.sleep(0.02)
            except httpx.HTTPError as exc:
                raise AssertionError(f"{exc!r} during the drain (seen {seen}):\n{server.log()[-3000:]}") from exc
        code = server.proc.wait(120)
    finally:
        stop_server_process(server)
    assert code == 0, server.log()[-3000:]
    assert seen == {"readyz": (503, "draining"), "health": 200, "status": "in_progress", "content": 200,
                    "create": (503, "shutting_down"), "still_running": True}, (seen, server.log()[-2000:])

    again = start_server_process(fastvideo_cache, tmp_path, "--no-warmup")
    try:
        with httpx.Client(base_url=again.base_url, timeout=30) as c:
            listed = {v["id"]: v for v in c.get("/v1/videos", params={"limit": 100}).json()["data"]}
            assert listed[slow]["status"] == "completed" and listed[quick]["status"] == "completed"
            assert listed[slow]["expires_at"] > time.time()
            body = c.get(f"/v1/videos/{slow}/content")
            assert body.status_code == 200 and body.content == (again.output_dir / f"{slow}.mp4").read_bytes()
    finally:
        assert stop_server_process(again) == 0
