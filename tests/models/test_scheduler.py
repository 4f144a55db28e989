"""Out-of-memory recovery: free, split the batch, retry once, then a clear error; no half results."""

import pytest
import torch

from app.engine.scheduler import run_batched
from app.errors import InferenceError


def test_oom_splits_and_retries_once():
    calls = []

    def run(batch):
        calls.append(list(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [i * 10 for i in batch]

    out = run_batched([5, 5, 5, 5], run, max_batch_tokens=1000, max_batch_size=8)
    assert out == [0, 10, 20, 30]
    assert calls == [[0, 1, 2, 3], [0, 1], [2, 3]]


def test_second_oom_is_a_clear_error():
    def run(batch):
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(InferenceError) as e:
        run_batched([5, 5], run, max_batch_tokens=1000, max_batch_size=8)
    assert "out of memory" in e.value.message and "--max-batch-tokens" in e.value.message


def test_other_errors_pass_through_untouched():
    def run(batch):
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError):
        run_batched([5], run, max_batch_tokens=1000, max_batch_size=8)
