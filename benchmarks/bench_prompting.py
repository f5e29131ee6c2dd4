"""Cost of the prompt pipeline itself: the enhancer's overhead per call and per fallback, and the safety check.

Contract: runs a stdlib chat-completions server on 127.0.0.1 (answers at once, or HTTP 500 for the "bad"
one) and reports, as one JSON line, the median wall time of ``PromptEnhancer.enhance`` through it
(``direct``) and with one HTTP 500 fallback first (``fallback``), over ``--n`` calls each; then trains a
small fastText classifier (200 generated lines) and reports its first ``classify`` (the load) and the
median of later ones. Nothing leaves the machine. Run::

    python benchmarks/bench_prompting.py --n 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fastvideo.serving.prompting import OpenAICompatibleProvider, PromptEnhancer, PromptSafetyFilter

_REPLY = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "a fox in snow"}}]})


def _server(status: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = _REPLY.encode() if status == 200 else b'{"error": "scripted"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


async def _median_ms(enhancer: PromptEnhancer, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await enhancer.enhance("a fox")
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def _classifier(folder: Path) -> str:
    import fasttext  # type: ignore[import-not-found,import-untyped,unused-ignore]

    rng = random.Random(0)
    words = {"unsafe": ["gore", "blood", "corpse", "wound", "severed", "bloody"],
             "safe": ["kitten", "meadow", "sunny", "beach", "kite", "fox", "snow", "lake"]}
    filler = ["a", "the", "with", "in", "on", "and", "scene", "close", "shot", "slow", "camera", "at"]
    lines = [f"__label__{label} " + " ".join(rng.sample(ws, 2) + rng.sample(filler, 4))
             for label, ws in words.items() for _ in range(100)]
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    model = fasttext.train_supervised(input=str(folder / "train.txt"), epoch=25, lr=0.5, thread=1, seed=7,
                                      verbose=0)
    model.save_model(str(folder / "safety.bin"))
    return str(folder / "safety.bin")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50, help="calls per measurement")
    args = parser.parse_args(argv)
    ok, bad = _server(200), _server(500)
    try:
        direct = PromptEnhancer(providers=[OpenAICompatibleProvider(base_url=_url(ok), name="ok")], model="m")
        fallback = PromptEnhancer(providers=[OpenAICompatibleProvider(base_url=_url(bad), name="bad"),
                                             OpenAICompatibleProvider(base_url=_url(ok), name="ok")], model="m")
        out = {"enhance_direct_ms": asyncio.run(_median_ms(direct, args.n)),
               "enhance_fallback_ms": asyncio.run(_median_ms(fallback, args.n))}
    finally:
        for server in (ok, bad):
            server.shutdown()
            server.server_close()
    with tempfile.TemporaryDirectory() as tmp:
        safety = PromptSafetyFilter(classifier_path=_classifier(Path(tmp)))
        t0 = time.perf_counter()
        safety.classify("a fox")
        out["safety_first_ms"] = (time.perf_counter() - t0) * 1000.0
        times = []
        for _ in range(max(args.n, 100)):
            t0 = time.perf_counter()
            safety.classify("a fox running through fresh snow at sunrise")
            times.append((time.perf_counter() - t0) * 1e6)
        out["safety_us"] = statistics.median(times)
    print(json.dumps({k: round(v, 3) for k, v in out.items()}))
    return out


if __name__ == "__main__":
    main()
