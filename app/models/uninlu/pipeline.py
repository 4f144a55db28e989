"""The recursive schema walk (spec §4–§5, with Wenmo's decisions of §7), over any forward function.

Level 0 asks for the schema's top-level types; every found item whose type has sub-types becomes a prefix
group of the next level; levels run until no group remains. The forward function is injected, so the same
walk runs on the real model (the adapter batches windows and calls the network) and on planted logits in
tests. It receives a level's windows and a `reduce(window, logits)` to apply to each window's (L, L)
logits, and returns the reductions in window order — logits never outlive their batch.

Pure Python + numpy: no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.models.uninlu.decode import Hit, LabelCells, decode_label_cells, decode_spans, label_found, label_score
from app.models.uninlu.prompt import (
    MAX_LEN,
    STRIDE,
    Hint,
    Item,
    Key,
    PromptTokenizer,
    Window,
    build_hints,
    build_windows,
    layout_hint,
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


class _Level:
    """Hints and windows of one level, built from its prefix groups."""

    def __init__(self, tok: PromptTokenizer, groups: list[tuple[Key, Schema]], level: int) -> None:
        self.hints: list[Hint] = build_hints(groups, tok.count)
        self.level = level
        self.layouts = []
        for hint in self.hints:
            ids, _ = tok.encode(hint.text)
            layout = layout_hint(ids, tok.cls_id, tok.prefix_id, tok.type_id)
            if len(layout.anchor_tokens) != len(hint.anchors):
                raise AssertionError(f"hint {hint.text!r}: {len(layout.anchor_tokens)} [TYPE] tokens for "
                                     f"{len(hint.anchors)} types")
            self.layouts.append(layout)


def extract(text: str, schema: Schema, tok: PromptTokenizer, forward: Forward, *, max_len: int = MAX_LEN) -> WalkResult:
    """Extraction: every root-to-leaf path found, each element pointing into `text`."""
    text_ids, text_offsets = tok.encode(text)
    legal = schema_paths(schema)
    groups: dict[tuple, tuple[Key, Schema]] = {(): ((), schema)}
    seen: set[tuple] = set()
    paths: list[Key] = []
    forwards = 0
    level_no = 0
    while groups:
        level = _Level(tok, list(groups.values()), level_no)
        windows: list[Window] = []
        for hint, layout in zip(level.hints, level.layouts, strict=True):
            windows += build_windows(hint, layout, text_ids, text_offsets, tok.sep_id, level=level_no,
                                     max_len=max_len, stride=STRIDE)
        hits: list[list[Hit]] = forward(windows, decode_spans) if windows else []
        forwards += len(windows)
        # Deterministic order: windows, then spans row-major, then anchors in prompt order (a later hint
        # split's anchors after an earlier one's). Spans are compared by their characters, not their token
        # indices: hint splits have different hint lengths, so the same span sits at different indices.
        found = []
        for w, hs in zip(windows, hits, strict=True):
            for h in hs:
                start, end = w.text_offsets[h.s - w.nh][0], w.text_offsets[h.e - w.nh][1]
                found.append(((w.index, start, end, w.hint.split, h.anchor), w, h, start, end))
        found.sort(key=lambda f: f[0])
        next_groups: dict[tuple, tuple[Key, Schema]] = {}
        for _, w, h, start, end in found:
            anchor = w.hint.anchors[h.anchor]
            if end <= start:  # never an empty span
                continue
            item = Item(anchor.type, text[start:end], start, end, round(h.score, SCORE_DIGITS))
            path = (*anchor.key, item)
            ident = tuple((it.type, it.start, it.end) for it in path)
            if ident in seen:  # overlapping windows repeat items: keep the first
                continue
            seen.add(ident)
            if anchor.children:
                next_groups[ident] = (path, anchor.children)
            if tuple(it.type for it in path) in legal:
                paths.append(path)
        groups = next_groups
        level_no += 1
    return WalkResult(paths, False, forwards)


def classify(body: str, schema: Schema, tok: PromptTokenizer, forward: Forward, *, multi: bool,
             max_len: int = MAX_LEN) -> WalkResult:
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
    cache: dict[str, LabelCells] = {}
    state = {"forwards": 0, "truncated": False}

    def run_level(level: _Level) -> list[LabelCells]:
        todo = [(h, lay) for h, lay in zip(level.hints, level.layouts, strict=True) if h.text not in cache]
        windows = [build_windows(h, lay, text_ids, text_offsets, tok.sep_id, level=level.level, max_len=max_len,
                                 stride=0, first_only=True)[0] for h, lay in todo]
        if windows:
            for w, cells in zip(windows, forward(windows, decode_label_cells), strict=True):
                cache[w.hint.text] = cells
                state["truncated"] = state["truncated"] or w.truncated
            state["forwards"] += len(windows)
        return [cache[h.text] for h in level.hints]

    def walk(force: bool) -> list[Key]:
        results: list[Key] = []
        groups: dict[tuple, tuple[Key, Schema]] = {(): ((), schema)}
        level_no = 0
        while groups:
            level = _Level(tok, list(groups.values()), level_no)
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
    return WalkResult(results, state["truncated"], state["forwards"])


def _total(path: Key) -> float:
    return sum(it.score for it in path)
