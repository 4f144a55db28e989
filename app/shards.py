"""Sharded batch vectors: `wenmo embed --shard I/N` embeds one stable part of an input file, and `wenmo join-shards`
puts the parts back together in input order (README "Sharded batch vectors").

The split is by input line number, before blank lines are skipped, in contiguous ranges: shard I of N holds lines
[I*L//N, (I+1)*L//N) of the L lines (0-based), so every shard run on the same file agrees on it without talking to
the others, and the join is a concatenation in shard order. Each shard's data file has a record beside it
(`<data file>.json`) that says which lines it holds, of which input (SHA-256), from which model; the join checks
those records and refuses a set of shards that does not cover the input exactly once.

Imports numpy only inside the functions that read or write vectors (the CLI's `--help` stays quick); no torch.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.errors import InputError

MAX_SHARDS = 99_999  # five digits in the file names
RECORD_SUFFIX = ".json"
FORMAT_SUFFIXES = {"npy": ".npy", "jsonl": ".jsonl", "csv": ".csv"}
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
_RECORD_NAME = re.compile(r"\.shard-\d{5}-of-\d{5}(\.[^.]+)?\.json$")  # a shard's record, beside its data file


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based, as Kubernetes' JOB_COMPLETION_INDEX) of `count`."""

    index: int
    count: int

    def line_range(self, total_lines: int) -> tuple[int, int]:
        """The 0-based [start, stop) of the input lines this shard holds; empty when count > total_lines."""
        return self.index * total_lines // self.count, (self.index + 1) * total_lines // self.count

    def path(self, output: str | Path) -> Path:
        """`vectors.npy` → `vectors.shard-00003-of-00008.npy` (appended when the name has no extension)."""
        p = Path(output)
        return p.with_name(f"{p.stem}.shard-{self.index:05d}-of-{self.count:05d}{p.suffix}")


def parse_shard(spec: str) -> Shard:
    """`I/N` from the command line, with a message naming the flag for anything else."""
    hint = "give --shard I/N with 0 <= I < N (I counts from 0, like JOB_COMPLETION_INDEX), e.g. --shard 0/4"
    m = _SPEC.fullmatch(spec)
    if not m:
        raise InputError(f"--shard {spec!r}: not of the form I/N; {hint}")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1:
        raise InputError(f"--shard {spec}: N must be at least 1; {hint}")
    if count > MAX_SHARDS:
        raise InputError(f"--shard {spec}: at most {MAX_SHARDS} shards (five digits in the file names); use fewer")
    if index >= count:
        raise InputError(f"--shard {spec}: I must be below N (the last of {count} shards is {count - 1}/{count}); "
                         f"{hint}")
    return Shard(index, count)


def count_lines(data: bytes) -> int:
    """Input lines as app/textinput.py numbers them: a final newline ends the last line, it starts no blank one."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


@dataclass(frozen=True)
class ShardRecord:
    """What the `<data file>.json` beside a shard says. Lines are 1-based input line numbers; rows count output rows
    (lines less the skipped blank ones); first_index is the row index of its first row in the unsharded output."""

    shard: int
    of: int
    format: str
    input: str
    input_sha256: str
    input_lines: int
    first_line: int
    lines: int
    first_index: int
    rows: int
    skipped_lines: list[int] = field(default_factory=list)
    model: str = ""
    dimension: int = 0
    normalized: bool = True

    def write(self, data_path: Path) -> Path:
        path = record_path(data_path)
        path.write_text(json.dumps(asdict(self), ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def record_path(data_path: str | Path) -> Path:
    return Path(f"{data_path}{RECORD_SUFFIX}")


def input_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def select(numbered: Sequence[tuple[int, str]], shard: Shard,
           total_lines: int) -> tuple[int, list[str], int, list[int]]:
    """From the whole input's (line number, text) pairs, this shard's: (first_line, texts, first_index,
    skipped_lines). Numbers are 1-based; the skipped lines are the blank ones inside the shard's range."""
    start, stop = shard.line_range(total_lines)
    first_line = start + 1
    first_index = sum(1 for number, _ in numbered if number < first_line)
    mine = [(number, text) for number, text in numbered if first_line <= number <= stop]
    kept = {number for number, _ in mine}
    skipped = [n for n in range(first_line, stop + 1) if n not in kept]
    return first_line, [text for _, text in mine], first_index, skipped


# ---- join ------------------------------------------------------------------------------------------------
def read_record(data_path: Path) -> ShardRecord:
    path = record_path(data_path)
    hint = "each shard's data file needs the record `wenmo embed --shard` wrote beside it"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return ShardRecord(**raw)
    except FileNotFoundError:
        raise InputError(f"{data_path}: no shard record {path.name} beside it; {hint}") from None
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"{path}: not a shard record ({e}); {hint}") from None


def data_paths(arguments: Sequence[str]) -> list[Path]:
    """The shard data files named on the command line; a record (`….npy.json`) stands for its data file, so a glob
    that catches both (`vectors.shard-*`) names each shard once."""
    out: list[Path] = []
    for arg in arguments:
        p = Path(arg)
        if _RECORD_NAME.search(p.name):
            p = Path(str(p)[: -len(RECORD_SUFFIX)])
        if not p.exists():
            raise InputError(f"{arg}: no such file; give the shard files `wenmo embed --shard` wrote")
        if p not in out:
            out.append(p)
    return out


def check_complete(records: Sequence[tuple[Path, ShardRecord]]) -> list[tuple[Path, ShardRecord]]:
    """The shards in shard order, once it is certain they are all the shards of one run over one input and cover it
    line after line with neither gap nor overlap; else an InputError saying what is wrong."""
    if not records:
        raise InputError("no shard files given; give all of them, e.g. vectors.shard-*.npy")
    path0, first = records[0]
    for path, r in records[1:]:
        for what, key in (("a different shard count (--shard I/N's N)", "of"),
                          ("a different input file", "input_sha256"), ("a different format", "format"),
                          ("a different model", "model"), ("different normalisation (--no-normalize)", "normalized")):
            if getattr(r, key) != getattr(first, key):
                raise InputError(f"{path} and {path0} come from {what}: {key} {getattr(r, key)!r} and "
                                 f"{getattr(first, key)!r}; join the shards of one run only")
    by_index: dict[int, Path] = {}
    for path, r in records:
        if r.shard in by_index:
            raise InputError(f"shard {r.shard} of {r.of} is given twice ({by_index[r.shard]} and {path}); give it once")
        by_index[r.shard] = path
    missing = [i for i in range(first.of) if i not in by_index]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (f" … ({len(missing)} in all)" if len(missing) > 10 else "")
        raise InputError(f"shard(s) {shown} of {first.of} missing; run `wenmo embed --shard I/{first.of}` for them "
                         "(or give their files) and join again")
    ordered = sorted(records, key=lambda pr: pr[1].shard)
    next_line, next_index = 1, 0
    for path, r in ordered:
        if r.first_line != next_line or r.first_index != next_index:
            what = "overlaps the shard before it" if r.first_line < next_line else "leaves a gap after the shard before"
            raise InputError(f"{path} starts at input line {r.first_line} but line {next_line} comes next: it {what}; "
                             "join the shards of one run only")
        next_line, next_index = r.first_line + r.lines, r.first_index + r.rows
    if next_line != first.input_lines + 1:
        raise InputError(f"the shards end at input line {next_line - 1} but the input has {first.input_lines} "
                         "lines; join the shards of one run only")
    return ordered


def join(arguments: Sequence[str], output: str) -> dict[str, Any]:
    """Join the shard files into `output` in input order; returns what was joined (for the one-line summary)."""
    paths = data_paths(arguments)
    ordered = check_complete([(p, read_record(p)) for p in paths])
    fmt = ordered[0][1].format
    out = Path(output)
    want = FORMAT_SUFFIXES[fmt]
    if out.suffix in FORMAT_SUFFIXES.values() and out.suffix != want:
        raise InputError(f"--output {output}: the shards are {fmt}, the join writes {fmt}; name it …{want}")
    if any(out.resolve() == p.resolve() for p, _ in ordered):
        raise InputError(f"--output {output} is one of the shards; write the join to a new file")
    rows = (_join_npy if fmt == "npy" else _join_text)(ordered, out)
    return {"output": str(out), "format": fmt, "shards": len(ordered), "rows": rows,
            "input_lines": ordered[0][1].input_lines}


def _join_npy(ordered: Sequence[tuple[Path, ShardRecord]], out: Path) -> int:
    import numpy as np

    parts = []
    for path, r in ordered:
        try:
            part = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: not a readable .npy file ({e}); write that shard again") from None
        _check_rows(path, r, part.shape[0] if part.ndim == 2 else -1)
        parts.append(part)
    joined = np.concatenate(parts, axis=0)
    np.save(out, joined)
    return int(joined.shape[0])


def _join_text(ordered: Sequence[tuple[Path, ShardRecord]], out: Path) -> int:
    """JSONL lines carry their row index already and CSV repeats its header per shard: the join is a concatenation
    of the bytes, keeping the first shard's CSV header only. Bytes, not text: universal newlines would turn the CSV
    writer's \\r\\n (and a lone \\r inside a quoted text) into \\n."""
    header = None
    chunks: list[bytes] = []
    for path, r in ordered:
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: cannot read it as UTF-8 text ({e}); write that shard again") from None
        if r.format == "csv":
            head, sep, data = data.partition(b"\n")  # no text holds a newline: the header is the first line
            if not sep:
                raise InputError(f"{path}: no CSV header line, a CSV shard starts with one; write that shard again")
            if header is not None and head != header:
                raise InputError(f"{path}: its CSV header differs from the first shard's; join the shards of one run")
            if header is None:
                header = head
                chunks.append(head + sep)
            found = sum(1 for _ in csv.reader(io.StringIO(text, newline=""))) - 1
        else:
            found = data.count(b"\n")
        _check_rows(path, r, found)
        chunks.append(data)
    out.write_bytes(b"".join(chunks))
    return sum(r.rows for _, r in ordered)


def _check_rows(path: Path, r: ShardRecord, found: int) -> None:
    if found != r.rows:
        raise InputError(f"{path} holds {found} row(s) but its record says {r.rows}; write that shard again")
