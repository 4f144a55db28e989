"""The server's Prometheus metrics: request and UI-event counters and latency histograms, through prometheus_client.

Each server has its own registry (several apps in one test process must not share series), with the standard
process, platform and garbage-collector collectors on it. Route labels come from a fixed list (never the raw
path), so a scanner probing random URLs cannot blow up the number of series. Values that live elsewhere (queue
depth, in-flight, model memory) are read at scrape time by a collector the server registers (app/web/server.py).

Imports nothing from the web stack: the middleware speaks bare ASGI.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Longest prefix wins; anything else is "other".
KNOWN_ROUTES = (
    "/v1/embeddings", "/v1/similarity", "/v1/nlu", "/v1/models", "/metrics", "/healthz", "/readyz",
    "/gradio_api/queue/join", "/gradio_api/queue/data", "/gradio_api/upload", "/gradio_api/file",
    "/gradio_api/info", "/gradio_api/heartbeat", "/gradio_api/run", "/gradio_api/call", "/gradio_api",
    "/config", "/assets", "/static", "/theme.css",
)
BUSY_SURFACES = ("http", "ui")

# The series stay the ones dashboards know: no `<name>_created` twin per counter and histogram. The switch is
# process-wide in prometheus_client; nothing else in the server process uses the library.
prometheus_client.disable_created_metrics()


def route_label(path: str) -> str:
    if path in ("/", ""):
        return "/"
    for known in KNOWN_ROUTES:
        if path == known or path.startswith(known + "/") or path.startswith(known + "="):
            return known
    return "other"


class Metrics:
    """One server's registry and the series the web layer counts itself. prometheus_client's metrics are
    thread-safe: UI handlers run in worker threads, the HTTP middleware on the event loop."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        for standard in (ProcessCollector, PlatformCollector, GCCollector):
            standard(registry=self.registry)
        self.requests = Counter("wenmo_http_requests_total", "HTTP requests by route, method and status",
                                ("route", "method", "status"), registry=self.registry)
        self.latency = Histogram("wenmo_http_request_duration_seconds", "HTTP request latency by route",
                                 ("route",), buckets=BUCKETS_S, registry=self.registry)
        self.events = Counter("wenmo_ui_events_total", "UI / Gradio API events by name and outcome",
                              ("event", "outcome"), registry=self.registry)
        self.event_latency = Histogram("wenmo_ui_event_duration_seconds", "UI / Gradio API event latency by name",
                                       ("event",), buckets=BUCKETS_S, registry=self.registry)
        self.busy = Counter("wenmo_busy_total", "requests answered busy (cap and queue full), by surface",
                            ("surface",), registry=self.registry)
        for surface in BUSY_SURFACES:  # both series from the start, at 0
            self.busy.labels(surface=surface)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_event(self, name: str, outcome: str, seconds: float) -> None:
        self.events.labels(event=name, outcome=outcome).inc()
        self.event_latency.labels(event=name).observe(seconds)
        if outcome == "busy":
            self.busy.labels(surface="ui").inc()

    def count_busy(self, surface: str) -> None:
        self.busy.labels(surface=surface).inc()

    def add_collector(self, collector: Collector) -> None:
        """A collector whose `collect()` yields families computed at each scrape from state owned elsewhere."""
        self.registry.register(collector)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type) for a scrape with this Accept header: the Prometheus text format 0.0.4 by
        default, OpenMetrics or text 1.0.0 to a scraper that asks for it (prometheus_client's negotiation)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class MetricsMiddleware:
    """Outermost layer: counts every answer, including 401/429 from auth and 503 while draining."""

    def __init__(self, app: Callable, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client sees if the app dies before answering

        async def record_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.observe_request(route_label(scope["path"]), scope["method"], status,
                                         time.perf_counter() - start)
