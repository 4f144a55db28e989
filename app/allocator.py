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
from typing import Any

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENA_MAX = 2
ENV = {M_ARENA_MAX: "MALLOC_ARENA_MAX"}
WANTED = {M_ARENA_MAX: ARENA_MAX}


def libc_function(name: str, argtypes: list[Any], restype: Any) -> Callable[..., Any] | None:  # noqa: ANN401
    """glibc's `name`, typed; None where the C library has no such function (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = restype
    return fn


def _load_mallopt() -> Callable[[int, int], int] | None:
    return libc_function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)


class _MallInfo2(ctypes.Structure):  # glibc ≥ 2.33, malloc.h's struct mallinfo2: every field a size_t
    _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


_mallinfo2 = libc_function("mallinfo2", [], _MallInfo2)


def malloc_stats() -> dict[str, int] | None:
    """Where the C heap's bytes are, summed over every arena (glibc's `mallinfo2`; None elsewhere):
    `in_use` — chunks the program holds (torch's CPU tensors, tokenizers, numpy arrays; mmapped chunks included);
    `free` — freed chunks the arenas keep for reuse, fragmentation included (resident or not: a trim gives back
    their pages but not their address space); `system` — what the arenas and mmapped chunks took from the system
    (always in_use + free: glibc counts an arena's bytes as one or the other).
    Python's own small objects live in pymalloc's arenas, outside these (sys.getallocatedblocks counts them).
    Read to tell a leak (in_use grows) from fragmentation (free grows) in a soak."""
    if _mallinfo2 is None:
        return None
    m = _mallinfo2()
    return {"in_use": m.uordblks + m.hblkhd, "free": m.fordblks, "system": m.arena + m.hblkhd}


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
