"""The page: demo banner, the tabs (similarity, vectors, NLU, status; tune when the server runs tune jobs),
footer. Every event has an api_name (README: "gradio_client").

Nothing is cached: no example caching, no flagging, no run history; Gradio's file cache (uploads and
downloads, app/web/ui/filestore.py) is pruned hourly and bounded on disk. Every file argument of every event is
checked against the store's rule before Gradio touches it (`WenmoBlocks.preprocess_data`).
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from app.errors import FileRejectedError
from app.web.context import ServerContext
from app.web.ui import nlu, similarity, status, tune, vectors
from app.web.ui.common import DEMO_BANNER, footer_text
from app.web.ui.filestore import FileStore

CSS = """
.wm-demo-banner { background: #b91c1c; color: #fff; font-weight: 600; padding: 8px 14px; border-radius: 6px;
                  text-align: center; }
.wm-footer { font-size: 0.85em; color: var(--body-text-color-subdued); border-top: 1px solid
             var(--border-color-primary); padding-top: 6px; }
.wm-heatmap table { border-collapse: collapse; font-size: 0.8em; }
.wm-heatmap th, .wm-heatmap td { border: 1px solid #ddd; padding: 2px 5px; text-align: center; min-width: 2.6em; }
.wm-heatmap .wm-legend { font-size: 0.8em; margin-top: 6px; columns: 2; list-style: none; padding-left: 0; }
.wm-heatmap h4 { margin: 4px 0; }
.wm-note { color: var(--body-text-color-subdued); }
"""


class WenmoBlocks(gr.Blocks):
    """Blocks whose events take only this process's uploads as file arguments.

    Gradio copies a file argument into its cache before the handler runs (`async_move_files_to_cache`), and
    its own check that the path is an upload is skipped for Blocks mounted on another app (it runs only
    after `launch()`): so the check comes first, here, for every event, with the store's one message."""

    def __init__(self, *args: Any, ctx: ServerContext, store: FileStore, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wenmo_ctx = ctx
        self.file_store = store

    async def preprocess_data(self, block_fn: Any, inputs: list[Any], state: Any, explicit_call: bool = False
                              ) -> Any:
        try:
            for value in inputs:
                self.file_store.check_file_args(value)
        except FileRejectedError as e:
            self.wenmo_ctx.metrics.observe_event(block_fn.api_name or block_fn.name, "invalid", 0.0)
            raise gr.Error(e.message, title="输入有误 Invalid input", print_exception=False) from None
        return await super().preprocess_data(block_fn, inputs, state, explicit_call)


def forget_files(blocks: gr.Blocks, paths: list[str]) -> None:
    """Drop files the store removed from Gradio's record of the files it served (`temp_file_sets`). Gradio's
    own clean-up forgets only the files it deletes itself; one already gone raises FileNotFoundError there and
    stays recorded for the life of the process (a path string per exported or uploaded file)."""
    gone = set(paths)
    for recorded in blocks.temp_file_sets:
        recorded.difference_update(gone)  # one C call: atomic under the GIL


def build_blocks(ctx: ServerContext, store: FileStore) -> gr.Blocks:
    # delete_cache=(every 10 min, files older than 1 h): uploads and downloads do not pile up.
    with WenmoBlocks(title="Wenmo 文墨", delete_cache=(600, 3600), analytics_enabled=False, ctx=ctx,
                     store=store) as demo:
        if ctx.demo:
            gr.HTML(f"<div class='wm-demo-banner'>⚠ {html.escape(DEMO_BANNER)}</div>", elem_id="demo-banner")
        gr.Markdown("## 文墨 Wenmo · 中文语义 Chinese text semantics")
        with gr.Tabs():
            tabs = [similarity.build(ctx, store), vectors.build(ctx, store), nlu.build(ctx)]
            status_tab, timer = status.build(ctx)
            # The tune tab needs the server's tune job runner (ServerContext.tune_jobs).
            tune_tab, tune_timer = tune.build(ctx, store) if ctx.tune_jobs is not None else (None, None)
        footer = gr.Markdown(elem_classes=["wm-footer"], elem_id="wm-footer")
        demo.load(lambda: footer_text(ctx), None, footer, api_name="footer", queue=False, show_progress="hidden",
                  api_description="The models and the vector dimension, as shown in the footer.")
        timers = [timer] if tune_timer is None else [timer, tune_timer]
        for tab, name in zip(tabs, ("similarity", "vectors", "nlu"), strict=True):
            # The status and tune timers run only while their tab is open.
            tab.select(lambda: [gr.Timer(active=False)] * len(timers), None, timers,
                       api_name=f"leave_status_for_{name}", queue=False, show_progress="hidden",
                       api_visibility="private")
        if tune_tab is not None:
            tune_tab.select(lambda: gr.Timer(active=False), None, timer, api_name="leave_status_for_tune",
                            queue=False, show_progress="hidden", api_visibility="private")
            status_tab.select(lambda: gr.Timer(active=False), None, tune_timer, api_name="leave_tune_for_status",
                              queue=False, show_progress="hidden", api_visibility="private")
    return demo
