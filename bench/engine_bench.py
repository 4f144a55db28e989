"""Wenmo's own path, measured: the real adapters (tokenize once, token-budget batching, the planned dtype,
the torch or DeepSpeed engine), with their forward wrapped by the same timer as the baselines.

The model adapters are used unchanged; only their `model` attribute is wrapped, after loading, so the
measured code is the code that serves. Runs inside a measurement subprocess.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.engine.dsconfig import load_ds_config
from app.engine.runtime import RuntimePlan, resolve_plan
from app.models.cross_encoder import CrossEncoderAdapter
from app.models.embedding import EmbeddingAdapter
from app.models.uninlu.adapter import NluAdapter
from bench.timing import BatchRecord, TimedForward


def make_plan(device: str, dtype: str, engine: str, ds_config: str, kernel_inject: bool | None,
              min_batch_fill: str = "auto", cudnn_attention: str = "off", length_buckets: str = "on",
              **limits: int) -> RuntimePlan:
    """The runtime plan for one configuration; `kernel_inject` overrides ds_config.json's inference block; `limits`
    (max_batch_tokens, max_batch_size, max_length) size oneDNN's cache as the server's would be."""
    ds = load_ds_config(ds_config)
    if kernel_inject is not None:
        ds = dataclasses.replace(ds, replace_with_kernel_inject=kernel_inject)
    return resolve_plan(device, dtype, engine, ds, min_batch_fill=min_batch_fill, cudnn_attention=cudnn_attention,
                        length_buckets=length_buckets, **limits)


class WenmoEmbedder:
    def __init__(self, model_dir: Path, plan: RuntimePlan, records: list[BatchRecord], *, max_length: int,
                 max_batch_tokens: int, max_batch_size: int) -> None:
        self.adapter = EmbeddingAdapter(model_dir, plan, max_length, "bench")
        self.adapter.model = TimedForward(self.adapter.model, plan.device, records)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size

    def run(self, texts: Sequence[str]) -> list[list[float]]:
        r = self.adapter.embed(texts, normalize=True, max_batch_tokens=self.max_batch_tokens,
                               max_batch_size=self.max_batch_size)
        return [v.tolist() for v in r.vectors]


class WenmoCrossEncoder:
    def __init__(self, model_dir: Path, plan: RuntimePlan, records: list[BatchRecord], *, max_length: int,
                 max_batch_tokens: int, max_batch_size: int) -> None:
        self.adapter = CrossEncoderAdapter(model_dir, plan, max_length, "bench")
        self.adapter.model = TimedForward(self.adapter.model, plan.device, records)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size

    def run(self, first: Sequence[str], second: Sequence[str]) -> list[float]:
        r = self.adapter.score(first, second, max_batch_tokens=self.max_batch_tokens,
                               max_batch_size=self.max_batch_size)
        return list(r.scores)


class WenmoNlu:
    """RexUniNLU per request, as the service calls it (batch size capped at 32 like Service.nlu).

    A request runs one forward window per (hint split × text window) at each schema level, and what a level
    finds decides the next level's prompts: with random weights, extraction finds far more spans than a
    trained model would, so multi-level schemas (relations, events) cost more windows than in production.
    The windows per request are recorded to make that visible."""

    def __init__(self, model_dir: Path, plan: RuntimePlan, records: list[BatchRecord], *, max_length: int,
                 max_batch_tokens: int, max_batch_size: int) -> None:
        self.adapter = NluAdapter(model_dir, plan, max_length, "bench")
        self.adapter.model = TimedForward(self.adapter.model, plan.device, records)
        self.device = plan.device
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = min(max_batch_size, 32)
        self.seconds: list[float] = []
        self.windows: list[int] = []

    def run(self, items: Sequence[dict[str, Any]]) -> list[int]:
        """Per item, the number of output paths (a cheap check that something was decoded)."""
        out = []
        self.seconds = []
        self.windows = []
        for item in items:
            before = getattr(self.adapter, "forward_count", 0)
            t0 = time.perf_counter()
            res = self.adapter.infer(item["text"], item["schema"], item["task"],
                                     max_batch_tokens=self.max_batch_tokens, max_batch_size=self.max_batch_size)
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - t0)
            self.windows.append(getattr(self.adapter, "forward_count", 0) - before)
            found = res.get("output", []) if isinstance(res, dict) else []
            out.append(len(found) if isinstance(found, list) else 0)
        return out
