"""glibc's allocator, set for a long-running server before any thread allocates (glibc only; elsewhere a no-op).

Measured by the soak (README, "Memory over days"; 2-core CPU VM, demo models, every route): with glibc's
defaults the resident memory of an idle server, sampled with nothing in flight after a trim, wandered by
±15 MiB from one quiet moment to the next (544–626 MiB over 30k requests), so no slope of a few MiB a day could
be told from noise. The cause is glibc's arenas: every thread gets its own heap arena, up to 8 per core; the
server runs requests on dozens of worker threads, and what a thread frees stays in its arena, fragmented, for
that thread's next request. With two arenas the same soak's quiet moments sat within a few MiB of a smooth,
levelling curve (535 → 585 MiB, the last ten within 580–585).

Not set: a fixed mmap threshold (`MALLOC_MMAP_THRESHOLD_`), which smoothed the curve about as much but made a
BERT-large-sized CPU forward 2–4 times slower (every activation a fresh mmap, its pages faulted in zeroed).
A variable set in the environment (`MALLOC_ARENA_MAX`, glibc's own name) wins: glibc has read it at start-up,
and it is not overridden here.

`tune()` must run before a second thread allocates: glibc fixes its arena limit when the first thread beyond
the main one asks for an arena (numpy's BLAS threads do, at import). app/__init__.py calls it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable, Mapping

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENA_MAX = 2
ENV = {M_ARENA_MAX: "MALLOC_ARENA_MAX"}
WANTED = {M_ARENA_MAX: ARENA_MAX}


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
