"""hostinfo.process_status: resident memory by kind and the thread count, from /proc/self/status."""

from __future__ import annotations

import sys
import threading

import pytest

from app import hostinfo

# The lines of a real /proc/PID/status that matter here, among some that do not (Linux 6.x layout).
STATUS = """Name:\tpython
VmRSS:\t  612340 kB
RssAnon:\t  500000 kB
RssFile:\t  112000 kB
RssShmem:\t     340 kB
VmSwap:\t       0 kB
Threads:\t37
SigQ:\t0/95859
"""


def test_the_fields_are_read_in_bytes():
    assert hostinfo.process_status(STATUS) == {"anon": 500000 * 1024, "file": 112000 * 1024, "shmem": 340 * 1024,
                                               "threads": 37}


def test_a_status_without_the_fields_gives_none():
    # Kernels before 4.5 have no RssAnon/RssFile: no partial answer that would read as zero.
    assert hostinfo.process_status("Name:\tpython\nVmRSS:\t 612340 kB\nThreads:\t3\n") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status is Linux's")
def test_this_process_reading_adds_up_to_its_resident_memory_and_counts_a_new_thread():
    import psutil

    before = hostinfo.process_status()
    assert before is not None
    rss = psutil.Process().memory_info().rss
    assert abs(before["anon"] + before["file"] + before["shmem"] - rss) < 0.05 * rss
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert hostinfo.process_status()["threads"] == before["threads"] + 1
    finally:
        stop.set()
        t.join()
