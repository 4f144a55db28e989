"""Structured events: one JSON line per decision, on stdout and in a bounded file; the status file.

Files under the state directory (formats in launcher/README.md; the app's status tab reads them):

- ``launcher-events.jsonl``: the same lines as stdout, newest last, at most ``max_lines`` lines. Lines are
  appended with one ``write`` each; when the file would exceed the bound it is rewritten with the newest
  lines through a temporary file and ``os.replace`` (readers never see a half-trimmed file).
- ``launcher-status.json``: one JSON object, the launcher's current view, replaced atomically.
- ``launcher-memory.jsonl``: one line per memory sample (the figure, the threshold it was judged against,
  its source and the app's PID), newest last, at most ``max_lines`` lines: the status tab's memory chart,
  which must outlive the app it watches. When full, the oldest quarter is dropped in one atomic rewrite, so
  a sample every few seconds costs one append and, now and then, one rewrite (not one per sample).

Events carry figures and reasons only: never secrets, never the environment.
This module must not import ``app``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

EVENTS_FILE = "launcher-events.jsonl"
STATUS_FILE = "launcher-status.json"
MEMORY_FILE = "launcher-memory.jsonl"
# 12 h of samples at the default --poll-s 5 (~1.3 MB); fewer hours at a shorter poll.
MEMORY_MAX_LINES = 8640

log = logging.getLogger(__name__)


def utc_timestamp(epoch_s: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2025-01-31T12:00:00.123Z``."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new content, never a mix."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EventLog:
    """Emits events to a stream (stdout) and to the bounded ``launcher-events.jsonl``."""

    def __init__(
        self,
        state_dir: Path,
        max_lines: int = 1000,
        stream: TextIO | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.path = state_dir / EVENTS_FILE
        self.max_lines = max_lines
        self._stream = stream if stream is not None else sys.stdout
        self._wall = wall_clock or time.time
        state_dir.mkdir(parents=True, exist_ok=True)
        # Keep the newest lines in memory so trimming never has to re-read the file.
        self._lines: deque[str] = deque(maxlen=max_lines)
        if self.path.exists():
            with self.path.open(encoding="utf-8", errors="replace") as handle:
                self._lines.extend(line.rstrip("\n") for line in handle if line.strip())
            if self._file_line_count() > max_lines:
                self._rewrite()

    def emit(self, event: str, level: str = "info", **fields: object) -> dict[str, object]:
        record: dict[str, object] = {"ts": utc_timestamp(self._wall()), "event": event, "level": level}
        record.update(fields)
        line = json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":"))
        self._stream.write(line + "\n")
        self._stream.flush()
        full = len(self._lines) == self.max_lines
        self._lines.append(line)
        try:
            if full:
                self._rewrite()
            else:
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
        except OSError as exc:
            # A full disk must not stop the watchdog; stdout still carries the event.
            log.warning("cannot write %s: %s", self.path, exc)
        return record

    def _file_line_count(self) -> int:
        with self.path.open("rb") as handle:
            return sum(1 for _ in handle)

    def _rewrite(self) -> None:
        write_atomically(self.path, "".join(line + "\n" for line in self._lines))


class StatusFile:
    """``launcher-status.json``: the current state, replaced atomically on every write."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATUS_FILE

    def write(self, status: Mapping[str, object]) -> None:
        text = json.dumps(status, ensure_ascii=False, default=str, indent=1, sort_keys=True) + "\n"
        try:
            write_atomically(self.path, text)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)


class MemoryLog:
    """``launcher-memory.jsonl``: the memory samples, bounded to ``max_lines`` lines."""

    def __init__(self, state_dir: Path, max_lines: int = MEMORY_MAX_LINES) -> None:
        self.path = state_dir / MEMORY_FILE
        self.max_lines = max(4, max_lines)
        self._keep = self.max_lines * 3 // 4
        # The newest lines, so trimming never re-reads the file; a previous launcher's samples are kept:
        # the chart spans launcher restarts too.
        self._lines: deque[str] = deque(maxlen=self.max_lines)
        self._in_file = 0  # lines in the file; at max_lines or more the next append trims it
        self._torn = False  # a launcher killed mid-append left a last line without its newline
        try:
            with self.path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.strip():
                        self._lines.append(line.rstrip("\n"))
                        self._in_file += 1
                        self._torn = not line.endswith("\n")
        except OSError:
            pass

    def append(self, record: Mapping[str, object]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":"))
        self._lines.append(line)
        try:
            if self._in_file >= self.max_lines or self._torn:
                # Full: keep the newest three quarters, replaced atomically (readers see old or new, whole).
                # (A torn line is rewritten whole, so the new sample does not glue onto it.)
                while len(self._lines) > self._keep:
                    self._lines.popleft()
                write_atomically(self.path, "".join(item + "\n" for item in self._lines))
                self._in_file = len(self._lines)
                self._torn = False
            else:
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
                self._in_file += 1
        except OSError as exc:
            # A full disk must not stop the watchdog: the chart misses samples, nothing else.
            log.warning("cannot write %s: %s", self.path, exc)
