"""Heap snapshots on SIGUSR1 (app/heapsnapshots.py) and their diff by allocation site, in this process."""

from __future__ import annotations

import os
import signal
import time
import tracemalloc

import pytest

from app.heapsnapshots import SIGNAL, HeapSnapshots, diff_by_site, traced_bytes

KEPT: list[bytes] = []


def keep_some(n: int) -> None:
    for i in range(n):
        KEPT.append(bytes(1000) + i.to_bytes(4, "little"))  # this line is the site that grows


@pytest.fixture()
def traced(tmp_path):
    before = signal.getsignal(SIGNAL)
    snaps = HeapSnapshots(tmp_path / "heap", frames=4)
    snaps.answer_signal()
    yield snaps
    signal.signal(SIGNAL, before)
    tracemalloc.stop()
    KEPT.clear()


def test_no_snapshot_before_tracing_starts(traced):
    assert not tracemalloc.is_tracing()
    assert traced.dump() is None and list(traced.directory.iterdir()) == []


def test_sigusr1_writes_snapshots_whose_diff_names_the_growing_line(traced):
    traced.start_tracing()
    os.kill(os.getpid(), SIGNAL)
    keep_some(2000)
    os.kill(os.getpid(), SIGNAL)
    deadline = time.monotonic() + 10
    while len(list(traced.directory.glob("*.tracemalloc"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    first, second = sorted(traced.directory.glob("*.tracemalloc"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    assert first.name == f"heap-{os.getpid()}-1.tracemalloc" and not list(traced.directory.glob("*.part"))
    a, b = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(second))
    grown = diff_by_site(a, b, top=3)
    top = grown[0]
    assert top["stack"][0].endswith("test_heap_snapshots.py:19")  # innermost frame first: the append line
    assert top["blocks"] >= 2000 and top["bytes"] >= 2000 * 1000
    assert traced_bytes(b) - traced_bytes(a) >= 2000 * 1000
    assert all(g["bytes"] <= top["bytes"] for g in grown)
