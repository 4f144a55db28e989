"""The page: demo banner, four tabs, footer. Every event has an api_name (README: "gradio_client").

Nothing is cached: no example caching, no flagging, no run history; Gradio's file cache (uploads and
downloads) is pruned hourly.
"""

from __future__ import annotations

import html

import gradio as gr

from app.context import ServerContext
from app.ui import nlu, similarity, status, vectors
from app.ui.common import DEMO_BANNER, footer_text
from app.ui.downloads import DownloadDir

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


def build_blocks(ctx: ServerContext, downloads: DownloadDir) -> gr.Blocks:
    # delete_cache=(every 10 min, files older than 1 h): uploads and downloads do not pile up.
    with gr.Blocks(title="Wenmo 文墨", delete_cache=(600, 3600), analytics_enabled=False) as demo:
        if ctx.demo:
            gr.HTML(f"<div class='wm-demo-banner'>⚠ {html.escape(DEMO_BANNER)}</div>", elem_id="demo-banner")
        gr.Markdown("## 文墨 Wenmo · 中文语义 Chinese text semantics")
        with gr.Tabs():
            tabs = [similarity.build(ctx), vectors.build(ctx, downloads), nlu.build(ctx)]
            _status_tab, timer = status.build(ctx)
        footer = gr.Markdown(elem_classes=["wm-footer"], elem_id="wm-footer")
        demo.load(lambda: footer_text(ctx), None, footer, api_name="footer", queue=False, show_progress="hidden",
                  api_description="The models and the vector dimension, as shown in the footer.")
        for tab, name in zip(tabs, ("similarity", "vectors", "nlu"), strict=True):
            # The status timer runs only while its tab is open.
            tab.select(lambda: gr.Timer(active=False), None, timer, api_name=f"leave_status_for_{name}",
                       queue=False, show_progress="hidden", api_visibility="private")
    return demo
