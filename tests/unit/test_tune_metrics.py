"""The held-out figures against their textbook definitions, worked by hand."""

from __future__ import annotations

import math

import pytest

from app.tune.metrics import accuracy, cross_encoder_metrics, embedder_metrics, f1, ranks, roc_auc, spearman


def test_ranks_average_ties():
    assert ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_spearman_is_pearson_of_ranks():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1,2,3,4) vs (1,3,2,4): 1 - 6·Σd²/(n(n²-1)) = 1 - 6·2/60 = 0.8
    assert spearman([0.1, 0.2, 0.3, 0.4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # binary labels with a perfect split: the most a 0/1 label allows is sqrt(3)/2 for 2+2
    assert spearman([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(math.sqrt(0.8))
    assert spearman([1, 2, 3], [1, 1, 1]) is None and spearman([1], [1]) is None


def test_roc_auc_counts_ordered_pairs_and_half_ties():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)  # sklearn's documented example
    assert roc_auc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert roc_auc([0.2, 0.3], [1, 1]) is None
    assert roc_auc([0.9, 0.2, 0.6], [0.8, 0.1, 0.3]) == pytest.approx(1.0)  # scores as labels: ≥ 0.5 is similar


def test_accuracy_and_f1_at_one_half():
    scores, labels = [0.9, 0.6, 0.4, 0.2], [1, 0, 1, 0]
    assert accuracy(scores, labels) == pytest.approx(0.5)
    assert f1(scores, labels) == pytest.approx(2 * 1 / (2 + 2))  # tp 1, predicted 2, actual 2
    assert f1([0.1], [0]) is None and accuracy([], []) is None


def test_metric_sets_per_role():
    assert set(embedder_metrics([0.1, 0.9], [0, 1])) == {"spearman", "roc_auc"}
    assert set(cross_encoder_metrics([0.1, 0.9], [0, 1])) == {"accuracy", "f1", "roc_auc"}
