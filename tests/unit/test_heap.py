"""HeapTrimmer: gives freed heap back after inferences, at most once per interval, one thread at a time."""

from __future__ import annotations

import sys

import pytest

from app.engine.heap import HeapTrimmer


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_trims_at_most_once_per_interval():
    calls = []
    clock = Clock()
    heap = HeapTrimmer(min_interval_s=1.0, clock=clock, trim=lambda pad: calls.append(pad) or 1)
    assert heap.maybe_trim() is True
    clock.now = 0.5
    assert heap.maybe_trim() is False
    clock.now = 1.0
    assert heap.maybe_trim() is True
    assert calls == [0, 0] and heap.trims == 2


def test_without_malloc_trim_nothing_happens():
    heap = HeapTrimmer(trim=None)
    heap._trim = None  # what a libc without malloc_trim (musl, macOS) leaves
    assert heap.available is False and heap.maybe_trim() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux-only")
def test_real_malloc_trim_runs_here():
    heap = HeapTrimmer(min_interval_s=0.0)
    assert heap.available
    assert heap.maybe_trim() is True


class Scheduled:
    """A stand-in for threading.Timer: records (delay, callback); the test runs them."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, object]] = []

    def __call__(self, delay_s: float, fn) -> None:  # noqa: ANN001
        self.pending.append((delay_s, fn))


def test_a_skipped_trim_leaves_one_trailing_trim_when_the_interval_ends():
    calls, clock, scheduled = [], Clock(), Scheduled()
    heap = HeapTrimmer(min_interval_s=1.0, clock=clock, trim=lambda pad: calls.append(clock.now) or 1,
                       schedule=scheduled)
    assert heap.maybe_trim() is True  # t=0
    clock.now = 0.25
    assert heap.maybe_trim() is False
    clock.now = 0.5
    assert heap.maybe_trim() is False  # the second skip does not schedule another
    assert [d for d, _ in scheduled.pending] == [0.75]  # due when the interval since t=0 ends
    clock.now = 1.0
    scheduled.pending.pop()[1]()
    assert calls == [0.0, 1.0] and heap.trims == 2  # the last frees before the quiet spell were trimmed
    clock.now = 1.5
    assert heap.maybe_trim() is False  # a new skip after the trailing trim schedules the next one
    assert [d for d, _ in scheduled.pending] == [0.5]


def test_a_trailing_trim_overtaken_by_a_trim_moves_on():
    calls, clock, scheduled = [], Clock(), Scheduled()
    heap = HeapTrimmer(min_interval_s=1.0, clock=clock, trim=lambda pad: calls.append(clock.now) or 1,
                       schedule=scheduled)
    heap.maybe_trim()
    clock.now = 0.5
    heap.maybe_trim()  # schedules a trailing trim for t=1.0
    clock.now = 1.2
    heap.maybe_trim()  # a request trims first
    clock.now = 1.3
    scheduled.pending.pop(0)[1]()  # the trailing trim fires 0.1 s after that trim: it waits again
    assert calls == [0.0, 1.2]
    assert [round(d, 6) for d, _ in scheduled.pending] == [0.9]


def test_the_real_timer_trims_after_a_skip():
    import threading

    done = threading.Event()
    heap = HeapTrimmer(min_interval_s=0.05, trim=lambda pad: done.set() or 1)
    assert heap.maybe_trim() is True
    done.clear()
    assert heap.maybe_trim() is False  # within the interval: skipped, trailing trim scheduled
    assert done.wait(timeout=10), "the trailing trim never ran"
    assert heap.trims == 2
