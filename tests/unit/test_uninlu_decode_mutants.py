"""RexUniNLU decoding at its edges, on hand-planted logits (each test kills a mutant that tests/mutation.sh
found surviving): a span needs its head and its tail link to the same anchor, a label needs every cell
strictly above 0, and scores are computed in float64 whatever the model's dtype."""

from __future__ import annotations

import numpy as np
import pytest

from app.models.uninlu.decode import Hit, TooManySpans, decode_spans, label_found, sigmoid
from app.models.uninlu.prompt import Anchor, Hint, Window

ON, OFF = 5.0, -5.0


def window() -> Window:
    """[CLS] [PREFIX] [TYPE]a [TYPE]b [SEP] t0 t1 [SEP]: anchors at 2 and 3, text tokens 5 and 6."""
    hint = Hint("[PREFIX][TYPE]a[TYPE]b", (Anchor((), "a", None), Anchor((), "b", None)), 0)
    n = 8
    return Window(hint=hint, level=0, index=0, input_ids=tuple(range(n)), position_ids=tuple(range(n)),
                  groups=(0,) * n, segments=(0,) * n, anchor_tokens=(2, 3), nh=5,
                  text_offsets=((0, 1), (1, 2)))


def test_a_head_to_one_anchor_and_a_tail_to_another_find_nothing():
    logits = np.full((8, 8), OFF, dtype=np.float32)
    logits[5, 6] = ON  # span t0..t1
    logits[5, 2] = ON  # head link to anchor a
    logits[3, 6] = ON  # tail link from anchor b
    assert decode_spans(window(), logits) == []
    logits[2, 6] = ON  # now a's tail too: one span, for a only
    hits = decode_spans(window(), logits)
    assert [(h.s, h.e, h.anchor) for h in hits] == [(5, 6, 0)]
    assert hits[0] == Hit(5, 6, 0, pytest.approx(float(sigmoid(np.float64(ON)))))


def test_too_many_spans_says_how_many():
    assert str(TooManySpans(7)) == "7 spans in one window"
    logits = np.full((8, 8), ON, dtype=np.float32)
    with pytest.raises(TooManySpans) as caught:
        decode_spans(window(), logits, limit=1)
    assert caught.value.count == 6  # spans (5,5), (5,6), (6,6), each with both anchors


def test_a_label_needs_every_cell_strictly_above_zero():
    assert label_found((0.5, 0.5, 0.5), force=False)
    assert not label_found((0.0, 1.0, 1.0), force=False)
    assert label_found((-1.0, -1.0, -1.0), force=True)


def test_scores_are_float64_even_from_float32_logits():
    x = np.asarray([0.3, -2.0], dtype=np.float32)
    got = sigmoid(x)
    assert got.dtype == np.float64
    assert got.tolist() == (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).tolist()
