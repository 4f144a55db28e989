"""A request's deadline and cancellation, checked where the work can stop cleanly: between forward passes.

The service opens a `WorkScope` around each call (inside its concurrency slot, so waiting for the slot does
not count against the deadline); the engine's batch loop and the models' multi-level walks call `checkpoint()`
before each forward. A surface cancels the token when its client goes away (the HTTP API watches for the
disconnect), and the next checkpoint raises: the slot is released, and nothing more is computed for nobody.

A context variable carries the scope from the service down to the batch loop, so every adapter's signature
stays the same and a call made outside any scope (a test, the bench) is never interrupted. The scope also carries
an optional progress callback (the CLI's progress bar): the engine tells it how many work items each forward
finished for the request. Pure Python.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator

from app.errors import CancelledError, DeadlineExceededError

log = logging.getLogger(__name__)

Progress = Callable[[int], object]  # called with the number of work items just finished


class CancelToken:
    """Set from any thread by whoever notices that nobody waits for the answer any more."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "the client went away") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class WorkScope:
    def __init__(self, token: CancelToken | None, timeout_s: float | None,
                 clock: Callable[[], float] = time.monotonic, progress: Progress | None = None) -> None:
        self.token = token
        self.timeout_s = timeout_s
        self.clock = clock
        self.deadline = clock() + timeout_s if timeout_s else None
        self.progress = progress

    def advance(self, items: int) -> None:
        """`items` more work items of this request are done. Called from the engine's worker thread: a failing
        progress display is switched off and logged, never allowed to stop the worker."""
        if self.progress is None:
            return
        try:
            self.progress(items)
        except Exception:
            log.warning("event=progress_failed (progress display off for this call)", exc_info=True)
            self.progress = None

    def check(self) -> None:
        if self.token is not None and self.token.cancelled:
            raise CancelledError(f"stopped: {self.token.reason}")
        if self.deadline is not None and self.clock() > self.deadline:
            raise DeadlineExceededError(
                f"处理超时 (the request ran longer than {self.timeout_s:g} s, WENMO_REQUEST_TIMEOUT_S) and was "
                "stopped; send less per request (fewer or shorter texts, a smaller schema)")


_current: contextvars.ContextVar[WorkScope | None] = contextvars.ContextVar("wenmo_work_scope", default=None)


@contextlib.contextmanager
def work_scope(token: CancelToken | None, timeout_s: float | None,
               progress: Progress | None = None) -> Iterator[WorkScope]:
    """Work done inside the block stops at the next checkpoint after `token` is cancelled or `timeout_s`
    has passed; `progress`, when given, hears of the work items each forward finished."""
    scope = WorkScope(token, timeout_s, progress=progress)
    scope.check()
    reset = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(reset)


def current_scope() -> WorkScope | None:
    """The scope of the request this thread works for (None outside any): the engine's queue carries it with
    the request's work items to its worker thread, where the context variable does not reach."""
    return _current.get()


def checkpoint() -> None:
    """Raise CancelledError / DeadlineExceededError if the current request should stop; else nothing."""
    scope = _current.get()
    if scope is not None:
        scope.check()
