"""调优 Tune tab: upload labelled pairs, choose the model, start a tune job, watch its loss, compare the held-out
metrics before and after, and serve the result without a restart.

The job runs in its own process (app/tune/jobs.py `TuneJobs`: `python -m app tune …`, one at a time, cancellable),
never in the server's; this tab only starts it, polls its state (a timer that runs while the tab is open) and draws
it. "Serve this result" is the status tab's swap (ServerContext.serve_checkpoint). The uploads are copied out of
the file store into a folder of the job's own (0700, in the state directory): the store may drop an upload after
an hour or when full, and a job may run longer than that.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from app.errors import InputError
from app.web.context import ServerContext
from app.web.ui.common import guarded
from app.web.ui.filestore import FileStore

POLL_S = 1.0
CHART_POINTS = 500  # a long job's loss curve is drawn from at most this many of its steps (sent every second)
PAIR_SUFFIXES = (".jsonl", ".csv")
METRIC_COLUMNS = ["指标 metric", "调优前 before", "调优后 after"]
JOBS_DIR = "tune-uploads"  # in the state directory: each job's copies of its two files
STATUS_LABELS = {"idle": "空闲 idle", "running": "训练中 running", "done": "完成 done", "failed": "失败 failed",
                 "cancelled": "已取消 cancelled"}


def copy_upload(store: FileStore, upload: str | None, what: str, folder: Path, max_bytes: int) -> Path:
    """The upload `upload` (one of this process's, by the store's rule) copied into `folder`, as `<what><suffix>`."""
    if not upload:
        raise InputError(f"没有{what}文件 (no {what} file): upload a .jsonl or .csv file of pairs "
                         "(text_a, text_b, label)")
    name, data = store.read_upload(upload)
    suffix = Path(name).suffix.lower()
    if suffix not in PAIR_SUFFIXES:
        raise InputError(f"{name}: a {what} file must be .jsonl or .csv (rows text_a, text_b, label)")
    if len(data) > max_bytes:
        raise InputError(f"{name}: {len(data) / 2**20:.1f} MiB, the limit is {max_bytes / 2**20:g} MiB "
                         "(WENMO_MAX_UPLOAD_MIB); use `wenmo tune` in a shell for bigger files")
    target = folder / f"{what}{suffix}"
    target.write_bytes(data)
    return target


def progress_markdown(state: dict[str, Any]) -> str:
    status = state.get("status", "idle")
    if status == "idle":
        return "没有任务 (no tune job yet): upload the pairs, choose the model, press 开始 Start."
    step, steps = int(state.get("step") or 0), int(state.get("steps") or 0)
    losses = state.get("losses") or []
    loss = f" · loss **{float(losses[-1]):.4f}**" if losses else ""
    bar = f" · step {step}/{steps} ({100 * step / steps:.0f} %)" if steps else ""
    line = f"**{STATUS_LABELS.get(status, status)}** · {state.get('role', '')}{bar}{loss}"
    if state.get("message"):
        line += f"\n\n{state['message']}"
    if status == "done" and state.get("out"):
        line += f"\n\n结果 result: `{Path(state['out']).name}`"
    return line


def loss_frame(state: dict[str, Any]) -> pd.DataFrame:
    """The loss per step; past CHART_POINTS steps, evenly spaced ones and the last (the curve's shape, not a
    megabyte a second for a job of 100,000 steps)."""
    losses = state.get("losses") or []
    stride = -(-len(losses) // CHART_POINTS) if losses else 1
    steps = list(range(len(losses) - 1, -1, -stride))[::-1]  # counted back from the last, so it is always drawn
    return pd.DataFrame({"step": [i + 1 for i in steps], "loss": [float(losses[i]) for i in steps]})


def metrics_frame(state: dict[str, Any]) -> pd.DataFrame:
    before, after = state.get("before") or {}, state.get("after") or {}
    rows = [[name, _fmt(before.get(name)), _fmt(after.get(name))] for name in dict.fromkeys([*before, *after])]
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{float(value):.4f}"


def view(state: dict[str, Any]) -> tuple[Any, ...]:
    """(progress text, loss chart data, before/after table, serve button)."""
    done = state.get("status") == "done" and bool(state.get("out"))
    return (progress_markdown(state), loss_frame(state), metrics_frame(state), gr.Button(interactive=done))


def build(ctx: ServerContext, store: FileStore) -> tuple[gr.Tab, gr.Timer]:
    """The tab and its poll timer (runs only while the tab is open; blocks.py stops it on the other tabs)."""
    with gr.Tab("调优 Tune", id="tune") as tab:
        gr.Markdown("用自己的标注句对调优模型 (tune a model on your own labelled pairs): JSONL or CSV rows `text_a, "
                    "text_b, label` (label 0/1 or a score in [0, 1]). Training runs in its own process; one job at "
                    "a time.", elem_classes=["wm-note"])
        with gr.Row():
            train = gr.File(label="训练集 train pairs", file_types=list(PAIR_SUFFIXES), type="filepath",
                            elem_id="tune-train")
            held_out = gr.File(label="验证集 held-out pairs", file_types=list(PAIR_SUFFIXES), type="filepath",
                               elem_id="tune-eval")
        with gr.Row():
            role = gr.Radio([("向量 embed (GTE)", "embed"), ("交叉编码器 cross (StructBERT)", "cross")], value="embed",
                            label="模型 model", elem_id="tune-role")
            steps = gr.Number(value=0, precision=0, minimum=0, label="步数 steps (0: the tune command's default)",
                              elem_id="tune-steps")
        with gr.Row():
            start = gr.Button("开始 Start", variant="primary", elem_id="tune-start")
            cancel = gr.Button("取消 Cancel", variant="stop", elem_id="tune-cancel")
        progress = gr.Markdown(elem_id="tune-progress")
        losses = gr.LinePlot(x="step", y="loss", title="loss", height=220, elem_id="tune-loss")
        metrics = gr.Dataframe(headers=METRIC_COLUMNS, interactive=False, elem_id="tune-metrics")
        serve = gr.Button("使用此结果 Serve this result", interactive=False, elem_id="tune-serve")
        served = gr.Markdown(elem_id="tune-served")
        timer = gr.Timer(POLL_S, active=False)

    outputs = [progress, losses, metrics, serve]

    def state() -> dict[str, Any]:
        return ctx.tune_jobs.state()

    def begin(train_file: str | None, eval_file: str | None, role_name: str, step_count: float | None) -> Any:
        if role_name not in ("embed", "cross"):
            raise InputError(f"model {role_name!r}: choose embed or cross")
        root = Path(ctx.state_dir) / JOBS_DIR
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder = Path(tempfile.mkdtemp(prefix="job-", dir=root))
        try:
            train_path = copy_upload(store, train_file, "train", folder, ctx.max_upload_bytes)
            eval_path = copy_upload(store, eval_file, "eval", folder, ctx.max_upload_bytes)
            options = {"steps": int(step_count)} if step_count else {}
            ctx.tune_jobs.start(role_name, str(train_path), str(eval_path), demo=ctx.demo, options=options)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        ctx.tune_jobs.prune(root, folder)  # the uploads of jobs before the newest few
        return (gr.Timer(active=True), *view(state()))

    def stop() -> tuple[Any, ...]:
        ctx.tune_jobs.cancel()
        return view(state())

    def poll() -> tuple[Any, ...]:
        now = state()
        return (gr.Timer(active=now.get("status") == "running"), *view(now))

    def serve_result() -> str:
        now = state()
        if now.get("status") != "done" or not now.get("out"):
            raise InputError("没有可用的结果 (no finished tune job): serve a result once its job is done")
        served_state = ctx.serve_checkpoint(now["role"], now["out"])
        return f"已切换 now serving: {served_state.role} → `{served_state.name}`"

    start.click(guarded(ctx, "tune_start")(begin), [train, held_out, role, steps], [timer, *outputs],
                api_name="tune_start", queue=False,
                api_description="Start a tune job on the uploaded train and held-out pair files (one at a time).")
    cancel.click(guarded(ctx, "tune_cancel")(stop), None, outputs, api_name="tune_cancel", queue=False,
                 api_description="Cancel the running tune job.")
    timer.tick(guarded(ctx, "tune_state")(poll), None, [timer, *outputs], api_name="tune_state", queue=False,
               show_progress="hidden", api_description="The tune job's state: progress and loss, metrics.")
    serve.click(guarded(ctx, "tune_serve")(serve_result), None, served, api_name="tune_serve", queue=False,
                api_description="Serve the finished job's checkpoint without a restart (the status tab's swap).")
    tab.select(guarded(ctx, "tune_open")(poll), None, [timer, *outputs], api_name="tune_open", queue=False,
               show_progress="hidden", api_visibility="undocumented")
    return tab, timer
