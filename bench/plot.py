"""PNG charts of bench and loadtest results (matplotlib, Agg backend: no display needed).

English labels only: the default fonts have no CJK glyphs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"naive": "#b0b0b0", "library": "#6c8ebf", "wenmo": "#d6793a"}


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bench(report: dict[str, Any], path: str | Path) -> Path:
    """Per family: throughput (speedup vs naive on the bars) and peak memory per configuration."""
    plt = _plt()
    fams = [(k, f) for k, f in report["families"].items() if f.get("configs")]
    ncols = max(1, len(fams))
    fig, axes = plt.subplots(2, ncols, figsize=(5.2 * ncols, 7.5), squeeze=False)
    gpu = report["plan"]["device"].startswith("cuda")
    for col, (name, fam) in enumerate(fams):
        configs = [c for c in fam["configs"] if c.get("ok")]
        labels = [c["name"] for c in configs]
        colors = [COLORS.get(c["kind"], "#888888") for c in configs]
        ax = axes[0][col]
        rates = [c["items_per_s"] or 0 for c in configs]
        bars = ax.bar(range(len(configs)), rates, color=colors)  # linear from 0: bar heights are the ratios
        ax.set_title(f"{name}: {fam['unit']}/s — {fam['model']}", fontsize=9)
        ax.set_xticks(range(len(configs)), labels, rotation=25, ha="right", fontsize=8)
        for bar, c in zip(bars, configs, strict=True):
            s = c.get("speedup_vs_naive")
            if s is not None:
                ax.annotate(f"{s:.1f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                            va="bottom", fontsize=8)
        ax = axes[1][col]
        key = "gpu_max_allocated_mib" if gpu else "peak_rss_mib"
        ax.bar(range(len(configs)), [c.get(key) or 0 for c in configs], color=colors)
        ax.set_title(f"{name}: {'GPU max allocated' if gpu else 'peak RSS'} (MiB)", fontsize=9)
        ax.set_xticks(range(len(configs)), labels, rotation=25, ha="right", fontsize=8)
    fig.suptitle(f"Wenmo bench — {report['plan']['device']}, size {report['options']['size']}, "
                 f"{report['created_utc']}", fontsize=10)
    return _save(plt, fig, path)


def plot_loadtest(report: dict[str, Any], path: str | Path) -> Path:
    """Ramp: latency percentiles and throughput against users; soak: memory gauges over time."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ramp = report["stages"].get("ramp", {})
    steps = ramp.get("steps", [])
    users = [s["users"] for s in steps]
    ax = axes[0]
    for q in ("p50", "p95", "p99"):
        ax.plot(users, [s[f"latency_{q}_ms"] or float("nan") for s in steps], marker="o", label=q)
    ax.axhline(report["p95_target_ms"], color="red", linestyle="--", linewidth=1, label="p95 target")
    ax.set_xlabel("concurrent users")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"ramp latency (safe concurrency: {ramp.get('safe_concurrency')})", fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(users, [s["throughput_rps"] or 0 for s in steps], marker="o", label="ok req/s")
    ax.bar(users, [s["busy"] for s in steps], alpha=0.3, color="orange", label="busy answers")
    ax.bar(users, [s["errors"] for s in steps], alpha=0.3, color="red", label="errors")
    ax.set_xlabel("concurrent users")
    ax.set_title("ramp throughput, busy answers and errors", fontsize=9)
    ax.legend(fontsize=8)
    draw_soak_memory(axes[2], report["stages"].get("soak", {}))
    fig.suptitle(f"Wenmo loadtest — {report['url']} — {report['created_utc']}", fontsize=10)
    return _save(plt, fig, path)


def draw_soak_memory(ax: Any, soak: dict[str, Any]) -> None:  # noqa: ANN401
    """The soak's memory gauges over time under load (a thin line), the settled samples (nothing in flight; large
    dots) and the verdict's fitted line over the samples it fitted, after the warm-up."""
    series = soak.get("memory_samples", [])
    settled = soak.get("settled_samples", [])
    from bench.prometheus import is_bytes, to_mib

    # MiB on this axis: a count among the breakdown gauges (Python's blocks) is in the report's table only
    keys = sorted({k for row in list(series) + list(settled) for k in row[1] if is_bytes(k)})

    verdict = soak.get("verdict") or {}
    fits = verdict.get("gauges", {})
    warmup = verdict.get("warmup_s", 0.0)
    judged = settled if verdict.get("series") == "settled" else series
    for key in keys:
        rows = [row for row in series if key in row[1]]
        line = ax.plot([row[0] for row in rows], [to_mib(key, row[1][key]) for row in rows], linewidth=0.8,
                       alpha=0.6, label=f"{key[:40]} (under load)")[0]
        quiet = [row for row in settled if key in row[1]]
        if quiet:
            ax.plot([row[0] for row in quiet], [to_mib(key, row[1][key]) for row in quiet], linestyle="none",
                    marker="o", color=line.get_color(), label="settled (nothing in flight)")
        fit = fits.get(key, {}).get("fit")
        fitted = [row for row in judged if key in row[1] and row[0] >= warmup and len(row) > 2]
        # The verdict's line: MiB against requests answered, drawn at each fitted sample's time.
        if fit and fitted and fits[key].get("mib_per_24h") is not None:
            g = fits[key]
            ax.plot([row[0] for row in fitted],
                    [fit["intercept_mib"] + fit["slope_mib_per_request"] * row[2] for row in fitted],
                    linestyle="--", color=line.get_color(),
                    label=f"fit: {g['mib_per_1k_requests']:+.4f} MiB/1k req, {g['mib_per_24h']:+.0f} MiB/24 h "
                          f"(95 %: {g['mib_per_24h_ci95'][0]:+.0f} … {g['mib_per_24h_ci95'][1]:+.0f}) {g['verdict']}")
    if warmup:
        ax.axvline(warmup, color="grey", linestyle=":", linewidth=1, label="end of warm-up")
    ax.set_xlabel("seconds into soak")
    ax.set_ylabel("MiB")
    ax.set_title("soak: memory gauges from /metrics" if keys else "soak: no memory gauges in /metrics", fontsize=9)
    if keys:  # beside the axes: with nine gauges the legend inside covered the lines it names
        ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def plot_soak(report: dict[str, Any], path: str | Path) -> Path:
    plt = _plt()
    import textwrap

    fig, ax = plt.subplots(1, 1, figsize=(15, 5.6))
    draw_soak_memory(ax, report["soak"])
    v = report["soak"].get("verdict") or {}
    fig.suptitle(f"Wenmo soak — {report['models']} — {report['soak']['requests']} requests, "
                 f"{report['soak']['attempted_rps'] or 0:.0f} req/s — {report['created_utc']}", fontsize=10)
    ax.set_title(textwrap.fill(f"verdict: {v.get('rule', '')}", 110), fontsize=8)
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: str | Path) -> Path:  # noqa: ANN401
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
