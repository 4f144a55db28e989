"""The recursive schema walk (spec §4–§5, with Wenmo's decisions of §7), over any forward function.

Level 0 asks for the schema's top-level types; every found item whose type has sub-types becomes a prefix
group of the next level; levels run until no group remains. A level's types are split into hints of at most
256 tokens (prompt.iter_hints), so a schema of any size is read; what it costs, hints × windows per level, is
what Budget bounds. The forward function is injected, so the same walk runs on the real model (the adapter
batches windows and calls the network) and on planted logits in tests. It receives a level's windows and a
`reduce(window, logits)` to apply to each window's (L, L) logits, and returns the reductions in window order —
logits never outlive their batch.

Pure Python + numpy: no torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import BudgetExceededError
from app.models.uninlu.decode import (
    LabelCells,
    TooManySpans,
    decode_label_cells,
    decode_spans,
    label_found,
    label_score,
)
from app.models.uninlu.prompt import (
    MAX_LEN,
    STRIDE,
    Hint,
    HintLayout,
    Item,
    Key,
    PromptTokenizer,
    Window,
    build_hints,
    build_windows,
    iter_hints,
    layout_hint,
    window_ranges,
)
from app.models.uninlu.schema import CLASSIFY_TOKEN, MULTI_CLASSIFY_TOKEN, Schema, schema_paths

Reduce = Callable[[Window, np.ndarray], Any]
Forward = Callable[[Sequence[Window], Reduce], list]

MULTI_LABEL_KEEP = 0.9
SCORE_DIGITS = 4


@dataclass
class WalkResult:
    paths: list[Key]
    truncated: bool
    forwards: int  # windows sent to the forward function


@dataclass
class Budget:
    """What one request may cost: windows run (all levels together) and spans found (output paths plus the
    prefixes of nested types). A level costs (its hints) × (windows of the text per hint): a hint holds up to
    256 tokens of type names (about 50 four-character types), so a big schema costs several passes per window.
    Nested types multiply: each span found for a type with sub-types is read again as a prefix over the whole
    text, so a deep schema on a long text (or a model that finds spans everywhere) grows without bound unless
    it is counted. A level's windows are counted from its hints before any of them runs (a level past the
    budget is refused whole, not after part of it ran) and spent as they are built; spans are counted as they
    are found. Memory stays bounded by the budget, not by what the request would have grown to."""

    max_forwards: int = 1 << 62
    max_paths: int = 1 << 62
    forwards: int = 0

    def check_forwards(self, n: int, level: int) -> None:
        """Raise when `n` more windows would pass the budget (`n` may be a lower bound: "at least")."""
        if self.forwards + n > self.max_forwards:
            raise BudgetExceededError(
                f"this request needs more than {self.max_forwards} model passes (WENMO_NLU_MAX_FORWARDS; at least "
                f"{self.forwards + n} by schema level {level + 1}): each level reads the text once per hint "
                "(a hint holds up to 256 tokens of type names, about 50 short types) and every span found for a "
                "type with sub-types is read again over the whole text. Narrow it: a shorter text (split it), "
                "fewer types, fewer nested types, or a flatter schema")

    def spend_forwards(self, n: int, level: int) -> None:
        self.check_forwards(n, level)
        self.forwards += n

    def check_paths(self, n: int) -> None:
        if n > self.max_paths:
            raise BudgetExceededError(
                f"this request finds more than {self.max_paths} spans (WENMO_NLU_MAX_PATHS): narrow it — a "
                "shorter text (split it), fewer types, or a flatter schema")


# Windows are built and run this many at a time, so a level holds one chunk of windows (each ~50 KB of
# token tuples), not all of them; big enough to fill the largest forward (16384 tokens = 32 windows of 512).
CHUNK_WINDOWS = 256


def _layout(tok: PromptTokenizer, hint: Hint) -> HintLayout:
    ids, _ = tok.encode(hint.text)
    layout = layout_hint(ids, tok.cls_id, tok.prefix_id, tok.type_id)
    if len(layout.anchor_tokens) != len(hint.anchors):
        raise AssertionError(f"hint {hint.text!r}: {len(layout.anchor_tokens)} [TYPE] tokens for "
                             f"{len(hint.anchors)} types")
    return layout


def _counter(tok: PromptTokenizer) -> Callable[[str], int]:
    """tok.count remembered for one walk: every prefix group of a level asks for the same sub-type names
    (hundreds of them in a big schema), and a level's hints are generated twice (counted, then built)."""
    return functools.cache(tok.count)


class _Level:
    """Hints and layouts of one classification level, built from its prefix groups (at most one group per label
    with sub-labels: bounded by the schema, so held whole)."""

    def __init__(self, tok: PromptTokenizer, count: Callable[[str], int], groups: list[tuple[Key, Schema]],
                 level: int) -> None:
        self.hints: list[Hint] = build_hints(groups, count)
        self.level = level
        self.layouts = [_layout(tok, hint) for hint in self.hints]


def level_windows(groups: Sequence[tuple[Key, Schema]], count: Callable[[str], int], n_text: int, max_len: int,
                  stop_after: int | None = None) -> int:
    """Extraction windows one level needs: Σ over its hints of the text's windows beside that hint, from the
    hints' token counts alone (nothing is tokenized but the type names). Stops once past `stop_after`."""
    total = 0
    for hint in iter_hints(groups, count):
        total += len(window_ranges(n_text, max_len - hint.tokens - 1, STRIDE))
        if stop_after is not None and total > stop_after:
            break
    return total


def extract(text: str, schema: Schema, tok: PromptTokenizer, forward: Forward, *, max_len: int = MAX_LEN,
            budget: Budget | None = None) -> WalkResult:
    """Extraction: every root-to-leaf path found, each element pointing into `text`."""
    budget = budget or Budget()
    count = _counter(tok)
    text_ids, text_offsets = tok.encode(text)
    legal = schema_paths(schema)
    groups: dict[tuple, tuple[Key, Schema]] = {(): ((), schema)}
    seen: set[tuple] = set()
    paths: list[Key] = []
    level_no = 0
    # ident → (order key, item path, sub-schema), the earliest occurrence in the reference's order: hint
    # splits, then windows, then spans row-major, then anchors in prompt order (the reference runs a level's
    # hints one after the other and appends each window's finds). An anchor lives in exactly one split, so an
    # item's split is fixed; overlapping windows repeat items and the earliest is kept, whatever order the
    # batches ran in. Spans are compared by their characters, not their token indices: hint splits have
    # different hint lengths, so the same span sits at different indices.
    best: dict[tuple, tuple[tuple, Key, Schema | None]] = {}

    def collect(w: Window, logits: np.ndarray) -> None:
        # Spans within one window are distinct and can repeat only what this level already found, so a
        # window with more hits than room + len(best) surely passes the budget: it fails before its hits
        # are materialised.
        room = budget.max_paths - len(seen) - len(best)
        try:
            hits = decode_spans(w, logits, limit=max(room, 0) + len(best))
        except TooManySpans as e:
            budget.check_paths(len(seen) + e.count)
            raise  # pragma: no cover - check_paths raised
        for h in hits:
            start, end = w.text_offsets[h.s - w.nh][0], w.text_offsets[h.e - w.nh][1]
            if end <= start:  # never an empty span
                continue
            anchor = w.hint.anchors[h.anchor]
            order = (w.hint.split, w.index, start, end, h.anchor)
            item = Item(anchor.type, text[start:end], start, end, round(h.score, SCORE_DIGITS))
            path = (*anchor.key, item)
            ident = tuple((it.type, it.start, it.end) for it in path)
            if ident in seen:
                continue
            known = best.get(ident)
            if known is None or order < known[0]:
                best[ident] = (order, path, anchor.children)
                budget.check_paths(len(seen) + len(best))

    while groups:
        level_groups = list(groups.values())
        # The whole level is counted first, so a level past the budget runs none of its windows; the count
        # stops just past the budget, so neither does it build every hint of a level that could not run.
        room = budget.max_forwards - budget.forwards
        budget.check_forwards(level_windows(level_groups, count, len(text_ids), max_len, stop_after=room), level_no)
        best.clear()
        pending: list[Window] = []
        # Hints are built one at a time and their windows run in chunks: a level holds one chunk, not all.
        for hint in iter_hints(level_groups, count):
            windows = build_windows(hint, _layout(tok, hint), text_ids, text_offsets, tok.sep_id, level=level_no,
                                    max_len=max_len, stride=STRIDE)
            budget.spend_forwards(len(windows), level_no)
            pending += windows
            if len(pending) >= CHUNK_WINDOWS:
                forward(pending, collect)
                pending = []
        if pending:
            forward(pending, collect)
        next_groups: dict[tuple, tuple[Key, Schema]] = {}
        for ident, (_, path, children) in sorted(best.items(), key=lambda kv: kv[1][0]):
            seen.add(ident)
            if children:
                next_groups[ident] = (path, children)
            if tuple(it.type for it in path) in legal:
                paths.append(path)
        groups = next_groups
        level_no += 1
    return WalkResult(paths, False, budget.forwards)


def classify(body: str, schema: Schema, tok: PromptTokenizer, forward: Forward, *, multi: bool,
             max_len: int = MAX_LEN, budget: Budget | None = None) -> WalkResult:
    """Single-label (`multi=False`) or multi-label classification of `body`, read as `marker + body`.

    The marker token is the first text token; a label counts only when its span is exactly that token. The
    text is read in one window per hint: a longer text is cut and `truncated` says so. When nothing is found
    the walk is repeated with every label treated as found (the reference's fallback); windows whose hint was
    already run are not run again."""
    marker = MULTI_CLASSIFY_TOKEN if multi else CLASSIFY_TOKEN
    text_ids, text_offsets = tok.encode(marker + body)
    marker_id = tok.multi_classify_id if multi else tok.classify_id
    if not text_ids or text_ids[0] != marker_id:
        raise AssertionError(f"the tokenizer did not keep {marker} as one token")
    legal = schema_paths(schema)
    budget = budget or Budget()
    count = _counter(tok)
    cache: dict[str, LabelCells] = {}
    state = {"truncated": False}

    def run_level(level: _Level) -> list[LabelCells]:
        todo = [(h, lay) for h, lay in zip(level.hints, level.layouts, strict=True) if h.text not in cache]
        windows = [build_windows(h, lay, text_ids, text_offsets, tok.sep_id, level=level.level, max_len=max_len,
                                 stride=0, first_only=True)[0] for h, lay in todo]
        if windows:
            budget.spend_forwards(len(windows), level.level)
            for w, cells in zip(windows, forward(windows, decode_label_cells), strict=True):
                cache[w.hint.text] = cells
                state["truncated"] = state["truncated"] or w.truncated
        return [cache[h.text] for h in level.hints]

    def walk(force: bool) -> list[Key]:
        results: list[Key] = []
        groups: dict[tuple, tuple[Key, Schema]] = {(): ((), schema)}
        level_no = 0
        while groups:
            level = _Level(tok, count, list(groups.values()), level_no)
            next_groups: dict[tuple, tuple[Key, Schema]] = {}
            best_of_level: Key | None = None
            for hint, cells in zip(level.hints, run_level(level), strict=True):
                best_of_split: Key | None = None
                for anchor, c in zip(hint.anchors, cells.cells, strict=True):
                    if not label_found(c, force):
                        continue
                    item = Item(anchor.type, marker, 0, len(marker), round(label_score(c), SCORE_DIGITS))
                    path = (*anchor.key, item)
                    ident = tuple(it.type for it in path)
                    if anchor.children:
                        next_groups.setdefault(ident, (path, anchor.children))
                    if ident not in legal:
                        continue
                    if multi:
                        results.append(path)
                    elif best_of_split is None or _total(path) > _total(best_of_split):
                        best_of_split = path
                if best_of_split is not None and (
                    best_of_level is None or _total(best_of_split) > _total(best_of_level)
                ):
                    best_of_level = best_of_split
            if best_of_level is not None:
                results.append(best_of_level)
            groups = next_groups
            level_no += 1
        return results

    results = walk(force=False) or walk(force=True)
    if results:
        means = [_total(p) / len(p) for p in results]
        if multi:
            keep = [p for p, m in zip(results, means, strict=True) if m > MULTI_LABEL_KEEP]
            results = keep or [results[int(np.argmax(means))]]
        else:
            results = [results[int(np.argmax(means))]]
    return WalkResult(results, state["truncated"], budget.forwards)


def _total(path: Key) -> float:
    return sum(it.score for it in path)
