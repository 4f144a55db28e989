"""The last hour, in memory, for the status tab's charts: request rate, p95 latency and busy answers per
interval, read from the server's own metrics (app/web/metrics.py), and this process's own memory, which the
tab draws when no launcher samples it (the launcher's samples outlive the app; these do not).

A background thread (`HistorySampler`, started and stopped by `serve`) takes one sample every INTERVAL_S:
requests pay nothing beyond the counters and histograms they already update. The maths — counter deltas,
the p95 from a histogram's bucket deltas — are pure functions.

Imports nothing from the web stack (no Gradio, no FastAPI).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from app import hostinfo
from app.web.metrics import BUCKETS_S, Metrics

log = logging.getLogger(__name__)

INTERVAL_S = 10.0
WINDOW_S = 3600.0
POINTS = int(WINDOW_S / INTERVAL_S) + 1
# A partial interval shorter than this is not a point of its own (its rate would be mostly noise): it is folded
# into the last sampled point, so what it counted is never left out.
MIN_LIVE_S = 1.0
BOUNDS = (*BUCKETS_S, math.inf)  # the histograms' upper bounds, +Inf last

# What the charts count as a request: the HTTP API's work routes and the UI events that run models; not the
# probes, scrapes, page assets, schema checks while typing, nor the status tab's own refreshes.
API_ROUTE_PREFIX = "/v1/"
UI_WORK_EVENTS = frozenset({"similarity", "embed", "nlu"})


@dataclass(frozen=True)
class Totals:
    """The counters at one moment (monotonically growing within this process)."""

    wall: float  # time.time(), for the chart's axis
    mono: float  # time.monotonic(), for the interval's length
    api: float
    ui: float
    busy: float
    buckets: tuple[float, ...]  # cumulative latency counts per BOUNDS entry, API and UI work together


@dataclass(frozen=True)
class TrafficPoint:
    """What happened in one interval ending at `end` (wall time)."""

    end: float
    seconds: float
    api: float  # HTTP API work requests
    ui: float  # UI work events
    busy: float  # answered busy (both surfaces)
    buckets: tuple[float, ...]  # latencies that fell in each BOUNDS bucket during the interval (not cumulative)

    @property
    def api_per_s(self) -> float:
        return self.api / self.seconds if self.seconds > 0 else 0.0

    @property
    def ui_per_s(self) -> float:
        return self.ui / self.seconds if self.seconds > 0 else 0.0

    @property
    def p95_s(self) -> float | None:
        return quantile_from_buckets(BOUNDS, self.buckets, 0.95)


@dataclass(frozen=True)
class MemoryPoint:
    t: float  # wall time
    used_mib: float
    source: str  # "nvml-process" (GPU memory NVML attributes to this process) or "rss"


# ---- pure maths --------------------------------------------------------------------------------------------


def quantile_from_buckets(bounds: Sequence[float], counts: Sequence[float], q: float) -> float | None:
    """The q-quantile of the observations counted per bucket (`counts[i]` fell in (bounds[i-1], bounds[i]]),
    interpolated linearly inside its bucket, as Prometheus' histogram_quantile does; in the +Inf bucket, the
    highest finite bound. None when nothing was counted."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    below = 0.0
    for i, (upper, count) in enumerate(zip(bounds, counts, strict=True)):
        if count > 0 and below + count >= rank:
            lower = bounds[i - 1] if i else 0.0
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / count
        below += count
    return bounds[-2] if math.isinf(bounds[-1]) else bounds[-1]


def bucket_deltas(before: Sequence[float], after: Sequence[float]) -> tuple[float, ...]:
    """Per-bucket counts of what was observed between two readings of cumulative bucket counts."""
    grown = [max(0.0, a - b) for a, b in zip(after, before, strict=True)]
    return tuple(g - (grown[i - 1] if i else 0.0) for i, g in enumerate(grown))


def traffic_point(before: Totals, after: Totals) -> TrafficPoint:
    return TrafficPoint(end=after.wall, seconds=max(0.0, after.mono - before.mono),
                        api=max(0.0, after.api - before.api), ui=max(0.0, after.ui - before.ui),
                        busy=max(0.0, after.busy - before.busy), buckets=bucket_deltas(before.buckets, after.buckets))


def combine(points: Iterable[TrafficPoint]) -> TrafficPoint:
    """Several intervals as one (rates over their summed length, the p95 over all their latencies)."""
    end, seconds, api, ui, busy = 0.0, 0.0, 0.0, 0.0, 0.0
    buckets = [0.0] * len(BOUNDS)
    for p in points:
        end = max(end, p.end)
        seconds, api, ui, busy = seconds + p.seconds, api + p.api, ui + p.ui, busy + p.busy
        buckets = [a + b for a, b in zip(buckets, p.buckets, strict=True)]
    return TrafficPoint(end, seconds, api, ui, busy, tuple(buckets))


# ---- reading the registry ------------------------------------------------------------------------------------


def read_totals(metrics: Metrics, wall: float, mono: float) -> Totals:
    """The work counters and latency buckets now, summed over the routes and events that count as work."""
    api = ui = busy = 0.0
    buckets = [0.0] * len(BOUNDS)
    index = {bound: i for i, bound in enumerate(BOUNDS)}
    for family in metrics.requests.collect():
        for s in family.samples:
            if s.name.endswith("_total") and s.labels["route"].startswith(API_ROUTE_PREFIX):
                api += s.value
    for family in metrics.events.collect():
        for s in family.samples:
            if s.name.endswith("_total") and s.labels["event"] in UI_WORK_EVENTS:
                ui += s.value
    for family in metrics.busy.collect():
        busy += sum(s.value for s in family.samples if s.name.endswith("_total"))
    work_latencies = ((metrics.latency, "route", lambda route: route.startswith(API_ROUTE_PREFIX)),
                      (metrics.event_latency, "event", lambda event: event in UI_WORK_EVENTS))
    for histogram, label, counts in work_latencies:
        for family in histogram.collect():
            for s in family.samples:
                if s.name.endswith("_bucket") and counts(s.labels[label]):
                    buckets[index[float(s.labels["le"])]] += s.value
    return Totals(wall, mono, api, ui, busy, tuple(buckets))


def own_memory(pid: int | None = None) -> tuple[float, str]:
    """(MiB, source) of this process: GPU memory when NVML attributes some to it, else its RSS."""
    pid = os.getpid() if pid is None else pid
    gpu = hostinfo.process_gpu_bytes(pid)
    if gpu is not None:
        return gpu / 2**20, "nvml-process"
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20, "rss"


# ---- the buffers ------------------------------------------------------------------------------------------------


class History:
    """Two bounded series, one point per sample: at most POINTS (an hour at INTERVAL_S) each."""

    def __init__(self, metrics: Metrics, *, memory: Callable[[], tuple[float, str]] = own_memory,
                 wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic,
                 points: int = POINTS) -> None:
        self.metrics = metrics
        self._memory = memory
        self._wall = wall
        self._mono = mono
        self._lock = threading.Lock()  # UI handler threads read while the sampler thread appends
        self.traffic: deque[TrafficPoint] = deque(maxlen=points)
        self.memory: deque[MemoryPoint] = deque(maxlen=points)
        self._last = self._totals()

    def _totals(self) -> Totals:
        return read_totals(self.metrics, self._wall(), self._mono())

    def sample(self) -> None:
        """One interval's traffic point and one memory point."""
        now = self._totals()
        used_mib, source = self._memory()
        with self._lock:
            self.traffic.append(traffic_point(self._last, now))
            self._last = now
            self.memory.append(MemoryPoint(now.wall, used_mib, source))

    def sample_memory(self) -> None:
        used_mib, source = self._memory()
        with self._lock:
            self.memory.append(MemoryPoint(self._wall(), used_mib, source))

    def traffic_window(self, window_s: float = WINDOW_S) -> list[TrafficPoint]:
        """The points of the last `window_s`, oldest first, and a live one since the last sample, so what just
        happened shows before the next sample. A live interval shorter than MIN_LIVE_S is folded into the last
        sampled point instead: dropping it would lose the requests it counted (a status refresh just after a
        sample showed 0 req/s for requests already answered)."""
        now = self._totals()
        with self._lock:
            points = [p for p in self.traffic if p.end >= now.wall - window_s]
            last = self._last
        live = traffic_point(last, now)
        if points and live.seconds < MIN_LIVE_S:
            points[-1] = combine((points[-1], live))
        else:
            points.append(live)
        return points

    def memory_window(self, window_s: float = WINDOW_S) -> list[MemoryPoint]:
        since = self._wall() - window_s
        with self._lock:
            return [p for p in self.memory if p.t >= since]


class HistorySampler:
    """The thread that samples `history` every `interval_s` until stopped."""

    def __init__(self, history: History, interval_s: float = INTERVAL_S) -> None:
        self.history = history
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-history", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        self._safely(self.history.sample_memory)  # a first memory point at once: the loading spike shows
        while not self._stop.wait(self.interval_s):
            self._safely(self.history.sample)

    @staticmethod
    def _safely(step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:  # a failed sample leaves a gap in the chart, never a dead sampler
            log.warning("event=history_sample_failed", exc_info=True)
