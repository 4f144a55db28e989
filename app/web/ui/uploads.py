"""Texts from the UI's text box or an uploaded .txt/.csv file, one text per line (or row).

An upload is read only through the file store's rule (app/web/ui/filestore.py): a path the caller names is
never opened unless it is one of this process's uploads. Plain text goes through app/textinput.parse_lines,
so the UI names the same bad lines as the CLI does.
A CSV takes the column named text/文本/candidate/候选/sentence/句子 when the first row names one, else the
first column; its bad rows are named by line number too.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from app.errors import InputError
from app.textinput import parse_lines
from app.web.ui.filestore import FileStore

TEXT_BOX = "文本框 (text box)"
HEADER_NAMES = ("text", "texts", "文本", "candidate", "candidates", "候选", "sentence", "句子")
_CLI_HINT = "pass --skip-blank to skip them"
_UI_HINT = "tick 跳过空行 (skip blank lines) to skip them"


def read_texts(text: str | None, upload: str | None, *, store: FileStore, max_bytes: int,
               skip_blank: bool = False) -> tuple[list[str], str]:
    """(texts, where they came from). An uploaded file wins over the text box; it must be an upload of this
    process (`FileStore.upload_path`), whatever path the caller sent."""
    if upload:
        name, data = store.read_upload(upload)
        if len(data) > max_bytes:
            raise InputError(f"{name}: {len(data) / 2**20:.1f} MiB, the limit is {max_bytes / 2**20:g} MiB "
                             "(WENMO_MAX_UPLOAD_MIB); split the file")
        if Path(name).suffix.lower() == ".csv":
            return parse_csv(data, name, skip_blank=skip_blank), name
        return lines(data, name, skip_blank), name
    if text is None or not text.strip():
        raise InputError("没有输入 (no input): type texts one per line, or upload a .txt / .csv file")
    return lines(text.encode("utf-8"), TEXT_BOX, skip_blank), TEXT_BOX


def lines(data: bytes, source: str, skip_blank: bool) -> list[str]:
    try:
        return parse_lines(data, skip_blank=skip_blank, source=source)
    except InputError as e:
        # parse_lines speaks to the shell; here the switch is a checkbox.
        raise InputError(e.message.replace(_CLI_HINT, _UI_HINT)) from None


def parse_csv(data: bytes, name: str, *, skip_blank: bool = False) -> list[str]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        lines(data, name, skip_blank=True)  # raises, naming the lines that are not UTF-8
        raise  # pragma: no cover - parse_lines always raises here
    reader = csv.reader(io.StringIO(decoded, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        start = 1
        for row in reader:
            rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as e:
        raise InputError(f"{name}: line {reader.line_num} is not valid CSV ({e}); fix the quoting") from None
    column = 0
    if rows and rows[0][1]:
        header = [c.strip().lower() for c in rows[0][1]]
        for i, cell in enumerate(header):
            if cell in HEADER_NAMES:
                column = i
                rows = rows[1:]
                break
    texts: list[str] = []
    blank: list[int] = []
    for number, row in rows:
        cell = row[column] if len(row) > column else ""
        if not cell.strip():
            blank.append(number)
            continue
        texts.append(cell)
    if blank and not skip_blank:
        shown = ", ".join(map(str, blank[:10])) + (f" … ({len(blank)} in all)" if len(blank) > 10 else "")
        raise InputError(f"{name}: 第 {shown} 行为空 (line {shown} has no text in column {column + 1}); "
                         f"delete or fill those rows, or {_UI_HINT}")
    if not texts:
        raise InputError(f"{name}: no text given (输入为空); give one text per row")
    return texts
