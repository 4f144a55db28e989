"""相似度 Similarity tab: one source text against candidates (typed or uploaded), cosine from the embedding
model and optionally the cross-encoder's probability; a ranked table, a bar chart, and for small sets a
pairwise cosine matrix drawn as a heatmap.
"""

from __future__ import annotations

import functools
import html

import gradio as gr
import pandas as pd

from app.web.context import ServerContext
from app.web.ui.common import guarded, short
from app.web.ui.filestore import FileStore
from app.web.ui.uploads import read_texts

HEATMAP_MAX_TEXTS = 50  # source + candidates; beyond this a matrix is unreadable anyway
BAR_MAX = 30
COLUMNS = ["排名 rank", "候选 candidate", "余弦 cosine", "交叉编码器 P(similar)", "截断 truncated"]


def run(ctx: ServerContext, store: FileStore, source: str, candidates_text: str, upload: str | None,
        rerank: bool, skip_blank: bool) -> tuple[str, pd.DataFrame, pd.DataFrame, str]:
    """Returns (summary, ranked table, bar-chart data, heatmap HTML). One embedding pass: the heatmap is drawn
    from the vectors the ranking computed."""
    service = ctx.service  # first: while the models load, that is the answer
    candidates, origin = read_texts(candidates_text, upload, store=store, max_bytes=ctx.max_upload_bytes,
                                    skip_blank=skip_blank)
    out = service.similarity(source, candidates, rerank=rerank)
    rows = [
        [rank, r.text, round(r.cosine, 4), None if r.cross_score is None else round(r.cross_score, 4),
         "是 yes" if r.truncated else ""]
        for rank, r in enumerate(out.results, start=1)
    ]
    table = pd.DataFrame(rows, columns=COLUMNS)
    bars = pd.DataFrame(
        [{"candidate": f"{rank}. {short(r.text, 14)}", "score": r.cross_score if out.reranked else r.cosine}
         for rank, r in enumerate(out.results[:BAR_MAX], start=1)]
    )
    texts = [source, *candidates]
    if len(texts) <= HEATMAP_MAX_TEXTS:
        heat = heatmap_html(["源 S", *map(str, range(1, len(candidates) + 1))], texts, out.pairwise_matrix())
    else:
        heat = (f"<p class='wm-note'>两两矩阵只在不超过 {HEATMAP_MAX_TEXTS} 条文本时显示 (the pairwise matrix is "
                f"shown for at most {HEATMAP_MAX_TEXTS} texts; this call has {len(texts)})</p>")
    notes = [f"**{len(candidates)}** 条候选 candidates from {origin}",
             f"{'按交叉编码器排序 sorted by cross-encoder' if out.reranked else '按余弦排序 sorted by cosine'}",
             f"{out.elapsed_s:.2f} s"]
    if out.source_truncated:
        notes.append("⚠ 源文本被截断 (the source was truncated to the model's maximum length)")
    if any(r.truncated for r in out.results):
        notes.append("⚠ 部分候选被截断 (some candidates were truncated; see the table)")
    return " · ".join(notes), table, bars, heat


def heatmap_html(labels: list[str], texts: list[str], matrix: list[list[float]]) -> str:
    """A table coloured by cosine: blue for similar, white around 0, red for opposite."""

    def colour(v: float) -> str:
        v = max(-1.0, min(1.0, v))
        if v >= 0:
            r, g, b = (int(255 - v * (255 - c)) for c in (33, 102, 172))
        else:
            r, g, b = (int(255 + v * (255 - c)) for c in (178, 24, 43))
        text = "#fff" if abs(v) > 0.6 else "#111"
        return f"background:rgb({r},{g},{b});color:{text}"

    head = "".join(f"<th title='{html.escape(t, quote=True)}'>{html.escape(lab)}</th>"
                   for lab, t in zip(labels, texts, strict=True))
    body = []
    for lab, t, row in zip(labels, texts, matrix, strict=True):
        cells = "".join(f"<td style='{colour(v)}' title='{v:.4f}'>{v:.2f}</td>" for v in row)
        body.append(f"<tr><th title='{html.escape(t, quote=True)}'>{html.escape(lab)}</th>{cells}</tr>")
    legend = "".join(f"<li><b>{html.escape(lab)}</b> {html.escape(short(t, 60))}</li>"
                     for lab, t in zip(labels, texts, strict=True))
    return (f"<div class='wm-heatmap'><h4>两两余弦 Pairwise cosine</h4><table><thead><tr><th></th>{head}</tr>"
            f"</thead><tbody>{''.join(body)}</tbody></table><ul class='wm-legend'>{legend}</ul></div>")


def build(ctx: ServerContext, store: FileStore) -> gr.Tab:
    with gr.Tab("相似度 Similarity", id="similarity") as tab:
        with gr.Row():
            with gr.Column(scale=1):
                source = gr.Textbox(label="源文本 Source", lines=2, placeholder="例如：今天天气很好",
                                    elem_id="sim-source")
                candidates = gr.Textbox(label="候选文本 Candidates（每行一条 one per line）", lines=8,
                                        placeholder="今天天气不错\n明天会下雨\n我喜欢看电影", elem_id="sim-candidates")
                upload = gr.File(label="或上传 .txt / .csv（优先于文本框 wins over the text box）",
                                 file_types=[".txt", ".csv"], type="filepath", elem_id="sim-upload")
                with gr.Row():
                    rerank = gr.Checkbox(label="用交叉编码器重排 Rerank with the cross-encoder", value=False,
                                         elem_id="sim-rerank")
                    skip_blank = gr.Checkbox(label="跳过空行 Skip blank lines", value=False, elem_id="sim-skip-blank")
                button = gr.Button("计算相似度 Compare", variant="primary", elem_id="sim-run")
            with gr.Column(scale=2):
                summary = gr.Markdown(elem_id="sim-summary")
                table = gr.Dataframe(headers=COLUMNS, label="排序结果 Ranked", interactive=False,
                                     elem_id="sim-table", wrap=True)
                bars = gr.BarPlot(x="candidate", y="score", sort="-y", y_lim=[-1, 1], y_title="得分 score",
                                  x_title="候选 candidate", x_label_angle=-30, elem_id="sim-bars",
                                  label=f"得分：余弦，重排时为交叉编码器概率 (score: cosine, or the cross-encoder's "
                                        f"P(similar) when reranked; top {BAR_MAX})")
                heat = gr.HTML(label="两两余弦 Pairwise cosine", elem_id="sim-heatmap")
        fn = guarded(ctx, "similarity")(functools.partial(run, ctx, store))
        inputs = [source, candidates, upload, rerank, skip_blank]
        button.click(fn, inputs, [summary, table, bars, heat], api_name="similarity",
                     api_description="Rank candidates (one per line, or an uploaded .txt/.csv) against a source "
                                     "text; returns summary, table, chart data and heatmap HTML.")
    return tab
