"""The bounded fuzz and load run (benchmarks/bench_serving_fuzz.py, short) against a real server on 127.0.0.1:
no 5xx for any input, every accepted job of a burst finishes, a chunked oversized body is refused without the
server's memory growing, random paths do not grow /metrics, junk WebSocket frames are answered."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("websockets")

from serving_utils import inproc_server  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_serving_fuzz.py"

pytestmark = pytest.mark.timeout(600)


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_serving_fuzz", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_short_fuzz_and_load_run(tiny_generator, tmp_path, capsys):
    bench = _load_bench()
    with inproc_server(tiny_generator, tmp_path, queue={"max_queue": 4}) as srv:
        report = tmp_path / "fuzz.json"
        code = bench.main(["--base-url", srv.base_url, "--pid", str(os.getpid()), "--cases", "150",
                           "--oversized-mb", "96", "--max-rss-growth-mb", "64", "--flood", "400", "--burst", "50",
                           "--output-json", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    import json

    checks = {c["name"]: c for c in json.loads(report.read_text())["checks"]}
    assert set(checks) == {"schema", "malformed", "oversized", "label_flood", "burst", "ws"}
    assert checks["burst"]["extra"]["accepted"] >= 4 and checks["burst"]["extra"]["lost"] == 0
    assert checks["schema"]["sent"] == 150 and checks["label_flood"]["sent"] == 400


def test_the_fuzzer_refuses_any_host_but_localhost():
    bench = _load_bench()
    with pytest.raises(SystemExit, match="only 127.0.0.1"):
        bench.main(["--base-url", "http://example.com:8000"])
