"""ConcurrencyLimiter: its settings, and the queue wait of a request that carries a cancel token (the HTTP
API's path), driven by a scripted clock so that no assertion depends on how fast this machine is. Each test
kills mutants that tests/mutation.sh found surviving (test_limiter.py covers the wait without a token)."""

from __future__ import annotations

import threading
import time
import types

import pytest

import app.engine.limiter as limiter_module
from app.engine.cancellation import CancelToken
from app.engine.limiter import ConcurrencyLimiter
from app.errors import CancelledError, OverloadedError


def test_settings_are_kept_and_the_default_queue_wait_is_a_minute():
    lim = ConcurrencyLimiter(max_concurrent=3, max_queue=0)  # no queue at all is allowed
    assert (lim.max_concurrent, lim.max_queue, lim.wait_timeout_s) == (3, 0, 60.0)  # the UI shows the cap


@pytest.mark.parametrize(("concurrent", "queue"), [(0, 1), (1, -1), (0, -1)])
def test_a_cap_below_one_or_a_negative_queue_is_refused_with_both_rules(concurrent, queue):
    with pytest.raises(ValueError, match="^max_concurrent must be ≥ 1 and max_queue ≥ 0$"):
        ConcurrencyLimiter(max_concurrent=concurrent, max_queue=queue)


class ScriptedClock:
    """time.monotonic for the limiter: the given readings, then the last one for ever. A waiter that reads it
    more than `max_reads` times is stuck in a loop, which fails the test instead of hanging it."""

    def __init__(self, *readings: float, max_reads: int = 10_000) -> None:
        self.readings = list(readings)
        self.reads = 0
        self.max_reads = max_reads

    def monotonic(self) -> float:
        self.reads += 1
        if self.reads > self.max_reads:
            raise AssertionError("the waiter keeps reading the clock: it never stops waiting")
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def wait_in_thread(lim: ConcurrencyLimiter, cancel: CancelToken) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run():
        try:
            with lim.slot(cancel):
                outcome.append("ran")
        except Exception as e:  # noqa: BLE001  the test reads whatever ended the wait
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def poll(condition) -> None:
    deadline = time.monotonic() + 30
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert condition()


@pytest.fixture
def lim():
    return ConcurrencyLimiter(max_concurrent=1, max_queue=1, wait_timeout_s=60.0)


def test_a_waiter_with_a_token_gets_the_slot_freed_before_its_deadline(lim, monkeypatch):
    # half a second of the minute is left on every reading: the waiter keeps polling for the slot
    monkeypatch.setattr(limiter_module, "time", types.SimpleNamespace(monotonic=ScriptedClock(0.0, 59.5).monotonic))
    held = lim.slot()
    held.__enter__()
    thread, outcome = wait_in_thread(lim, CancelToken())
    poll(lambda: lim.waiting == 1)
    held.__exit__(None, None, None)
    thread.join(30)
    assert outcome == ["ran"]
    assert (lim.running, lim.waiting, lim.rejected) == (0, 0, 0)
    with lim.slot():  # the slot came back
        assert lim.running == 1


def test_a_waiter_with_a_token_is_busy_when_its_deadline_passes(lim, monkeypatch):
    # 0.1 s left at the first reading, none at the second: exactly the deadline ends the wait
    clock = ScriptedClock(0.0, 59.9, 60.0, max_reads=50)
    monkeypatch.setattr(limiter_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    with lim.slot():
        thread, outcome = wait_in_thread(lim, CancelToken())
        thread.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], OverloadedError)
        assert (lim.running, lim.waiting, lim.rejected) == (1, 0, 1)


def test_a_waiter_past_its_deadline_does_not_poll_again(lim, monkeypatch):
    clock = ScriptedClock(0.0, 60.0, max_reads=50)
    monkeypatch.setattr(limiter_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    with lim.slot():
        thread, outcome = wait_in_thread(lim, CancelToken())
        thread.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], OverloadedError)
        assert lim.rejected == 1


def test_a_cancelled_waiter_leaves_the_queue_with_the_reason(lim):
    with lim.slot():
        cancel = CancelToken()
        thread, outcome = wait_in_thread(lim, cancel)
        poll(lambda: lim.waiting == 1)
        cancel.cancel("the client went away")
        thread.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], CancelledError)
        assert str(outcome[0]) == "stopped while waiting for a slot: the client went away"
        # a cancelled waiter is not a busy answer, and its queue place is free again
        assert (lim.running, lim.waiting, lim.rejected) == (1, 0, 0)
