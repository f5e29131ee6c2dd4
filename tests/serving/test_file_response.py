"""OpenFileResponse: the whole file, single byte ranges (206 / 416), validators, HEAD, and the handle closed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from fastvideo.serving.file_response import OpenFileResponse, parse_range  # noqa: E402

DATA = bytes(range(256)) * 4000  # 1,024,000 bytes: several chunks


@pytest.fixture
def client(tmp_path: Path):
    path = tmp_path / "v.mp4"
    path.write_bytes(DATA)
    handles: list[io.BufferedReader] = []
    app = FastAPI()

    @app.api_route("/f", methods=["GET", "HEAD"])
    def serve() -> OpenFileResponse:
        handle = open(path, "rb")
        handles.append(handle)
        return OpenFileResponse(handle, media_type="video/mp4", filename="v.mp4")

    with TestClient(app) as c:
        yield c, handles


@pytest.mark.parametrize("header,expected", [
    (None, None), ("bytes=0-9", (0, 9)), ("bytes=10-", (10, 99)), ("bytes=-5", (95, 99)), ("bytes=90-500", (90, 99)),
    ("bytes=100-", False), ("bytes=5-4", False), ("bytes=-0", False), ("bytes=0-1,5-6", None), ("items=0-1", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


def test_whole_file_ranges_and_validators(client):
    c, handles = client
    whole = c.get("/f")
    assert whole.status_code == 200 and whole.content == DATA and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-length"] == str(len(DATA))
    assert whole.headers["etag"] and whole.headers["last-modified"]
    part = c.get("/f", headers={"range": "bytes=300000-700001"})
    assert part.status_code == 206 and part.content == DATA[300000:700002]
    assert part.headers["content-range"] == f"bytes 300000-700001/{len(DATA)}"
    tail = c.get("/f", headers={"range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == DATA[-10:]
    bad = c.get("/f", headers={"range": f"bytes={len(DATA)}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(DATA)}" and bad.content == b""
    head = c.head("/f")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(DATA))
    assert all(h.closed for h in handles) and len(handles) == 5
