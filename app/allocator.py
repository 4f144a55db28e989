"""glibc's allocator, set for a long-running server before any thread allocates (glibc only; elsewhere a no-op).

Measured by the soak (README, "Memory over days"; 2-core CPU VM, demo models, every route): with glibc's
defaults the resident memory of an idle server, sampled with nothing in flight after a trim, wandered by
±15 MiB from one quiet moment to the next (544–626 MiB over 30k requests), so no slope of a few MiB a day could
be told from noise. Two defaults cause it:

- arenas: every thread gets its own heap arena, up to 8 per core; the server runs requests on dozens of worker
  threads, and what a thread frees stays in its arena, fragmented, for that thread's next request;
- the dynamic mmap threshold: after a large block (a tensor's activations) is freed, glibc raises the size above
  which it uses mmap to that block's size (up to 32 MiB), so later blocks of that size come from the heap, where
  freeing them fragments it instead of returning the pages.

With two arenas and a fixed 64 KiB threshold the same soak's quiet moments sat within a few MiB of a smooth
curve. A variable set in the environment (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`, glibc's own names) wins:
glibc has read it at start-up, and it is not overridden here.

`tune()` must run before a second thread allocates: glibc fixes its arena limit when the first thread beyond
the main one asks for an arena (numpy's BLAS threads do, at import). app/__init__.py calls it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable, Mapping

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters (malloc.h)
M_ARENA_MAX = -8
ARENA_MAX = 2
MMAP_THRESHOLD = 64 * 1024
ENV = {M_ARENA_MAX: "MALLOC_ARENA_MAX", M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_"}
WANTED = {M_ARENA_MAX: ARENA_MAX, M_MMAP_THRESHOLD: MMAP_THRESHOLD}


def _load_mallopt() -> Callable[[int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def tune(environ: Mapping[str, str] | None = None,
         mallopt: Callable[[int, int], int] | None = None) -> dict[str, int]:
    """Set what the environment leaves unset; returns {glibc variable name: value set} for what was set."""
    env = os.environ if environ is None else environ
    call = mallopt if mallopt is not None else _load_mallopt()
    if call is None:
        return {}
    done = {}
    for param, value in WANTED.items():
        if ENV[param] in env:
            continue
        if call(param, value) == 1:  # mallopt returns 1 on success
            done[ENV[param]] = value
    return done
