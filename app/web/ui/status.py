"""状态 Status tab: loaded models, the GPU (NVML) or CPU and memory (psutil), the queue, charts of the last hour,
recent errors and — when the launcher runs beside the app — its state and restart history from the state
directory; and the control that points a model role at another checkpoint (app/web/ui/checkpoints.py).

The charts: memory over time from the launcher's samples (`launcher-memory.jsonl`, which outlive the app, with
the threshold it judges against and its restarts from `launcher-events.jsonl`), or, without a launcher, this
process's own samples (app/web/history.py); request rate, p95 latency and busy answers from the server's own
metrics, sampled in process.

Refreshed every few seconds while the tab is open (a timer that runs only on this tab).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from gradio.components.plot import PlotData

from app import hostinfo
from app.web.context import ServerContext
from app.web.history import WINDOW_S, TrafficPoint, combine
from app.web.ui import charts, checkpoints
from app.web.ui.charts import Mark, Run
from app.web.ui.common import guarded

REFRESH_S = 5.0
EVENTS_FILE = "launcher-events.jsonl"
STATUS_FILE = "launcher-status.json"
MEMORY_FILE = "launcher-memory.jsonl"
# An hour of samples is ~100 KB at the launcher's default poll; this bound keeps a very short poll cheap too.
MEMORY_TAIL_BYTES = 2 * 2**20
MARK_EVENTS = ("restart", "crash")
LAUNCHER_GONE = ("stopped", "fatal")
RECENT_S = 60.0
HISTORY_EVENTS = ("start", "ready", "restart", "crash", "exit", "kill", "backoff", "fatal", "stop",
                  "spawn_failed", "launcher_started", "launcher_exit")
HISTORY_ROWS = 20
MODEL_COLUMNS = ["角色 role", "模型 id", "本地路径 local path", "维度 dim", "设备 device", "精度 dtype", "引擎 engine",
                 "最大长度 max length"]
ERROR_COLUMNS = ["时间 time", "操作 operation", "信息 message"]
HISTORY_COLUMNS = ["时间 ts", "事件 event", "级别 level", "详情 detail"]


def models_table(ctx: ServerContext) -> pd.DataFrame:
    rows = []
    if ctx.lifecycle.loaded:
        for m in ctx.service.models():
            rows.append([m.family, m.name, m.path, m.dimension or "—", m.device, m.dtype, m.engine, m.max_length])
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def devices_markdown() -> str:
    gpus = hostinfo.gpus()
    if gpus:
        lines = ["| GPU | 利用率 util | 显存 memory | 温度 temp | 功率 power |", "|---|---|---|---|---|"]
        for g in gpus:
            if "error" in g:
                lines.append(f"| {g['index']} | {g['error']} | | | |")
                continue
            util = "—" if g.get("util_pct") is None else f"{g['util_pct']} %"
            temp = "—" if g.get("temp_c") is None else f"{g['temp_c']} °C"
            power = "—" if g.get("power_w") is None else f"{g['power_w']:.0f} W"
            lines.append(f"| {g['index']} {g.get('name', '')} | {util} | {g['mem_used_mib']:.0f} / "
                         f"{g['mem_total_mib']:.0f} MiB | {temp} | {power} |")
        return "\n".join(lines)
    h = hostinfo.host()
    reason = hostinfo.nvml_reason() or "no GPU"
    return (f"没有可用的 GPU (no GPU via NVML: {reason}) — CPU {h['cpu_pct']:.0f} % of {h['cpu_count']} cores · "
            f"内存 memory {h['mem_used_mib']:.0f} / {h['mem_total_mib']:.0f} MiB · "
            f"本进程 this process {h['process_rss_mib']:.0f} MiB RSS")


def queue_markdown(ctx: ServerContext) -> str:
    lim = ctx.limiter
    g_wait, g_run = ctx.gradio_queue()
    return (f"状态 phase **{ctx.lifecycle.phase.value}** · 运行中 in flight **{lim.running}** / {lim.max_concurrent} · "
            f"排队 waiting **{lim.waiting}** / {lim.max_queue} · Gradio 队列 queue {g_wait} waiting, {g_run} running · "
            f"繁忙拒绝 busy answers **{lim.rejected}**")


def errors_table(ctx: ServerContext) -> pd.DataFrame:
    if not ctx.lifecycle.loaded:
        return pd.DataFrame([], columns=ERROR_COLUMNS)
    rows = [[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)), op, msg]
            for t, op, msg in reversed(ctx.service.stats.errors[-20:])]
    return pd.DataFrame(rows, columns=ERROR_COLUMNS)


def json_objects(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects of JSON-lines text; a torn or foreign line is skipped (the launcher's files are appended
    while read)."""
    for line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            yield obj


def read_events(path: Path, limit: int = HISTORY_ROWS) -> list[dict[str, Any]]:
    """The newest launcher events that tell the restart story; a torn last line is skipped."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    events = [obj for obj in json_objects(lines) if obj.get("event") in HISTORY_EVENTS]
    return events[-limit:]


def event_detail(ev: dict[str, Any]) -> str:
    skip = {"ts", "event", "level", "options", "command"}
    return ", ".join(f"{k}={v}" for k, v in ev.items() if k not in skip and v not in (None, ""))


def launcher_view(state_dir: Path) -> tuple[str, pd.DataFrame]:
    status_path = state_dir / STATUS_FILE
    events = read_events(state_dir / EVENTS_FILE)
    table = pd.DataFrame([[e.get("ts", ""), e.get("event", ""), e.get("level", ""), event_detail(e)]
                          for e in reversed(events)], columns=HISTORY_COLUMNS)
    try:
        status = json.loads(status_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        if not events:
            return (f"没有看到启动器 (no launcher state in {state_dir}: the app is not running under "
                    "`python -m launcher`)"), table
        return "启动器状态文件不可读 (launcher status file missing or unreadable)", table
    last = status.get("last_restart") or {}
    text = (f"启动器 launcher: **{status.get('state', '?')}** · 启动次数 attempt {status.get('attempt', '?')} · "
            f"重启 restarts {status.get('restart_count', 0)} (in window {status.get('restarts_in_window', 0)})")
    if last:
        text += f" · 上次重启 last restart {last.get('ts', '')} ({last.get('reason', '')})"
    return text, table


def epoch(ts: object) -> float | None:
    """Seconds since the epoch of the launcher's ISO 8601 UTC time stamps; None for anything else."""
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def read_memory_samples(path: Path, since: float) -> list[dict[str, Any]]:
    """The launcher's samples from `since` on, oldest first, each with its time as `t`; torn or foreign lines
    are skipped. Reads only the file's tail (MEMORY_TAIL_BYTES)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - MEMORY_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > MEMORY_TAIL_BYTES:
        lines = lines[1:]  # began mid-line
    samples = []
    for obj in json_objects(lines):
        t = epoch(obj.get("ts"))
        if t is None or t < since or not isinstance(obj.get("used_mib"), int | float):
            continue
        obj["t"] = t
        samples.append(obj)
    return samples


def launcher_runs_this_app(state_dir: Path, pid: int, parent_pid: int) -> bool:
    """Whether the launcher's status file names this process (or its parent, for a wrapped command) as the
    app it supervises now: only then are its samples this app's memory."""
    try:
        status = json.loads((state_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return (isinstance(status, dict) and status.get("state") not in LAUNCHER_GONE
            and status.get("child_pid") in (pid, parent_pid))


def restart_marks(state_dir: Path, since: float) -> list[Mark]:
    marks = []
    for e in read_events(state_dir / EVENTS_FILE, limit=10**6):
        t = epoch(e.get("ts"))
        if e.get("event") not in MARK_EVENTS or t is None or t < since:
            continue
        if e["event"] == "restart":
            marks.append(Mark(t, "restart", f"restart: {e.get('reason', '?')}"))
        else:
            marks.append(Mark(t, "crash", f"crash: exit {e.get('exit_code', '?')}"))
    return marks


def runs_of(samples: list[dict[str, Any]]) -> list[Run]:
    """Consecutive samples of one PID and one source as one line."""
    runs: list[Run] = []
    key = None
    for s in samples:
        k = (s.get("pid"), s.get("source", "?"))
        if k != key:
            runs.append(Run(str(k[1]), [], []))
            key = k
        runs[-1].times.append(s["t"])
        runs[-1].mib.append(float(s["used_mib"]))
    return runs


def memory_view(ctx: ServerContext, now: float, *, pid: int | None = None,
                parent_pid: int | None = None) -> tuple[Any, str]:
    """(figure, caption): the launcher's samples, threshold and restarts when a launcher runs this app; else
    this process's own samples, without a threshold."""
    since = now - WINDOW_S
    pid = os.getpid() if pid is None else pid
    parent_pid = os.getppid() if parent_pid is None else parent_pid
    if launcher_runs_this_app(ctx.state_dir, pid, parent_pid):
        samples = read_memory_samples(ctx.state_dir / MEMORY_FILE, since)
        marks = restart_marks(ctx.state_dir, since)
        limits = [(s["t"], s["threshold_mib"]) for s in samples if isinstance(s.get("threshold_mib"), int | float)]
        threshold = Run("threshold", [t for t, _ in limits], [float(v) for _, v in limits]) if limits else None
        fig = charts.memory_figure(runs_of(samples), threshold, marks, now, WINDOW_S,
                                   "memory of the app, sampled by the launcher")
        if not samples:
            return fig, "启动器在运行，但还没有内存采样 (the launcher runs this app but has no memory sample yet)"
        last = samples[-1]
        sources = ", ".join(sorted({str(s.get("source")) for s in samples}))
        caption = (f"启动器采样 sampled by the launcher ({sources}) · 最新 newest **{last['used_mib']:.0f} MiB**")
        if limits:
            caption += f" · 重启阈值 restart threshold **{limits[-1][1]:.0f} MiB** (dashed)"
        return fig, caption + f" · 最近一小时重启 restarts in the last hour: **{len(marks)}**"
    own = ctx.history.memory_window() if ctx.history is not None else []
    runs = runs_of([{"t": p.t, "used_mib": p.used_mib, "source": p.source, "pid": pid} for p in own])
    fig = charts.memory_figure(runs, None, [], now, WINDOW_S,
                               "memory of this process (no launcher: no threshold, no restarts)")
    caption = "没有启动器在运行 (no launcher is running this app): 本进程自己采样 this process samples its own memory"
    if own:
        caption += f" ({own[-1].source}) · 最新 newest **{own[-1].used_mib:.0f} MiB**"
    return fig, caption + " · 没有重启阈值 no restart threshold"


def per_second(count: float, seconds: float) -> str:
    return f"{count / seconds:.2f}" if seconds > 0 else "0.00"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def traffic_caption(points: list[TrafficPoint], now: float) -> str:
    recent = combine(p for p in points if p.end >= now - RECENT_S)
    hour = combine(points)
    return (f"最近一分钟 last minute: API **{per_second(recent.api, recent.seconds)} req/s** · "
            f"UI **{per_second(recent.ui, recent.seconds)} events/s** · p95 **{duration(recent.p95_s)}** · "
            f"繁忙 busy **{recent.busy:.0f}** — 最近一小时 last hour: {hour.api:.0f} API requests · "
            f"{hour.ui:.0f} UI events · p95 {duration(hour.p95_s)} · {hour.busy:.0f} busy answers")


def traffic_view(ctx: ServerContext, now: float) -> tuple[Any, str]:
    points = ctx.history.traffic_window() if ctx.history is not None else []
    since = now - WINDOW_S
    marks = restart_marks(ctx.state_dir, since) if launcher_runs_this_app(ctx.state_dir, os.getpid(),
                                                                         os.getppid()) else []
    return charts.traffic_figure(points, marks, now, WINDOW_S), traffic_caption(points, now)


def plot(fig: Any) -> PlotData:
    return PlotData(type="matplotlib", plot=charts.png_data_url(fig))


def snapshot(ctx: ServerContext) -> tuple[Any, ...]:
    launcher_text, history = launcher_view(ctx.state_dir)
    now = time.time()
    memory_fig, memory_text = memory_view(ctx, now)
    traffic_fig, traffic_text = traffic_view(ctx, now)
    return (models_table(ctx), devices_markdown(), queue_markdown(ctx), plot(memory_fig), memory_text,
            plot(traffic_fig), traffic_text, errors_table(ctx), launcher_text, history,
            checkpoints.serving_markdown(ctx))


def build(ctx: ServerContext) -> tuple[gr.Tab, gr.Timer]:
    """The tab and its timer (the other tabs stop the timer when they are selected)."""
    with gr.Tab("状态 Status", id="status") as tab:
        refresh = gr.Button("刷新 Refresh", size="sm", elem_id="status-refresh")
        gr.Markdown("### 模型 Models")
        models = gr.Dataframe(headers=MODEL_COLUMNS, interactive=False, wrap=True, elem_id="status-models")
        serving = checkpoints.build(ctx)
        gr.Markdown("### 设备 Device")
        devices = gr.Markdown(elem_id="status-devices")
        gr.Markdown("### 队列 Queue")
        queue = gr.Markdown(elem_id="status-queue")
        gr.Markdown("### 内存 Memory (last hour)")
        memory_plot = gr.Plot(format="png", show_label=False, elem_id="status-memory-chart")
        memory_text = gr.Markdown(elem_id="status-memory")
        gr.Markdown("### 请求 Requests (last hour)")
        traffic_plot = gr.Plot(format="png", show_label=False, elem_id="status-traffic-chart")
        traffic_text = gr.Markdown(elem_id="status-traffic")
        gr.Markdown("### 最近错误 Recent errors")
        errors = gr.Dataframe(headers=ERROR_COLUMNS, interactive=False, wrap=True, elem_id="status-errors")
        gr.Markdown("### 启动器 Launcher")
        launcher_text = gr.Markdown(elem_id="status-launcher")
        history = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True, elem_id="status-history")
        timer = gr.Timer(REFRESH_S, active=False)
    outputs = [models, devices, queue, memory_plot, memory_text, traffic_plot, traffic_text, errors, launcher_text,
               history, serving]
    fn = guarded(ctx, "status")(lambda: snapshot(ctx))
    # Never queued behind inference: the status must answer while the cap is full.
    refresh.click(fn, None, outputs, api_name="status", queue=False, show_progress="hidden",
                  api_description="Models, device, queue, memory and request charts of the last hour with "
                                  "their captions, recent errors and launcher history.")
    timer.tick(fn, None, outputs, api_name="status_tick", queue=False, show_progress="hidden",
               api_visibility="undocumented")
    opened = guarded(ctx, "status_open")(lambda: (gr.Timer(active=True), *snapshot(ctx)))
    tab.select(opened, None, [timer, *outputs], api_name="status_open", queue=False, show_progress="hidden",
               api_visibility="undocumented")
    return tab, timer

