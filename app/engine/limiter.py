"""One concurrency cap shared by every surface: at most N inferences at once, a bounded wait queue, and an
immediate OverloadedError beyond it — overload answers "busy, retry" fast, it never hangs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from app.engine.cancellation import CancelToken
from app.errors import CancelledError, OverloadedError

# A waiter whose client has gone away notices within this long and gives its place up.
CANCEL_POLL_S = 0.1


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
    def slot(self, cancel: CancelToken | None = None) -> Iterator[None]:
        """Hold one inference slot for the duration of the block, or raise OverloadedError at once (or after
        `wait_timeout_s` in the queue); CancelledError when `cancel` is set while waiting."""
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
                ok = self._wait(cancel)
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

    def _wait(self, cancel: CancelToken | None) -> bool:
        if cancel is None:
            return self._slots.acquire(timeout=self.wait_timeout_s)
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            if cancel.cancelled:
                raise CancelledError(f"stopped while waiting for a slot: {cancel.reason}")
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._slots.acquire(timeout=min(left, CANCEL_POLL_S)):
                return True
