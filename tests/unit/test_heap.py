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
