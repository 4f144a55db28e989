"""RexUniNLU prompts: hints, overflow windows, position ids and 2-D attention masks (spec §4).

A level of the recursive schema walk is a set of prefix groups (the items found so far, each with the
sub-schema to look for inside it). Its hint text is

    [PREFIX]<prefix>[TYPE]<t1>[TYPE]<t2>…[PREFIX]<prefix2>[TYPE]…

split into several hints so that each stays within HINT_MAX_LEN tokens. Each hint is paired with the text
as `[CLS] hint [SEP] chunk [SEP]`, the text cut into overlapping windows of MAX_LEN tokens. Positions restart
inside each prefix group and each type segment; the mask isolates groups from each other and the type
segments of a group from each other (the model card's "prompt isolation").

Pure Python (numpy for the mask only): no torch, no transformers at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import ModelUnavailableError
from app.models.checkpoint import load_tokenizer
from app.models.uninlu.schema import ADDED_TOKENS, PREFIX_TOKEN, TYPE_TOKEN, Schema

MAX_LEN = 512
STRIDE = 32  # extraction windows overlap by this many tokens; classification reads one window (stride 0)
HINT_MAX_LEN = 256
PREFIX_MAX_LEN = 125
TYPE_MAX_LEN = 125


@dataclass(frozen=True)
class Item:
    """One found (type, span): character offsets into the text the model read; `score` is its confidence."""

    type: str
    span: str
    start: int
    end: int
    score: float


Key = tuple[Item, ...]  # the ancestors of a prefix group, root first; () at level 0


@dataclass(frozen=True)
class Anchor:
    """A `[TYPE]` token: which prefix group it belongs to, its type and the sub-schema below it."""

    key: Key
    type: str
    children: Schema | None


@dataclass(frozen=True)
class Hint:
    text: str
    anchors: tuple[Anchor, ...]
    split: int  # index among the hints of its level
    # `[CLS] hint [SEP]` in tokens by the reference's count (= a window's nh): how many windows the hint costs
    # is known before it is tokenized. 0 for a hint made by hand.
    tokens: int = 0


def prefix_string(key: Key) -> str:
    return ",".join(f"{it.type}: {it.span}" for it in key)


def build_hints(groups: Sequence[tuple[Key, Schema]], count: Callable[[str], int]) -> list[Hint]:
    """Every hint of one level (see `iter_hints`)."""
    return list(iter_hints(groups, count))


def iter_hints(groups: Sequence[tuple[Key, Schema]], count: Callable[[str], int]) -> Iterator[Hint]:
    """Split one level's prefix groups into hints of at most HINT_MAX_LEN tokens (the reference's rule), one
    at a time: a level of many groups with many sub-types is never held whole (the caller stops at its budget).

    `count(s)` is the token cost of a piece: its tokens plus one for its [PREFIX]/[TYPE] token. The budget
    starts at 2 ([CLS], [SEP]); a prefix or type over 125 is skipped; when a group's first type (with the
    prefix) or a further type does not fit, a new hint starts and repeats `[PREFIX]<prefix>`.
    Groups keep their order (discovery order); types inside a group are sorted by code point."""
    split = 0
    text = ""
    anchors: list[Anchor] = []
    used = 2
    for key, children in groups:
        prefix = prefix_string(key)
        prefix_cost = count(prefix)
        if prefix_cost > PREFIX_MAX_LEN:
            continue
        first = True
        for type_name in sorted(children):
            type_cost = count(type_name)
            if type_cost > TYPE_MAX_LEN:
                continue
            need = used + (prefix_cost if first else 0) + type_cost
            if need > HINT_MAX_LEN:
                if text:
                    yield Hint(text, tuple(anchors), split, used)
                    split += 1
                text, anchors = PREFIX_TOKEN + prefix, []
                used = 2 + prefix_cost
            elif first:
                text += PREFIX_TOKEN + prefix
                used += prefix_cost
            text += TYPE_TOKEN + type_name
            anchors.append(Anchor(key, type_name, children[type_name]))
            used += type_cost
            first = False
    if text:
        yield Hint(text, tuple(anchors), split, used)


class PromptTokenizer:
    """The checkpoint's fast BERT tokenizer with the four RexUniNLU tokens appended in order.

    Every call uses the same settings (no special tokens, no truncation, offsets on), so the underlying
    Rust tokenizer is never reconfigured between calls; a lock keeps concurrent requests apart anyway."""

    def __init__(self, tokenizer: Any, base_vocab: int | None = None) -> None:
        self._tok = tokenizer
        self._lock = threading.Lock()
        base = len(tokenizer) if base_vocab is None else base_vocab
        wanted = list(range(base, base + len(ADDED_TOKENS)))
        # Some exports already carry the four tokens (added_tokens.json); otherwise add them, in order.
        if tokenizer.convert_tokens_to_ids(list(ADDED_TOKENS)) != wanted and len(tokenizer) == base:
            tokenizer.add_special_tokens({"additional_special_tokens": list(ADDED_TOKENS)})
        ids = tokenizer.convert_tokens_to_ids(list(ADDED_TOKENS))
        if ids != wanted:
            raise ModelUnavailableError(
                f"the tokenizer gave the RexUniNLU tokens {list(ADDED_TOKENS)} the ids {ids}, expected "
                f"{base}..{base + 3} (right after the base vocabulary); vocab.txt does not match this model"
            )
        self.prefix_id, self.type_id, self.classify_id, self.multi_classify_id = ids
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self.pad_id = tokenizer.pad_token_id
        self.base_vocab = base

    @classmethod
    def from_dir(cls, model_dir: Path, base_vocab: int | None = None) -> PromptTokenizer:
        return cls(load_tokenizer(model_dir), base_vocab)

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and character offsets of `text` alone (no [CLS]/[SEP])."""
        with self._lock:
            enc = self._tok(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [(int(a), int(b)) for a, b in enc["offset_mapping"]]

    def count(self, text: str) -> int:
        """The reference's length of a hint piece: `len(tokenizer(s).input_ids) - 1`."""
        return len(self.encode(text)[0]) + 1

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        with self._lock:
            return list(self._tok.convert_ids_to_tokens(list(ids)))


@dataclass(frozen=True)
class HintLayout:
    """Per-token structure of `[CLS] hint`: positions, prefix-group ids (0 = [CLS]) and type-segment ids
    within the group (0 = the [PREFIX] segment), and where each [TYPE] anchor sits."""

    ids: tuple[int, ...]
    positions: tuple[int, ...]
    groups: tuple[int, ...]
    segments: tuple[int, ...]
    anchor_tokens: tuple[int, ...]


def layout_hint(hint_ids: Sequence[int], cls_id: int, prefix_id: int, type_id: int) -> HintLayout:
    if not hint_ids or hint_ids[0] != prefix_id:
        raise ValueError("a hint must start with [PREFIX]")
    ids = [cls_id]
    positions, groups, segments, anchors = [0], [0], [0], []
    group = seg = 0
    prefix_len = seg_len = 0
    for i, tid in enumerate(hint_ids, start=1):
        if tid == prefix_id:
            group, seg, prefix_len = group + 1, 0, 1
            pos = 1
        elif tid == type_id:
            seg, seg_len = seg + 1, 1
            pos = prefix_len + 1
            anchors.append(i)
        elif seg == 0:
            prefix_len += 1
            pos = prefix_len
        else:
            seg_len += 1
            pos = prefix_len + seg_len
        ids.append(tid)
        positions.append(pos)
        groups.append(group)
        segments.append(seg)
    return HintLayout(tuple(ids), tuple(positions), tuple(groups), tuple(segments), tuple(anchors))


@dataclass(frozen=True)
class Window:
    """One forward pass: `[CLS] hint [SEP] text[a:b] [SEP]`."""

    hint: Hint
    level: int
    index: int  # window number within its hint
    input_ids: tuple[int, ...]
    position_ids: tuple[int, ...]
    groups: tuple[int, ...]  # 0 for [CLS], [SEP] and text: they see and are seen by everything
    segments: tuple[int, ...]
    anchor_tokens: tuple[int, ...]  # token index of hint.anchors[i]
    nh: int  # segment-0 tokens ([CLS] hint [SEP]); the text starts here
    text_offsets: tuple[tuple[int, int], ...] = field(repr=False)  # tokens nh … nh+n-1
    token_range: tuple[int, int] = (0, 0)  # which text tokens this window holds
    truncated: bool = False  # classification: text tokens were cut off

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def text_end(self) -> int:
        """Index of the final [SEP] (one past the last text token)."""
        return self.nh + len(self.text_offsets)

    def attention_mask(self):  # noqa: ANN201 - numpy array
        import numpy as np

        g = np.asarray(self.groups)
        s = np.asarray(self.segments)
        return segment_mask(g, s, np.ones(len(g), dtype=bool)).astype(np.int8)


def segment_mask(groups, segments, valid):  # noqa: ANN001, ANN201 - numpy arrays or torch tensors
    """The 2-D mask from per-token group and segment ids (works on numpy arrays and torch tensors alike,
    with any leading batch dimensions): a token in group 0 sees and is seen by everything; inside a group
    the [PREFIX] segment sees every type segment; different groups and different type segments of one
    group never see each other; padding (valid = False) sees nothing and is seen by nothing."""
    gq, gk = groups[..., :, None], groups[..., None, :]
    sq, sk = segments[..., :, None], segments[..., None, :]
    free = (gq == 0) | (gk == 0)
    same_group = (gq == gk) & ((sq == 0) | (sk == 0) | (sq == sk))
    return (free | same_group) & valid[..., :, None] & valid[..., None, :]


def window_ranges(n: int, capacity: int, stride: int) -> list[tuple[int, int]]:
    """Token ranges of the overflow windows, as the fast tokenizer cuts them (`truncation="only_second"`,
    `return_overflowing_tokens=True`): windows of `capacity` tokens, each starting `capacity - stride` after
    the previous one, until one reaches the end."""
    if capacity <= stride:
        raise ValueError(f"window capacity {capacity} must exceed the stride {stride}")
    if n <= capacity:
        return [(0, n)]
    out = []
    for start in range(0, n, capacity - stride):
        stop = min(start + capacity, n)
        out.append((start, stop))
        if stop == n:
            break
    return out


def build_windows(
    hint: Hint,
    layout: HintLayout,
    text_ids: Sequence[int],
    text_offsets: Sequence[tuple[int, int]],
    sep_id: int,
    *,
    level: int,
    max_len: int = MAX_LEN,
    stride: int = STRIDE,
    first_only: bool = False,
) -> list[Window]:
    nh = len(layout.ids) + 1
    capacity = max_len - nh - 1
    ranges = window_ranges(len(text_ids), capacity, stride)
    truncated = False
    if first_only:
        truncated = len(ranges) > 1
        ranges = ranges[:1]
    start_pos = max(layout.positions) + 1
    out = []
    for index, (a, b) in enumerate(ranges):
        tail = [sep_id, *text_ids[a:b], sep_id]
        out.append(Window(
            hint=hint,
            level=level,
            index=index,
            input_ids=layout.ids + tuple(tail),
            position_ids=layout.positions + tuple(range(start_pos, start_pos + len(tail))),
            groups=layout.groups + (0,) * len(tail),
            segments=layout.segments + (0,) * len(tail),
            anchor_tokens=layout.anchor_tokens,
            nh=nh,
            text_offsets=tuple(text_offsets[a:b]),
            token_range=(a, b),
            truncated=truncated,
        ))
    return out
