"""The status tab's control that points a model role at another checkpoint (a tuned one, or the original) and
rolls it back: the same service swap as `POST /v1/models/{role}` (ServerContext.serve_checkpoint). Layout and
formatting only; the service says which checkpoints are allowed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gradio as gr

from app.checkpoints import ORIGINAL
from app.web.context import ServerContext
from app.web.ui.common import guarded

ROLE_LABELS = {"embed": "向量 embed", "cross": "交叉编码器 cross", "nlu": "通用理解 nlu"}


def serving_markdown(ctx: ServerContext) -> str:
    """One line per role: the checkpoint that serves, since when, and what a rollback would serve."""
    if not ctx.lifecycle.loaded:
        return "模型加载中 (models loading)…"
    lines = []
    for s in ctx.service.serving():
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.loaded_at))
        back = f"; 回滚到 rollback to `{Path(s.previous).name}`" if s.previous else ""
        tuned = " (调优 tuned)" if s.path != s.original else ""
        lines.append(f"- {ROLE_LABELS.get(s.role, s.role)}: `{s.name}`{tuned} · 自 since {since}{back}")
    return "\n".join(lines)


def checkpoint_choices(ctx: ServerContext, role: str) -> list[tuple[str, str]]:
    """(label, value) for the dropdown: the original, then the role's tuned checkpoints, newest first."""
    if not ctx.lifecycle.loaded:
        return [("原始 original", ORIGINAL)]
    return [("原始 original", ORIGINAL), *((Path(p).name, p) for p in ctx.service.tuned_checkpoints(role))]


def roles(ctx: ServerContext) -> list[str]:
    return list(ctx.roles) or ["embed"]


def build(ctx: ServerContext) -> gr.Markdown:
    """The control, inside the status tab; returns the serving summary (the tab's refresh updates it too)."""
    gr.Markdown("### 服务的检查点 Serving checkpoint")
    serving = gr.Markdown(elem_id="status-serving")
    with gr.Row():
        role = gr.Dropdown([(ROLE_LABELS[r], r) for r in ("embed", "cross", "nlu")], value="embed",
                           label="模型 model", elem_id="serve-role", scale=1)
        # Custom values pass to the service, which is the one judge of what may be served (and says why not).
        checkpoint = gr.Dropdown(checkpoint_choices(ctx, "embed"), value=ORIGINAL, label="检查点 checkpoint",
                                 allow_custom_value=True, elem_id="serve-checkpoint", scale=3)
    with gr.Row():
        serve = gr.Button("切换 Serve", variant="primary", size="sm", elem_id="serve-button")
        rollback = gr.Button("回滚 Roll back", size="sm", elem_id="rollback-button")
        reload_list = gr.Button("刷新列表 Refresh list", size="sm", elem_id="serve-list-refresh")

    def listed(role_name: str) -> Any:
        return gr.Dropdown(choices=checkpoint_choices(ctx, role_name), value=ORIGINAL)

    def swap(role_name: str, chosen: str) -> str:
        ctx.serve_checkpoint(role_name, chosen)
        return serving_markdown(ctx)

    def back(role_name: str) -> str:
        ctx.serve_checkpoint(role_name, None)
        return serving_markdown(ctx)

    reload_list.click(guarded(ctx, "checkpoints")(listed), role, checkpoint, api_name="checkpoints", queue=False,
                      show_progress="hidden", api_description="The checkpoints a role can be pointed at: the "
                                                              "original and its tuned ones, newest first.")
    role.change(guarded(ctx, "checkpoints")(listed), role, checkpoint, api_name="checkpoints_for_role", queue=False,
                show_progress="hidden", api_visibility="undocumented")
    # Not queued behind inference: a swap loads beside the serving model and must not wait for the cap.
    serve.click(guarded(ctx, "serve_checkpoint")(swap), [role, checkpoint], serving, api_name="serve_checkpoint",
                queue=False, api_description="Serve the chosen checkpoint for the role without a restart "
                                             "(the same swap as POST /v1/models/{role}).")
    rollback.click(guarded(ctx, "rollback_checkpoint")(back), role, serving, api_name="rollback_checkpoint",
                   queue=False, api_description="Serve the role's previous checkpoint again.")
    return serving
