"""Length-aware batch planning — a pure function, no torch.

Padded cost of a batch is (longest × count), as in text-embeddings-inference's queue: sort by length
(longest first), then fill each batch while that cost stays within the token budget and the count within
the cap. Padding only reaches the longest text of its own batch, and similar lengths share a batch.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Group input indices into batches. Every index appears exactly once; an input longer than the
    budget runs alone (it cannot be split without changing its result)."""
    if max_batch_tokens < 1 or max_batch_size < 1:
        raise ValueError("max_batch_tokens and max_batch_size must be ≥ 1")
    # Stable sort, longest first: the first member of each batch is its longest, so its cost is known.
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        if current and (longest * (len(current) + 1) > max_batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        if not current:
            longest = max(lengths[i], 1)
        current.append(i)
    if current:
        batches.append(current)
    return batches


def restore_order(batches: Sequence[Sequence[int]], results: Sequence[Sequence[object]]) -> list[object]:
    """Put per-batch results back in the caller's order."""
    n = sum(len(b) for b in batches)
    out: list[object] = [None] * n
    for batch, res in zip(batches, results, strict=True):
        for i, r in zip(batch, res, strict=True):
            out[i] = r
    return out
