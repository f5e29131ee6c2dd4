"""Serving test fixtures (helpers live in ``serving_utils``)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from serving_utils import LiveServer, start_server_process, stop_server_process


@pytest.fixture(scope="session")
def live_server(tiny_model_dir: Path, fastvideo_cache: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real ``fastvideo serve`` process on the built-in model (warmup included)."""
    server = start_server_process(fastvideo_cache, tmp_path_factory.mktemp("live-server"), "--max-queue", "8")
    yield server
    code = stop_server_process(server)
    assert code == 0, f"server exited with {code}:\n{server.log()[-3000:]}"



@pytest.fixture
def client(live_server: LiveServer):
    httpx = pytest.importorskip("httpx")
    with httpx.Client(base_url=live_server.base_url, timeout=120.0) as c:
        yield c
