"""Padded lengths from a fixed ladder, so a long-running server meets a bounded set of input shapes — pure, no torch.

Why: every distinct (rows × padded length) a forward runs leaves something behind in the libraries under torch.
On the CPU, oneDNN keeps compiled primitives per shape in a least-recently-used cache of 1,024 (its
`ONEDNN_PRIMITIVE_CACHE_CAPACITY`); past that, every new shape evicts one and builds another, and the heap that
holds them drifts. Measured on the 2-core CPU VM (2026-11-27, tiny GTE, 8,000 forwards of random rows 1–16 ×
length 4–256, trimmed): padded to the longest row, resident memory rose 471 → 500 MiB and glibc's free-but-kept
bytes 31 → 208 MiB, still rising; padded up this ladder instead, 446.1 MiB and 13.3 MiB free from the first
thousand forwards to the last. On CUDA, torch's cuDNN attention keeps a compiled graph per shape for the life of
the process (pytorch/pytorch#190388), and kernel autotuners key on shapes too.

The ladder: multiples of 8 up to 64, then four steps per doubling (80, 96, 112, 128, 160, …, 448, 512, 640, …) —
a text is padded by at most a quarter of its length (and by under 8 tokens up to 64), and a model whose longest
input is 512 tokens meets 20 padded lengths at most. Multiples of 8 are also what tensor cores want. A model's own
limit caps the ladder (a 510-token window is padded to 510 when 512 is past what the model takes).

`exact` (WENMO_LENGTH_BUCKETS=off) pads to the longest row only, as before: for comparing the two.
"""

from __future__ import annotations

FINE_STEP = 8  # up to FINE_LIMIT: multiples of this
FINE_LIMIT = 64
STEPS_PER_DOUBLING = 4


def bucket_length(n: int, limit: int | None = None) -> int:
    """The padded length for a batch whose longest row has `n` tokens: the smallest rung of the ladder ≥ n,
    never past `limit` (a model's maximum; n itself is never cut)."""
    if n < 1:
        return n
    if n <= FINE_LIMIT:
        padded = -(-n // FINE_STEP) * FINE_STEP
    else:
        octave = 1 << (n - 1).bit_length() - 1  # the power of two below n (n > 64, so ≥ 64)
        step = octave // STEPS_PER_DOUBLING
        padded = -(-n // step) * step
    if limit is not None and padded > limit:
        return max(n, limit)
    return padded


def padded_length(n: int, buckets: bool, limit: int | None = None) -> int:
    """What a forward pads its rows to: `bucket_length` with buckets on, the longest row (n) with them off."""
    return bucket_length(n, limit) if buckets else n


def ladder(limit: int) -> list[int]:
    """Every padded length a model whose inputs are at most `limit` tokens can meet with buckets on, shortest first."""
    rungs, n = [], 1
    while n <= limit:
        rung = bucket_length(n, limit)
        rungs.append(rung)
        n = rung + 1
    return rungs
