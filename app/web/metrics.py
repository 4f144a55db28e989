"""Counters and latency histograms, written out in the Prometheus text format (version 0.0.4).

Small and dependency-free on purpose: a handful of series does not need prometheus_client. Route labels
come from a fixed list (never the raw path), so a scanner probing random URLs cannot blow up the number
of series. Gauges that live elsewhere (queue depth, in-flight, model memory) are read at scrape time
through `gauges`, a callable the server supplies.

Imports nothing from the web stack: the middleware speaks bare ASGI.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Longest prefix wins; anything else is "other".
KNOWN_ROUTES = (
    "/v1/embeddings", "/v1/similarity", "/v1/nlu", "/metrics", "/healthz", "/readyz",
    "/gradio_api/queue/join", "/gradio_api/queue/data", "/gradio_api/upload", "/gradio_api/file",
    "/gradio_api/info", "/gradio_api/heartbeat", "/gradio_api/run", "/gradio_api/call", "/gradio_api",
    "/config", "/assets", "/static", "/theme.css",
)


def route_label(path: str) -> str:
    if path in ("/", ""):
        return "/"
    for known in KNOWN_ROUTES:
        if path == known or path.startswith(known + "/") or path.startswith(known + "="):
            return known
    return "other"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_S) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.total += seconds
        self.n += 1


class Metrics:
    """Thread-safe: UI handlers run in worker threads, HTTP middleware on the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: defaultdict[tuple[str, str, str], int] = defaultdict(int)  # (route, method, status)
        self.latency: defaultdict[str, Histogram] = defaultdict(Histogram)
        self.events: defaultdict[tuple[str, str], int] = defaultdict(int)  # (ui event, outcome)
        self.event_latency: defaultdict[str, Histogram] = defaultdict(Histogram)
        self.busy: defaultdict[str, int] = defaultdict(int)  # surface → busy answers given
        self.gauges: Callable[[], dict[str, Any]] = dict

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, method, str(status))] += 1
            self.latency[route].observe(seconds)

    def observe_event(self, name: str, outcome: str, seconds: float) -> None:
        with self._lock:
            self.events[(name, outcome)] += 1
            self.event_latency[name].observe(seconds)
            if outcome == "busy":
                self.busy["ui"] += 1

    def count_busy(self, surface: str) -> None:
        with self._lock:
            self.busy[surface] += 1

    def render(self) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        def histogram(name: str, label: str, series: dict[str, Histogram]) -> None:
            for key, h in sorted(series.items()):
                cumulative = 0
                for bound, count in zip((*BUCKETS_S, float("inf")), h.counts, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    out.append(f"{name}_bucket{_labels([(label, key), ('le', le)])} {cumulative}")
                out.append(f"{name}_sum{_labels([(label, key)])} {h.total:.6f}")
                out.append(f"{name}_count{_labels([(label, key)])} {h.n}")

        with self._lock:
            family("wenmo_http_requests_total", "counter", "HTTP requests by route, method and status")
            for (route, method, status), n in sorted(self.requests.items()):
                labels = _labels([("route", route), ("method", method), ("status", status)])
                out.append(f"wenmo_http_requests_total{labels} {n}")
            family("wenmo_http_request_duration_seconds", "histogram", "HTTP request latency by route")
            histogram("wenmo_http_request_duration_seconds", "route", dict(self.latency))
            family("wenmo_ui_events_total", "counter", "UI / Gradio API events by name and outcome")
            for (name, outcome), n in sorted(self.events.items()):
                out.append(f"wenmo_ui_events_total{_labels([('event', name), ('outcome', outcome)])} {n}")
            family("wenmo_ui_event_duration_seconds", "histogram", "UI / Gradio API event latency by name")
            histogram("wenmo_ui_event_duration_seconds", "event", dict(self.event_latency))
            family("wenmo_busy_total", "counter", "requests answered busy (cap and queue full), by surface")
            for surface in ("http", "ui"):
                out.append(f"wenmo_busy_total{_labels([('surface', surface)])} {self.busy.get(surface, 0)}")
        gauges = self.gauges()
        for name, (kind, help_, value) in sorted(gauges.items()):
            family(name, kind, help_)
            if isinstance(value, dict):
                for labels, v in sorted(value.items()):
                    out.append(f"{name}{_labels(labels)} {_num(v)}")
            else:
                out.append(f"{name} {_num(value)}")
        return "\n".join(out) + "\n"


def _num(v: float | int | bool) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


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
