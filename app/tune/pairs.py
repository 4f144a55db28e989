"""Labelled pairs from a JSONL, CSV or TSV file: `text_a, text_b, label`, label 0/1 or a score in [0, 1].

Every problem names its line (1-based, as an editor shows it). Duplicates within a file and pairs that occur in
both the training and the held-out file are not errors, but they are counted and named: a held-out pair that was
trained on makes the "after" figure look better than the model is. A pair is the same pair in either order.
Imports nothing heavy.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import InputError

COLUMNS = ("text_a", "text_b", "label")
_SHOW = 5  # examples named in one message


@dataclass(frozen=True)
class Pair:
    line: int
    text_a: str
    text_b: str
    label: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.text_a, self.text_b) if self.text_a <= self.text_b else (self.text_b, self.text_a)


@dataclass
class PairFile:
    path: str
    pairs: list[Pair]
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (line, the earlier line it repeats)

    @property
    def binary(self) -> bool:
        """Every label 0 or 1 (then accuracy, F1 and ROC-AUC apply, and in-batch negatives can train)."""
        return all(p.label in (0.0, 1.0) for p in self.pairs)

    def columns(self) -> tuple[list[str], list[str], list[float]]:
        return ([p.text_a for p in self.pairs], [p.text_b for p in self.pairs], [p.label for p in self.pairs])


def _where(path: str, line: int) -> str:
    return f"{path}: 第 {line} 行 (line {line})"


def parse_label(raw: object, where: str) -> float:
    if isinstance(raw, bool):
        raise InputError(f"{where}: label {raw!r} is not a number; use 0/1 or a score from 0 to 1")
    try:
        value = float(raw.strip() if isinstance(raw, str) else raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{where}: label {raw!r} is not a number; use 0/1 or a score from 0 to 1") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InputError(f"{where}: label {raw!r} is outside [0, 1]; use 0/1, or scale scores into [0, 1] "
                         "(STS-B's 0–5: divide by 5)")
    return value


def _text(raw: object, column: str, where: str) -> str:
    if not isinstance(raw, str):
        raise InputError(f"{where}: {column} must be a string, got {type(raw).__name__}")
    if not raw.strip():
        raise InputError(f"{where}: {column} is empty; fill it in or delete the line")
    return raw


def _decode(data: bytes, path: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{_where(path, line)}: not valid UTF-8; save the file as UTF-8") from None


def _jsonl_rows(text: str, path: str) -> list[tuple[int, object, object, object]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = _where(path, number)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(obj, dict) or any(c not in obj for c in COLUMNS):
            raise InputError(f'{where}: must be an object with "text_a", "text_b" and "label", e.g. '
                             '{"text_a": "怎么退货", "text_b": "如何申请退货", "label": 1}')
        rows.append((number, obj["text_a"], obj["text_b"], obj["label"]))
    return rows


def _table_rows(text: str, path: str, delimiter: str) -> list[tuple[int, object, object, object]]:
    rows = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 1
    for record in reader:
        number, start = start, reader.line_num + 1  # the record's first line (a quoted field may span lines)
        if not record or all(not cell.strip() for cell in record):
            continue
        if number == 1 and [c.strip().lower() for c in record] == list(COLUMNS):
            continue  # the header row
        if len(record) != 3:
            name = "tab" if delimiter == "\t" else "comma"
            raise InputError(f"{_where(path, number)}: {len(record)} fields, expected 3 ({name}-separated "
                             "text_a, text_b, label); quote a text that holds the separator")
        rows.append((number, *record))
    return rows


def read_pairs(path: str | Path) -> PairFile:
    """The pairs of one file, by its extension: .jsonl/.json (objects), .csv (comma), .tsv/.txt (tab)."""
    name = str(path)
    suffix = Path(name).suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".tsv", ".txt"):
        raise InputError(f"{name}: unknown file type {suffix or '(none)'}; give .jsonl (one JSON object per line), "
                         ".csv or .tsv with the columns text_a, text_b, label")
    try:
        data = Path(name).read_bytes()
    except OSError as e:
        raise InputError(f"{name}: cannot read ({e.strerror}); check the path") from None
    text = _decode(data, name)
    if suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(text, name)
    else:
        rows = _table_rows(text, name, "," if suffix == ".csv" else "\t")
    pairs = []
    for number, a, b, label in rows:
        where = _where(name, number)
        pairs.append(Pair(number, _text(a, "text_a", where), _text(b, "text_b", where), parse_label(label, where)))
    if not pairs:
        raise InputError(f"{name}: no pairs; give one `text_a, text_b, label` per line")
    first: dict[tuple[str, str], int] = {}
    duplicates = []
    for p in pairs:
        if p.key in first:
            duplicates.append((p.line, first[p.key]))
        else:
            first[p.key] = p.line
    return PairFile(name, pairs, duplicates)


def overlap(train: PairFile, held_out: PairFile) -> list[tuple[int, int]]:
    """(held-out line, training line) for each held-out pair that is also a training pair."""
    trained = {}
    for p in train.pairs:
        trained.setdefault(p.key, p.line)
    return [(p.line, trained[p.key]) for p in held_out.pairs if p.key in trained]


def describe_duplicates(f: PairFile) -> str:
    shown = ", ".join(f"line {a} repeats line {b}" for a, b in f.duplicates[:_SHOW])
    more = f" … ({len(f.duplicates)} in all)" if len(f.duplicates) > _SHOW else ""
    return f"{f.path}: {len(f.duplicates)} duplicate pairs ({shown}{more})"


def describe_overlap(train: PairFile, held_out: PairFile, found: list[tuple[int, int]]) -> str:
    shown = ", ".join(f"line {a} = {train.path} line {b}" for a, b in found[:_SHOW])
    more = f" … ({len(found)} in all)" if len(found) > _SHOW else ""
    return (f"{held_out.path}: {len(found)} held-out pairs also occur in {train.path} ({shown}{more}); the 'after' "
            "figure overstates the model on new pairs: remove them from one of the files")


def data_warnings(train: PairFile, held_out: PairFile) -> list[str]:
    warnings = [describe_duplicates(f) for f in (train, held_out) if f.duplicates]
    found = overlap(train, held_out)
    if found:
        warnings.append(describe_overlap(train, held_out, found))
    return warnings
