"""app/allocator.py: two heap arenas, set before any thread allocates; the environment's own MALLOC_ARENA_MAX
wins."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import allocator

ROOT = Path(__file__).resolve().parents[2]

# Eight threads allocate at once (large and small blocks), then glibc describes its heap: the number of arenas,
# and how many blocks live in mmapped chunks.
PROBE = r"""
import ctypes, ctypes.util, re, sys, tempfile, threading
if sys.argv[1] == "with-app":
    import app  # noqa: F401
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
keep, barrier = [], threading.Barrier(8)
def work():
    barrier.wait()
    for _ in range(200):
        keep.append(bytearray(100_000))
        keep.append(bytearray(1000))
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
out = tempfile.NamedTemporaryFile(delete=False); out.close()
fp = libc.fopen(out.name.encode(), b"w"); libc.malloc_info(0, ctypes.c_void_p(fp)); libc.fclose(ctypes.c_void_p(fp))
xml = open(out.name).read()
print(len(re.findall(r"<heap nr=", xml)), re.search(r'<total type="mmap" count="(\d+)"', xml).group(1))
"""


def heap_after_threads(mode: str, **env: str) -> tuple[int, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**clean, "PYTHONPATH": str(ROOT), **env})
    assert proc.returncode == 0, proc.stderr
    arenas, mmapped = proc.stdout.split()
    return int(arenas), int(mmapped)


@pytest.mark.skipif(not sys.platform.startswith("linux") or allocator._load_mallopt() is None,
                    reason="glibc's mallopt and malloc_info only")
def test_importing_app_gives_two_arenas_and_leaves_the_mmap_threshold_dynamic():
    plain_arenas, plain_mmapped = heap_after_threads("plain")
    arenas, mmapped = heap_after_threads("with-app")
    assert plain_arenas > 2 and arenas == 2
    # 1,600 blocks of 100 kB stay alive: glibc's dynamic threshold (raised past 100 kB by the first free) puts
    # nearly all of them in the arenas, with or without the app; a fixed threshold (measured 2–4× slower
    # forwards) would mmap each one.
    assert mmapped < 100 and plain_mmapped < 100


@pytest.mark.skipif(not sys.platform.startswith("linux") or allocator._load_mallopt() is None,
                    reason="glibc's mallopt and malloc_info only")
def test_the_environments_own_arena_limit_wins():
    arenas, _ = heap_after_threads("with-app", MALLOC_ARENA_MAX="4")
    assert arenas == 4


def test_tune_sets_only_what_the_environment_leaves_unset():
    calls = []
    done = allocator.tune({}, lambda p, v: calls.append((p, v)) or 1)
    assert calls == [(allocator.M_ARENA_MAX, 2)] and done == {"MALLOC_ARENA_MAX": 2}
    assert allocator.tune({"MALLOC_ARENA_MAX": "8"}, lambda p, v: calls.append((p, v)) or 1) == {}
    assert len(calls) == 1  # the environment's value stands: mallopt not called
    assert allocator.tune({}, lambda p, v: 0) == {}  # mallopt refused: nothing claimed


@pytest.mark.skipif(allocator.malloc_stats() is None, reason="not glibc ≥ 2.33: no mallinfo2")
def test_malloc_stats_tell_held_chunks_from_freed_ones():
    """A leak shows as `in_use`, fragmentation as `free`: every other small chunk freed stays in the arena."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    mib = 1 << 20
    before = allocator.malloc_stats()
    # Served from a free chunk when the arena has one that large (a long test run leaves them), else mapped anew:
    # in use either way. What the arenas took is always what is held plus what is free (glibc's own accounting).
    big = libc.malloc(48 * mib)
    held = allocator.malloc_stats()
    assert held["in_use"] - before["in_use"] >= 48 * mib
    assert held["system"] == held["in_use"] + held["free"] and before["system"] == before["in_use"] + before["free"]
    libc.free(big)
    assert allocator.malloc_stats()["in_use"] - before["in_use"] < 4 * mib
    small = [libc.malloc(1000) for _ in range(8000)]  # ~8 MB of heap chunks
    full = allocator.malloc_stats()
    for p in small[::2]:
        libc.free(p)  # holes between held chunks: the arena cannot give them back
    holed = allocator.malloc_stats()
    assert full["in_use"] - holed["in_use"] >= 3 * mib and holed["free"] - full["free"] >= 3 * mib
    for p in small[1::2]:
        libc.free(p)
