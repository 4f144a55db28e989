"""状态 Status tab: loaded models, the GPU (NVML) or CPU and memory (psutil), the queue, recent errors and —
when the launcher runs beside the app — its state and restart history from the state directory.

Refreshed every few seconds while the tab is open (a timer that runs only on this tab).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from app import hostinfo
from app.web.context import ServerContext
from app.web.ui.common import guarded

REFRESH_S = 5.0
EVENTS_FILE = "launcher-events.jsonl"
STATUS_FILE = "launcher-status.json"
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


def read_events(path: Path, limit: int = HISTORY_ROWS) -> list[dict[str, Any]]:
    """The newest launcher events that tell the restart story; a torn last line is skipped."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    events = []
    for line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and obj.get("event") in HISTORY_EVENTS:
            events.append(obj)
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


def snapshot(ctx: ServerContext) -> tuple[Any, ...]:
    launcher_text, history = launcher_view(ctx.state_dir)
    return (models_table(ctx), devices_markdown(), queue_markdown(ctx), errors_table(ctx), launcher_text, history)


def build(ctx: ServerContext) -> tuple[gr.Tab, gr.Timer]:
    """The tab and its timer (the other tabs stop the timer when they are selected)."""
    with gr.Tab("状态 Status", id="status") as tab:
        refresh = gr.Button("刷新 Refresh", size="sm", elem_id="status-refresh")
        gr.Markdown("### 模型 Models")
        models = gr.Dataframe(headers=MODEL_COLUMNS, interactive=False, wrap=True, elem_id="status-models")
        gr.Markdown("### 设备 Device")
        devices = gr.Markdown(elem_id="status-devices")
        gr.Markdown("### 队列 Queue")
        queue = gr.Markdown(elem_id="status-queue")
        gr.Markdown("### 最近错误 Recent errors")
        errors = gr.Dataframe(headers=ERROR_COLUMNS, interactive=False, wrap=True, elem_id="status-errors")
        gr.Markdown("### 启动器 Launcher")
        launcher_text = gr.Markdown(elem_id="status-launcher")
        history = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True, elem_id="status-history")
        timer = gr.Timer(REFRESH_S, active=False)
    outputs = [models, devices, queue, errors, launcher_text, history]
    fn = guarded(ctx, "status")(lambda: snapshot(ctx))
    # Never queued behind inference: the status must answer while the cap is full.
    refresh.click(fn, None, outputs, api_name="status", queue=False, show_progress="hidden",
                  api_description="Models, device, queue, recent errors and launcher history.")
    timer.tick(fn, None, outputs, api_name="status_tick", queue=False, show_progress="hidden",
               api_visibility="undocumented")
    opened = guarded(ctx, "status_open")(lambda: (gr.Timer(active=True), *snapshot(ctx)))
    tab.select(opened, None, [timer, *outputs], api_name="status_open", queue=False, show_progress="hidden",
               api_visibility="undocumented")
    return tab, timer

