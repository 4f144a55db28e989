"""bench/mappings.py: a process's resident memory by kind of mapping, from /proc/PID/smaps."""

from __future__ import annotations

import mmap
import subprocess
import sys

import pytest

from bench import mappings

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux only)")

SMAPS = """\
55d4c0000000-55d4c4000000 rw-p 00000000 00:00 0                          [heap]
Rss:               10240 kB
7f0000000000-7f0002000000 rw-p 00000000 00:00 0
Rss:                3072 kB
AnonHugePages:      2048 kB
7f0004100000-7f0004200000 rw-p 00000000 00:00 0
Rss:                1024 kB
7f0004200000-7f0004700000 rw-p 00000000 00:00 0
Rss:                 512 kB
7f1000000000-7f1000200000 r-xp 00000000 08:01 42                         /usr/lib/libtorch_cpu.so
Rss:                2048 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                 132 kB
"""


def test_each_mapping_counts_as_its_kind():
    # An aligned anonymous 32 MiB mapping is an arena heap; a 1 MiB one pymalloc's; a 5 MiB unaligned one other.
    assert mappings.resident_by_kind(SMAPS) == {"main": 10.0, "arenas": 3.0, "py1M": 1.0, "anon": 0.5, "file": 2.0,
                                                "named": 0.1, "thp": 2.0}


def test_this_process_adds_up_to_its_resident_memory_and_a_big_buffer_shows_as_anon():
    def vm_rss_mib():
        line = next(x for x in open("/proc/self/status") if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    before = mappings.resident_by_kind(open("/proc/self/smaps").read())
    assert sum(v for k, v in before.items() if k != "thp") == pytest.approx(vm_rss_mib(), rel=0.05)
    # A mapping of its own, made directly: a 64 MiB bytearray is not one for sure — malloc serves it from free space
    # in its heap when earlier work left that much there (seen in a random test order: anon unchanged, 199.2 MiB).
    # Private (a shared one is /dev/zero, a file) and a page over 64 MiB (never taken for a 64 MiB-aligned arena).
    size = (64 << 20) + 4096
    big = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    big.write(b"x" * size)  # touched: resident
    after = mappings.resident_by_kind(open("/proc/self/smaps").read())
    assert after["anon"] - before["anon"] > 60
    big.close()


def test_a_quiet_process_is_sampled_and_a_missing_one_refused():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sample = next(mappings.quiet_samples(child.pid, every_s=0, quiet_ticks=15))
        assert sample["file"] > 1 and sample["main"] + sample["anon"] + sample["py1M"] > 0
    finally:
        child.kill()
        child.wait()
    assert list(mappings.quiet_samples(child.pid, 0, 15)) == []  # ended: no samples, no error
    r = subprocess.run([sys.executable, "-m", "bench.mappings", str(child.pid)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and f"no process {child.pid}" in r.stderr
