"""The official ``openai`` SDK against a running server: create, poll, download, list, delete, errors.

Importable (``run(base_url)``, used in-process with the venv's SDK) and runnable as a script
(``python openai_sdk_scenario.py BASE_URL``, used in a subprocess whose PYTHONPATH puts another
SDK release first). It asserts and prints one JSON line ``{"openai": version, ...}`` on success;
any failure raises (non-zero exit as a script). The MP4 is decoded with PyAV.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import time
import warnings
import zlib


def _png_64() -> bytes:
    """A real 64x64 grey PNG (for the input_reference upload), written with the standard library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xc8" * (64 * 3) for _ in range(64))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def decode(data: bytes) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) of an MP4, decoded frame by frame with PyAV."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        fps = float(stream.average_rate)
    assert frames, "no decodable frames"
    return len(frames), frames[0].shape[1], frames[0].shape[0], fps


def run(base_url: str) -> dict:
    import openai
    from openai import OpenAI

    major = int(openai.__version__.split(".")[0])
    warnings.filterwarnings("ignore", message="The Sora API", category=DeprecationWarning)
    client = OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="sk-unused", max_retries=0, timeout=120.0)
    extras = {"num_frames": 5, "num_inference_steps": 2, "fps": 8, "seed": 7}

    video = client.videos.create(prompt="a paper boat on a pond", size="64x64", extra_body=extras)
    assert video.object == "video" and video.id.startswith("video_"), video
    assert video.status in ("queued", "in_progress"), video.status
    assert video.size == "64x64" and video.seconds == "0.625", (video.size, video.seconds)
    statuses = [video.status]
    deadline = time.monotonic() + 120
    while video.status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, "job did not finish in 120s"
        time.sleep(0.05)
        video = client.videos.retrieve(video.id)
        statuses.append(video.status)
    assert video.status == "completed", (video.status, video.error)
    assert video.progress == 100 and video.completed_at is not None and video.error is None

    # raw response: the poll header the SDK's own poll() helper reads
    raw = client.videos.with_raw_response.retrieve(video.id)
    assert int(raw.headers["openai-poll-after-ms"]) > 0 and raw.headers.get("x-request-id")
    polled = client.videos.poll(video.id, poll_interval_ms=50)
    assert polled.status == "completed"

    content = client.videos.download_content(video.id)
    data = content.read() if hasattr(content, "read") else content.content
    assert data[4:8] == b"ftyp", data[:16]
    frames, width, height, fps = decode(data)
    assert (frames, width, height, fps) == (5, 64, 64, 8.0), (frames, width, height, fps)
    thumb = client.videos.download_content(video.id, variant="thumbnail").read()
    assert thumb.startswith(b"\x89PNG")

    listed = [v.id for v in client.videos.list(limit=100, order="desc")]
    assert video.id in listed

    # errors come back as the SDK's typed exceptions, with the param the server named
    try:
        client.videos.create(prompt="x", size="65x64", extra_body={"num_inference_steps": 2})
        raise AssertionError("65x64 was accepted")
    except openai.BadRequestError as exc:
        assert exc.status_code == 400 and exc.param == "size", (exc.status_code, exc.param, exc.body)
    try:
        client.videos.create(prompt="x", model="sora-2", size="64x64")
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as exc:
        assert exc.code == "model_not_found", exc.body
    # input_reference is a file upload (multipart in both SDK majors); this model is text-to-video
    try:
        client.videos.create(prompt="x", size="64x64", input_reference=("ref.png", _png_64(), "image/png"),
                             extra_body=extras)
        raise AssertionError("an input_reference was accepted by a text-to-video model")
    except openai.BadRequestError as exc:
        assert exc.param == "input_reference" and "text-to-video" in str(exc), exc.body  # the image arrived
    assert [v.id for v in client.videos.list(limit=100, order="desc")] == listed, "a refused request created a job"

    deleted = client.videos.delete(video.id)
    assert deleted.id == video.id and deleted.deleted is True and deleted.object == "video.deleted"
    try:
        client.videos.retrieve(video.id)
        raise AssertionError("a deleted video is still there")
    except openai.NotFoundError as exc:
        assert exc.status_code == 404
    return {"openai": openai.__version__, "major": major, "statuses": statuses, "bytes": len(data)}


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1])))
