"""The tune process's progress as JSON lines (`--events FILE`), one object per line, flushed as written, so a
reader (jobs.py, the web app's tab, `tail -f`) sees each step as it happens:

    {"event": "start", "model": …, "role": …, "steps": N, "zero_stage": 2, …}
    {"event": "eval", "phase": "before", "metrics": {…}}
    {"event": "step", "step": i, "steps": N, "loss": x}
    {"event": "eval", "phase": "after", "metrics": {…}}
    {"event": "done", "out": DIR, "report": PATH}      or {"event": "error", "message": …} or {"event": "cancelled"}

Every line also carries "t" (Unix seconds). Imports nothing heavy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TextIO


class EventLog:
    """Writes events to a file (or nowhere, without --events)."""

    def __init__(self, path: str | Path | None) -> None:
        self._file: TextIO | None = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life

    def emit(self, event: str, **fields: Any) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps({"event": event, "t": round(time.time(), 3), **fields}, ensure_ascii=False)
                         + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class EventReader:
    """Reads the events appended since the last call; a line still being written is left for the next one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0

    def new_events(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # only whole lines
        self._offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue  # not ours (a torn write cannot happen: lines are written whole and flushed)
            if isinstance(value, dict) and "event" in value:
                out.append(value)
        return out
