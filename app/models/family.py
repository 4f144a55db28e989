"""What every model family in this package is, and the one recipe that loads its weights.

A family (GTE embedder, StructBERT cross-encoder, RexUniNLU) implements the same small interface:

- load: `load_module` below — the module is built on the meta device and the checkpoint's tensors become its
  parameters (app/models/checkpoint.py), then the engine wraps it for the runtime plan (dtype, DeepSpeed);
- encode: request inputs → work items, each with its length in tokens (texts, pairs, NLU windows);
- `forward_batch(items)`: one forward over ready items (padding, the network, per-item raw results) — the
  engine's worker calls it with items from any number of requests (app/engine/workqueue.py), so it keeps no
  per-request state;
- post-process: raw results → the family's output (normalised vectors, probabilities, spans).

The public methods (`embed`, `score`, `infer`) chain these through `self.queue`, the role's WorkQueue: the
composition root gives each model the engine's shared queue; until then a model has a private one that runs
each call's forwards in the caller's thread (tests, the bench, one-off scripts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from app.config import Settings
from app.engine.runtime import RuntimePlan
from app.engine.shapes import padded_length
from app.engine.workqueue import BatchLimits, WorkQueue
from app.engine.wrapping import prepare_module
from app.errors import InputError
from app.models.checkpoint import load_into, parameters_on_meta
from app.models.encoding import ModelInfo

# A model's own queue, before the composition root gives it the shared one, plans with the settings' defaults.
DEFAULTS = Settings()


class ModelFamily(Protocol):
    family: str
    info: ModelInfo
    queue: WorkQueue
    batch_size_cap: int | None  # items per forward at most whatever max_batch_size says (None: no own cap)
    max_length: int  # tokens per item at most: the top of the padded-length ladder

    def forward_batch(self, payloads: Sequence[Any]) -> list[Any]: ...


def load_module(model_dir: Path, plan: RuntimePlan, construct: Callable[[], Any], state: dict[str, Any], *,
                ignore: tuple[str, ...] = (), kernel_inject_supported: bool = True) -> tuple[Any, Any]:
    """(the bare module, the module prepared for `plan`): built without a second copy of the weights."""
    with parameters_on_meta():
        module = construct()
    load_into(module, state, str(model_dir), ignore=ignore)
    return module, prepare_module(module, plan, kernel_inject_supported=kernel_inject_supported)


def batch_limits(model: ModelFamily, plan: RuntimePlan, max_batch_tokens: int, max_batch_size: int) -> BatchLimits:
    """The limits a role's forwards run under: the settings' budget and size, the size capped by the family's own
    cap (NLU: 32 windows)."""
    size = min(max_batch_size, model.batch_size_cap or max_batch_size)
    return BatchLimits(max_batch_tokens, size, plan.min_batch_fill, plan.length_buckets, model.max_length)


def padded_width(model: ModelFamily, plan: RuntimePlan, longest: int) -> int:
    """The length `model`'s forward pads its rows to when the longest has `longest` tokens — the same the batch
    planner counted against the token budget (BatchLimits.padded)."""
    return padded_length(longest, plan.length_buckets, model.max_length)


def own_queue(model: ModelFamily, plan: RuntimePlan, max_batch_tokens: int | None = None,
              max_batch_size: int | None = None) -> WorkQueue:
    """A queue that runs each call's forwards alone, in the caller's thread: under the default limits, or the ones
    given, as given."""
    limits = batch_limits(model, plan, DEFAULTS.max_batch_tokens, DEFAULTS.max_batch_size)
    if max_batch_tokens or max_batch_size:
        limits = dataclasses.replace(limits, max_batch_tokens=max_batch_tokens or limits.max_batch_tokens,
                                     max_batch_size=max_batch_size or limits.max_batch_size)
    return WorkQueue(model.family, model, limits, across=False)


def queue_for_call(model: ModelFamily, plan: RuntimePlan, max_batch_tokens: int | None,
                   max_batch_size: int | None) -> WorkQueue:
    """The model's queue, or — when a call names its own batch limits (the bench compares them, tests pin them)
    — a private queue with those limits for this call alone."""
    if max_batch_tokens is None and max_batch_size is None:
        return model.queue
    if (max_batch_tokens is not None and max_batch_tokens < 1) or (max_batch_size is not None and max_batch_size < 1):
        raise InputError("max_batch_tokens and max_batch_size must be ≥ 1")
    return own_queue(model, plan, max_batch_tokens, max_batch_size)


def describe(model: Any, model_dir: Path, name: str | None, plan: RuntimePlan, max_length: int,
             dimension: int | None) -> ModelInfo:
    return ModelInfo(model.family, name or str(model_dir), str(model_dir), max_length, dimension, plan.device,
                     plan.dtype, plan.engine)
