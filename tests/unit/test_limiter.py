import threading
import time

import pytest

from app.engine.limiter import ConcurrencyLimiter
from app.errors import OverloadedError


def test_cap_queue_and_immediate_busy():
    lim = ConcurrencyLimiter(max_concurrent=2, max_queue=1, wait_timeout_s=60)
    release = threading.Event()
    started = []

    def hold():
        with lim.slot():
            started.append(1)
            release.wait(60)

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.time() + 5
    while (lim.running, lim.waiting) != (2, 1) and time.time() < deadline:
        time.sleep(0.01)
    assert (lim.running, lim.waiting) == (2, 1)
    outcome = []

    def one_more():
        try:
            with lim.slot():
                outcome.append("ran")
        except OverloadedError:
            outcome.append("busy")

    extra = threading.Thread(target=one_more)
    extra.start()
    extra.join(30)
    # Busy is answered at once, never after a wait: before any slot or queue place freed (held until release).
    assert outcome == ["busy"] and (lim.running, lim.waiting) == (2, 1)
    assert lim.rejected == 1
    release.set()
    for t in threads:
        t.join(5)
    assert len(started) == 3 and (lim.running, lim.waiting) == (0, 0)


def test_wait_timeout_is_busy():
    lim = ConcurrencyLimiter(max_concurrent=1, max_queue=1, wait_timeout_s=0.1)
    with lim.slot():
        with pytest.raises(OverloadedError):
            with lim.slot():
                pass
    with lim.slot():  # the slot is free again afterwards
        assert lim.running == 1
