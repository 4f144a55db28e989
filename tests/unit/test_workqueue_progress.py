"""Progress through the engine (the CLI's progress bar): a request's scope hears how many of its items each forward
finished — its own items only, all of them before `run` returns, with the queue on or off — and a progress display
that fails is switched off without stopping the worker."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.engine.batching import plan_batches
from app.engine.cancellation import work_scope
from app.engine.workqueue import BatchLimits, WorkQueue


class Doubler:
    """forward_batch returns (tag, value × 2) per payload; `gate` (when set) holds the first forward."""

    def __init__(self) -> None:
        self.forwards: list[list[tuple[str, int]]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def forward_batch(self, payloads):
        self.forwards.append(list(payloads))
        self.entered.set()
        if self.gate is not None:
            gate, self.gate = self.gate, None
            assert gate.wait(10)
        return [(tag, value * 2) for tag, value in payloads]


def run_counted(queue: WorkQueue, tag: str, lengths: list[int], heard: list[int]) -> list:
    with work_scope(None, None, heard.append):
        out = queue.run([(tag, i) for i in range(len(lengths))], lengths)
    assert sum(heard) == len(lengths)  # every item counted by the time the results are back
    return out


@pytest.mark.parametrize("across", [True, False])
def test_each_forward_reports_the_items_it_finished(across):
    model = Doubler()
    queue = WorkQueue("test", model, BatchLimits(64, 4, 0.5), across=across)
    lengths = [5, 30, 7, 12, 12, 3, 40, 9, 9, 9, 1, 22]
    heard: list[int] = []
    assert run_counted(queue, "a", lengths, heard) == [("a", 2 * i) for i in range(len(lengths))]
    assert heard == [len(b) for b in plan_batches(lengths, 64, 4, 0.5)] == [len(f) for f in model.forwards]


def test_a_shared_forward_tells_each_request_only_its_own_items():
    model = Doubler()
    queue = WorkQueue("test", model, BatchLimits(1000, 16), across=True)
    gate = model.gate = threading.Event()
    heard: dict[str, list[int]] = {"first": [], "a": [], "b": []}
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(run_counted, queue, "first", [4], heard["first"])
        assert model.entered.wait(10)
        a = pool.submit(run_counted, queue, "a", [3, 3, 3], heard["a"])
        b = pool.submit(run_counted, queue, "b", [5, 5], heard["b"])
        for _ in range(2000):
            if queue.waiting >= 3:
                break
            threading.Event().wait(0.005)
        gate.set()
        first.result(10), a.result(10), b.result(10)
    assert len(model.forwards) == 2 and queue.stats.shared_forwards == 1  # a and b ran together
    assert heard == {"first": [1], "a": [3], "b": [2]}


def test_a_failing_progress_display_is_switched_off_and_the_work_goes_on(caplog):
    model = Doubler()
    queue = WorkQueue("test", model, BatchLimits(64, 2), across=True)
    calls: list[int] = []

    def broken(items: int) -> None:
        calls.append(items)
        raise OSError("the terminal went away")

    with caplog.at_level(logging.WARNING), work_scope(None, None, broken):
        out = queue.run([("a", i) for i in range(6)], [5] * 6)
    assert out == [("a", 2 * i) for i in range(6)] and len(model.forwards) == 3
    assert calls == [2]  # once, then off
    assert "event=progress_failed" in caplog.text
    assert queue.run([("b", 1)], [5]) == [("b", 2)]  # the worker still serves
