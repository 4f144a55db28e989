"""Run a model over many inputs in planned batches, with out-of-memory recovery.

On CUDA out-of-memory the cache is freed, the batch is split in two and each half retried once; a second
failure becomes a clear InferenceError and the process stays healthy (no half-written state is kept).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from app.engine.batching import plan_batches, restore_order
from app.engine.cancellation import checkpoint
from app.errors import InferenceError

log = logging.getLogger(__name__)

R = TypeVar("R")


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_cache() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_retry(run_batch: Callable[[list[int]], list[R]], batch: list[int]) -> list[R]:
    """`run_batch(batch)`, and on out-of-memory the two halves once each; InferenceError if that fails too."""
    try:
        return run_batch(batch)
    except Exception as e:
        if not is_oom(e):
            raise
    free_cache()
    if len(batch) == 1:
        halves = [batch]
    else:
        mid = len(batch) // 2
        halves = [batch[:mid], batch[mid:]]
    log.warning("event=oom_retry batch=%d split=%s", len(batch), [len(h) for h in halves])
    out: list[R] = []
    try:
        for half in halves:
            out.extend(run_batch(half))
    except Exception as e:
        if not is_oom(e):
            raise
        free_cache()
        raise InferenceError(
            f"out of memory on a batch of {len(batch)} texts even after splitting it; "
            "lower --max-batch-tokens or --max-length, or send fewer/shorter texts"
        ) from None
    return out


def run_batched(
    lengths: Sequence[int],
    run_batch: Callable[[list[int]], list[R]],
    max_batch_tokens: int,
    max_batch_size: int,
    min_fill: float = 0.0,
    padded: Callable[[int], int] | None = None,
) -> list[R]:
    """Call `run_batch(indices)` for each planned batch; return results in the original order. Before each
    batch the request's deadline and cancellation are checked (app/engine/cancellation.py)."""
    batches = plan_batches(lengths, max_batch_tokens, max_batch_size, min_fill, padded)
    results = []
    for b in batches:
        checkpoint()
        results.append(run_with_retry(run_batch, b))
    return restore_order(batches, results)  # type: ignore[return-value]
