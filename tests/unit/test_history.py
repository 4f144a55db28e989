"""The status tab's in-process history: the p95 from histogram bucket deltas (checked against numpy on the raw
latencies that fed a real prometheus_client histogram), counter deltas, the bounded buffers, the live point
and the sampler thread's start and stop."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from app.web.history import (
    BOUNDS,
    History,
    HistorySampler,
    MemoryPoint,
    Totals,
    bucket_deltas,
    combine,
    quantile_from_buckets,
    read_totals,
    traffic_point,
)
from app.web.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def wall(self) -> float:
        return self.t

    def mono(self) -> float:
        return self.t - 1_699_000_000.0


def history(metrics: Metrics, clock: Clock, points: int = 360) -> History:
    return History(metrics, memory=lambda: (123.0, "rss"), wall=clock.wall, mono=clock.mono, points=points)


def bucket_of(value: float) -> tuple[float, float]:
    """(lower, upper] of the BOUNDS bucket a value falls in."""
    for i, upper in enumerate(BOUNDS):
        if value <= upper:
            return (BOUNDS[i - 1] if i else 0.0), upper
    raise AssertionError(value)


def test_quantile_interpolates_inside_the_bucket_like_prometheus():
    bounds = (1.0, 2.0, 4.0, math.inf)
    assert quantile_from_buckets(bounds, (10, 0, 10, 0), 0.5) == 1.0
    assert quantile_from_buckets(bounds, (10, 0, 10, 0), 0.75) == 3.0  # rank 15: halfway through (2, 4]
    assert quantile_from_buckets(bounds, (0, 4, 0, 0), 0.95) == pytest.approx(1.95)
    assert quantile_from_buckets(bounds, (1, 0, 0, 19), 0.95) == 4.0  # in +Inf: the highest finite bound
    assert quantile_from_buckets(bounds, (0, 0, 0, 0), 0.95) is None


def test_bucket_deltas_undo_the_cumulative_counts():
    before = (1, 3, 3, 6)
    after = (2, 7, 9, 15)  # +1, +4, +6, +9 cumulative
    assert bucket_deltas(before, after) == (1, 3, 2, 3)


@pytest.mark.parametrize("seed", range(6))
def test_p95_of_an_interval_lies_in_the_bucket_of_the_true_p95(seed):
    rng = np.random.default_rng(seed)
    metrics = Metrics()
    # Before the interval: traffic that must not count in it.
    for x in rng.lognormal(-1, 1.5, 200):
        metrics.observe_request("/v1/embeddings", "POST", 200, float(x))
    before = read_totals(metrics, 0.0, 0.0)
    api = rng.lognormal(rng.uniform(-5, 1), rng.uniform(0.2, 2), int(rng.integers(20, 2000)))
    ui = rng.exponential(rng.uniform(0.01, 3), int(rng.integers(1, 300)))
    for x in api:
        metrics.observe_request("/v1/similarity", "POST", 200, float(x))
    for x in ui:
        metrics.observe_event("embed", "ok", float(x))
    for x in rng.uniform(20, 50, 100):  # not work: probes and the status tab's refreshes
        metrics.observe_request("/healthz", "GET", 200, float(x))
        metrics.observe_event("status", "ok", float(x))
    after = read_totals(metrics, 10.0, 10.0)
    point = traffic_point(before, after)
    assert (point.api, point.ui) == (len(api), len(ui))
    raw = np.concatenate([api, ui])
    # numpy's inverted_cdf is the ceil(q·n)-th smallest observation: the one whose bucket the estimate is in.
    truth = float(np.percentile(raw, 95, method="inverted_cdf"))
    lower, upper = bucket_of(truth)
    estimate = point.p95_s
    assert estimate is not None
    if math.isinf(upper):
        assert estimate == lower
    else:
        assert lower <= estimate <= upper


def test_rates_and_busy_count_work_on_both_surfaces_only():
    metrics, clock = Metrics(), Clock()
    h = history(metrics, clock)
    for _ in range(30):
        metrics.observe_request("/v1/embeddings", "POST", 200, 0.02)
    metrics.observe_request("/v1/nlu", "POST", 429, 0.001)
    metrics.count_busy("http")
    for _ in range(5):
        metrics.observe_event("nlu", "ok", 0.3)
    metrics.observe_event("similarity", "busy", 0.001)  # counts as a UI event and a busy answer
    for _ in range(50):
        metrics.observe_request("/healthz", "GET", 200, 0.001)
        metrics.observe_request("/gradio_api/queue/join", "POST", 200, 0.001)
        metrics.observe_event("status", "ok", 0.05)
        metrics.observe_event("nlu_validate_schema", "ok", 0.001)
    clock.t += 10
    h.sample()
    (p,) = h.traffic
    assert (p.seconds, p.api, p.ui, p.busy) == (10.0, 31, 6, 2)
    assert (p.api_per_s, p.ui_per_s) == (3.1, 0.6)
    clock.t += 10
    h.sample()
    assert (h.traffic[-1].api, h.traffic[-1].ui, h.traffic[-1].busy, h.traffic[-1].p95_s) == (0, 0, 0, None)
    both = combine(h.traffic)
    assert (both.seconds, both.api, both.api_per_s) == (20.0, 31, 1.55)
    assert both.p95_s == p.p95_s


def test_buffers_keep_only_the_newest_points_and_the_window():
    metrics, clock = Metrics(), Clock()
    h = history(metrics, clock, points=5)
    for _ in range(12):
        metrics.observe_request("/v1/embeddings", "POST", 200, 0.01)
        clock.t += 10
        h.sample()
    assert len(h.traffic) == 5 and len(h.memory) == 5
    assert [p.end for p in h.traffic] == [clock.t - 10 * k for k in (4, 3, 2, 1, 0)]
    assert all(p.api == 1 for p in h.traffic)
    assert h.memory[-1] == MemoryPoint(clock.t, 123.0, "rss")
    assert [p.end for p in h.traffic_window(window_s=25)] == [clock.t - 20, clock.t - 10, clock.t]
    assert [p.t for p in h.memory_window(window_s=15)] == [clock.t - 10, clock.t]


def test_live_point_shows_what_happened_since_the_last_sample():
    metrics, clock = Metrics(), Clock()
    h = history(metrics, clock)
    clock.t += 10
    h.sample()
    for _ in range(4):
        metrics.observe_request("/v1/embeddings", "POST", 200, 0.01)
    clock.t += 0.5
    # Half a second: too short to be a rate of its own, folded into the last sampled point, never dropped.
    points = h.traffic_window()
    assert [p.api for p in points] == [4] and points[-1].seconds == 10.5 and points[-1].end == clock.t
    clock.t += 1.5
    points = h.traffic_window()
    assert [p.api for p in points] == [0, 4] and points[-1].seconds == 2.0 and points[-1].api_per_s == 2.0
    assert len(h.traffic) == 1  # reading took nothing away from the next sample
    clock.t += 8
    h.sample()
    assert h.traffic[-1].api == 4 and h.traffic[-1].seconds == 10.0


def test_totals_are_plain_sums_of_the_registry():
    metrics = Metrics()
    metrics.observe_request("/v1/embeddings", "POST", 200, 0.007)
    metrics.observe_request("/v1/embeddings", "POST", 500, 70.0)
    metrics.observe_event("embed", "ok", 0.2)
    t = read_totals(metrics, 1.0, 2.0)
    assert (t.api, t.ui, t.busy) == (2, 1, 0)
    # 0.007 in (0.005, 0.01], 0.2 in (0.1, 0.25], 70 only in +Inf: cumulative counts per bound.
    expected = [0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3]
    assert isinstance(t, Totals) and list(t.buckets) == expected


def test_sampler_samples_until_stopped_and_stops():
    calls: list[str] = []
    h = History(Metrics(), memory=lambda: (calls.append("m") or 1.0, "rss"))
    sampler = HistorySampler(h, interval_s=0.01)
    sampler.start()
    deadline = time.monotonic() + 30
    while len(h.traffic) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    assert len(h.traffic) >= 3 and len(h.memory) == len(h.traffic) + 1  # the first memory point at start
    assert not sampler._thread.is_alive()
    n = len(h.traffic)
    time.sleep(0.05)
    assert len(h.traffic) == n  # nothing after stop
