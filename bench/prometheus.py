"""Reading the memory gauges out of a Prometheus text exposition (GET /metrics), and judging their trend.

The body is read by prometheus_client's parser. A gauge is a "memory gauge" when its name contains `memory`
(e.g. `process_resident_memory_bytes`, `wenmo_gpu_memory_used_bytes`), except two of the standard process
collector's: `process_virtual_memory_bytes` (address space reserved, not memory used: allocator arenas and CUDA
reserve gigabytes of it) and `process_resident_memory_bytes` when the server also gives
`wenmo_process_resident_memory_bytes` (the same reading twice). A server that exposes no memory gauge gives an
empty result rather than an error. Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.stats import slope, slope_interval, theil_sen

DAY_S = 86400.0
MIN_FIT_POINTS = 3
MAX_FIT_POINTS = 600  # more after the warm-up are thinned evenly for the fit
NOT_MEMORY = "process_virtual_memory_bytes"
STANDARD_RSS, WENMO_RSS = "process_resident_memory_bytes", "wenmo_process_resident_memory_bytes"
# Where the resident memory is (app/web/server.py): fitted like the memory gauges, to tell a leak (the C heap's
# in_use, Python's blocks) from fragmentation (the C heap's free), and resident memory by kind (anon, file) and the
# threads that keep stacks, but not judged — resident memory is what costs.
BREAKDOWN = ("wenmo_heap_bytes", "wenmo_python_allocated_blocks", "wenmo_resident_bytes", "wenmo_threads")
# The GPU's used memory counts every process on the card; where the server also gives its own share (NVML per
# process), that is judged and the card's figure joins the breakdown: three soaks on one H200 (2026-11-28) each
# judged the CUDA server's steps, the two CPU servers included.
GPU_DEVICE, GPU_PROCESS = "wenmo_gpu_memory_used_bytes", "wenmo_gpu_process_memory_bytes"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def sample_key(name: str, labels: dict[str, str]) -> str:
    """`name{label="value",…}`, labels sorted by name (the order a server writes them is not part of the series)."""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


def parse_samples(text: str) -> dict[str, float]:
    """Every sample as {"name{labels}": value}; NaN samples are left out. ValueError, saying so, when the body is
    not the Prometheus text format."""
    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except ValueError as e:
        raise ValueError(f"not the Prometheus text format: {e}") from e
    return {sample_key(s.name, s.labels): float(s.value) for s in samples if not math.isnan(s.value)}


def metric_name(key: str) -> str:
    """`name` of a `name{labels}` sample key."""
    return key.split("{", 1)[0]


def is_bytes(key: str) -> bool:
    return metric_name(key).endswith("_bytes")


def is_breakdown(key: str) -> bool:
    return metric_name(key) in BREAKDOWN


def memory_gauges(text: str) -> dict[str, float]:
    """The memory gauges in a /metrics body, and the breakdown gauges; values of `*_bytes` gauges stay in bytes."""
    samples = parse_samples(text)
    skip = {NOT_MEMORY} | ({STANDARD_RSS} if WENMO_RSS in samples else set())
    return {k: v for k, v in samples.items()
            if ("memory" in metric_name(k).lower() and k not in skip) or is_breakdown(k)}


def to_mib(key: str, value: float) -> float:
    """Bytes → MiB for `*_bytes` gauges; other units are returned unchanged."""
    return value / (1 << 20) if is_bytes(key) else value


def _series(samples: Sequence[tuple], key: str) -> list[tuple[float, float, int | None]]:
    """(seconds, value in MiB or as is, requests answered or None) of one gauge, from (t, gauges[, requests])."""
    return [(row[0], to_mib(key, row[1][key]), row[2] if len(row) > 2 else None) for row in samples if key in row[1]]


def _keys(samples: Sequence[tuple]) -> list[str]:
    keys: dict[str, None] = {}
    for row in samples:
        for k in row[1]:
            keys.setdefault(k, None)
    return list(keys)


def memory_trend(samples: Sequence[tuple]) -> dict[str, dict[str, Any]]:
    """Per gauge over a soak: samples, first, last, max (MiB for byte gauges) and the slope in MiB per minute
    over the whole window (a description; the verdict is `memory_verdict`'s). `samples` are (seconds since
    start, gauges) or (seconds, gauges, requests answered) rows."""
    out: dict[str, dict[str, Any]] = {}
    for key in _keys(samples):
        pts = _series(samples, key)
        s = slope([p[0] for p in pts], [p[1] for p in pts])  # per second
        vs = [p[1] for p in pts]
        out[key] = {"samples": len(vs), "first": vs[0], "last": vs[-1], "max": max(vs),
                    "slope_per_min": s * 60 if s is not None else None,
                    "unit": "MiB" if is_bytes(key) else "value"}
    return out


def least_squares(xs: Sequence[float], ys: Sequence[float], day: float) -> dict[str, Any]:
    """The least-squares slope per 1k requests and its 95 % interval per 24 h: how the soaks before the Theil–Sen
    verdict (sessions 8–11's published figures) were fitted, carried for comparison."""
    lo, hi = slope_interval(xs, ys) or (math.nan, math.nan)
    return {"mib_per_1k_requests": slope(xs, ys) * 1000, "mib_per_24h_ci95": [lo * day, hi * day]}


def judge(lo_per_day: float, hi_per_day: float, budget_mib_per_day: float) -> str:
    """PASS when the 95 % interval lies under the budget, FAIL when it lies over it, else INCONCLUSIVE."""
    return "PASS" if hi_per_day < budget_mib_per_day else "FAIL" if lo_per_day >= budget_mib_per_day \
        else "INCONCLUSIVE"


def second_half(pts: Sequence[tuple[float, float]], day: float, budget_mib_per_day: float) -> dict[str, Any] | None:
    """The same fit over the later half of the fitted samples: not the verdict, a reading of its shape. A server
    that grows steadily has the same slope in both halves; one that took a few bounded steps early in the window
    (a cache filling, an allocator's high-water mark: README "Memory over days") has a slope over the whole and a
    flat second half. None with too few samples for two halves."""
    if len(pts) < 2 * MIN_FIT_POINTS:
        return None
    late = pts[len(pts) // 2:]
    robust = theil_sen([n for n, _ in late], [v for _, v in late])
    if robust is None:
        return None
    per_request, _, lo, hi = robust
    return {"points": len(late), "requests_fitted": late[-1][0] - late[0][0],
            "mib_per_1k_requests": per_request * 1000, "mib_per_24h": per_request * day,
            "mib_per_24h_ci95": [lo * day, hi * day], "verdict": judge(lo * day, hi * day, budget_mib_per_day)}


def memory_verdict(samples: Sequence[tuple], warmup_s: float, rate_rps: float | None,
                   budget_mib_per_day: float, series: str = "under load") -> dict[str, Any]:
    """The soak's verdict on memory, judged on the rate, not on a percentage of one window: for each byte gauge,
    the Theil–Sen slope of MiB against requests answered (the median of the slopes between every two samples:
    a sample caught in the middle of a heap trim does not move it, where it moved a least-squares fit), over the
    samples after `warmup_s`; that slope per 1,000 requests, and extrapolated to 24 hours at `rate_rps` (the
    soak's own rate), with the slope's 95 % interval (Sen's) carried along, and the least-squares slope beside it
    for comparison. A gauge is PASS when the interval's upper end is under
    `budget_mib_per_day`, FAIL when its lower end is not, INCONCLUSIVE when the budget lies inside it (the
    samples scatter too much for this many requests: soak longer); `pass` is True only for PASS. The soak
    passes when every byte gauge does. `fit` gives the fitted line (MiB = intercept + slope × requests) for
    the chart; `second_half` the same fit over the later half of the samples (shown, not judged). The GPU's
    used memory is judged only where the server does not give its own share (GPU_PROCESS).
    `samples`: (seconds, gauges, requests); `series` says which samples they are ("settled": taken with nothing
    in flight; "under load")."""
    gauges: dict[str, dict[str, Any]] = {}
    keys = _keys(samples)
    own_gpu = any(metric_name(k) == GPU_PROCESS for k in keys)
    for key in keys:
        breakdown = is_breakdown(key) or (own_gpu and metric_name(key) == GPU_DEVICE)
        if not is_bytes(key) and not breakdown:
            continue
        pts = [(n, v) for t, v, n in _series(samples, key) if t >= warmup_s and n is not None]
        thinned = pts[::max(1, -(-len(pts) // MAX_FIT_POINTS))]  # pairwise slopes are O(n²): a day under load: 17k
        xs, ys = [n for n, _ in thinned], [v for _, v in thinned]
        robust = theil_sen(xs, ys) if len(pts) >= MIN_FIT_POINTS else None
        if robust is None or not rate_rps:
            gauges[key] = {"points": len(pts), "pass": None, "verdict": "n/a",
                           "why": f"fewer than {MIN_FIT_POINTS} samples after the warm-up, or no requests between them"}
            continue
        per_request, intercept, lo, hi = robust
        day = rate_rps * DAY_S
        verdict = "breakdown" if breakdown else judge(lo * day, hi * day, budget_mib_per_day)
        gauges[key] = {
            "points": len(pts), "requests_fitted": pts[-1][0] - pts[0][0],
            "mib_per_1k_requests": per_request * 1000, "mib_per_24h": per_request * day,
            "mib_per_24h_ci95": [lo * day, hi * day],
            "least_squares": least_squares(xs, ys, day),
            "fit": {"slope_mib_per_request": per_request, "intercept_mib": intercept},
            "verdict": verdict, "pass": None if breakdown else verdict == "PASS",
        }
        if not is_bytes(key):  # a count: per 1k requests in its own unit
            gauges[key]["unit"] = "value"
        if not breakdown:
            late = second_half(thinned, day, budget_mib_per_day)
            if late is not None:
                gauges[key]["second_half"] = late
    judged = [g["verdict"] for g in gauges.values() if g["pass"] is not None]
    overall = None if not judged else "PASS" if all(v == "PASS" for v in judged) else \
        "FAIL" if "FAIL" in judged else "INCONCLUSIVE"
    return {"warmup_s": warmup_s, "rate_rps": rate_rps, "budget_mib_per_day": budget_mib_per_day, "series": series,
            "rule": f"slope of MiB per request (Theil–Sen, {series} samples) after a {warmup_s:g} s warm-up × the "
                    f"soak's rate × 24 h < {budget_mib_per_day:g} MiB, every byte gauge, the slope's 95 % interval "
                    "included",
            "gauges": gauges, "verdict": overall, "pass": overall == "PASS" if overall else None}
