"""The padded-length ladder (app/engine/shapes.py) and the batch planner counting its cells against the budget."""

from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine.batching import plan_batches
from app.engine.shapes import bucket_length, padded_length


def test_the_ladder_up_to_512_has_twenty_rungs_written_out():
    rungs = sorted({bucket_length(n) for n in range(1, 513)})
    assert rungs == [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512]


@settings(max_examples=500, deadline=None)
@given(n=st.integers(min_value=1, max_value=4096))
def test_a_rung_holds_the_row_and_pads_by_under_8_or_a_quarter(n):
    padded = bucket_length(n)
    assert padded >= n
    assert padded % 8 == 0
    assert padded - n < 8 or (padded - n) * 4 <= n  # under 8 tokens up to 64, at most a quarter beyond
    assert bucket_length(padded) == padded  # a rung pads to itself


def test_a_models_limit_caps_the_ladder_and_never_cuts_a_row():
    assert bucket_length(500, limit=510) == 510  # 512 is past what the model takes
    assert bucket_length(500, limit=512) == 512
    assert bucket_length(100, limit=100) == 100
    assert bucket_length(600, limit=512) == 600  # longer than the limit already (the caller cut it): as it is


def test_off_pads_to_the_longest_row_only():
    assert padded_length(65, buckets=False) == 65
    assert padded_length(65, buckets=True) == 80


def test_the_planner_counts_padded_cells_against_the_budget():
    lengths = [65] * 8
    assert plan_batches(lengths, 520, 64) == [list(range(8))]  # 8 × 65 = 520 cells: one forward
    padded = plan_batches(lengths, 520, 64, padded=bucket_length)  # 8 × 80 = 640 > 520: 6 fit (480)
    assert [len(b) for b in padded] == [6, 2]


def test_padding_up_the_ladder_is_no_reason_to_split_a_forward():
    """The fill floor compares real tokens with cells up to the longest row, not up to its rung: 65 and 64 share."""
    assert plan_batches([65, 64], 10_000, 64, min_fill=0.9, padded=bucket_length) == [[0, 1]]


@settings(max_examples=300, deadline=None)
@given(lengths=st.lists(st.integers(min_value=1, max_value=600), max_size=120),
       budget=st.integers(min_value=1, max_value=5000), cap=st.integers(min_value=1, max_value=64))
def test_every_planned_forward_of_two_or_more_fits_the_budget_once_padded(lengths, budget, cap):
    for b in plan_batches(lengths, budget, cap, padded=bucket_length):
        assert len(b) == 1 or bucket_length(max(lengths[i] for i in b)) * len(b) <= budget
