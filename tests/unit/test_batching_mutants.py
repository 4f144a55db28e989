"""Batch planning at its edges: the boundaries and refusals that the properties in test_batching.py only
sample by chance (each test here kills a mutant that tests/mutation.sh found surviving)."""

import pytest

from app.engine.batching import plan_batches, restore_order


@pytest.mark.parametrize(("tokens", "size"), [(0, 8), (100, 0), (-1, 8)])
def test_a_budget_or_cap_below_one_is_refused_with_its_name(tokens, size):
    with pytest.raises(ValueError, match="^max_batch_tokens and max_batch_size must be ≥ 1$"):
        plan_batches([3, 4], max_batch_tokens=tokens, max_batch_size=size)


def test_a_fill_floor_outside_zero_to_one_is_refused_with_the_range():
    for fill in (-0.1, 1.01):
        with pytest.raises(ValueError, match="^min_fill must be between 0 and 1$"):
            plan_batches([3, 4], 100, 8, min_fill=fill)


def test_a_fill_floor_of_one_is_allowed_and_keeps_only_equal_lengths_together():
    assert plan_batches([4, 4, 4], max_batch_tokens=100, max_batch_size=8, min_fill=1.0) == [[0, 1, 2]]
    assert plan_batches([4, 3], max_batch_tokens=100, max_batch_size=8, min_fill=1.0) == [[0], [1]]


def test_a_batch_exactly_at_the_token_budget_stays_together():
    # 2 × 5 = 10 padded cells, exactly the budget; a third one would make 15
    assert plan_batches([5, 5, 5], max_batch_tokens=10, max_batch_size=8) == [[0, 1], [2]]


def test_one_token_inputs_cost_one_cell_each():
    # three inputs of one token and an empty one (counted as one) pad to 4 cells: exactly the budget;
    # the empty one sorts last (longest first, stable)
    assert plan_batches([1, 1, 0, 1], max_batch_tokens=4, max_batch_size=8) == [[0, 1, 3, 2]]


def test_restore_order_refuses_results_that_do_not_match_the_batches():
    # a model that answered fewer batches, or fewer items in a batch, than it was given must not leave
    # silent holes (None) in somebody's answer
    with pytest.raises(ValueError):
        restore_order([[1], [0]], [["b"]])
    with pytest.raises(ValueError):
        restore_order([[1, 0]], [["b"]])
    with pytest.raises(ValueError):
        restore_order([[1, 0]], [["b", "a", "extra"]])
    assert restore_order([[1], [0]], [["b"], ["a"]]) == ["a", "b"]
