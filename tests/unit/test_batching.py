"""Batch planning: a pure function, checked by properties over random inputs."""

import os

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from app.engine.batching import plan_batches, restore_order

# tests/mutation.sh sets WENMO_MUTATION: there every mutant of plan_batches re-runs these properties, and a
# failing example is all a run needs — fewer examples, no shrinking, no example database shared between mutants.
EXAMPLES = 300
if os.environ.get("WENMO_MUTATION"):
    EXAMPLES = 60
    settings.register_profile("mutation", phases=[Phase.explicit, Phase.generate], database=None)
    settings.load_profile("mutation")


@settings(max_examples=EXAMPLES, deadline=None)
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


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=600), max_size=200),
    budget=st.integers(min_value=1, max_value=50_000),
    cap=st.integers(min_value=1, max_value=64),
    fill=st.floats(min_value=0.0, max_value=1.0),
)
def test_fill_floor_properties(lengths, budget, cap, fill):
    batches = plan_batches(lengths, budget, cap, min_fill=fill)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        cells = max(lengths[i] for i in b) * len(b)
        assert cells <= budget or len(b) == 1
        assert len(b) <= cap
        # the floor holds for every batch of two or more (a lone input is as full as it can be)
        assert sum(lengths[i] for i in b) >= fill * cells - 1e-9 or len(b) == 1
    # a floor never merges batches: it can only split what the budget rule alone would plan
    assert len(batches) >= len(plan_batches(lengths, budget, cap))


def test_fill_floor_keeps_mixed_lengths_apart():
    lengths = [500, 480, 120, 110, 100, 12, 10, 9]
    # the budget alone puts everything into one forward padded to 500 (fill 1341 / 4000 = 0.34)
    assert plan_batches(lengths, max_batch_tokens=100_000, max_batch_size=64) == [list(range(8))]
    assert plan_batches(lengths, max_batch_tokens=100_000, max_batch_size=64, min_fill=0.8) == [
        [0, 1], [2, 3, 4], [5, 6, 7]]


def test_fill_floor_of_zero_is_the_budget_rule():
    lengths = [7, 300, 2, 45, 45, 512, 1]
    assert plan_batches(lengths, 1024, 8, min_fill=0.0) == plan_batches(lengths, 1024, 8)


def test_fill_out_of_range_is_refused():
    import pytest

    with pytest.raises(ValueError, match="min_fill"):
        plan_batches([1, 2], 100, 4, min_fill=1.5)


def test_a_batch_exactly_at_the_fill_floor_stays_together():
    # 8 + 4 real tokens in 2 × 8 padded cells: fill 12 / 16 = 0.75, exactly the floor (0.75 is exact in binary)
    assert plan_batches([8, 4], max_batch_tokens=100, max_batch_size=8, min_fill=0.75) == [[0, 1]]
    # one token less falls below the floor: the short one runs in a batch of its own
    assert plan_batches([8, 3], max_batch_tokens=100, max_batch_size=8, min_fill=0.75) == [[0], [1]]
    # three at once: 8 + 4 + 6 = 18 of 24 cells, again exactly 0.75
    assert plan_batches([8, 4, 6], max_batch_tokens=100, max_batch_size=8, min_fill=0.75) == [[0, 2, 1]]
