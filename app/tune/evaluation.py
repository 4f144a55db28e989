"""A checkpoint's figures on held-out pairs, through the adapters serving uses (app/models): what is measured is
what Wenmo will answer. Embedder: cosine of the two texts' unit vectors → Spearman (and ROC-AUC); cross-encoder:
P(similar) → accuracy, F1, ROC-AUC (app/tune/metrics.py).

The pairs go through in chunks, so a cancelled job stops between chunks instead of after the whole file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.checkpoints import checkpoint_role
from app.engine.runtime import RuntimePlan
from app.errors import InputError
from app.models.checkpoint import read_json
from app.models.cross_encoder import CrossEncoderAdapter
from app.models.embedding import EmbeddingAdapter
from app.tune.metrics import cross_encoder_metrics, embedder_metrics
from app.tune.pairs import PairFile

CHUNK = 256  # pairs per call into the adapter


class Stopped(Exception):  # noqa: N818 - not an error: the job was asked to stop
    """Raised between chunks when `should_stop()` says so."""


def role_of(model_dir: Path) -> str:
    """embed or cross, from configuration.json's task (as ModelScope names it; app/checkpoints.py's one map)."""
    role = checkpoint_role(model_dir)
    if role in ("embed", "cross"):
        return role
    task = read_json(model_dir, "configuration.json", required=False).get("task")
    raise InputError(f"{model_dir}: cannot tell the model's role from configuration.json (task {task!r}); give "
                     "--role embed (a sentence embedder) or --role cross (a pair classifier)")


def scores(role: str, model_dir: Path, pairs: PairFile, plan: RuntimePlan, max_length_cap: int = 0,
           should_stop: Callable[[], bool] = lambda: False) -> list[float]:
    """Cosine (embed) or P(similar) (cross) of every pair, in file order."""
    first, second, _ = pairs.columns()
    out: list[float] = []
    if role == "embed":
        model = EmbeddingAdapter(model_dir, plan, max_length_cap)
        for start in range(0, len(first), CHUNK):
            if should_stop():
                raise Stopped
            a = model.embed(first[start:start + CHUNK]).vectors
            b = model.embed(second[start:start + CHUNK]).vectors
            out.extend(float(x) for x in np.einsum("ij,ij->i", a, b))
    else:
        cross = CrossEncoderAdapter(model_dir, plan, max_length_cap)
        for start in range(0, len(first), CHUNK):
            if should_stop():
                raise Stopped
            out.extend(cross.score(first[start:start + CHUNK], second[start:start + CHUNK]).scores)
    return out


def evaluate(role: str, model_dir: Path, pairs: PairFile, plan: RuntimePlan, max_length_cap: int = 0,
             should_stop: Callable[[], bool] = lambda: False) -> dict[str, float | None]:
    got = scores(role, model_dir, pairs, plan, max_length_cap, should_stop)
    labels = [p.label for p in pairs.pairs]
    return embedder_metrics(got, labels) if role == "embed" else cross_encoder_metrics(got, labels)
