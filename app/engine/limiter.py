"""One concurrency cap shared by every surface: at most N inferences at once, a bounded wait queue, and an
immediate OverloadedError beyond it — overload answers "busy, retry" fast, it never hangs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from app.errors import OverloadedError


class ConcurrencyLimiter:
    def __init__(self, max_concurrent: int, max_queue: int, wait_timeout_s: float = 60.0) -> None:
        if max_concurrent < 1 or max_queue < 0:
            raise ValueError("max_concurrent must be ≥ 1 and max_queue ≥ 0")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.wait_timeout_s = wait_timeout_s
        self._slots = threading.Semaphore(max_concurrent)
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0
        self.rejected = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return self._running

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one inference slot for the duration of the block, or raise OverloadedError at once."""
        with self._lock:
            if self._slots.acquire(blocking=False):
                self._running += 1
                acquired = True
            elif self._waiting >= self.max_queue:
                self.rejected += 1
                raise OverloadedError()
            else:
                self._waiting += 1
                acquired = False
        if not acquired:
            try:
                ok = self._slots.acquire(timeout=self.wait_timeout_s)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not ok:
                with self._lock:
                    self.rejected += 1
                raise OverloadedError()
            with self._lock:
                self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
            self._slots.release()
