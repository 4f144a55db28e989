"""The held-out figures: Spearman of cosine against the label (embedder); accuracy, F1 and ROC-AUC of P(similar)
(cross-encoder). numpy only, checked against the textbook definitions in the tests (no scipy/sklearn dependency
for four formulas). A figure that is undefined for the data (one class only, constant labels) is None, not 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

THRESHOLD = 0.5  # a score label counts as "similar" from here; P(similar) likewise


def ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties given their average rank (as Spearman's rho and the Mann-Whitney U define them)."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    out = np.empty(len(x), dtype=np.float64)
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        out[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return out


def spearman(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    if len(scores) < 2:
        return None
    a, b = ranks(scores), ranks(labels)
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else None


def roc_auc(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    """P(a random similar pair scores above a random dissimilar one), ties counting half."""
    positive = np.asarray(labels, dtype=np.float64) >= THRESHOLD
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    r = ranks(scores)
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def accuracy(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    if not len(scores):
        return None
    predicted = np.asarray(scores) >= THRESHOLD
    actual = np.asarray(labels) >= THRESHOLD
    return float((predicted == actual).mean())


def f1(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    predicted = np.asarray(scores) >= THRESHOLD
    actual = np.asarray(labels) >= THRESHOLD
    tp = int((predicted & actual).sum())
    if not actual.any():
        return None
    return 2.0 * tp / (int(predicted.sum()) + int(actual.sum()))


def embedder_metrics(cosines: Sequence[float], labels: Sequence[float]) -> dict[str, float | None]:
    out = {"spearman": spearman(cosines, labels)}
    out["roc_auc"] = roc_auc(cosines, labels)  # how well cosine separates the classes; None without both
    return out


def cross_encoder_metrics(probabilities: Sequence[float], labels: Sequence[float]) -> dict[str, float | None]:
    return {"accuracy": accuracy(probabilities, labels), "f1": f1(probabilities, labels),
            "roc_auc": roc_auc(probabilities, labels)}


PRIMARY = {"embed": "spearman", "cross": "roc_auc"}  # the figure a summary line leads with
