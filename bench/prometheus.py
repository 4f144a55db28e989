"""Reading the memory gauges out of a Prometheus text exposition (GET /metrics), and judging their trend.

Tolerant by design: unknown lines are skipped, and a server that exposes no memory gauge gives an empty
result rather than an error. A gauge is a "memory gauge" when its name contains `memory` (e.g.
`process_resident_memory_bytes`, `wenmo_gpu_memory_used_bytes`). Pure Python.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from bench.stats import slope

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)(?:\s+\S+)?\s*$")

# A gauge is "growing" over a soak when the least-squares line rises by more than both of these.
GROWTH_MIN_RATIO = 0.05
GROWTH_MIN_MIB = 16.0


def parse_samples(text: str) -> dict[str, float]:
    """Every sample as {"name{labels}": value}; comments, blank and malformed lines are skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if math.isnan(value):
            continue
        out[m.group(1) + (m.group(2) or "")] = value
    return out


def memory_gauges(text: str) -> dict[str, float]:
    """The memory gauges in a /metrics body; values of `*_bytes` gauges stay in bytes."""
    return {k: v for k, v in parse_samples(text).items() if "memory" in k.split("{", 1)[0].lower()}


def to_mib(key: str, value: float) -> float:
    """Bytes → MiB for `*_bytes` gauges; other units are returned unchanged."""
    return value / (1 << 20) if key.split("{", 1)[0].endswith("_bytes") else value


def memory_trend(samples: Sequence[tuple[float, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per gauge over a soak: first, last, max (MiB for byte gauges), slope in MiB per minute, the growth
    the fitted line shows over the whole window, and `growing` (growth > 5 % of the first value and
    > 16 MiB). `samples` are (seconds since start, gauges) pairs."""
    keys: dict[str, None] = {}
    for _, gauges in samples:
        for k in gauges:
            keys.setdefault(k, None)
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        pts = [(t, to_mib(key, g[key])) for t, g in samples if key in g]
        ts = [t for t, _ in pts]
        vs = [v for _, v in pts]
        s = slope(ts, vs)  # per second
        span = (ts[-1] - ts[0]) if len(ts) > 1 else 0.0
        growth = s * span if s is not None else None
        growing = bool(growth is not None and growth > GROWTH_MIN_MIB and growth > GROWTH_MIN_RATIO * abs(vs[0]))
        out[key] = {
            "samples": len(vs),
            "first": vs[0],
            "last": vs[-1],
            "max": max(vs),
            "slope_per_min": s * 60 if s is not None else None,
            "fitted_growth": growth,
            "growing": growing,
            "unit": "MiB" if key.split("{", 1)[0].endswith("_bytes") else "value",
        }
    return out
