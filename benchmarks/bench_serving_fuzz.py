"""Bounded fuzz and load against a running ``fastvideo serve``: no input gets a 5xx, none is lost, memory stays bounded.

Contract: against ``--base-url`` (127.0.0.1 only: it refuses any other host), one run sends, in this order,
and checks:

1. ``schema``: ``--cases`` random ``POST /v1/videos`` bodies (known fields with values of every wrong type,
   out-of-range numbers, huge integers, non-finite floats, lone surrogates, unknown fields, deep nesting),
   seeded by ``--seed``; every answer is < 500 (accepted jobs are deleted at once).
2. ``malformed``: hand-made bodies (invalid JSON, a 5,000-digit integer, JSON nested 100,000 deep, lone
   surrogates in ``negative_prompt`` and ``sampler``, a huge form ``nvext`` integer, deep form ``nvext``, a
   5,000-digit form seed, an integer too large for a float, a prompt over ``MAX_PROMPT_CHARS``, ``text/plain``
   JSON, no content type): each a 4xx.
3. ``oversized``: a chunked body (no Content-Length) of ``--oversized-mb`` MB: refused with 413 before it is
   all read, and the server's RSS (``--pid``, read from ``/proc``) grows less than ``--max-rss-growth-mb``.
4. ``label_flood``: ``--flood`` requests to random unmatched paths (half under ``/v1/``): ``/metrics`` stays
   under 1 MB.
5. ``burst``: ``--burst`` concurrent small creates: each is answered (200, 429 or 503, never 5xx), and every
   accepted job reaches a terminal state (none lost).
6. ``ws``: junk WebSocket frames (not JSON, huge integers, deep nesting, lone surrogates) each get an
   ``invalid_message`` error frame and the session still answers ``ping``.

Prints one line per check and a summary; ``--output-json`` writes the report. Exit status 1 when a check failed.
CI runs it short (tests/serving/test_fuzz_load.py); as a benchmark run it long, e.g.::

    python benchmarks/bench_serving_fuzz.py --base-url http://127.0.0.1:8000 --pid $(pgrep -f 'fastvideo serve') \\
        --cases 2000 --burst 200 --flood 20000 --oversized-mb 512 --output-json fuzz.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

import httpx

SMALL = {"size": "64x64", "num_frames": 1, "num_inference_steps": 1}
FIELDS = ("prompt", "negative_prompt", "size", "seconds", "width", "height", "num_frames", "fps", "num_inference_steps",
          "guidance_scale", "seed", "shift", "sampler", "continuation_strength", "model", "response_format",
          "input_reference", "nvext", "extra_args", "user", "stream")


@dataclass
class Check:
    name: str
    ok: bool = True
    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def saw(self, status: int, what: str) -> None:
        self.sent += 1
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        if status >= 500:
            self.fail(f"{status} for {what[:200]}")

    def fail(self, problem: str) -> None:
        self.ok = False
        if len(self.problems) < 20:
            self.problems.append(problem)


def rss_mb(pid: int | None) -> float | None:
    """The resident set size of ``pid`` in MB (Linux ``/proc``), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _random_value(rng: random.Random) -> Any:
    choices: list[Callable[[], Any]] = [
        lambda: rng.randint(-10**6, 10**6), lambda: 10 ** rng.randint(15, 400), lambda: -1, lambda: 0,
        lambda: rng.random() * 1e6, lambda: float("nan"), lambda: float("inf"), lambda: True, lambda: None,
        lambda: "", lambda: "x" * rng.randint(1, 3000), lambda: "\ud800", lambda: "64x64", lambda: "0x0",
        lambda: str(rng.randint(-5, 5000)), lambda: [1, 2, 3], lambda: {"a": {"b": [None]}},
        lambda: {"num_frames": rng.choice([0, 10**9, "many"])}, lambda: {"media_passthrough": {"seed": "x"}},
    ]
    return rng.choice(choices)()


def schema_bodies(rng: random.Random, count: int) -> Iterator[dict[str, Any]]:
    for _ in range(count):
        body: dict[str, Any] = {"prompt": "fuzz"} if rng.random() < 0.7 else {}
        for name in rng.sample(FIELDS, rng.randint(1, 5)):
            body[name] = _random_value(rng)
        if rng.random() < 0.1:
            body[f"unknown_{rng.randint(0, 9)}"] = _random_value(rng)
        yield body


def _dumps(body: Any) -> bytes:
    # allow_nan: the server must judge NaN/Infinity itself; surrogates pass as \\ud800 escapes
    return json.dumps(body, allow_nan=True).encode()


def check_schema(client: httpx.Client, cases: int, seed: int) -> Check:
    check = Check("schema")
    rng = random.Random(seed)
    for body in schema_bodies(rng, cases):
        r = client.post("/v1/videos", content=_dumps(body), headers={"content-type": "application/json"})
        check.saw(r.status_code, json.dumps(body)[:200])
        if r.status_code == 200:
            client.delete(f"/v1/videos/{r.json()['id']}")
    return check


def check_malformed(client: httpx.Client) -> Check:
    check = Check("malformed")
    json_ct = {"content-type": "application/json"}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("invalid json", {"content": b"{not json", "headers": json_ct}),
        ("5000-digit integer", {"content": b'{"prompt": "p", "seed": ' + b"9" * 5000 + b"}", "headers": json_ct}),
        ("deep nesting", {"content": b'{"prompt": "p", "nvext": ' + b"[" * 100000 + b"]" * 100000 + b"}",
                          "headers": json_ct}),
        ("lone surrogate", {"content": b'{"prompt": "p", "negative_prompt": "\\ud800"}', "headers": json_ct}),
        ("form nvext huge int", {"data": {"prompt": "p", "nvext": '{"seed": ' + "9" * 5000 + "}"}}),
        ("form nvext deep nesting", {"data": {"prompt": "p", "nvext": "[" * 100000}}),
        ("form 5000-digit seed", {"data": {"prompt": "p", "seed": "9" * 5000}}),
        ("int too large for a float", {"content": b'{"prompt": "p", "guidance_scale": 1' + b"0" * 400 + b"}",
                                       "headers": json_ct}),
        ("lone surrogate in sampler", {"content": b'{"prompt": "p", "sampler": "\\udfff"}', "headers": json_ct}),
        ("prompt over MAX_PROMPT_CHARS", {"content": json.dumps({"prompt": "p" * 16385}).encode(),
                                          "headers": json_ct}),
        ("text/plain json", {"content": b'{"prompt": "p"}', "headers": {"content-type": "text/plain"}}),
        ("no content type", {"content": b'{"prompt": "p"}'}),
    ]
    for what, kwargs in cases:
        r = client.post("/v1/videos", **kwargs)
        check.saw(r.status_code, what)
        if not 400 <= r.status_code < 500:
            check.fail(f"{what}: expected a 4xx, got {r.status_code}")
        elif r.status_code == 200:
            client.delete(f"/v1/videos/{r.json()['id']}")
    return check


def check_oversized(client: httpx.Client, megabytes: int, pid: int | None, max_growth_mb: float) -> Check:
    check = Check("oversized")
    before = rss_mb(pid)
    chunk = b"[" + b"1," * (512 * 1024) + b"1]"

    def body() -> Iterator[bytes]:
        yield b'{"prompt": "p", "extra": '
        for _ in range(max(1, megabytes)):
            yield chunk
        yield b"}"

    try:
        r = client.post("/v1/videos", content=body(), headers={"content-type": "application/json"})
        check.saw(r.status_code, f"{megabytes} MB chunked body")
        if r.status_code != 413:
            check.fail(f"a {megabytes} MB chunked body got {r.status_code}, expected 413")
    except httpx.HTTPError as exc:  # the server may close the connection once it has refused the body
        check.extra["closed"] = type(exc).__name__
    after = rss_mb(pid)
    check.extra.update(rss_before_mb=before, rss_after_mb=after)
    if before is not None and after is not None and after - before > max_growth_mb:
        check.fail(f"server RSS grew {after - before:.0f} MB (> {max_growth_mb} MB)")
    return check


def check_label_flood(client: httpx.Client, count: int) -> Check:
    check = Check("label_flood")
    before = len(client.get("/metrics").content)
    for i in range(count):  # unmatched paths, half under /v1/ (refused 401 before routing when a key is set)
        r = client.get(f"/v1/{uuid.uuid4().hex}/{i}" if i % 2 else f"/{uuid.uuid4().hex}/{i}")
        check.saw(r.status_code, "random path")
    after = len(client.get("/metrics").content)
    check.extra.update(metrics_bytes_before=before, metrics_bytes_after=after)
    if after > max(1_000_000, 2 * before):
        check.fail(f"/metrics grew from {before} to {after} bytes after {count} random paths")
    return check


def check_burst(base_url: str, count: int, timeout_s: float, headers: dict[str, str] | None = None) -> Check:
    check = Check("burst")

    def create(i: int) -> tuple[int, str | None]:
        with httpx.Client(base_url=base_url, timeout=60, headers=headers) as c:
            r = c.post("/v1/videos", json={"prompt": f"burst {i}", **SMALL, "seed": i})
            return r.status_code, r.json().get("id") if r.status_code == 200 else None

    with ThreadPoolExecutor(max_workers=min(64, count)) as pool:
        answers = list(pool.map(create, range(count)))
    accepted = [job_id for status, job_id in answers if job_id]
    for status, _ in answers:
        check.saw(status, "burst create")
        if status not in (200, 429, 503):
            check.fail(f"burst create answered {status}")
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, timeout=60, headers=headers) as c:
        pending = set(accepted)
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                status = c.get(f"/v1/videos/{job_id}").json().get("status")
                if status in ("completed", "failed", "cancelled"):
                    pending.discard(job_id)
                    c.delete(f"/v1/videos/{job_id}")
            time.sleep(0.1)
    check.extra.update(accepted=len(accepted), lost=len(pending))
    if pending:
        check.fail(f"{len(pending)} accepted jobs never finished: {sorted(pending)[:5]}")
    return check


def check_ws(base_url: str, headers: dict[str, str] | None = None) -> Check:
    from websockets.sync.client import connect

    check = Check("ws")
    frames = ["not json", '{"type": "ping", "x": ' + "9" * 5000 + "}", "[" * 100000 + "]" * 100000,
              '{"type": "session_init_v2", "negative_prompt": "\\ud800"}']
    url = base_url.replace("http://", "ws://") + "/v1/stream"
    with connect(url, max_size=None, open_timeout=30, additional_headers=headers) as ws:
        for frame in frames:
            ws.send(frame)
            reply = json.loads(ws.recv(timeout=30))
            check.sent += 1
            if reply.get("type") != "error" or reply.get("code") != "invalid_message":
                check.fail(f"frame {frame[:40]!r} got {reply}")
        ws.send(json.dumps({"type": "ping"}))
        if json.loads(ws.recv(timeout=30)).get("type") != "pong":
            check.fail("the session did not answer ping after the junk frames")
    return check


def run(args: argparse.Namespace) -> list[Check]:
    host = urlparse(args.base_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to fuzz {args.base_url}: only 127.0.0.1 is allowed")
    checks: list[Check] = []
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with httpx.Client(base_url=args.base_url, timeout=120, headers=headers) as client:
        steps: list[tuple[str, Callable[[], Check]]] = [
            ("schema", lambda: check_schema(client, args.cases, args.seed)),
            ("malformed", lambda: check_malformed(client)),
            ("oversized", lambda: check_oversized(client, args.oversized_mb, args.pid, args.max_rss_growth_mb)),
            ("label_flood", lambda: check_label_flood(client, args.flood)),
            ("burst", lambda: check_burst(args.base_url, args.burst, args.burst_timeout_s, headers)),
            ("ws", lambda: check_ws(args.base_url, headers)),
        ]
        for name, step in steps:
            if name in args.skip:
                continue
            t0 = time.perf_counter()
            check = step()
            check.seconds = round(time.perf_counter() - t0, 3)
            checks.append(check)
            print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:12s} sent={check.sent:6d} {check.seconds:7.2f}s "
                  f"statuses={check.statuses} {check.extra} {check.problems[:3]}", flush=True)
    return checks


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="the server (127.0.0.1 only)")
    p.add_argument("--pid", type=int, default=None, help="server process id, to measure its RSS (Linux)")
    p.add_argument("--api-key", default=None, help="the server's API key (sent as Authorization: Bearer)")
    p.add_argument("--cases", type=int, default=300, help="random schema bodies")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--oversized-mb", type=int, default=64, help="size of the chunked oversized body")
    p.add_argument("--max-rss-growth-mb", type=float, default=64.0)
    p.add_argument("--flood", type=int, default=2000, help="requests to random unmatched paths")
    p.add_argument("--burst", type=int, default=50, help="concurrent creates")
    p.add_argument("--burst-timeout-s", type=float, default=300.0, help="time for accepted burst jobs to finish")
    p.add_argument("--skip", nargs="*", default=[], help="checks to skip (schema, malformed, oversized, ...)")
    p.add_argument("--output-json", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checks = run(args)
    failed = [c.name for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks passed" + (f"; failed: {failed}" if failed else ""))
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"args": vars(args), "checks": [asdict(c) for c in checks]}, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
