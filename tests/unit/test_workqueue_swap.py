"""Installing a new model in a role's queue (app/engine/workqueue.py `install`): the forward in flight finishes on
the old model, requests submitted before the swap finish on the model they were submitted to, new ones run on the
new model, no forward mixes the two, and `wait_released` says when the old one serves nobody. Orders are pinned
with events, never with sleeps."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.engine.workqueue import BatchLimits, WorkQueue


class Scaled:
    """A model whose forward multiplies each payload by its factor and records what ran together; `gate` holds
    the first forward until released."""

    def __init__(self, factor: int, log: list) -> None:
        self.factor = factor
        self.log = log
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def forward_batch(self, payloads):
        self.log.append((self.factor, list(payloads)))
        self.entered.set()
        if self.gate is not None:
            gate, self.gate = self.gate, None
            assert gate.wait(10)
        return [value * self.factor for value in payloads]


def wait_until(check, what: str) -> None:
    for _ in range(2000):
        if check():
            return
        threading.Event().wait(0.005)
    raise AssertionError(what)


@pytest.mark.parametrize("across", [True, False])
def test_requests_finish_on_the_model_they_were_submitted_to_and_new_ones_run_on_the_new_one(across):
    log: list = []
    old, new = Scaled(2, log), Scaled(3, log)
    queue = WorkQueue("embed", old, BatchLimits(64, 2), across=across)
    gate = old.gate = threading.Event()
    pool = ThreadPoolExecutor(8)
    first = pool.submit(queue.run, [1, 2, 3, 4], [5, 5, 5, 5])  # 2 forwards: the first is held
    assert old.entered.wait(10)
    if across:
        second = pool.submit(queue.run, [10, 20], [5, 5])  # queued for the old model behind the held forward
        wait_until(lambda: queue.waiting == 2, "the second request was not queued")
    assert queue.install(new) is old
    assert queue.serves(old)
    third = pool.submit(queue.run, [100, 200, 300], [5, 5, 5])
    if across:
        wait_until(lambda: queue.waiting == 3, "the third request was not queued")
    else:
        assert new.entered.wait(10)  # alone: it runs at once, on the new model, beside the held forward
    gate.set()
    assert first.result(10) == [2, 4, 6, 8]
    if across:
        assert second.result(10) == [20, 40]
    assert third.result(10) == [300, 600, 900]
    assert queue.wait_released(old, 10) and not queue.serves(old)
    for factor, payloads in log:  # no forward mixed the models: each holds one request generation's values
        assert all((v < 100) == (factor == 2) for v in payloads), log
    queue.close()


def test_wait_released_times_out_while_a_request_is_still_on_the_old_model():
    log: list = []
    old, new = Scaled(2, log), Scaled(3, log)
    queue = WorkQueue("embed", old, BatchLimits(64, 4))
    gate = old.gate = threading.Event()
    pool = ThreadPoolExecutor(2)
    first = pool.submit(queue.run, [1], [5])
    assert old.entered.wait(10)
    queue.install(new)
    assert queue.wait_released(old, 0.05) is False
    gate.set()
    assert first.result(10) == [2]
    assert queue.wait_released(old, 10) is True
    assert queue.run([7], [5]) == [21]
    queue.close()


def test_a_request_that_names_its_model_runs_on_it_whatever_is_installed():
    """An adapter that encoded a request passes itself: its payloads never reach another model's network (a request
    that picked the old adapter just before the swap still runs on it)."""
    log: list = []
    old, new = Scaled(2, log), Scaled(3, log)
    queue = WorkQueue("embed", new, BatchLimits(64, 4))
    assert queue.run([5], [5], model=old) == [10]
    assert queue.run([5], [5]) == [15]
    queue.close()
