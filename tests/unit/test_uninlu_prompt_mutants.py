"""RexUniNLU prompts at their edges, with token costs chosen by hand (each test kills mutants that
tests/mutation.sh found surviving): a hint holds exactly HINT_MAX_LEN tokens and not one more, a prefix or
type of exactly 125 tokens is kept, the layout of positions/groups/segments, window limits, and the checks of
the tokenizer's added tokens."""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import ModelUnavailableError
from app.models.uninlu.prompt import (
    HINT_MAX_LEN,
    PREFIX_MAX_LEN,
    TYPE_MAX_LEN,
    Item,
    PromptTokenizer,
    build_hints,
    build_windows,
    layout_hint,
    window_ranges,
)

KEY = (Item("t", "s", 0, 1, 0.9),)  # a level-1 group whose prefix string is "t: s"


def types_per_hint(groups, costs):
    return [[a.type for a in h.anchors] for h in build_hints(groups, lambda s: costs[s])]


def test_a_hint_takes_exactly_hint_max_len_tokens_and_a_new_one_repeats_the_prefix():
    assert HINT_MAX_LEN == 256
    # 2 ([CLS], [SEP]) + 1 (the empty level-0 prefix) + 125 + 125 + 3 = 256: a, b, c fit; d starts hint 2,
    # which then holds 2 + 1 + 2 + 125 + 124 + 2 = 256 again
    costs = {"": 1, "a": 125, "b": 125, "c": 3, "d": 2, "e": 125, "f": 124, "g": 2}
    assert types_per_hint([((), dict.fromkeys("abcdefg"))], costs) == [["a", "b", "c"], ["d", "e", "f", "g"]]


def test_after_a_split_the_budget_counts_the_repeated_prefix():
    # as above, but g costs 3: 257 tokens, so g starts a third hint
    costs = {"": 1, "a": 125, "b": 125, "c": 3, "d": 2, "e": 125, "f": 124, "g": 3}
    assert types_per_hint([((), dict.fromkeys("abcdefg"))], costs) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]


def test_a_groups_first_type_counts_its_prefix():
    # 2 + 1 + 125 + 3 = 131 used; the next group's prefix (124) and first type (2) make 257: a new hint
    costs = {"": 1, "a": 125, "c": 3, "t: s": 124, "z": 2}
    groups = [((), {"a": None, "c": None}), (KEY, {"z": None})]
    assert types_per_hint(groups, costs) == [["a", "c"], ["z"]]
    hints = build_hints(groups, lambda s: costs[s])
    assert hints[1].text == "[PREFIX]t: s[TYPE]z" and hints[1].split == 1


def test_a_prefix_or_type_of_exactly_125_tokens_is_kept_and_one_more_is_skipped():
    assert PREFIX_MAX_LEN == TYPE_MAX_LEN == 125
    costs = {"t: s": 125, "x": 125, "": 1, "m": 126, "n": 2}
    assert types_per_hint([(KEY, {"x": None})], costs) == [["x"]]
    # a skipped type does not end its group: the next type still comes
    assert types_per_hint([((), {"m": None, "n": None})], costs) == [["n"]]
    assert types_per_hint([(KEY, {"x": None})], {**costs, "t: s": 126}) == []


P, T = 100, 101


def test_layout_restarts_positions_per_group_and_per_type_segment():
    hint = [P, 7, T, 8, 8, T, 9, P, 7, T, 9]
    layout = layout_hint(hint, cls_id=1, prefix_id=P, type_id=T)
    assert layout.ids == (1, *hint)
    assert layout.positions == (0, 1, 2, 3, 4, 5, 3, 4, 1, 2, 3, 4)
    assert layout.groups == (0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2)
    assert layout.segments == (0, 0, 0, 1, 1, 1, 2, 2, 0, 0, 1, 1)
    assert layout.anchor_tokens == (3, 6, 10)


@pytest.mark.parametrize("hint", [[], [T, 7], [7, P, T]])
def test_a_hint_must_start_with_prefix(hint):
    with pytest.raises(ValueError, match=r"^a hint must start with \[PREFIX\]$"):
        layout_hint(hint, cls_id=1, prefix_id=P, type_id=T)


def test_a_window_must_be_larger_than_its_stride():
    with pytest.raises(ValueError, match="^window capacity 32 must exceed the stride 32$"):
        window_ranges(10, 32, 32)
    assert window_ranges(10, 33, 32) == [(0, 10)]


def test_windows_of_a_text_are_not_truncated_and_the_text_is_segment_zero():
    layout = layout_hint([P, T, 7], cls_id=1, prefix_id=P, type_id=T)
    hint = build_hints([((), {"a": None})], lambda s: 1)[0]
    text = list(range(20, 30))
    offsets = [(i, i + 1) for i in range(10)]
    windows = build_windows(hint, layout, text, offsets, sep_id=2, level=0, max_len=12, stride=2)
    assert [w.token_range for w in windows] == [(0, 6), (4, 10)]
    assert [w.truncated for w in windows] == [False, False]
    assert windows[0].segments == (0, 0, 1, 1) + (0,) * 8
    mask = windows[0].attention_mask()
    assert mask.dtype == np.int8 and mask.shape == (12, 12)
    one = build_windows(hint, layout, text, offsets, sep_id=2, level=0, max_len=12, stride=2, first_only=True)
    assert [(w.token_range, w.truncated) for w in one] == [((0, 6), True)]


class FakeTokenizer:
    """Just what PromptTokenizer reads of a Hugging Face tokenizer: a vocabulary that may gain tokens."""

    cls_token_id, sep_token_id, pad_token_id, unk_token_id = 3, 4, 0, 1

    def __init__(self, size: int, added: tuple[str, ...] = ()) -> None:
        self.vocab = {f"w{i}": i for i in range(size)}
        for t in added:
            self.vocab[t] = len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def convert_tokens_to_ids(self, tokens):
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def add_special_tokens(self, spec):
        for t in spec["additional_special_tokens"]:
            self.vocab.setdefault(t, len(self.vocab))


def test_the_added_tokens_get_the_ids_after_the_base_vocabulary():
    tok = PromptTokenizer(FakeTokenizer(8))
    assert (tok.prefix_id, tok.type_id, tok.classify_id, tok.multi_classify_id) == (8, 9, 10, 11)
    assert (tok.cls_id, tok.sep_id, tok.pad_id, tok.base_vocab) == (3, 4, 0, 8)


def test_a_vocabulary_larger_than_the_declared_base_is_refused_unchanged():
    fake = FakeTokenizer(10)  # two stray tokens after a base vocabulary of 8
    with pytest.raises(ModelUnavailableError) as caught:
        PromptTokenizer(fake, base_vocab=8)
    assert caught.value.message == (
        "the tokenizer gave the RexUniNLU tokens ['[PREFIX]', '[TYPE]', '[CLASSIFY]', '[MULTICLASSIFY]'] the ids "
        "[1, 1, 1, 1], expected 8..11 (right after the base vocabulary); vocab.txt does not match this model")
    assert len(fake) == 10  # nothing was added to it


def test_from_dir_passes_the_base_vocabulary_on(monkeypatch, tmp_path):
    import app.models.uninlu.prompt as prompt_module

    monkeypatch.setattr(prompt_module, "load_tokenizer",
                        lambda d: FakeTokenizer(8, ("[PREFIX]", "[TYPE]", "[CLASSIFY]", "[MULTICLASSIFY]")))
    tok = PromptTokenizer.from_dir(tmp_path, 8)  # an export that already carries the four tokens
    assert (tok.base_vocab, tok.prefix_id) == (8, 8)


def test_each_hint_knows_its_split_index_and_its_token_count():
    # The three hints of test_after_a_split…: split indices 0, 1, 2 (the walk orders results by them), and each
    # hint's `tokens` is [CLS] + its pieces + [SEP] by the same count (the forward budget is planned from it).
    costs = {"": 1, "a": 125, "b": 125, "c": 3, "d": 2, "e": 125, "f": 124, "g": 3}
    hints = build_hints([((), dict.fromkeys("abcdefg"))], lambda s: costs[s])
    assert [h.split for h in hints] == [0, 1, 2]
    assert [h.tokens for h in hints] == [256, 2 + 1 + 2 + 125 + 124, 2 + 1 + 3]
