"""The status tab's pictures, drawn with matplotlib (Agg, no display) into figures that gr.Plot sends as PNG.

Plain functions of plain data: the status module gathers the series, these only draw. Every chart spans the
same last hour on the same axis (minutes before now), so a restart lines up with what traffic did around it.
Labels are English only: matplotlib's default fonts have no CJK glyphs (the tab's captions are bilingual).
Figures are built with the object API (no pyplot state), so handlers in several threads cannot mix them up.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.web.history import TrafficPoint

SOURCE_LABELS = {
    "nvml-process": "GPU memory of the app (NVML)",
    "nvml-device": "GPU memory of the whole device (NVML)",
    "rss": "resident memory (RSS)",
}
SOURCE_COLORS = {"nvml-process": "#2f6fb0", "nvml-device": "#7a5cb0", "rss": "#2f8f5b"}
MARK_COLORS = {"restart": "#d0342c", "crash": "#e08a00"}
WIDTH_IN = 10.0
DPI = 80
# matplotlib is not promised to be thread-safe, and handlers of several open tabs run in parallel threads;
# drawing is CPU-bound under the GIL anyway, so one at a time costs nothing.
_draw_lock = threading.Lock()


@dataclass(frozen=True)
class Run:
    """Samples of one app process from one source: one unbroken line (a restart starts a new one)."""

    source: str
    times: list[float]
    mib: list[float]


@dataclass(frozen=True)
class Mark:
    """A vertical marker: a restart the launcher decided, or a crash it saw."""

    t: float
    kind: str  # "restart" | "crash"
    label: str


def png_data_url(fig: Any) -> str:
    """The figure as a PNG data URL (what gr.Plot shows for a matplotlib figure), drawn under the lock."""
    with _draw_lock, io.BytesIO() as out:
        fig.savefig(out, format="png")
        return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _figure(height_in: float, rows: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    # Fixed margins: matplotlib's automatic layouts cost more than the drawing (the tab redraws every 5 s).
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI)
    fig.subplots_adjust(left=0.08, right=0.985, top=1 - 0.32 / height_in, bottom=0.55 / height_in, hspace=0.12)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, list(axes)


def _minutes(t: float, now: float) -> float:
    return (t - now) / 60.0


def _frame(ax: Any, now: float, window_s: float, marks: Sequence[Mark], label_marks: bool) -> None:
    ax.set_xlim(-window_s / 60.0, 0.0)
    ax.grid(True, color="#e6e6e6", linewidth=0.6)
    for m in marks:
        x = _minutes(m.t, now)
        if x < -window_s / 60.0:
            continue
        color = MARK_COLORS.get(m.kind, "#d0342c")
        ax.axvline(x, color=color, linestyle=":", linewidth=1.4)
        if label_marks:
            ax.annotate(m.label, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -10),
                        textcoords="offset points", fontsize=8, color=color, va="top")


def _axis_label(now: float) -> str:
    return f"minutes before now ({time.strftime('%H:%M', time.gmtime(now))} UTC)"


def memory_figure(runs: Sequence[Run], threshold: Run | None, marks: Sequence[Mark], now: float,
                  window_s: float, title: str) -> Any:
    """Memory over time, one line per app run; the launcher's threshold dashed; restarts dotted."""
    fig, (ax,) = _figure(3.4)
    shown: set[str] = set()
    top = 0.0
    for run in runs:
        label = None if run.source in shown else SOURCE_LABELS.get(run.source, run.source)
        shown.add(run.source)
        ax.plot([_minutes(t, now) for t in run.times], run.mib, color=SOURCE_COLORS.get(run.source, "#444444"),
                linewidth=1.6, marker="." if len(run.times) < 3 else None, label=label)
        top = max(top, *run.mib)
    if threshold is not None and threshold.times:
        ax.step([_minutes(t, now) for t in threshold.times], threshold.mib, where="post", color="#d0342c",
                linestyle="--", linewidth=1.2, label="restart threshold")
        top = max(top, *threshold.mib)
    _frame(ax, now, window_s, marks, label_marks=True)
    ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)
    ax.set_ylabel("MiB")
    ax.set_xlabel(_axis_label(now))
    ax.set_title(title, fontsize=10, loc="left")
    if runs or threshold is not None:
        ax.legend(loc="lower left", fontsize=8, framealpha=0.85)
    if not runs:
        ax.text(0.5, 0.5, "no memory samples yet", transform=ax.transAxes, ha="center", color="#888888")
    return fig


def traffic_figure(points: Sequence[TrafficPoint], marks: Sequence[Mark], now: float, window_s: float) -> Any:
    """Requests per second (API and UI), p95 latency and busy answers per interval, one panel each."""
    fig, (rate, p95, busy) = _figure(5.6, rows=3)
    ends = [_minutes(p.end, now) for p in points]
    dots = "." if len(points) < 3 else None  # a line needs two points: a fresh server's first one as a dot
    rate.plot(ends, [p.api_per_s for p in points], color="#2f6fb0", linewidth=1.5, marker=dots,
              label="HTTP API requests/s")
    rate.plot(ends, [p.ui_per_s for p in points], color="#2f8f5b", linewidth=1.5, marker=dots,
              label="UI events/s")
    rate.set_ylabel("per second")
    rate.set_ylim(bottom=0)
    rate.legend(loc="upper left", fontsize=8, framealpha=0.85)
    rate.set_title("requests (work only: no probes, no page loads)", fontsize=10, loc="left")

    # An interval without requests has no latency: a gap, not a zero.
    lat = [(x, p.p95_s) for x, p in zip(ends, points, strict=True) if p.p95_s is not None]
    p95.plot([x for x, _ in lat], [v for _, v in lat], color="#b05c2f", linewidth=1.5, marker=".",
             markersize=4)
    p95.set_ylabel("p95 latency (s)")
    p95.set_ylim(bottom=0)

    # One filled step line, not a bar per interval (hundreds of patches are slow to draw).
    edges = [x for p in points for x in (_minutes(p.end - p.seconds, now), _minutes(p.end, now))]
    heights = [p.busy for p in points for _ in (0, 1)]
    busy.fill_between(edges, heights, step=None, color="#d0342c", linewidth=0)
    busy.set_ylabel("busy answers")
    busy.set_ylim(bottom=0, top=max([p.busy for p in points], default=0) * 1.2 or 1)
    busy.set_xlabel(_axis_label(now))
    for i, ax in enumerate((rate, p95, busy)):
        _frame(ax, now, window_s, marks, label_marks=i == 0)
    return fig
