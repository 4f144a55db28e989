"""Reading spans and labels off one window's span logits (spec §5). numpy only: no torch.

`logits[i, j]` is the head's score for the token pair (i, j); a cell is "on" when it is > 0 and its
confidence is sigmoid(logit). For an anchor `t` (a `[TYPE]` token) a text span `(s, e)`, s ≤ e, is found
when the span cell `L[s, e]`, the head cell `L[s, t]` and the tail cell `L[t, e]` are all on; its score is
the mean confidence of the three cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.models.uninlu.prompt import Window


@dataclass(frozen=True)
class Hit:
    s: int  # first token of the span (window index)
    e: int  # last token of the span, inclusive
    anchor: int  # index into window.hint.anchors
    score: float


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class TooManySpans(Exception):
    """More spans in one window than the caller allowed (raised before they are materialised)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} spans in one window")
        self.count = count


def decode_spans(window: Window, logits: np.ndarray, limit: int | None = None) -> list[Hit]:
    """Every (span, anchor) found in this window, spans row-major then anchors in prompt order.

    Spans lie inside the text: a span touching the final [SEP] (the reference's empty span) is never read.
    With `limit`, more than `limit` hits raise TooManySpans before any is built (a model that finds spans
    everywhere yields up to n²/2 per anchor: a 512-token window could make millions of objects)."""
    nh, end = window.nh, window.text_end
    anchors = np.asarray(window.anchor_tokens, dtype=np.int64)
    if end <= nh or anchors.size == 0:
        return []
    on = logits > 0
    heads = on[nh:end][:, anchors]  # (n, A): L[s, t]
    tails = on[anchors][:, nh:end]  # (A, n): L[t, e]
    spans = np.triu(on[nh:end, nh:end])
    # Only rows with some head link and columns with some tail link can complete a triple.
    spans &= heads.any(axis=1)[:, None] & tails.any(axis=0)[None, :]
    ss, ee = np.nonzero(spans)
    if ss.size == 0:
        return []
    ok = heads[ss] & tails[:, ee].T  # (K, A)
    k_idx, a_idx = np.nonzero(ok)
    if limit is not None and k_idx.size > limit:
        raise TooManySpans(int(k_idx.size))
    s_tok = ss[k_idx] + nh
    e_tok = ee[k_idx] + nh
    t_tok = anchors[a_idx]
    cells = np.stack([logits[s_tok, e_tok], logits[s_tok, t_tok], logits[t_tok, e_tok]], axis=1)
    scores = sigmoid(cells).mean(axis=1)
    return [Hit(int(s), int(e), int(a), float(c)) for s, e, a, c in zip(s_tok, e_tok, a_idx, scores, strict=True)]


@dataclass(frozen=True)
class LabelCells:
    """Classification: the three decision cells of every anchor for the marker token at `nh`
    (span `L[nh, nh]`, head `L[nh, t]`, tail `L[t, nh]`), as logits."""

    cells: tuple[tuple[float, float, float], ...]


def decode_label_cells(window: Window, logits: np.ndarray) -> LabelCells:
    m = window.nh
    return LabelCells(tuple(
        (float(logits[m, m]), float(logits[m, t]), float(logits[t, m])) for t in window.anchor_tokens
    ))


def label_found(cells: tuple[float, float, float], force: bool) -> bool:
    """All three cells on; `force` is the reference's fallback that treats every label as found."""
    return force or all(c > 0 for c in cells)


def label_score(cells: tuple[float, float, float]) -> float:
    return float(sigmoid(np.asarray(cells)).mean())
