"""Python heap snapshots on demand, to find what a long-running server keeps (`WENMO_HEAP_SNAPSHOT_DIR`).

With the setting given, `serve` starts `tracemalloc` once its models are loaded, and every SIGUSR1 writes one
snapshot (`heap-<pid>-<n>.tracemalloc`, `tracemalloc.Snapshot.load` reads it) into that folder. Two snapshots
diffed by allocation site (`diff_by_site`) name the lines whose live memory grew between them — which is how
`python -m app soak --trace-heap` reports what a soak kept. A signal, not a route: no HTTP surface, and only
the server's own user (or root) can ask. Tracing costs CPU (every allocation records its stack), so it is off
unless the folder is set: a diagnostic for a soak, not a production setting.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

FRAMES = 6  # deep enough to reach from the allocator (dict, list) up to the Wenmo or library line that asked
SIGNAL = signal.SIGUSR1


class HeapSnapshots:
    def __init__(self, directory: str | os.PathLike[str], frames: int = FRAMES) -> None:
        self.directory = Path(directory).expanduser()
        self.frames = frames
        self._numbers = itertools.count(1)

    def answer_signal(self) -> None:
        """Answer SIGUSR1 with a snapshot (call from the main thread: signal handlers are set there)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        signal.signal(SIGNAL, self._on_signal)

    def start_tracing(self) -> None:
        """Trace from now on. The server calls this once the models are loaded: tracing the start-up (imports,
        building the demo checkpoints) would make it many times slower, and what a soak looks for is allocated
        by requests."""
        if not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
        log.warning("event=heap_tracing dir=%s frames=%d (send SIGUSR1 for a snapshot; tracing slows every "
                    "allocation)", self.directory, self.frames)

    def _on_signal(self, _sig: int, _frame: FrameType | None) -> None:
        try:
            self.dump()
        except OSError as e:  # a full disk must not take the server down with it
            log.error("event=heap_snapshot_failed error=%s", e)

    def dump(self) -> Path | None:
        """Write one snapshot; the file appears whole (written aside, then renamed). None before tracing began."""
        if not tracemalloc.is_tracing():
            log.warning("event=heap_snapshot_skipped (tracing starts when the models are loaded)")
            return None
        snapshot = tracemalloc.take_snapshot().filter_traces([
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        ])
        size, peak = tracemalloc.get_traced_memory()
        path = self.directory / f"heap-{os.getpid()}-{next(self._numbers)}.tracemalloc"
        part = path.with_suffix(".part")
        snapshot.dump(str(part))
        part.replace(path)
        log.info("event=heap_snapshot path=%s traced_mib=%.1f peak_mib=%.1f", path, size / 2**20, peak / 2**20)
        return path


def diff_by_site(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, top: int = 15,
                 frames: int = 4) -> list[dict[str, Any]]:
    """The allocation sites whose live memory grew most from `before` to `after`, largest first: bytes and
    blocks gained, and the innermost `frames` of the stack (innermost first), so a dict's growth is shown
    with the line that owns the dict."""
    stats = after.compare_to(before, "traceback")
    grown = sorted((s for s in stats if s.size_diff > 0), key=lambda s: s.size_diff, reverse=True)[:top]
    return [{"bytes": s.size_diff, "blocks": s.count_diff, "total_bytes": s.size,
             "stack": [f"{f.filename}:{f.lineno}" for f in list(s.traceback)[::-1][:frames]]} for s in grown]


def traced_bytes(snapshot: tracemalloc.Snapshot) -> int:
    return sum(t.size for t in snapshot.traces)
