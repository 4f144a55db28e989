"""Per-forward timing: a transparent wrapper around a model's forward that records each batch's shape,
real token counts and wall time (with a CUDA synchronize on both sides, so the time is the GPU's too).

Every configuration — naive, library and Wenmo's engine — runs its forwards through this same wrapper,
so "per-batch latency" means the same thing for all of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass
class BatchRecord:
    lengths: list[int]  # real (unpadded) tokens of each row
    width: int  # padded width of the batch
    seconds: float


class TimedForward:
    def __init__(self, module: Any, device: str, records: list[BatchRecord]) -> None:
        self.module = module
        self.records = records
        self._cuda = device.startswith("cuda")

    def _sync(self) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # BERT models take keyword tensors; the RexUniNLU model takes (ids, positions, 2-D mask) positionally.
        mask = kwargs.get("attention_mask", args[2] if len(args) > 2 else None)
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._sync()
        t0 = time.perf_counter()
        out = self.module(*args, **kwargs)
        self._sync()
        dt = time.perf_counter() - t0
        if mask is not None and mask.dim() == 2:
            lengths = [int(x) for x in mask.sum(dim=1).tolist()]
            width = int(mask.shape[1])
        elif mask is not None and mask.dim() == 3:  # (B, L, L): a row is a real token if it may attend anywhere
            lengths = [int(x) for x in mask.any(dim=-1).sum(dim=1).tolist()]
            width = int(mask.shape[1])
        elif ids is not None:
            width = int(ids.shape[-1])
            lengths = [width] * int(ids.shape[0])
        else:
            width, lengths = 0, []
        self.records.append(BatchRecord(lengths, width, dt))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)
