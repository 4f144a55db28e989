"""app/web/metrics.py without a server: each Metrics has its own prometheus_client registry (several servers in one
process keep their own counts), the series keep the names the README lists, and route labels stay a fixed set."""

from __future__ import annotations

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from app.web.metrics import BUCKETS_S, Metrics, route_label


def samples(metrics: Metrics, accept: str | None = None) -> dict[tuple[str, tuple], float]:
    body, _ = metrics.render(accept)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_two_servers_in_one_process_count_apart():
    a, b = Metrics(), Metrics()  # a second registry with the same names: no "Duplicated timeseries" error
    for seconds in (0.004, 0.3, 0.3):
        a.observe_request("/v1/embeddings", "POST", 200, seconds)
    b.observe_request("/v1/embeddings", "POST", 429, 0.001)
    sa, sb = samples(a), samples(b)
    route = (("route", "/v1/embeddings"),)
    assert sa[("wenmo_http_requests_total", (("method", "POST"), *route, ("status", "200")))] == 3
    assert ("wenmo_http_requests_total", (("method", "POST"), *route, ("status", "429"))) not in sa
    assert sb[("wenmo_http_requests_total", (("method", "POST"), *route, ("status", "429")))] == 1
    # Cumulative buckets with the bounds the dashboards use, and the sum of the observations.
    assert [sa[("wenmo_http_request_duration_seconds_bucket", (("le", le), *route))]
            for le in ("0.005", "0.25", "0.5", "60.0", "+Inf")] == [1, 1, 3, 3, 3]
    assert sa[("wenmo_http_request_duration_seconds_sum", route)] == pytest.approx(0.604)
    assert BUCKETS_S[0] == 0.005 and BUCKETS_S[-1] == 60.0


def test_busy_answers_count_per_surface_from_zero():
    m = Metrics()
    assert samples(m)[("wenmo_busy_total", (("surface", "http"),))] == 0
    assert samples(m)[("wenmo_busy_total", (("surface", "ui"),))] == 0
    m.count_busy("http")
    m.observe_event("embed", "busy", 0.002)  # a UI event answered busy counts for the UI surface
    m.observe_event("embed", "ok", 0.2)
    s = samples(m)
    assert s[("wenmo_busy_total", (("surface", "http"),))] == 1 and s[("wenmo_busy_total", (("surface", "ui"),))] == 1
    assert s[("wenmo_ui_events_total", (("event", "embed"), ("outcome", "busy")))] == 1
    assert s[("wenmo_ui_event_duration_seconds_count", (("event", "embed"),))] == 2


def test_exposed_names_are_the_documented_ones_and_no_created_twins():
    m = Metrics()
    m.observe_request("/metrics", "GET", 200, 0.001)
    m.observe_event("nlu", "invalid", 0.0)
    body, content_type = m.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    for family in ("wenmo_http_requests_total", "wenmo_ui_events_total", "wenmo_busy_total"):
        assert f"# TYPE {family} counter\n" in text
    assert "# TYPE wenmo_http_request_duration_seconds histogram\n" in text
    names = {name for name, _ in samples(m)}
    assert {n for n in names if n.startswith("wenmo_")} == {
        "wenmo_http_requests_total", "wenmo_http_request_duration_seconds_bucket",
        "wenmo_http_request_duration_seconds_count", "wenmo_http_request_duration_seconds_sum",
        "wenmo_ui_events_total", "wenmo_ui_event_duration_seconds_bucket", "wenmo_ui_event_duration_seconds_count",
        "wenmo_ui_event_duration_seconds_sum", "wenmo_busy_total"}
    # The standard collectors, on this registry.
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"} <= names


def test_a_scraper_asking_for_openmetrics_gets_it():
    m = Metrics()
    body, content_type = m.render("application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.decode().endswith("# EOF\n")


def test_added_collector_is_read_at_each_scrape():
    depth = [3]

    class Depth:
        def collect(self):
            yield GaugeMetricFamily("wenmo_queue_depth", "requests waiting", depth[0])

    m = Metrics()
    m.add_collector(Depth())
    assert samples(m)[("wenmo_queue_depth", ())] == 3
    depth[0] = 0
    assert samples(m)[("wenmo_queue_depth", ())] == 0


def test_route_labels_are_a_fixed_set():
    assert route_label("/v1/embeddings") == "/v1/embeddings"
    assert route_label("/gradio_api/queue/data") == "/gradio_api/queue/data"
    assert route_label("/gradio_api/file=/tmp/x.csv") == "/gradio_api/file"
    assert route_label("/") == "/" and route_label("/wp-admin/setup.php") == "other"
