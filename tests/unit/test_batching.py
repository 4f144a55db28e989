"""Batch planning: a pure function, checked by properties over random inputs."""

from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine.batching import plan_batches, restore_order


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=600), max_size=200),
    budget=st.integers(min_value=1, max_value=5000),
    cap=st.integers(min_value=1, max_value=64),
)
def test_plan_properties(lengths, budget, cap):
    batches = plan_batches(lengths, budget, cap)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every input exactly once
    for b in batches:
        assert 1 <= len(b) <= cap
        cost = max(lengths[i] for i in b) * len(b)
        # within budget, unless a single input is itself longer than the budget (it runs alone)
        assert cost <= budget or len(b) == 1
    # results come back in the caller's order
    results = [[f"r{i}" for i in b] for b in batches]
    assert restore_order(batches, results) == [f"r{i}" for i in range(len(lengths))]


def test_similar_lengths_share_a_batch_and_padding_stays_small():
    lengths = [5, 500, 6, 490, 4, 510]
    batches = plan_batches(lengths, max_batch_tokens=1600, max_batch_size=8)
    assert batches == [[5, 1, 3], [2, 0, 4]]  # the three long ones together, the three short ones together


def test_over_budget_input_runs_alone():
    assert plan_batches([1000, 10, 10], max_batch_tokens=100, max_batch_size=8) == [[0], [1, 2]]


def test_batch_size_cap():
    assert plan_batches([3] * 5, max_batch_tokens=10_000, max_batch_size=2) == [[0, 1], [2, 3], [4]]


def test_empty_input():
    assert plan_batches([], 100, 4) == []
