"""Deadlines and cancellation (app/engine/cancellation.py) at the engine's checkpoints: the batch loop stops
between forwards, a waiter leaves the limiter's queue when its client goes away. No torch."""

from __future__ import annotations

import threading
import time

import pytest

from app.engine.cancellation import CancelToken, WorkScope, checkpoint, work_scope
from app.engine.limiter import ConcurrencyLimiter
from app.engine.scheduler import run_batched
from app.errors import CancelledError, DeadlineExceededError


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_deadline_passes_only_after_the_timeout():
    clock = FakeClock()
    scope = WorkScope(None, 2.0, clock=clock)
    clock.now += 1.99
    scope.check()
    clock.now += 0.02
    with pytest.raises(DeadlineExceededError, match="longer than 2 s.*WENMO_REQUEST_TIMEOUT_S"):
        scope.check()


def test_checkpoint_outside_a_scope_never_stops():
    checkpoint()  # no scope: a bench or a test calling an adapter directly is never interrupted


def test_batch_loop_stops_at_the_next_batch_after_cancel():
    token = CancelToken()
    ran: list[list[int]] = []

    def run(batch):
        ran.append(batch)
        if len(ran) == 2:
            token.cancel("the client closed the connection")
        return batch

    with work_scope(token, None), pytest.raises(CancelledError, match="client closed the connection"):
        run_batched([10] * 8, run, max_batch_tokens=20, max_batch_size=2)
    assert len(ran) == 2  # 4 batches planned, stopped before the third


def test_batch_loop_stops_after_the_deadline():
    ran = []

    def run(batch):
        ran.append(batch)
        time.sleep(0.06)
        return batch

    with work_scope(None, 0.1), pytest.raises(DeadlineExceededError):
        run_batched([10] * 10, run, max_batch_tokens=10, max_batch_size=1)
    assert 1 <= len(ran) < 10  # stopped long before the tenth batch


def test_the_scope_ends_with_its_block():
    token = CancelToken()
    with work_scope(token, None):
        pass
    token.cancel()
    checkpoint()  # the scope is gone: nothing to stop


def test_a_cancelled_waiter_leaves_the_queue_and_the_slot_stays_usable():
    lim = ConcurrencyLimiter(max_concurrent=1, max_queue=1, wait_timeout_s=30)
    release = threading.Event()
    holding = threading.Event()

    def hold():
        with lim.slot():
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(5)
    token = CancelToken()
    outcome = []

    def wait():
        try:
            with lim.slot(token):
                outcome.append("ran")
        except CancelledError as e:
            outcome.append(e.message)

    w = threading.Thread(target=wait)
    w.start()
    deadline = time.monotonic() + 5
    while lim.waiting != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lim.waiting == 1
    token.cancel("the client went away")
    w.join(5)
    assert outcome == ["stopped while waiting for a slot: the client went away"]
    assert lim.waiting == 0
    release.set()
    t.join(5)
    with lim.slot():
        assert lim.running == 1
    assert lim.running == 0
