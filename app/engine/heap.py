"""Give freed heap memory back to the operating system after an inference (glibc only; elsewhere a no-op).

Measured on the demo models: a long NLU or embedding request allocates a few hundred MB of activations and
frees them, but the process's resident memory stayed up by ~60 MB per request, request after request — not a
leak (`malloc_trim` gave it all back: 786 → 498 MiB) but glibc's per-thread arenas: each worker thread that
ran a large forward keeps its freed chunks, and the server runs requests on up to 40 worker threads.
`malloc_trim(0)` after a call returns them; it costs ~3 ms after a heavy request, so it runs at most once per
`MIN_INTERVAL_S`. A call skipped for that interval leaves one trailing trim due when the interval ends: the last
requests before a quiet spell are trimmed too, so an idle server's resident memory is what it keeps, not what its
last second of requests freed (the soak's settled samples and the launcher's memory threshold read that).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable

from app.allocator import libc_function

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0


def _load_trim() -> Callable[[int], int] | None:
    return libc_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)  # None: not glibc, nothing to trim


def _timer(delay_s: float, fn: Callable[[], None]) -> None:
    t = threading.Timer(delay_s, fn)
    t.daemon = True  # a pending trim never holds the process open
    t.start()


class HeapTrimmer:
    def __init__(self, min_interval_s: float = MIN_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 trim: Callable[[int], int] | None = None,
                 schedule: Callable[[float, Callable[[], None]], None] = _timer) -> None:
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._trim = trim if trim is not None else _load_trim()
        self._schedule = schedule
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._trailing = False  # a trailing trim is scheduled (guarded by its own lock: never waits for a trim)
        self._trailing_lock = threading.Lock()
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe_trim(self) -> bool:
        """Trim now unless another thread is trimming or one did within `min_interval_s`; True if trimmed."""
        if self._trim is None:
            return False
        now = self.clock()
        if now - self._last < self.min_interval_s:
            self._schedule_trailing(self._last + self.min_interval_s - now)
            return False
        if not self._lock.acquire(blocking=False):  # another thread is trimming now, after this call's frees
            return False
        try:
            self._last = now
            self._trim(0)
            self.trims += 1
            return True
        finally:
            self._lock.release()

    def _schedule_trailing(self, delay_s: float) -> None:
        with self._trailing_lock:
            if self._trailing:
                return
            self._trailing = True
        self._schedule(max(0.0, delay_s), self._run_trailing)

    def _run_trailing(self) -> None:
        with self._trailing_lock:
            self._trailing = False
        self.maybe_trim()  # a trim since it was scheduled moves it on again; else it trims now
