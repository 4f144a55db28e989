"""通用理解 NLU tab: RexUniNLU driven by a JSON schema. Presets fill the schema, an example text and the task;
the schema editor says at once whether the schema is valid; results come back as highlighted text, a table
of paths and the raw JSON (with a copy button).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import gradio as gr
import pandas as pd

from app.errors import InputError
from app.models.uninlu.presets import presets as nlu_presets
from app.models.uninlu.schema import parse_schema
from app.web.context import ServerContext
from app.web.ui.common import guarded

TASK_CHOICES = [("自动 auto", "auto"), ("抽取 extract", "extract"), ("单标签分类 classify", "classify"),
                ("多标签分类 multi_classify", "multi_classify")]
PATH_COLUMNS = ["#", "路径 path (类型: 片段 type: span)", "位置 offset", "置信度 score"]


def preset_values(presets: list[dict[str, Any]], preset_id: str | None) -> tuple[str, str, str, str]:
    """(schema JSON, example text, task, note) for a preset id."""
    for p in presets:
        if p["id"] == preset_id:
            schema = json.dumps(p["schema"], ensure_ascii=False, indent=2)
            note = f"**{p['title_zh']}** {p['title_en']} — {p.get('note', '')}"
            return schema, p["text"], p["task"], note
    raise InputError(f"unknown preset {preset_id!r}; choose one from the list")


def describe_schema(schema_text: str) -> str:
    """A one-line verdict for the editor: valid (with counts) or the exact problem."""
    try:
        schema = parse_schema(schema_text)
    except InputError as e:
        return f"✗ {e.message}"

    def walk(level: dict[str, Any], depth: int) -> tuple[int, int]:
        types, deepest = 0, depth
        for value in level.values():
            types += 1
            if value:
                t, d = walk(value, depth + 1)
                types, deepest = types + t, max(deepest, d)
        return types, deepest

    types, depth = walk(schema, 1)
    return f"✓ schema 有效 (valid): {types} 个类型 types, {depth} 层 level(s)"


def highlight(text: str, output: list[list[dict[str, Any]]]) -> list[tuple[str, str | None]]:
    """Text split into (piece, label) for gr.HighlightedText. Spans may overlap across levels (a relation's
    subject and object, an event's arguments): earlier and longer spans win, the table shows all."""
    spans: dict[tuple[int, int], str] = {}
    for path in output:
        for el in path:
            start, end = el["offset"]
            if end > start and (start, end) not in spans:
                spans[(start, end)] = el["type"]
    pieces: list[tuple[str, str | None]] = []
    at = 0
    for (start, end), label in sorted(spans.items(), key=lambda kv: (kv[0][0], -(kv[0][1] - kv[0][0]))):
        if start < at:
            continue  # overlaps a span already shown
        if start > at:
            pieces.append((text[at:start], None))
        pieces.append((text[start:end], label))
        at = end
    if at < len(text):
        pieces.append((text[at:], None))
    return pieces


def run(ctx: ServerContext, text: str, schema_text: str, task: str) -> tuple[Any, ...]:
    """Returns (summary, highlighted text, path table, raw JSON)."""
    service = ctx.service  # first: while the models load, that is the answer
    schema = parse_schema(schema_text)
    result = service.nlu(text, schema, None if task in (None, "", "auto") else task)
    paths = result.output
    rows = []
    for i, path in enumerate(paths, start=1):
        leaf = path[-1]
        chain = " → ".join(f"{el['type']}: {el['span']}" for el in path)
        rows.append([i, chain, f"[{leaf['offset'][0]}, {leaf['offset'][1]}]", round(float(leaf["score"]), 4)])
    table = pd.DataFrame(rows, columns=PATH_COLUMNS)
    task_done = result.task
    if task_done == "extract":
        marked = highlight(text, paths)
    else:  # labels are not spans of the text: show the text plain and the labels in the summary
        marked = [(text, None)]
    labels = ", ".join(" / ".join(el["type"] for el in p) for p in paths) if task_done != "extract" else ""
    notes = [f"任务 task: **{task_done}**", f"**{len(paths)}** 条结果 results"]
    if labels:
        notes.append(f"标签 labels: {labels}")
    if result.truncated:
        notes.append("⚠ 文本被截断 (the text was truncated to the model's window)")
    return " · ".join(notes), marked, table, raw_json(result.as_dict())


def raw_json(out: dict[str, Any]) -> str:
    """The answer as JSON, one path per line (the same fields as /v1/nlu, which adds `model`)."""
    head = {k: v for k, v in out.items() if k != "output"}
    lines = [json.dumps(path, ensure_ascii=False) for path in out.get("output", [])]
    body = ",\n    ".join(lines)
    fields = [f'  {json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}' for k, v in head.items()]
    fields.append(f'  "output": [\n    {body}\n  ]' if lines else '  "output": []')
    return "{\n" + ",\n".join(fields) + "\n}"




def build(ctx: ServerContext) -> gr.Tab:
    presets = nlu_presets()  # a copy of our own, in display order
    first = presets[0]["id"] if presets else None
    schema0, text0, task0, note0 = preset_values(presets, first) if first else ("{}", "", "auto", "")
    with gr.Tab("通用理解 NLU", id="nlu") as tab:
        with gr.Row():
            with gr.Column(scale=1):
                preset = gr.Dropdown(choices=[(f"{p['title_zh']} {p['title_en']}", p["id"]) for p in presets],
                                     value=first, label="任务预设 Preset", elem_id="nlu-preset")
                note = gr.Markdown(note0, elem_id="nlu-note")
                text = gr.Textbox(label="文本 Text", lines=4, value=text0, elem_id="nlu-text")
                schema = gr.Code(value=schema0, language="json", interactive=True, lines=8,
                                 label="Schema (JSON)", elem_id="nlu-schema")
                verdict = gr.Markdown(describe_schema(schema0) if presets else "", elem_id="nlu-verdict")
                task = gr.Radio(TASK_CHOICES, value=task0, label="任务 Task", elem_id="nlu-task")
                button = gr.Button("分析 Analyse", variant="primary", elem_id="nlu-run")
            with gr.Column(scale=1):
                summary = gr.Markdown(elem_id="nlu-summary")
                marked = gr.HighlightedText(label="标注 Highlighted", show_legend=True, combine_adjacent=False,
                                            elem_id="nlu-highlight")
                table = gr.Dataframe(headers=PATH_COLUMNS, label="路径 Paths", interactive=False, wrap=True,
                                     column_widths=["8%", "56%", "18%", "18%"], elem_id="nlu-table")
                raw = gr.Code(language="json", label="原始 JSON Raw", interactive=False, lines=6, max_lines=20,
                              buttons=["copy"], elem_id="nlu-raw")
        preset.change(guarded(ctx, "nlu_preset")(functools.partial(preset_values, presets)), [preset],
                      [schema, text, task, note], api_name="nlu_preset", queue=False, show_progress="hidden",
                      api_description="Schema JSON, example text, task and a note for a preset id.")
        schema.change(guarded(ctx, "nlu_validate_schema")(describe_schema), [schema], [verdict],
                      api_name="nlu_validate_schema", queue=False, show_progress="hidden",
                      trigger_mode="always_last", api_description="Check a schema; returns a one-line verdict.")
        button.click(guarded(ctx, "nlu")(functools.partial(run, ctx)), [text, schema, task],
                     [summary, marked, table, raw], api_name="nlu",
                     api_description="Run RexUniNLU on a text with a JSON schema; returns summary, highlighted "
                                     "spans, a table of paths and the raw JSON.")
    return tab
