"""The shared argparse value types (app/argtypes.py): a NaN or an infinite rate once passed the benchmarks' check."""

from __future__ import annotations

import argparse

import pytest

from app.argtypes import positive_float, positive_int


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "-inf", "x", ""])
def test_a_positive_float_is_a_finite_number_above_zero(text):
    with pytest.raises(argparse.ArgumentTypeError):
        positive_float(text)


@pytest.mark.parametrize("text", ["0", "-3", "1.5", "x"])
def test_a_positive_int_is_a_whole_number_from_one(text):
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int(text)


def test_good_values_pass_unchanged():
    assert (positive_float("0.5"), positive_float("1e3"), positive_int("7")) == (0.5, 1000.0, 7)
