"""Small statistics used by both tools: percentiles, summaries, a least-squares slope and a robust one. Pure Python."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100), linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, min, p50, p95, max and mean of `values` (all None when empty)."""
    if not values:
        return {"count": 0, "min": None, "p50": None, "p95": None, "max": None, "mean": None}
    return {
        "count": len(values),
        "min": float(min(values)),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": float(max(values)),
        "mean": float(sum(values) / len(values)),
    }


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ys over xs; None with fewer than two distinct xs."""
    if len(xs) != len(ys) or len(xs) < 2:
        return None
    mx = sum(xs) / len(xs)
    my = sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


# Two-sided 95 % critical values of Student's t by degrees of freedom; between two rows the smaller df's (wider,
# so never overconfident); past the table, the normal's 1.96.
_T95 = {1: 12.71, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


def t95(df: int) -> float:
    """The two-sided 95 % critical value of Student's t with `df` degrees of freedom (df ≥ 1)."""
    if df < 1:
        raise ValueError("t95 needs at least one degree of freedom")
    rows = [k for k in _T95 if k <= df]
    return _T95[max(rows)] if df <= 120 else 1.96


def slope_interval(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """The 95 % confidence interval of the least-squares slope of ys over xs (residual scatter, Student's t);
    None with fewer than three points or two distinct xs."""
    b = slope(xs, ys)
    n = len(xs)
    if b is None or n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    residual = sum((y - my - b * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    half = t95(n - 2) * math.sqrt(residual / (n - 2) / sxx)
    return b - half, b + half


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float, float] | None:
    """(slope, intercept, low, high): the Theil–Sen line of ys over xs — the median of the slopes between every two
    points, the median of y − slope × x — and Sen's 95 % interval of the slope (rank-based, from Kendall's tau: the
    order statistics of the pairwise slopes at (N ∓ 1.96 √Var) / 2, rounded outwards; ±inf where the points are too few
    to bound it). None with fewer than three points or two distinct xs.

    Why for the soak: a settled sample now and then catches the heap in the middle of a trim (tens of MiB off the
    curve); least squares weighs that sample by its square and one of them moved the fit of a 40-minute soak, where
    the median of slopes stays on the rest. Pairs with equal xs are skipped (no requests between two samples)."""
    n = len(xs)
    if n != len(ys) or n < 3:
        return None
    pairs = sorted((ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(n) for j in range(i + 1, n) if xs[j] != xs[i])
    if not pairs:
        return None
    b = _median(pairs)
    a = _median(sorted(y - b * x for x, y in zip(xs, ys, strict=True)))
    spread = 1.96 * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)  # Kendall's S under no trend, no ties
    low_rank, high_rank = math.floor((len(pairs) - spread) / 2), math.ceil((len(pairs) + spread) / 2) + 1  # 1-based
    low = pairs[low_rank - 1] if low_rank >= 1 else -math.inf
    high = pairs[high_rank - 1] if high_rank <= len(pairs) else math.inf
    return b, a, low, high


def _median(xs: Sequence[float]) -> float:
    """The median of a sorted sequence."""
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b
