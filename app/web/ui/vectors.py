"""向量 Vectors tab: embed texts (typed or uploaded) and get the vectors out — a preview, a copy button
with all vectors as JSON, and downloads as JSONL, CSV (the same formats as `python -m app embed`) and .npy.

Large batches are embedded in chunks so the progress bar moves; each chunk takes its own slot under the
concurrency cap, so one big upload does not hold the GPU away from everybody else for its whole length.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from app.export import write_vectors  # one definition of the JSONL/CSV layout for the CLI and the UI
from app.service import Embeddings
from app.web.context import ServerContext
from app.web.ui.common import guarded, short
from app.web.ui.filestore import FileStore
from app.web.ui.uploads import read_texts

CHUNK = 256  # texts per service call when a batch is large enough to want a progress bar
PREVIEW_ROWS = 100
PREVIEW_DIMS = 10
COPY_MAX_CHARS = 8_000_000  # bigger JSON makes the browser crawl; the downloads have no such limit


def vectors_json(vectors: np.ndarray) -> str:
    """`[{"vector": [...], "dimension": D}, …]`, one text per line; 9 significant digits give float32
    back exactly."""
    dim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
    rows = [
        '{"vector": [' + ", ".join(f"{x:.9g}" for x in vec.tolist()) + f'], "dimension": {dim}}}'
        for vec in vectors
    ]
    return "[\n" + ",\n".join(rows) + "\n]"


def embed_chunked(ctx: ServerContext, texts: list[str], normalize: bool, progress: Any) -> Embeddings:
    service = ctx.service
    if len(texts) <= CHUNK:
        return service.embed(texts, normalize=normalize)
    parts: list[Embeddings] = []
    for start in range(0, len(texts), CHUNK):
        progress(start / len(texts), desc=f"向量化 embedding {start}/{len(texts)}")
        parts.append(service.embed(texts[start:start + CHUNK], normalize=normalize))
    progress(1.0, desc=f"向量化 embedding {len(texts)}/{len(texts)}")
    return Embeddings(
        np.concatenate([p.vectors for p in parts]),
        tuple(t for p in parts for t in p.truncated),
        tuple(n for p in parts for n in p.token_counts),
        sum(p.elapsed_s for p in parts),
        model=parts[0].model,
        dimension=parts[0].dimension,
    )


def export_bytes_bound(texts: list[str], dimension: int) -> int:
    """At most the bytes the three exports take: a float is ≤ 26 characters in JSON or CSV (the repr of a
    float32 widened to float, and a separator); a text takes its JSON string's bytes in the JSONL and no more
    in the CSV (where only quotes are doubled); plus the .npy header and the blocks of three files and their
    folder."""
    numbers = len(texts) * dimension
    text_bytes = sum(len(json.dumps(t, ensure_ascii=False).encode("utf-8", "surrogatepass")) for t in texts)
    return 128 + 4 * numbers + 2 * (26 * numbers + text_bytes + 100 * len(texts) + 26 * dimension) + 4 * 8192


def run(ctx: ServerContext, store: FileStore, texts_text: str, upload: str | None, normalize: bool,
        skip_blank: bool, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    """Returns (summary, preview, JSON for copying, JSONL path, CSV path, .npy path)."""
    texts, origin = read_texts(texts_text, upload, store=store, max_bytes=ctx.max_upload_bytes,
                               skip_blank=skip_blank)
    ctx.service.check_texts(texts)  # count and length limits before any work, with their messages
    result = embed_chunked(ctx, texts, normalize, progress)
    # Written into the file store (Gradio's cache), so they are served as they are, counted in the store's
    # bound, and private (0600 under the server's umask, in 0700 folders).
    with store.export_dir(export_bytes_bound(texts, result.dimension)) as folder:
        paths = {fmt: folder / f"vectors.{fmt}" for fmt in ("jsonl", "csv", "npy")}
        write_vectors(texts, result, "jsonl", str(paths["jsonl"]))
        write_vectors(texts, result, "csv", str(paths["csv"]))
        np.save(paths["npy"], result.vectors)
    shown = min(len(texts), PREVIEW_ROWS)
    dims = min(result.dimension, PREVIEW_DIMS)
    preview = pd.DataFrame(
        [[i, short(texts[i], 30), result.dimension, "是 yes" if result.truncated[i] else "",
          *[round(float(x), 5) for x in result.vectors[i, :dims]]] for i in range(shown)],
        columns=["#", "文本 text", "维度 dim", "截断 truncated", *[f"d{j}" for j in range(dims)]],
    )
    as_json = vectors_json(result.vectors)
    notes = [f"**{len(texts)}** 条文本 texts from {origin}", f"维度 dimension **{result.dimension}**",
             "单位长度 normalised" if normalize else "未归一化 raw (not normalised)",
             f"{result.elapsed_s:.2f} s"]
    if shown < len(texts):
        notes.append(f"预览前 {shown} 条 (preview shows the first {shown})")
    if len(as_json) > COPY_MAX_CHARS:
        as_json = ""
        notes.append("JSON 太大无法复制，请下载 (too large to copy: use the JSONL download)")
    truncated = sum(result.truncated)
    if truncated:
        notes.append(f"⚠ {truncated} 条被截断 (truncated to the model's maximum length)")
    return (" · ".join(notes), preview, as_json, str(paths["jsonl"]), str(paths["csv"]), str(paths["npy"]))


def build(ctx: ServerContext, store: FileStore) -> gr.Tab:
    with gr.Tab("向量 Vectors", id="vectors") as tab:
        with gr.Row():
            with gr.Column(scale=1):
                texts = gr.Textbox(label="文本 Texts（每行一条 one per line）", lines=10,
                                   placeholder="今天天气很好\n我喜欢看电影", elem_id="vec-texts")
                upload = gr.File(label="或上传 .txt / .csv（优先于文本框 wins over the text box）",
                                 file_types=[".txt", ".csv"], type="filepath", elem_id="vec-upload")
                with gr.Row():
                    normalize = gr.Checkbox(label="归一化 Normalise (unit length)", value=True, elem_id="vec-norm")
                    skip_blank = gr.Checkbox(label="跳过空行 Skip blank lines", value=False, elem_id="vec-skip-blank")
                button = gr.Button("生成向量 Embed", variant="primary", elem_id="vec-run")
            with gr.Column(scale=2):
                summary = gr.Markdown(elem_id="vec-summary")
                preview = gr.Dataframe(label=f"预览 Preview（前 {PREVIEW_DIMS} 维 first dimensions）",
                                       interactive=False, elem_id="vec-preview")
                with gr.Row():
                    jsonl = gr.DownloadButton("下载 JSONL", elem_id="vec-dl-jsonl", size="sm")
                    csv_ = gr.DownloadButton("下载 CSV", elem_id="vec-dl-csv", size="sm")
                    npy = gr.DownloadButton("下载 .npy", elem_id="vec-dl-npy", size="sm")
                as_json = gr.Code(label="全部向量 JSON（点右上角复制 copy button at the top right）",
                                  language="json", interactive=False, lines=6, max_lines=14,
                                  buttons=["copy"], elem_id="vec-json")
        fn = guarded(ctx, "embed")(functools.partial(run, ctx, store))
        button.click(fn, [texts, upload, normalize, skip_blank], [summary, preview, as_json, jsonl, csv_, npy],
                     api_name="embed",
                     api_description="Embed texts (one per line, or an uploaded .txt/.csv); returns summary, "
                                     "preview, all vectors as JSON, and JSONL / CSV / .npy files.")
    return tab
