"""Prometheus metrics of one server process (``/metrics``).

Contract: :class:`ServingMetrics` owns a private ``CollectorRegistry`` (never the global default,
so several apps in one process - tests, router + server - do not collide) holding:
``fastvideo_queue_depth`` / ``fastvideo_running_jobs`` (gauges read live from the service),
``fastvideo_jobs_total{kind,status}``, ``fastvideo_job_failures_total{kind,code}``,
``fastvideo_e2e_latency_seconds{kind}`` (created -> finished), ``fastvideo_queue_time_seconds{kind}``,
``fastvideo_generation_time_seconds{kind}`` (started -> finished), ``fastvideo_step_time_seconds``
(one observation per denoising step), ``fastvideo_queue_rejections_total{reason}``,
``fastvideo_http_requests_total{method,route,status}``, ``fastvideo_http_request_seconds{method,route}``,
``fastvideo_stream_sessions_active``, ``fastvideo_stream_sessions_total{outcome}``,
``fastvideo_stream_time_to_first_fragment_seconds`` and ``fastvideo_ready`` (1 after warmup).
``render()`` returns the text exposition and its content type.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600, 1200)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30)


class ServingMetrics:
    """All metrics of one server (see module contract)."""

    def __init__(self, *, queue_depth: Callable[[], float] = lambda: 0, running: Callable[[], float] = lambda: 0,
                 ready: Callable[[], float] = lambda: 0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_depth = Gauge("fastvideo_queue_depth", "Jobs waiting in the queue", registry=r)
        self.queue_depth.set_function(queue_depth)
        self.running = Gauge("fastvideo_running_jobs", "Jobs running on the generator", registry=r)
        self.running.set_function(running)
        self.ready = Gauge("fastvideo_ready", "1 once warmup finished and the server takes jobs", registry=r)
        self.ready.set_function(ready)
        self.jobs = Counter("fastvideo_jobs_total", "Finished jobs by kind and final status", ["kind", "status"],
                            registry=r)
        self.failures = Counter("fastvideo_job_failures_total", "Failed or cancelled jobs by error code",
                                ["kind", "code"], registry=r)
        self.e2e = Histogram("fastvideo_e2e_latency_seconds", "Job latency from submit to finish", ["kind"],
                             buckets=LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("fastvideo_queue_time_seconds", "Time a job waited before it started", ["kind"],
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.generation_time = Histogram("fastvideo_generation_time_seconds", "Time from start to finish of a job",
                                         ["kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.step_time = Histogram("fastvideo_step_time_seconds", "Wall time of one denoising step",
                                   buckets=STEP_BUCKETS, registry=r)
        self.rejections = Counter("fastvideo_queue_rejections_total", "Requests refused before a job existed",
                                  ["reason"], registry=r)
        self.http_requests = Counter("fastvideo_http_requests_total", "HTTP requests answered",
                                     ["method", "route", "status"], registry=r)
        self.http_latency = Histogram("fastvideo_http_request_seconds", "HTTP request handling time",
                                      ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.sessions_active = Gauge("fastvideo_stream_sessions_active", "Open /v1/stream sessions", registry=r)
        self.sessions = Counter("fastvideo_stream_sessions_total", "Ended /v1/stream sessions by final state",
                                ["outcome"], registry=r)
        self.segments = Counter("fastvideo_stream_segments_total", "Streamed segments by outcome", ["outcome"],
                                registry=r)
        self.ttff = Histogram("fastvideo_stream_time_to_first_fragment_seconds",
                              "From a segment request to its first fMP4 fragment", buckets=LATENCY_BUCKETS,
                              registry=r)

    def observe_job(self, kind: str, status: str, *, e2e_s: float | None, queue_s: float | None,
                    generation_s: float | None, error_code: str | None = None) -> None:
        """Record one finished job."""
        self.jobs.labels(kind, status).inc()
        if status != "completed":
            self.failures.labels(kind, error_code or status).inc()
        if e2e_s is not None:
            self.e2e.labels(kind).observe(max(e2e_s, 0.0))
        if queue_s is not None:
            self.queue_time.labels(kind).observe(max(queue_s, 0.0))
        if generation_s is not None:
            self.generation_time.labels(kind).observe(max(generation_s, 0.0))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
