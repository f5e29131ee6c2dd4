"""Limits at the HTTP edge (issue 13): body and prompt limits, metrics label cardinality, parse errors,
the API key, log lines, ``/v1/models``, content types, image seeds, the OpenAPI schema, and the server's
memory under an oversized chunked body and a label flood. Real uvicorn on 127.0.0.1 over the tiny model."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastvideo.api import ConfigError, parse_config  # noqa: E402

from serving_utils import SMALL, inproc_server, wait_job  # noqa: E402

LIMIT = 64 * 1024


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def chunked_post(base_url: str, path: str, total: int, chunk: int = 64 * 1024, headers: dict | None = None,
                 timeout_s: float = 20.0) -> tuple[int, bytes]:
    """POST ``total`` bytes of a JSON-looking body with ``Transfer-Encoding: chunked`` (no Content-Length) on a
    raw socket; stop sending when the server stops reading. Returns (status, response body)."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
                "Transfer-Encoding: chunked"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        payload = b'{"prompt": "' + b"a" * (chunk - 12)
        sent = 0
        try:
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(payload), payload))
                sent += len(payload)
                payload = b"a" * chunk
            sock.sendall(b'3\r\n"}\n\r\n0\r\n\r\n')
        except OSError:  # the server answered and closed while we were still sending
            pass
        data = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and b"\r\n\r\n" not in data:
            try:
                part = sock.recv(65536)
            except OSError:
                break
            if not part:
                break
            data += part
        head_part, _, body = data.partition(b"\r\n\r\n")
        status = int(head_part.split(b" ", 2)[1]) if head_part.startswith(b"HTTP/1.1") else 0
        return status, body
    finally:
        sock.close()


# ----------------------------------------------------------------------------------------- item 1: limits
def test_chunked_body_over_the_limit_gets_413(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, server={"max_body_bytes": LIMIT}) as srv:
        status, body = chunked_post(srv.base_url, "/v1/videos", total=4 * 1024 * 1024)
        assert status == 413, body[:300]
        assert b"request_too_large" in body
        # a chunked body under the limit is read as usual
        with httpx.Client(base_url=srv.base_url, timeout=60) as c:
            small = json.dumps({"prompt": "chunked but small", **SMALL}).encode()
            r = c.post("/v1/videos", content=iter([small[:10], small[10:]]),
                       headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text
            assert wait_job(c, r.json()["id"])["status"] == "completed"


def test_prompt_length_is_limited_at_the_edge_and_configurable(tiny_generator, tmp_path):
    from fastvideo.api import MAX_PROMPT_CHARS
    from fastvideo.serving.config import ServeConfig

    with pytest.raises(ConfigError) as exc:
        parse_config(ServeConfig, {"server": {"max_prompt_chars": MAX_PROMPT_CHARS + 1}})
    assert exc.value.path == "server.max_prompt_chars"
    with pytest.raises(ConfigError):
        parse_config(ServeConfig, {"server": {"max_prompt_chars": 0}})
    with inproc_server(tiny_generator, tmp_path, server={"max_prompt_chars": 100}) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=60) as c:
            for body, param in (({"prompt": "p" * 101}, "prompt"), ({"prompt": "x", "negative_prompt": "n" * 101},
                                                                     "negative_prompt"),
                                ({"prompt": "x", "nvext": {"negative_prompt": "n" * 101}}, "nvext.negative_prompt")):
                r = c.post("/v1/videos", json={**body, **SMALL})
                assert r.status_code == 400, r.text
                err = error_of(r)
                assert err["param"] == param and "100" in err["message"], err
            r = c.post("/v1/images/generations", json={"prompt": "p" * 101, "size": "64x64"})
            assert r.status_code == 400 and error_of(r)["param"] == "prompt"
            r = c.post("/v1/videos", data={"prompt": "p" * 101, **{k: str(v) for k, v in SMALL.items()}})
            assert r.status_code == 400 and error_of(r)["param"] == "prompt"
            ok = c.post("/v1/videos", json={"prompt": "p" * 100, **SMALL})
            assert ok.status_code == 200, ok.text
            assert wait_job(c, ok.json()["id"])["status"] == "completed"


def test_prompt_length_is_limited_on_the_stream_too(tiny_generator, tmp_path):
    pytest.importorskip("websockets")
    from websockets.sync.client import connect

    with inproc_server(tiny_generator, tmp_path, server={"max_prompt_chars": 100}) as srv:
        url = srv.base_url.replace("http://", "ws://") + "/v1/stream"
        with connect(url, max_size=None, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "session_init_v2", "width": 64, "height": 64, "num_frames": 5,
                                "num_inference_steps": 2}))
            assert json.loads(ws.recv(timeout=30))["type"] == "ltx2_stream_start"
            for bad, param in (({"prompt": "p" * 101}, "prompt"), ({"prompt": "p", "negative_prompt": "n" * 101},
                                                                    "negative_prompt")):
                ws.send(json.dumps({"type": "segment_prompt_source", **bad}))
                err = json.loads(ws.recv(timeout=30))
                assert (err["type"], err["code"], err["param"]) == ("error", "invalid_request", param), err
                assert "100" in err["message"], err


def test_records_keep_a_bounded_prompt_and_listing_caps_its_body(tiny_generator, tmp_path, monkeypatch):
    from fastvideo.serving import openai_routes

    with inproc_server(tiny_generator, tmp_path, server={"max_prompt_chars": 16384}) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=60) as c:
            ids = []
            for i in range(3):
                r = c.post("/v1/videos", json={"prompt": f"{i} " + "\u00e9" * 16000, **SMALL})
                assert r.status_code == 200, r.text
                assert len(r.json()["prompt"]) <= openai_routes.RECORD_PROMPT_CHARS
                ids.append(r.json()["id"])
            for video_id in ids:
                wait_job(c, video_id)
            listed = c.get("/v1/videos", params={"limit": 100})
            assert all(len(v["prompt"]) <= openai_routes.RECORD_PROMPT_CHARS for v in listed.json()["data"])
            # a page stops before its body would pass the byte cap, and says there is more
            one_item = len(json.dumps(listed.json()["data"][0]))
            monkeypatch.setattr(openai_routes, "LIST_MAX_BYTES", one_item + 200)
            seen, after = [], None
            for _ in range(10):
                page = c.get("/v1/videos", params={"limit": 100, **({"after": after} if after else {})})
                assert len(page.content) <= one_item + 200 + 300, len(page.content)
                body = page.json()
                seen += [v["id"] for v in body["data"]]
                if not body["has_more"]:
                    break
                after = body["last_id"]
            assert sorted(seen) == sorted(ids)


# ----------------------------------------------------------------------------------------- item 2: metrics
def test_metrics_label_by_route_template_and_unmatched(tiny_generator, tmp_path):
    with inproc_server(tiny_generator, tmp_path, server={"api_key": "k"}) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=60) as c:
            c.get("/v1/videos")  # 401 before routing: still labelled by its template
            c.get("/v1/videos/video_abc", headers={"authorization": "Bearer k"})  # 404 from a matched route
            before = len(c.get("/metrics").content)
            for i in range(300):
                c.get(f"/v1/{uuid.uuid4().hex}/{i}")
                c.post(f"/{uuid.uuid4().hex}", json={})
                c.get(f"/x%0A{uuid.uuid4().hex}")
            text = c.get("/metrics").text
            assert len(text.encode()) - before < 16 * 1024, len(text.encode()) - before
            assert 'route="unmatched"' in text
            assert 'route="/v1/videos",status="401"' in text
            assert 'route="/v1/videos/{video_id}",status="404"' in text


def test_ever_new_unknown_fields_are_remembered_in_bounded_memory(tiny_generator, tmp_path, caplog):
    """Unknown fields are logged once each; a client sending a new name with every request cannot grow what
    the server remembers (nor the log) without bound."""
    from fastvideo.serving.app_state import MAX_REPORTED_EXTRAS

    caplog.set_level(logging.WARNING, logger="fastvideo.serving")
    with inproc_server(tiny_generator, tmp_path, server={"max_prompt_chars": 100}) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=60) as c:
            for i in range(MAX_REPORTED_EXTRAS + 50):  # refused (prompt too long) after the extras are read
                r = c.post("/v1/videos", json={"prompt": "p" * 101, f"x{uuid.uuid4().hex}{'y' * 200}": i})
                assert r.status_code == 400
            remembered = srv.app.state.server._reported_extras
    assert len(remembered) <= MAX_REPORTED_EXTRAS + 1
    reported = [r for r in caplog.records if "is not supported and is ignored" in r.getMessage()]
    assert len(reported) == MAX_REPORTED_EXTRAS and all(len(r.getMessage()) < 200 for r in reported)


# ----------------------------------------------------------------------------------------- item 3: parse errors
BIG_INT = "1" * 5000
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("raw", [
    '{"prompt": "x", "seed": %s}' % BIG_INT,
    '{"prompt": "x", "nvext": {"seed": %s}}' % BIG_INT,
    '{"prompt": "x", "nvext": %s}' % DEEP,
    DEEP,
    '{"prompt": "x", "extra": %s}' % ("[" * 200 + "]" * 200),
    '{"prompt": "x", "guidance_scale": 1%s}' % ("0" * 400),  # an int too large for a float
])
def test_huge_ints_and_deep_json_get_400(tiny_generator, tmp_path, raw):
    with inproc_server(tiny_generator, tmp_path) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=60) as c:
            r = c.post("/v1/videos", content=raw.encode(), headers={"content-type": "application/json"})
            assert r.status_code == 400, r.text[:300]
            error_of(r)


def test_parse_errors_in_forms_and_lone_surrogates_get_400(tiny_generator, tmp_path):
    small = {k: str(v) for k, v in SMALL.items()}
    with inproc_server(tiny_generator, tmp_path) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=60) as c:
            for data in ({"prompt": "x", "nvext": '{"seed": %s}' % BIG_INT, **small},
                         {"prompt": "x", "nvext": '{"seed": %s}' % ("[" * 100_000), **small},
                         {"prompt": "x", "seed": BIG_INT, **small}):
                r = c.post("/v1/videos", data=data)
                assert r.status_code == 400, r.text[:300]
                error_of(r)
            for raw, param in (('{"prompt": "x\\ud800"}', "prompt"),
                               ('{"prompt": "x", "negative_prompt": "bad \\udfff"}', "negative_prompt"),
                               ('{"prompt": "x", "nvext": {"negative_prompt": "\\ud800"}}', "nvext.negative_prompt"),
                               ('{"prompt": "x", "sampler": "\\ud800"}', "sampler")):
                r = c.post("/v1/videos", content=raw.encode(), headers={"content-type": "application/json"})
                assert r.status_code == 400, r.text[:300]
                err = error_of(r)
                assert err["param"] == param and "surrogate" in err["message"], err
            assert c.get("/v1/videos").json()["data"] == []  # no job was created


# ----------------------------------------------------------------------------------------- item 8: smaller
def test_api_key_is_compared_in_constant_time(tiny_generator, tmp_path, monkeypatch):
    from fastvideo.serving import middleware

    calls = []
    real = middleware.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(middleware.hmac, "compare_digest", spy)
    with inproc_server(tiny_generator, tmp_path, server={"api_key": "s3cret"}) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=60) as c:
            assert c.get("/v1/videos", headers={"authorization": "Bearer wrong"}).status_code == 401
            assert c.get("/v1/videos", headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert len(calls) >= 2


def test_control_characters_in_a_path_cannot_forge_a_log_line(tiny_generator, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="fastvideo.serving")
    with inproc_server(tiny_generator, tmp_path) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=60) as c:
            c.get("/v1/x%0A2026-01-01 INFO forged%0D%1B[31m")
    lines = [r.getMessage() for r in caplog.records if "forged" in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog.records][-5:]
    for line in lines:
        assert not any(ch in line for ch in "\n\r\x1b"), repr(line)
        assert "\\n" in line or "%0A" in line


def test_models_do_not_leak_the_server_path(client, tiny_model_dir):
    for path in ("/v1/models", "/v1/models/fastvideo-tiny"):
        r = client.get(path)
        assert r.status_code == 200
        assert str(tiny_model_dir) not in r.text and os.sep not in r.json().get("root", ""), r.text


def test_post_needs_a_json_or_form_content_type(client):
    body = json.dumps({"prompt": "x", **SMALL}).encode()
    for ctype in ("text/plain", "text/plain;charset=UTF-8", None):
        headers = {"content-type": ctype} if ctype else {}
        for path in ("/v1/videos", "/v1/videos/generations", "/v1/images/generations"):
            r = client.post(path, content=body, headers=headers)
            assert r.status_code == 415, (path, ctype, r.text)
            assert error_of(r)["code"] == "unsupported_media_type"
    ok = client.post("/v1/videos", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200, ok.text
    assert wait_job(client, ok.json()["id"])["status"] == "completed"


def test_images_with_n_2_and_the_largest_seed(client):
    r = client.post("/v1/images/generations", json={"prompt": "x", "size": "64x64", "num_inference_steps": 2,
                                                    "n": 2, "seed": 2**63 - 1})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2


def test_openapi_schema_describes_what_the_server_does(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/v1/videos", "/v1/videos/generations", "/v1/images/generations"):
        op = paths[path]["post"]
        content = op["requestBody"]["content"]
        assert "application/json" in content and "multipart/form-data" in content, (path, content.keys())
        props = content["application/json"]["schema"]["properties"]
        assert "prompt" in props and "model" in props, props.keys()
        assert "prompt" in content["application/json"]["schema"].get("required", [])
    assert "input_reference" in paths["/v1/videos"]["post"]["requestBody"]["content"]["multipart/form-data"][
        "schema"]["properties"]
    for path, methods in paths.items():
        for method, op in methods.items():
            responses = op["responses"]
            assert "422" not in responses, (method, path)
            if path.startswith("/v1/"):
                err = responses["400"]["content"]["application/json"]["schema"]
                assert "error" in json.dumps(err), (method, path)
    video = paths["/v1/videos/{video_id}/content"]["get"]["responses"]["200"]["content"]
    assert set(video) == {"video/mp4", "image/png"}, video.keys()
    image = paths["/v1/images/{image_id}/content"]["get"]["responses"]["200"]["content"]
    assert set(image) == {"image/png"}, image.keys()


def test_the_router_limits_bodies_and_compares_its_key_in_constant_time(monkeypatch):
    """``fastvideo router-serve`` in front of the servers: a body past its max_body_bytes (chunked or not) is a
    413 and reaches no replica; its API key goes through hmac.compare_digest."""
    from fastapi.testclient import TestClient

    from fastvideo.serving import router as router_module
    from fastvideo.serving.config import HealthCheckConfig, ReplicaEndpoint, RouterConfig

    calls = []
    real = router_module.hmac.compare_digest
    monkeypatch.setattr(router_module.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    sent = []

    async def send_to(*args, **kwargs):  # no replica may be contacted for a refused body
        sent.append(args)
        raise AssertionError("forwarded")

    monkeypatch.setattr(router_module, "send_to", send_to)

    async def probe(url: str, timeout: float) -> bool:
        return True

    config = RouterConfig(replicas=[ReplicaEndpoint(url="http://r1.invalid:1")], api_key="k", max_body_bytes=LIMIT,
                          health_check=HealthCheckConfig(interval_s=30.0))
    auth = {"authorization": "Bearer k", "content-type": "application/json"}
    with TestClient(router_module.build_router_app(config, probe=probe)) as c:
        assert c.post("/v1/videos", content=b"{}", headers={"authorization": "Bearer nope"}).status_code == 401
        big = b'{"prompt": "' + b"a" * (2 * LIMIT) + b'"}'
        for content in (big, iter([big[i:i + 4096] for i in range(0, len(big), 4096)])):  # sized, then chunked
            r = c.post("/v1/videos", content=content, headers=auth)
            assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text
    assert sent == [] and len(calls) >= 3


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_router_refuses_a_body_cap_that_is_not_a_positive_byte_count(value):
    from fastvideo.api import ConfigError
    from fastvideo.serving.config import ReplicaEndpoint, RouterConfig

    config = RouterConfig(replicas=[ReplicaEndpoint(url="http://127.0.0.1:1")], max_body_bytes=value)
    with pytest.raises(ConfigError) as err:
        config.validate()
    assert err.value.path == "max_body_bytes"


# ----------------------------------------------------------------------------------------- memory stays bounded
def _vmrss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


MB = 1024 * 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the server's RSS from Linux /proc")
def test_server_memory_stays_bounded_under_a_big_chunked_body_and_a_label_flood(tiny_model_dir, fastvideo_cache,
                                                                                 tmp_path):
    """A real ``fastvideo serve`` process (server.max_body_bytes = 1 MB, an API key): its RSS
    (``/proc/<pid>/status``) before and after a 200 MB chunked body and 2,000 requests to random paths
    (half of them under ``/v1/``, refused 401 before routing), and the growth of ``/metrics``.

    The bound: the server holds at most max_body_bytes (1 MB) of a body at once and one metrics label for every
    unmatched path, so what can grow is allocator noise; 32 MB leaves room for that and is far below what an
    unbounded read costs (the whole 200 MB body, held twice while it is joined) or 2,000 new label sets."""
    from serving_utils import start_server_process, stop_server_process

    server = start_server_process(fastvideo_cache, tmp_path, "--no-warmup", "--api-key", "k",
                                  f"server.max_body_bytes={MB}")
    assert server.proc is not None
    pid = server.proc.pid
    auth = {"Authorization": "Bearer k"}
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as c:
            for i in range(50):  # warm the code paths once: 404s, 401s, /metrics, a refused body
                c.get(f"/warm/{uuid.uuid4().hex}/{i}")
                c.get(f"/v1/warm/{uuid.uuid4().hex}/{i}")
            c.get("/metrics")
            assert chunked_post(server.base_url, "/v1/videos", total=4 * MB, chunk=MB, headers=auth)[0] == 413
            before = _vmrss_bytes(pid)
            metrics_before = len(c.get("/metrics").content)
            status, body = chunked_post(server.base_url, "/v1/videos", total=200 * MB, chunk=MB, headers=auth)
            assert status == 413 and b"request_too_large" in body, body[:300]
            for i in range(1000):  # unmatched paths (404) and, before auth, /v1/ paths without the key (401)
                assert c.get(f"/{uuid.uuid4().hex}/{i}").status_code == 404
                assert c.get(f"/v1/{uuid.uuid4().hex}/{i}").status_code == 401
            metrics_after = len(c.get("/metrics").content)
            grown = _vmrss_bytes(pid) - before
            assert c.get("/health").status_code == 200  # still serving
    finally:
        stop_server_process(server)
    assert grown < 32 * MB, f"server RSS grew by {grown / MB:.1f} MB"
    assert metrics_after - metrics_before < 4096, (metrics_before, metrics_after)
